"""GloVe and fastText `.vec` files load wherever word2vec files do (issue #15).

Files are written to tmp_path by each test; expected vectors are the float32
roundings of the decimal strings written.
"""

import numpy as np
import pytest

from translearn_jax.errors import ConfigError, DataError
from translearn_jax.export import word2vec_format as w2v
from translearn_jax.export.word2vec_format import (detect_format, load_vectors, load_word2vec,
                                                   save_word2vec)
from translearn_jax.transfer import sources

WORDS = ['the', ',', 'émigré', '</s>', 'naïve']
ROWS = [['0.418', '0.24968', '-0.41242'], ['-0.0013', '1e-3', '3.8516e-06'],
        ['1', '-2.5', '+7'], ['0', '0', '0'], ['12.5', '-0.5', '0.25']]
VECS = np.array(ROWS, np.float64).astype(np.float32)


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_bytes(text.encode('utf-8') if isinstance(text, str) else text)
  return str(p)


def _glove(words=WORDS, rows=ROWS):
  return ''.join(f'{w} {" ".join(r)}\n' for w, r in zip(words, rows))


def _fasttext(words=WORDS, rows=ROWS):
  # fastText's writer: a header, then every row ends in a space.
  return f'{len(words)} {len(rows[0])}\n' + ''.join(f'{w} {" ".join(r)} \n'
                                                    for w, r in zip(words, rows))


@pytest.mark.parametrize('fmt', ['auto', 'glove'])
def test_glove_file_loads(tmp_path, fmt):
  path = _write(tmp_path, 'glove.txt', _glove())
  words, vecs = load_vectors(path, fmt)
  assert words == WORDS
  assert vecs.dtype == np.float32 and vecs.shape == (5, 3)
  np.testing.assert_array_equal(vecs, VECS)


@pytest.mark.parametrize('fmt', ['auto', 'fasttext', 'word2vec'])
def test_fasttext_vec_with_header_and_trailing_spaces_loads(tmp_path, fmt):
  path = _write(tmp_path, 'cc.vec', _fasttext())
  words, vecs = load_vectors(path, fmt)
  assert words == WORDS
  np.testing.assert_array_equal(vecs, VECS)
  w2, v2 = load_word2vec(path)  # the strict reader accepts it too
  assert w2 == WORDS
  np.testing.assert_array_equal(v2, VECS)


def test_crlf_line_ends_load(tmp_path):
  words, vecs = load_vectors(_write(tmp_path, 'g.txt', _glove().replace('\n', '\r\n')))
  assert words == WORDS
  np.testing.assert_array_equal(vecs, VECS)


@pytest.mark.parametrize('make', [_glove, _fasttext])
def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path, make):
  path = _write(tmp_path, 'v.txt', '\ufeff' + make())
  for fmt in ('auto', detect_format(path)):
    words, vecs = load_vectors(path, fmt)
    assert words == WORDS
    np.testing.assert_array_equal(vecs, VECS)


@pytest.mark.parametrize('text, fmt, first_word', [
    (_glove(), 'glove', 'the'),
    (_fasttext(), 'word2vec', 'the'),
    ('2 3\n5 1 2 3\n6 4 5 6\n', 'word2vec', '5'),       # a header, numeric words
    ('2\t3\nx 1 2 3\ny 4 5 6\n', 'word2vec', 'x'),      # a tab in the header (gensim splits any space)
    ('2  3 \nx 1 2 3\ny 4 5 6\n', 'word2vec', 'x'),
    ('5 1 2 3\n6 4 5 6\n', 'glove', '5'),               # numeric words, no header
    ('. . . 1 2\nx 3 4\n', 'glove', '. . .'),           # line 1 holds a word with spaces
])
def test_auto_detection_picks_the_format(tmp_path, text, fmt, first_word):
  path = _write(tmp_path, 'v.txt', text)
  assert detect_format(path) == fmt
  words, vecs = load_vectors(path)
  assert words[0] == first_word
  assert vecs.shape[0] == len(text.strip().split('\n')) - (fmt == 'word2vec')


def test_word2vec_export_loads_with_auto_detection(tmp_path):
  vecs = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
  path = str(tmp_path / 'v.txt')
  save_word2vec(path, ['a', 'b', 'c', 'd'], vecs)
  words, v2 = load_vectors(path)
  assert words == ['a', 'b', 'c', 'd']
  np.testing.assert_array_equal(v2, vecs)


