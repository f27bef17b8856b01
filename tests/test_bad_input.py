"""Bad input files become errors naming the file and line (or row, or field).

One table of cases: (description, reader, file name, content, error class,
message regex). `content` is text, bytes, or a dict {name: content} for a
directory. Add a row to cover a new case.
"""

import dataclasses

import numpy as np
import pytest

from translearn_jax.data import conll, labelled, parallel, readers
from translearn_jax.errors import DataError
from translearn_jax.export.word2vec_format import load_word2vec, save_word2vec


def _docs(kind, field):
  return lambda p: list(readers.read_documents(readers.TextSpec(kind=kind, path=p, field=field)))


READERS = {
    'labelled_tsv': lambda p: labelled.read_fields('tsv', p, 'sentence', 'label'),
    'labelled_jsonl': lambda p: labelled.read_fields('jsonl', p, 'text', 'label'),
    'docs_tsv': _docs('tsv', 'text'),
    'docs_tsv_col1': _docs('tsv', '1'),
    'docs_jsonl': _docs('jsonl', 'text'),
    'pairs_tsv': lambda p: parallel.read_pairs_fields('tsv', p, 'src', 'tgt'),
    'pairs_jsonl': lambda p: parallel.read_pairs_fields('jsonl', p, 'src', 'tgt'),
    'aligned': lambda p: parallel.read_aligned(p, p),
    'conll': conll.read_conll,
    'w2v_text': lambda p: load_word2vec(p, binary=False),
    'w2v_binary': lambda p: load_word2vec(p, binary=True),
}


def _bin(rows, header=None, newline=b'\n'):
  """A binary word2vec file: rows [(word, values)], header '<count> <dim>' by default."""
  dim = len(rows[0][1]) if rows else 0
  out = (header or f'{len(rows)} {dim}').encode() + b'\n'
  for w, v in rows:
    word = w.encode() if isinstance(w, str) else w
    out += word + b' ' + np.asarray(v, '<f4').tobytes() + newline
  return out


GOOD_BIN = _bin([('a', [1, 2, 3]), ('b', [4, 5, 6])])
TSV_HEAD = 'sentence\tlabel\n'


@dataclasses.dataclass
class Case:
  desc: str
  reader: str
  name: str
  content: object
  error: type
  match: str


CASES = [
    # --- TSV (labelled data, documents, pairs) ---
    Case('tab inside a text shifts the columns', 'labelled_tsv', 'f.tsv',
         TSV_HEAD + 'good film\t1\nbad\tfilm\t0\n', DataError,
         r'f\.tsv:3: has 3 tab-separated columns but the header has 2 \(a tab inside'),
    Case('row with too few columns', 'labelled_tsv', 'f.tsv', TSV_HEAD + 'no label here\n',
         DataError, r'f\.tsv:2: has 1 tab-separated columns but the header has 2'),
    Case('header lacks the text field', 'labelled_tsv', 'f.tsv', 'text\tlabel\na\t1\n',
         DataError, r"f\.tsv:1: no column named 'sentence'"),
    Case('header lacks the label field', 'labelled_tsv', 'f.tsv', 'sentence\ty\na\t1\n',
         DataError, r"f\.tsv:1: no column named 'label'"),
    Case('field twice in the header', 'labelled_tsv', 'f.tsv', 'sentence\tlabel\tlabel\na\t1\t2\n',
         DataError, r"f\.tsv:1: column 'label' appears 2 times"),
    Case('empty TSV file', 'labelled_tsv', 'f.tsv', '', DataError,
         r"f\.tsv:1: empty file .*'sentence'"),
    Case('blank-lines-only TSV file', 'docs_tsv', 'f.tsv', '\n\n', DataError,
         r"f\.tsv:1: empty file .*'text'"),
    Case('TSV header but no rows', 'labelled_tsv', 'f.tsv', TSV_HEAD, DataError,
         r"f\.tsv:2: no rows after the header .*'sentence'"),
    Case('empty label', 'labelled_tsv', 'f.tsv', TSV_HEAD + 'fine\t1\ngood\t \n', DataError,
         r"f\.tsv:3: empty label \(field 'label'\)"),
    Case('documents TSV row with an extra column', 'docs_tsv', 'f.tsv',
         'id\ttext\n1\ta\n2\tb\n3\tc\td\n', DataError,
         r'f\.tsv:4: has 3 tab-separated columns but the header has 2'),
    Case('headerless TSV row wider than the first', 'docs_tsv_col1', 'f.tsv', '1\ta\n2\tb\tc\n',
         DataError, r'f\.tsv:2: has 3 tab-separated columns but line 1 has 2'),
    Case('headerless TSV row narrower than the first', 'docs_tsv_col1', 'f.tsv',
         '\n1\ta\tx\n2\tb\n', DataError, r'f\.tsv:3: has 2 tab-separated columns but line 2 has 3'),
    Case('headerless TSV whose first row is the odd one', 'docs_tsv_col1', 'f.tsv',
         '1\ta\tx\n2\tb\n3\tc\n4\td\n', DataError,
         r'f\.tsv:1: has 3 tab-separated columns but lines 2 to 4 have 2 \(a tab inside'),
    Case('headerless TSV with stray tabs in lines 2 and 3 of many', 'docs_tsv_col1', 'f.tsv',
         '1\ta\n2\tb\tx\n3\tc\ty\n4\td\n5\te\n', DataError,
         r'f\.tsv:2: has 3 tab-separated columns but line 1 has 2 \(a tab inside'),
    Case('headerless TSV without the column', 'docs_tsv_col1', 'f.tsv', 'a\n', DataError,
         r'f\.tsv:1: has 1 columns, needs column 1'),
    Case('pairs TSV with a tab in the source', 'pairs_tsv', 'f.tsv',
         'src\ttgt\nein\tone\nzwei\tdrei\tthree\n', DataError,
         r'f\.tsv:3: has 3 tab-separated columns but the header has 2'),
    # --- JSONL (labelled data, documents, pairs) ---
    Case('null text', 'labelled_jsonl', 'f.jsonl',
         '{"text": "ok", "label": 1}\n{"text": null, "label": 0}\n', DataError,
         r"f\.jsonl:2: field 'text' is null, expected a string$"),
    Case('number text', 'labelled_jsonl', 'f.jsonl', '{"text": 5, "label": 0}\n', DataError,
         r"f\.jsonl:1: field 'text' is a number \(5\), expected a string$"),
    Case('list text', 'labelled_jsonl', 'f.jsonl', '{"text": ["a"], "label": 0}\n', DataError,
         r"f\.jsonl:1: field 'text' is a list, expected a string$"),
    Case('object text', 'labelled_jsonl', 'f.jsonl', '{"text": {"a": 1}, "label": 0}\n',
         DataError, r"f\.jsonl:1: field 'text' is an object, expected a string$"),
    Case('null label', 'labelled_jsonl', 'f.jsonl', '{"text": "a", "label": null}\n', DataError,
         r"f\.jsonl:1: field 'label' is null, expected a string or a number"),
    Case('list label', 'labelled_jsonl', 'f.jsonl', '{"text": "a", "label": [1]}\n', DataError,
         r"f\.jsonl:1: field 'label' is a list, expected a string or a number"),
    Case('empty string label', 'labelled_jsonl', 'f.jsonl', '{"text": "a", "label": ""}\n',
         DataError, r"f\.jsonl:1: empty label \(field 'label'\)"),
    Case('invalid JSON line', 'labelled_jsonl', 'f.jsonl',
         '{"text": "a", "label": 1}\n{"text": "b", label: 1}\n', DataError,
         r'f\.jsonl:2: invalid JSON'),
    Case('missing label field', 'labelled_jsonl', 'f.jsonl', '{"text": "a"}\n', DataError,
         r"f\.jsonl:1: no field 'label'"),
    Case('line is not an object', 'labelled_jsonl', 'f.jsonl', '["a", 1]\n', DataError,
         r"f\.jsonl:1: expected a JSON object .*got a list"),
    Case('empty JSONL file', 'labelled_jsonl', 'f.jsonl', '', DataError,
         r"f\.jsonl:1: empty file .*'text'"),
    Case('boolean document text', 'docs_jsonl', 'f.jsonl', '{"text": true}\n', DataError,
         r"f\.jsonl:1: field 'text' is a boolean \(true\), expected a string"),
    Case('null document text', 'docs_jsonl', 'f.jsonl', '{"text": "a"}\n\n{"text": null}\n',
         DataError, r"f\.jsonl:3: field 'text' is null"),
    Case('missing document field', 'docs_jsonl', 'f.jsonl', '{"body": "a"}\n', DataError,
         r"f\.jsonl:1: no field 'text'"),
    Case('null target in a pair', 'pairs_jsonl', 'f.jsonl', '{"src": "a", "tgt": null}\n',
         DataError, r"f\.jsonl:1: field 'tgt' is null"),
    Case('number source in a pair', 'pairs_jsonl', 'f.jsonl', '{"src": 3, "tgt": "b"}\n',
         DataError, r"f\.jsonl:1: field 'src' is a number \(3\)"),
    # --- word2vec vectors ---
    Case('text file read as binary', 'w2v_binary', 'v.txt', '2 3\na 1 2 3\nb 4 5 6\n', DataError,
         r'v\.txt: binary=True but row 1 .*looks like a text word2vec file; set binary=False'),
    Case('binary file read as text', 'w2v_text', 'v.bin', GOOD_BIN, DataError,
         r'v\.bin:2: .*binary=False but the file parses as a binary word2vec file: set '
         r'binary=True'),
    Case('header not numbers', 'w2v_text', 'v.txt', 'a b\na 1\n', DataError,
         r'v\.txt:1: expected a "<count> <dim>" header of two positive integers'),
    Case('header count zero', 'w2v_text', 'v.txt', '0 3\n', DataError,
         r'v\.txt:1: expected a "<count> <dim>" header'),
    Case('header negative dim', 'w2v_binary', 'v.bin', '2 -3\n', DataError,
         r'v\.bin:1: expected a "<count> <dim>" header'),
    Case('no header (GloVe style)', 'w2v_text', 'v.txt', 'a 1 2 3\nb 4 5 6\n', DataError,
         r'v\.txt:1: expected a "<count> <dim>" header.*GloVe'),
    Case('empty vectors file', 'w2v_binary', 'v.bin', b'', DataError, r'v\.bin: empty file'),
    Case('text row with too few numbers', 'w2v_text', 'v.txt', '2 3\na 1 2 3\nb 1 2\n',
         DataError, r"v\.txt:3: expected a word and 3 numbers, got 2 numbers after 'b' \(row 2\)"),
    Case('text file shorter than its header', 'w2v_text', 'v.txt', '3 3\na 1 2 3\nb 4 5 6\n',
         DataError, r'v\.txt:4: file ends after 2 of the 3 vectors'),
    Case('text file longer than its header', 'w2v_text', 'v.txt', '1 3\na 1 2 3\nb 4 5 6\n',
         DataError, r'v\.txt:3: more rows than the 1 its header announces'),
    Case('text NaN', 'w2v_text', 'v.txt', '2 3\na 1 2 3\nb 4 nan 6\n', DataError,
         r"v\.txt:3: row 2 \('b'\) has a non-finite value \(nan;"),
    Case('text Inf', 'w2v_text', 'v.txt', '2 3\na -inf 2 3\nb 4 5 6\n', DataError,
         r"v\.txt:2: row 1 \('a'\) has a non-finite value \(-inf;"),
    Case('text value beyond float32', 'w2v_text', 'v.txt', '1 2\nbig 1e40 0\n', DataError,
         r"v\.txt:2: row 1 \('big'\) has a non-finite value \(1e40; float32 holds"),
    Case('text value not a number', 'w2v_text', 'v.txt', '1 2\na 1,5 0\n', DataError,
         r"v\.txt:2: row 1 \('a'\): not a number"),
    Case('binary file cut short', 'w2v_binary', 'v.bin', GOOD_BIN[:-5], DataError,
         r"v\.bin: row 2 \('b'\): file ends 4 bytes short of its 3 float32 values"),
    Case('binary trailing bytes', 'w2v_binary', 'v.bin', GOOD_BIN + b'extra', DataError,
         r'v\.bin: 5 bytes after row 2, the last row its header announces'),
    Case('binary header count too small', 'w2v_binary', 'v.bin',
         _bin([('a', [1, 2, 3]), ('b', [4, 5, 6])], header='1 3'), DataError,
         r'v\.bin: 15 bytes after row 1'),
    Case('binary header count too large', 'w2v_binary', 'v.bin',
         _bin([('a', [1, 2, 3]), ('b', [4, 5, 6])], header='3 3'), DataError,
         r'v\.bin: file ends after 2 of the 3 vectors .*row 3 missing'),
    Case('binary header dim too small', 'w2v_binary', 'v.bin',
         _bin([('a', [1, 2, 3]), ('b', [4, 5, 6])], header='2 2'), DataError,
         r'v\.bin: row 2 at byte \d+: expected a word and a space'),
    Case('binary NaN', 'w2v_binary', 'v.bin', _bin([('a', [1, 2]), ('b', [np.nan, 0])]),
         DataError, r"v\.bin: row 2 \('b'\) has a non-finite value \(nan\)"),
    Case('binary Inf', 'w2v_binary', 'v.bin', _bin([('a', [1, np.inf])]), DataError,
         r"v\.bin: row 1 \('a'\) has a non-finite value \(inf\)"),
    Case('binary word not UTF-8', 'w2v_binary', 'v.bin', _bin([(b'caf\xe9', [1, 2])]),
         DataError, r"v\.bin: row 1 at byte 4: word b'caf\\xe9' is not UTF-8"),
    # --- CoNLL and aligned text paths ---
    Case('CoNLL directory without files', 'conll', 'd', {}, DataError,
         r'no files in directory .*d$'),
    Case('CoNLL directory with a bad second file', 'conll', 'd',
         {'a.txt': 'EU B-ORG\n', 'b.txt': 'x O\ny X-BAD\n'}, DataError,
         r"b\.txt:2: tag 'X-BAD' is not O, B-X or I-X \(IOB\), or E-X or S-X \(IOBES\)"),
    Case('CoNLL file without sentences', 'conll', 'e.txt', '-DOCSTART- O\n\n', DataError,
         r'e\.txt: no sentences'),
    Case('aligned text path naming two files', 'aligned', 'd', {'a.txt': 'x\n', 'b.txt': 'y\n'},
         DataError, r'd: aligned parallel text needs one file per side, this names 2'),
]