def test_word2vec_text_export_is_float32_exact_and_reads_the_same_in_gensim(tmp_path):
  """Every float32 reads back bit for bit (9 significant digits; signed zeros, subnormals
  and the largest finite values included), in our reader and in gensim's."""
  rng = np.random.default_rng(1)
  bits = rng.integers(0, 2**32, size=(50, 40), dtype=np.uint64).astype(np.uint32)
  vecs = bits.view(np.float32).copy()
  vecs[~np.isfinite(vecs)] = 0.0
  vecs[0, :6] = [-0.0, np.finfo(np.float32).tiny / 3, np.finfo(np.float32).max,
                 -np.finfo(np.float32).max, 0.1, np.float32(1) + np.finfo(np.float32).eps]
  words = [f'w{i}' for i in range(50)]
  path = str(tmp_path / 'v.txt')
  save_word2vec(path, words, vecs)
  _, back = load_word2vec(path)
  np.testing.assert_array_equal(back.view(np.uint32), vecs.view(np.uint32))
  from gensim.models import KeyedVectors
  kv = KeyedVectors.load_word2vec_format(path, binary=False)
  np.testing.assert_array_equal(kv.vectors.view(np.uint32), vecs.view(np.uint32))


def test_glove_word_with_spaces_is_the_joined_prefix(tmp_path):
  path = _write(tmp_path, 'g.txt', 'the 1 2 3\n. . . 4 5 6\nat name@domain.com 7 8 9\n')
  words, vecs = load_vectors(path)
  assert words == ['the', '. . .', 'at name@domain.com']
  np.testing.assert_array_equal(vecs, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])


@pytest.mark.parametrize('text, match', [
    ('a 1 2 3\nb 4 5 6\nc 7 8\n',
     r"g\.txt:3: expected a word and 3 numbers \(the width of line 1\), got 2 numbers after 'c'$"),
    ('a 1 2 3\nb 4 5 6 7\n',              # one number too many is not a word with spaces
     r"g\.txt:2: expected a word and 3 numbers \(the width of line 1\), got 4 numbers after 'b'"),
    ('a 1 2 3\n\nb 4 5 6\n', r"g\.txt:2: expected a word and 3 numbers .*got 0 numbers after ''"),
    ('a 1 2 3\n 4 5 6\n', r"g\.txt:2: expected a word and 3 numbers"),
    ('a 1 2 3\nb 4 nan 6\n', r"g\.txt:2: 'b' has a non-finite value \(nan;"),
    ('a 1 2 3\nb 4 5 -inf\n', r"g\.txt:2: 'b' has a non-finite value \(-inf;"),
    ('a 1 2 3\nb 4 5 1e40\n', r"g\.txt:2: 'b' has a non-finite value \(1e40; float32 holds"),
    ('a 1 2 3\nb 4 x 6\n', r"g\.txt:2: 'b': not a number in the vector"),
    ('a 1 2 3\nb 1\t2 3 4\nc 5  6\n',  # a tab and a double space: counts balance
     r"g\.txt:2: 'b': not a number"),
    (b'a 1 2 3\nb\xe9 4 5 6\n', r'g\.txt:2: line is not UTF-8 text \(byte 9\)'),
    ('', r'g\.txt: empty file'),
    ('hello world\n', r"g\.txt:1: neither a \"<count> <dim>\" header .*nor a word and numbers"),
])
def test_bad_glove_files_raise_naming_the_line(tmp_path, text, match):
  path = _write(tmp_path, 'g.txt', text)
  with pytest.raises(DataError, match=match):
    load_vectors(path)


def test_explicit_format_mismatches_raise(tmp_path):
  glove = _write(tmp_path, 'g.txt', _glove())
  vec = _write(tmp_path, 'v.vec', _fasttext())
  with pytest.raises(DataError, match=r"g\.txt:1: expected a \"<count> <dim>\" header.*GloVe"):
    load_vectors(glove, 'word2vec')
  with pytest.raises(DataError, match=r"v\.vec:1: a \"<count> <dim>\" header: .*not GloVe"):
    load_vectors(vec, 'glove')
  with pytest.raises(ValueError, match='format must be one of'):
    load_vectors(glove, 'text')