def _make(tmp_path, name, content):
  path = tmp_path / name
  if isinstance(content, dict):
    path.mkdir()
    for n, c in content.items():
      _make(path, n, c)
  elif isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_bytes(content.encode('utf-8'))
  return str(path)


@pytest.mark.parametrize('case', CASES, ids=[c.desc for c in CASES])
def test_bad_input_raises_naming_the_culprit(tmp_path, case):
  path = _make(tmp_path, case.name, case.content)
  with pytest.raises(case.error, match=case.match) as e:
    READERS[case.reader](path)
  assert '\n' not in str(e.value)  # one-line messages


def test_case_table_is_large_and_unique():
  assert len(CASES) >= 25
  assert len({c.desc for c in CASES}) == len(CASES)


# --- the good paths still load ---

@pytest.mark.parametrize('binary', [False, True])
def test_word2vec_roundtrip(tmp_path, binary):
  words = ['the', 'émigré', 'x']
  vecs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  path = str(tmp_path / 'v')
  save_word2vec(path, words, vecs, binary=binary)
  w2, v2 = load_word2vec(path, binary=binary)
  assert w2 == words
  np.testing.assert_array_equal(v2, vecs)


def test_binary_rows_without_newlines_and_with_text_bytes_load(tmp_path):
  # The newline after a row is optional; vector bytes may contain b'\n' and b' '.
  vals = np.frombuffer(b'\n \n a\nb ', '<f4')
  p = tmp_path / 'v.bin'
  p.write_bytes(_bin([('a', vals), ('b', [1, 2])], newline=b''))
  words, vecs = load_word2vec(str(p), binary=True)
  assert words == ['a', 'b']
  assert vecs.tobytes() == vals.tobytes() + np.asarray([1, 2], '<f4').tobytes()


def test_conll_directory_reads_every_file_sorted(tmp_path):
  d = tmp_path / 'conll'
  d.mkdir()
  (d / 'b.conll').write_text('Paris B-LOC\n\nx O\n', encoding='utf-8')
  (d / 'a.txt').write_text('-DOCSTART- O\n\nEU B-ORG\nrejects O\n', encoding='utf-8')
  (d / 'sub').mkdir()  # not a regular file: skipped
  (d / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')   # hidden: skipped
  corpus = conll.read_conll(str(d))
  assert corpus.sentences == [['EU', 'rejects'], ['Paris'], ['x']]
  assert corpus.tags == [['B-ORG', 'O'], ['B-LOC'], ['O']]
  one = conll.read_conll(str(d / 'a.txt'))
  assert one.sentences == [['EU', 'rejects']] and one.path == str(d / 'a.txt')


def test_conll_comments_docstart_and_trailing_whitespace(tmp_path):
  """GermEval 2014's '#<tab>source' lines and CoNLL-U's '# key = value' above a sentence
  are comments (a '#' token with a valid tag is a token); -DOCSTART- ends a sentence even
  without a blank line; a trailing tab on a space-separated line is whitespace."""
  g = tmp_path / 'germeval.tsv'
  g.write_text('#\thttp://de.wikipedia.org/wiki/X [2009-10-17]\n1\tAufgrund\tO\tO\n'
               '2\tStuttgart\tB-LOC\tO\n\n#\thttp://y\n1\tDann\tO\tO\n', encoding='utf-8')
  c = conll.read_conll(str(g), token_column=1, tag_column=2)
  assert c.sentences == [['Aufgrund', 'Stuttgart'], ['Dann']]
  assert c.tags == [['O', 'B-LOC'], ['O']]
  u = tmp_path / 'u.conll'
  u.write_text('# sent_id = 1\n# text = EU O\nEU B-ORG\t\nrejects O \t \n\n'
               '# O\n#hashtag O\nx O\n-DOCSTART- -X- O\nc B-LOC\nd O\n', encoding='utf-8')
  c = conll.read_conll(str(u))
  assert c.sentences == [['EU', 'rejects'], ['#', '#hashtag', 'x'], ['c', 'd']]
  assert c.tags == [['B-ORG', 'O'], ['O', 'O', 'O'], ['B-LOC', 'O']]
  bad = tmp_path / 'bad.conll'
  bad.write_text('EU B-ORG\n# x y\n', encoding='utf-8')      # inside a sentence: a token line
  with pytest.raises(DataError, match=r"bad\.conll:2: tag 'y' is not O"):
    conll.read_conll(str(bad))


def test_labels_may_be_numbers_or_strings(tmp_path):
  p = tmp_path / 'd.jsonl'
  p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n'
               '{"text": "c", "label": "1"}\n', encoding='utf-8')
  d = labelled.read_fields('jsonl', str(p), 'text', 'label')
  assert d.texts == ['a', 'b', 'c'] and d.label_names == ['0', '1']
  assert d.labels.tolist() == [1, 0, 1]
  # nested objects, by dotted names
  p.write_text('{"review": {"body": "a"}, "meta": {"stars": 5}}\n'
               '{"review": {"body": "b"}, "meta": {"stars": 1}}\n', encoding='utf-8')
  d = labelled.read_fields('jsonl', str(p), 'review.body', 'meta.stars')
  assert d.texts == ['a', 'b'] and d.label_names == ['1', '5']


def test_good_tsv_files_read(tmp_path):
  p = tmp_path / 'd.tsv'
  p.write_bytes(b'sentence\tlabel\r\ngood film\t1\r\n\r\nbad film\t0\r\n')
  d = labelled.read_fields('tsv', str(p), 'sentence', 'label')
  assert d.texts == ['good film', 'bad film'] and d.labels.tolist() == [1, 0]
  q = tmp_path / 'n.tsv'
  q.write_text('1\tx y\n2\tz\n', encoding='utf-8')
  assert list(readers.read_documents(readers.TextSpec(kind='tsv', path=str(q), field='1'))) == [
      'x y', 'z']
  pairs = tmp_path / 'p.jsonl'
  pairs.write_text('{"src": "ein", "tgt": "one", "n": null}\n', encoding='utf-8')
  assert parallel.read_pairs_fields('jsonl', str(pairs), 'src', 'tgt') == [('ein', 'one')]