def test_repeated_words_keep_their_first_row_with_a_warning(tmp_path):
  path = _write(tmp_path, 'g.txt', 'a 1 1\nb 2 2\na 3 3\nc 4 4\nb 5 5\n')
  with pytest.warns(UserWarning, match=r"g\.txt: 2 rows repeat .*'a' at line 3, first seen at "
                    r'line 1'):
    words, vecs = load_vectors(path)
  assert words == ['a', 'b', 'c']
  np.testing.assert_array_equal(vecs, [[1, 1], [2, 2], [4, 4]])
  # After a header, line = row + 1; the strict reader keeps every row.
  path = _write(tmp_path, 'v.txt', '3 1\nx 1\ny 2\nx 3\n')
  with pytest.warns(UserWarning, match=r"'x' at line 4, first seen at line 2"):
    assert load_vectors(path)[0] == ['x', 'y']
  assert load_word2vec(path)[0] == ['x', 'y', 'x']


def test_blocks_keep_line_numbers_and_match_the_row_parser(tmp_path, monkeypatch):
  # Tiny blocks: many bulk parses, rows of spaced words among them, an error in a late block.
  monkeypatch.setattr(w2v, '_BLOCK', 50)
  rng = np.random.default_rng(0)
  strs = [[f'{x:.6g}' for x in row] for row in rng.normal(scale=3, size=(60, 4))]
  words = [f'w{i}' if i % 17 else f'{i} . w' for i in range(60)]
  path = _write(tmp_path, 'g.txt', _glove(words, strs))
  got_words, got = load_vectors(path)
  assert got_words == words
  np.testing.assert_array_equal(got, np.array(strs, np.float64).astype(np.float32))
  bad = strs[:45] + [strs[45][:3]] + strs[46:]
  with pytest.raises(DataError, match=r'bad\.txt:46: expected a word and 4 numbers'):
    load_vectors(_write(tmp_path, 'bad.txt', _glove(words, bad)))
  # With a header (words with spaces are GloVe only): rows = line - 1; too few
  # and too many rows still named.
  words = [f'w{i}' for i in range(60)]
  hdr = lambda n: f'{n} 4\n' + _glove(words, strs)
  assert load_vectors(_write(tmp_path, 'h.txt', hdr(60)))[0] == words
  with pytest.raises(DataError, match=r"h\.txt:3: expected a word and 4 numbers, got 5 numbers "
                                      r"after 'a' \(row 2\)"):
    load_vectors(_write(tmp_path, 'h.txt', '2 4\nw 1 2 3 4\na b 1 2 3 4\n'))
  with pytest.raises(DataError, match=r'h\.txt:62: more rows than the 60'):
    load_vectors(_write(tmp_path, 'h.txt', hdr(60) + 'extra 1 2 3 4\n'))
  with pytest.raises(DataError, match=r'h\.txt:61: more rows than the 59'):
    load_vectors(_write(tmp_path, 'h.txt', hdr(59)))
  with pytest.raises(DataError, match=r'h\.txt:62: file ends after 60 of the 61 vectors'):
    load_vectors(_write(tmp_path, 'h.txt', hdr(61) + '\n\n'))
  bad = strs[:30] + [strs[30][:2] + ['inf', '0']] + strs[31:]
  with pytest.raises(DataError, match=r"h\.txt:32: row 31 \('w30'\) has a non-finite value"):
    load_vectors(_write(tmp_path, 'h.txt', '60 4\n' + _glove(words, bad)))


def test_regular_rows_are_parsed_in_bulk(tmp_path, monkeypatch):
  def row_by_row(*args):
    raise AssertionError('row-by-row parser used on a well-formed file')
  monkeypatch.setattr(w2v, '_parse_row', row_by_row)
  rng = np.random.default_rng(1)
  strs = [[f'{x:.5f}' for x in row] for row in rng.normal(size=(2000, 10))]
  words, vecs = load_vectors(_write(tmp_path, 'g.txt', _glove([f'w{i}' for i in range(2000)],
                                                              strs)))
  assert len(words) == 2000
  np.testing.assert_array_equal(vecs, np.array(strs, np.float64).astype(np.float32))


def test_sources_load_word2vec_accepts_glove_and_fasttext(tmp_path):
  for name, text in [('glove.6B.3d.txt', _glove()), ('wiki.vec', _fasttext())]:
    src = sources.load('word2vec', _write(tmp_path, name, text))
    assert src.kind == 'word2vec' and src.vocab == WORDS
    np.testing.assert_array_equal(src.params['embedding'], VECS)


def test_sources_load_binary_still_needs_the_flag(tmp_path):
  path = str(tmp_path / 'v.bin')
  save_word2vec(path, WORDS, VECS, binary=True)
  src = sources.load('word2vec', path, binary=True)
  assert src.vocab == WORDS
  np.testing.assert_array_equal(src.params['embedding'], VECS)
  with pytest.raises(DataError, match=r'parses as a binary word2vec file: set '
                                      r'config\.init\.binary=True'):
    sources.load('word2vec', path)
  glove = tmp_path / 'glove.txt'                  # headerless text read as binary
  glove.write_text('the 0.1 0.2\ncat 0.3 0.4\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'a GloVe file, which has no header\? It is text: '
                                      r'init\.binary=False reads it'):
    sources.load('word2vec', str(glove), binary=True)


@pytest.mark.parametrize('name', ['lee_fasttext.bin', 'non_ascii_fasttext.bin'])
def test_fasttext_bin_models_before_2017_load(tmp_path, name):
  """fastText's format before 2017 (no magic number: the training arguments first), as in
  gensim's test files: recognised without a setting, read as gensim reads it; cut short,
  an error naming the file."""
  from gensim.models.fasttext import load_facebook_vectors
  from gensim.test.utils import datapath
  ref = load_facebook_vectors(datapath(name))
  words, vecs = load_vectors(datapath(name))
  assert words == list(ref.index_to_key)
  np.testing.assert_array_equal(vecs, ref.vectors)
  cut = tmp_path / 'cut.bin'
  cut.write_bytes(open(datapath(name), 'rb').read()[:2000])
  with pytest.raises(DataError, match=r'cut\.bin: truncated fastText \.bin model'):
    load_vectors(str(cut))


def test_fasttext_bin_model_loads_with_its_vectors_and_subwords(tmp_path):
  """A fastText .bin model (written by gensim in Facebook's format) is recognised without
  any setting; its words get fastText's word vectors, and remap_init='subword' gives words
  outside its dictionary their n-gram vectors, as fastText (gensim) computes them."""
  from gensim.models.fasttext import FastText, load_facebook_vectors, save_facebook_model
  from gensim.test.utils import common_texts
  from translearn_jax.errors import ConfigError
  from translearn_jax.transfer import graft
  model = FastText(vector_size=8, window=3, min_count=1, min_n=2, max_n=4, bucket=200,
                   epochs=2, seed=0, workers=1)
  model.build_vocab(corpus_iterable=common_texts)
  model.train(corpus_iterable=common_texts, total_examples=len(common_texts), epochs=2)
  path = str(tmp_path / 'tiny.bin')
  save_facebook_model(model, path)
  ref = load_facebook_vectors(path)
  words, vecs = load_vectors(path)                     # 'auto'; binary=True also reads it
  assert words == list(ref.index_to_key) and vecs.dtype == np.float32
  np.testing.assert_allclose(vecs, ref.vectors, rtol=1e-6)
  np.testing.assert_allclose(load_vectors(path, 'word2vec_binary')[1], vecs)
  src = sources.load('word2vec', path)
  target = ['human', 'computers', 'graphs', 'xyzzy']   # the last three outside its dictionary
  init = np.zeros((4, 8), np.float32)
  out, stats = graft.remap_rows(src.params['embedding'], src.vocab, target, init, 'subword',
                                subword=src.subword)
  assert stats['missing'] == 3 and stats['init'] == 'subword'
  for i, w in enumerate(target):
    np.testing.assert_allclose(out[i], ref[w], rtol=1e-5, atol=1e-7)
  assert np.abs(out[1]).sum() > 0                      # 'computers' from its n-grams
  text = sources.load('word2vec', _write(tmp_path, 'v.txt', '1 8\nhuman ' + ' '.join(['0.5'] * 8)
                                         + '\n'))
  with pytest.raises(ConfigError, match="remap_init='subword' needs a source that builds"):
    graft.remap_rows(text.params['embedding'], text.vocab, target, init, 'subword',
                     subword=text.subword)
  data, cut = open(path, 'rb').read(), tmp_path / 'cut.bin'
  for keep, where in ((200, r'word \d+ of 12 of its dictionary is cut off'),
                      (len(data) // 3, r'its \d+ x 8 input matrix needs')):
    cut.write_bytes(data[:keep])          # gensim's own parser would loop forever on these
    with pytest.raises(DataError, match=rf'cut\.bin: truncated fastText \.bin model .*{where}'):
      sources.load('word2vec', str(cut))
  import gzip
  (tmp_path / 'tiny.bin.gz').write_bytes(gzip.compress(data))    # as fastText publishes them
  with pytest.raises(DataError, match=r'tiny\.bin\.gz: a compressed fastText \.bin model; '
                                      'decompress it first'):
    sources.load('word2vec', str(tmp_path / 'tiny.bin.gz'))
  with pytest.raises(DataError, match=r'v\.txt: not a fastText \.bin model \(no magic number'):
    load_vectors(str(tmp_path / 'v.txt'), 'fasttext_bin')
  # a model trained without n-grams (max_n < min_n) has no subword vectors to give
  plain = FastText(vector_size=8, min_count=1, max_n=0, epochs=1, seed=0, workers=1)
  plain.build_vocab(corpus_iterable=common_texts)
  plain.train(corpus_iterable=common_texts, total_examples=len(common_texts), epochs=1)
  save_facebook_model(plain, str(tmp_path / 'plain.bin'))
  src = sources.load('word2vec', str(tmp_path / 'plain.bin'))
  assert src.subword is None and src.vocab == list(load_facebook_vectors(
      str(tmp_path / 'plain.bin')).index_to_key)
  with pytest.raises(ConfigError, match="remap_init='subword' needs a source"):
    graft.remap_rows(src.params['embedding'], src.vocab, target, init, 'subword',
                     subword=src.subword)


@pytest.mark.parametrize('binary', [True, False])
def test_words_cut_inside_a_character_read_as_gensims_unicode_errors(tmp_path, binary):
  """word2vec.c cuts words at 100 bytes, which can split a UTF-8 character: 'strict' names
  the row and the option; 'replace' and 'ignore' give the words gensim gives."""
  from gensim.models import KeyedVectors
  words = [b'the', 'caf\u00e9'.encode()[:4], b'ok\xff\xfe', 'na\u00efve'.encode()]
  vecs = np.arange(8, dtype=np.float32).reshape(4, 2) / 4
  if binary:
    body = b''.join(w + b' ' + v.astype('<f4').tobytes() + b'\n' for w, v in zip(words, vecs))
  else:
    body = b''.join(w + b' ' + ' '.join(repr(float(x)) for x in v).encode() + b'\n'
                    for w, v in zip(words, vecs))
  path = _write(tmp_path, 'cut.bin', b'4 2\n' + body)
  with pytest.raises(DataError, match=r"cut\.bin.*(row 2|:3: row 2).*not UTF-8.*"
                                      r"unicode_errors='replace' or 'ignore'"):
    load_word2vec(path, binary=binary)
  for errors in ('replace', 'ignore'):
    got_words, got = load_vectors(path, 'word2vec_binary' if binary else 'word2vec',
                                  unicode_errors=errors)
    kv = KeyedVectors.load_word2vec_format(path, binary=binary, unicode_errors=errors)
    assert got_words == list(kv.index_to_key) and got_words[3] == 'na\u00efve'
    np.testing.assert_array_equal(got, kv.vectors)
  if not binary:     # a malformed row sends its block to the row parser, which names it
    irregular = _write(tmp_path, 'cut2.txt', b'2 2\ncaf\xc3 0.5 0.25\nok 0.5  0.25\n')
    with pytest.raises(DataError, match=r"cut2\.txt:3: expected a word and 2 numbers"):
      load_vectors(irregular, 'word2vec', unicode_errors='replace')
  src = sources.load('word2vec', path, binary=binary, unicode_errors='replace')
  assert src.vocab[1] == 'caf\ufffd'
  with pytest.raises(ConfigError, match=r"config\.init\.unicode_errors must be one of"):
    sources.load('word2vec', path, binary=binary, unicode_errors='skip')


def test_binary_words_with_control_characters_load_as_gensim_reads_them(tmp_path):
  # word2vec.c keeps a form feed or vertical tab inside a word (it splits at space, tab and
  # newline only) and gensim writes any key: such binary files load as their text form does
  words = ['the', '\x0cchapter', 'a\x0bb', 'tab\tword', 'cr\rword', 'end']
  rows = np.arange(len(words) * 3, dtype=np.float32).reshape(-1, 3) / 7
  data = f'{len(words)} 3\n'.encode() + b''.join(
      w.encode() + b' ' + r.astype('<f4').tobytes() + b'\n' for w, r in zip(words, rows))
  path = tmp_path / 'v.bin'
  path.write_bytes(data)
  got, vecs = load_vectors(str(path), 'word2vec_binary')
  assert got == words
  np.testing.assert_array_equal(vecs, rows)
  text = tmp_path / 'v.txt'
  text.write_bytes(f'{len(words)} 3\n'.encode() + b''.join(
      w.encode() + b' ' + ' '.join(repr(float(x)) for x in r).encode() + b'\n'
      for w, r in zip(words, rows)))
  assert load_vectors(str(text))[0] == words
