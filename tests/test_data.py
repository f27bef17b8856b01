"""Readers, tokenizer, vocabulary: formats, encodings and bad input."""

import json
import time

import ml_collections
import numpy as np
import pytest

from translearn_jax.data import labelled, readers
from translearn_jax.data.vocab import Vocabulary, encode_corpus, tokenize
from translearn_jax.errors import DataError


def docs(**kw):
  return list(readers.read_documents(readers.TextSpec(**kw)))


def test_text_bom_crlf_and_units(tmp_path):
  p = tmp_path / 'a.txt'
  p.write_bytes('\ufeffFirst line here\r\nsecond line\r\n\r\nthird para\r\n'.encode('utf-8'))
  assert docs(kind='text', path=str(p)) == ['First line here', 'second line', '', 'third para', '']
  assert docs(kind='text', path=str(p), unit='paragraph') == [
      'First line here second line', 'third para']
  assert docs(kind='text', path=str(p), unit='file') == ['First line here\nsecond line\n\nthird para\n']


def test_utf16_with_a_byte_order_mark_is_read_as_utf16(tmp_path):
  p = tmp_path / 'excel.tsv'
  for enc in ('utf-16-le', 'utf-16-be'):       # Excel's "Unicode Text": BOM + UTF-16
    p.write_bytes('\ufefftext\tlabel\r\ncafé\t1\r\n'.encode(enc))
    assert [r for _, _, r in readers.iter_records(str(p), 'tsv', ['text', 'label'])] == [
        {'text': 'café', 'label': '1'}], enc


def test_lone_cr_ends_lines_only_in_a_file_of_cr_line_ends(tmp_path):
  p = tmp_path / 'a.txt'
  p.write_bytes(b'one\rtwo\rthree')                     # classic Mac line ends
  assert docs(kind='text', path=str(p)) == ['one', 'two', 'three']
  p.write_bytes(b'one\r\ntw\ro\nthree\n')              # a stray CR inside an LF line
  assert docs(kind='text', path=str(p)) == ['one', 'tw o', 'three', '']


def test_parallel_files_read_with_the_configs_encoding_and_end_blank_lines(tmp_path):
  import ml_collections
  from translearn_jax.data import parallel
  (tmp_path / 's.txt').write_bytes('caf\xe9\nla mer\n\n\n'.encode('latin-1'))
  (tmp_path / 't.txt').write_bytes('Kaffee\ndas Meer\n'.encode('latin-1'))
  cfg = ml_collections.ConfigDict({'kind': 'text', 'train_source': str(tmp_path / 's.txt'),
                                   'train_target': str(tmp_path / 't.txt')})
  with pytest.raises(DataError, match=r's\.txt:1: bytes are not valid utf-8'):
    parallel.read_split(cfg, 'train')
  cfg.encoding = 'latin-1'
  assert parallel.read_split(cfg, 'train') == [('café', 'Kaffee'), ('la mer', 'das Meer')]
  cfg.encoding, cfg.encoding_fallback = 'utf-8', 'latin-1'
  assert parallel.read_split(cfg, 'train')[0] == ('café', 'Kaffee')


def test_mr_files_read_as_utf8_when_they_are_and_as_latin1_otherwise(tmp_path):
  from translearn_jax.data import labelled
  for enc in ('latin-1', 'utf-8-sig'):
    (tmp_path / 'rt-polarity.pos').write_bytes('un café émouvant\n'.encode(enc))
    (tmp_path / 'rt-polarity.neg').write_bytes('ennuyeux\n'.encode(enc))
    data = labelled.read_mr(str(tmp_path))
    assert data.texts == ['ennuyeux', 'un café émouvant'], enc
    assert data.labels.tolist() == [0, 1]


def test_whole_number_labels_are_one_class_in_numeric_order(tmp_path):
  from translearn_jax.data import labelled
  p = tmp_path / 'a.jsonl'
  rows = [('a', 1), ('b', 0.0), ('c', 1.0), ('d', 10), ('e', '2'), ('f', ' +2 ')]
  p.write_text(''.join(json.dumps({'text': t, 'label': y}) + '\n' for t, y in rows))
  data = labelled.read_fields('jsonl', str(p), 'text', 'label')
  # one class per number, in numeric order, named as the file first writes it
  assert data.keys == ['0', '1', '2', '10'] and data.label_names == ['0.0', '1', '2', '10']
  assert [data.label_names[i] for i in data.labels] == ['1', '0.0', '1', '10', '2', '2']
  assert labelled.label_order(['neg', 'pos', '1']) == ['1', 'neg', 'pos']
  # spellings kept for what a saved model predicts; numbers exact however long
  q = tmp_path / 'b.tsv'
  q.write_text('sentence\tlabel\ngood\t+1\nbad\t-1\nok\t1.0\nx\t12345678901234567890\n'
               'y\t12345678901234567891\n')
  data = labelled.read_fields('tsv', str(q), 'sentence', 'label')
  assert data.label_names == ['-1', '+1', '12345678901234567890', '12345678901234567891']
  assert data.labels.tolist() == [1, 0, 1, 2, 3]


def test_predefined_split_matches_classes_by_number_and_keeps_training_names(tmp_path):
  from translearn_jax.configs import transfer_mr_skipgram
  cfg = transfer_mr_skipgram.get_config().data
  for name, rows in (('train', [('a', '+1'), ('b', '0'), ('c', '1')]),
                     ('dev', [('d', '1.0'), ('e', '00')]), ('test', [('f', '0.0'), ('g', '1')])):
    (tmp_path / f'{name}.tsv').write_text(
        'sentence\tlabel\n' + ''.join(f'{t}\t{y}\n' for t, y in rows))
  cfg.kind, cfg.path = 'tsv', str(tmp_path / 'train.tsv')
  cfg.dev_path, cfg.test_path = str(tmp_path / 'dev.tsv'), str(tmp_path / 'test.tsv')
  splits = labelled.read_splits(cfg)
  assert all(s.label_names == ['0', '+1'] for s in splits.values())
  assert splits['dev'].labels.tolist() == [1, 0] and splits['test'].labels.tolist() == [0, 1]
  (tmp_path / 'test.tsv').write_text('sentence\tlabel\n')
  with pytest.raises(DataError, match=r'test\.tsv:2: no rows after the header'):
    labelled.read_splits(cfg)


def test_labels_written_composed_or_decomposed_are_one_class(tmp_path):
  """Files saved by different tools may spell an accented label in NFC or NFD: one class,
  named as the training file writes it (a dev label read as unknown was an error)."""
  from translearn_jax.configs import transfer_mr_skipgram
  cfg = transfer_mr_skipgram.get_config().data
  nfc, nfd = 'n\u00e9gatif', 'ne\u0301gatif'
  for name, rows in (('train', [('a', nfc), ('b', 'positif'), ('c', nfd)]),
                     ('dev', [('d', nfd)]), ('test', [('e', nfc), ('f', 'positif')])):
    (tmp_path / f'{name}.tsv').write_text(
        'sentence\tlabel\n' + ''.join(f'{t}\t{y}\n' for t, y in rows), encoding='utf-8')
  cfg.kind, cfg.path = 'tsv', str(tmp_path / 'train.tsv')
  cfg.dev_path, cfg.test_path = str(tmp_path / 'dev.tsv'), str(tmp_path / 'test.tsv')
  splits = labelled.read_splits(cfg)
  assert splits['train'].label_names == [nfc, 'positif']
  assert splits['train'].labels.tolist() == [0, 1, 0]
  assert splits['dev'].labels.tolist() == [0] and splits['test'].labels.tolist() == [0, 1]


def test_empty_splits_and_single_class_data_are_errors(tmp_path):
  from translearn_jax.configs import transfer_mr_skipgram
  cfg = transfer_mr_skipgram.get_config().data
  p = tmp_path / 'tiny.tsv'
  p.write_text('sentence\tlabel\n' + ''.join(f's{i}\t{i % 2}\n' for i in range(6)))
  cfg.kind, cfg.path = 'tsv', str(p)
  with pytest.raises(DataError, match=r"the test split of .*tiny\.tsv is empty \(data\.split="
                                      r"'0\.8,0\.1,0\.1' of 6 examples\): nothing to score"):
    labelled.read_splits(cfg)
  cfg.split = '0.34,0.33,0.33'
  assert [len(s.texts) for s in labelled.read_splits(cfg).values()] == [2, 2, 2]
  p.write_text('sentence\tlabel\n' + ''.join(f's{i}\tpos\n' for i in range(6)))
  with pytest.raises(DataError, match=r"tiny\.tsv: the training examples have one class "
                                      r"\('pos'\)"):
    labelled.read_splits(cfg)


def test_headerless_columns_and_a_header_row(tmp_path):
  """Columns by number: no header row unless data.header='yes'; with 'auto', a first row
  whose label is not a number above numbered labels is an error naming the line (read as
  data it would be one more class), a one-off string label first a warning."""
  from translearn_jax.configs import transfer_mr_skipgram
  from translearn_jax.errors import ConfigError
  p = tmp_path / 'ag.csv'
  body = '3,"Wall St.","Bears, back"\n1,World,x\n2,Sports,ok\n1,World,y\n'
  p.write_text('Class Index,Title,Description\n' + body)
  with pytest.raises(DataError, match=r"ag\.csv:1: label 'Class Index' \(column 0\) is not a "
                                      r"number.*set data\.header=yes"):
    labelled.read_fields('csv', str(p), '1,2', '0')
  lt = labelled.read_fields('csv', str(p), '1,2', '0', header='yes')
  assert lt.texts[0] == 'Wall St. Bears, back' and lt.label_names == ['1', '2', '3']
  kept = labelled.read_fields('csv', str(p), '1,2', '0', header='no')
  assert kept.texts[0] == 'Title Description' and 'Class Index' in kept.label_names
  cfg = transfer_mr_skipgram.get_config().data           # the config field reaches the reader
  cfg.kind, cfg.path, cfg.text_field, cfg.label_field, cfg.header = 'csv', str(p), '1,2', '0', 'yes'
  assert labelled.read_labelled(cfg).texts == lt.texts
  q = tmp_path / 'plain.csv'
  q.write_text(body)
  assert labelled.read_fields('csv', str(q), '1,2', '0').texts == lt.texts
  s = tmp_path / 'words.tsv'
  s.write_text('sentiment\ttext\n' + 'pos\tgood\nneg\tbad\n' * 2)
  with pytest.warns(UserWarning, match=r"words\.tsv:1: the first row's label 'sentiment'"):
    labelled.read_fields('tsv', str(s), '1', '0')
  with pytest.raises(ConfigError, match="data.header must be one of"):
    labelled.read_fields('csv', str(q), '1,2', '0', header='true')
  with pytest.raises(ConfigError, match=r"data\.header=no: fields \['text', 'label'\] must "
                                        'then be column numbers'):
    labelled.read_fields('tsv', str(s), 'text', 'label', header='no')
  with pytest.raises(DataError, match=r'ag\.csv:1: the header has 3 columns, needs column 5'):
    labelled.read_fields('csv', str(p), '5', '0', header='yes')


@pytest.mark.parametrize('module', ['gzip', 'bz2', 'lzma'])
def test_compressed_files_read_as_their_text(tmp_path, module):
  import importlib
  z = importlib.import_module(module)
  (tmp_path / 'd').mkdir()
  p = tmp_path / 'd' / 'a.TXT.gz'          # found in a directory, whatever the case
  p.write_bytes(z.compress('\ufeffcafé\r\nau lait\r\n'.encode('utf-8')))
  assert docs(kind='text', path=str(tmp_path / 'd')) == ['café', 'au lait', '']
  p.write_bytes(z.compress(b'x\n')[:-4])      # cut short
  with pytest.raises(DataError, match=f'a.TXT.gz: damaged {module} archive'):
    docs(kind='text', path=str(p))
  from translearn_jax.export.word2vec_format import load_vectors
  v = tmp_path / 'v.vec.gz'
  v.write_bytes(z.compress('2 2\nthe 1 2\ncafé 3 4\n'.encode('utf-8')))
  words, vecs = load_vectors(str(v))
  assert words == ['the', 'café'] and vecs.tolist() == [[1, 2], [3, 4]]


def test_tsv_header_repeated_by_concatenation_is_skipped_with_a_warning(tmp_path):
  p = tmp_path / 'a.tsv'
  p.write_text('text\tlabel \nfine\t1\ntext\tlabel\nbad\t0\n', encoding='utf-8')
  with pytest.warns(UserWarning, match=r'a\.tsv: 1 line\(s\) repeat the header .*line 3'):
    recs = [r for _, _, r in readers.iter_records(str(p), 'tsv', ['text', 'label'])]
  assert recs == [{'text': 'fine', 'label': '1'}, {'text': 'bad', 'label': '0'}]


def test_files_joined_with_their_byte_order_marks_read_as_one(tmp_path):
  """`cat a.csv b.csv` of files each written with a BOM (Excel, Notepad): the later BOMs
  start lines, where they must not make a header or `-DOCSTART-` unrecognisable."""
  from translearn_jax.data import conll
  part = lambda rows: ('\ufeffid,text,label\r\n' + rows).encode('utf-8')
  p = tmp_path / 'joined.csv'
  p.write_bytes(part('1,fine,pos\r\n') + part('2,bad,neg\r\n'))
  with pytest.warns(UserWarning, match=r'repeat the header .*line 3'):
    recs = [r for _, _, r in readers.iter_records(str(p), 'csv', ['text', 'label'])]
  assert recs == [{'text': 'fine', 'label': 'pos'}, {'text': 'bad', 'label': 'neg'}]
  c = tmp_path / 'joined.conll'
  doc = '\ufeff-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n'
  c.write_bytes((doc + doc).encode('utf-8'))
  sents = conll.read_conll(str(c))
  assert sents.sentences == [["EU", "rejects"]] * 2 and sents.tags == [["B-ORG", "O"]] * 2
  # a BOM inside a line is text (U+FEFF, the zero-width no-break space), not a mark
  assert readers.decode_bytes('a\ufeffb\r\n\ufeffc'.encode('utf-8'), 'x') == 'a\ufeffb\nc'


def test_non_utf8_names_file_and_line(tmp_path):
  p = tmp_path / 'latin.txt'
  p.write_bytes('ok line\nsecond\ncaf\xe9 au lait\n'.encode('latin-1'))
  with pytest.raises(DataError, match=r'latin\.txt:3: bytes are not valid utf-8'):
    docs(kind='text', path=str(p))
  assert docs(kind='text', path=str(p), encoding='latin-1')[2] == 'café au lait'
  assert docs(kind='text', path=str(p), encoding_fallback='latin-1')[2] == 'café au lait'


def test_jsonl_and_errors(tmp_path):
  p = tmp_path / 'd.jsonl'
  p.write_text(json.dumps({'text': 'hello world', 'y': 1}) + '\n\n' +
               json.dumps({'text': 'again'}) + '\n', encoding='utf-8')
  assert docs(kind='jsonl', path=str(p)) == ['hello world', 'again']
  with pytest.raises(DataError, match=r"d\.jsonl:1: no field 'body'"):
    docs(kind='jsonl', path=str(p), field='body')
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"text": "a"}\n{"text": \n', encoding='utf-8')
  with pytest.raises(DataError, match=r'bad\.jsonl:2: invalid JSON'):
    docs(kind='jsonl', path=str(bad))


def test_tsv_written_with_csv_quoting_warns_that_the_quotes_stay(tmp_path):
  """Python's csv and pandas' to_csv(sep='\\t') quote a field holding a quote; TSV is read
  unquoted (a quote is text), so such a file is named rather than read silently."""
  p = tmp_path / 'pairs.tsv'
  p.write_text('source\ttarget\n"He said ""hi""."\t"Er sagte ""hallo""."\n'
               '"Stop!"\tHalt!\n', encoding='utf-8')
  with pytest.warns(UserWarning, match=r'pairs\.tsv: 1 row\(s\) have fields quoted as CSV '
                                       r'writers quote them .*first at line 2'):
    recs = [r for _, _, r in readers.iter_records(str(p), 'tsv', ['source', 'target'])]
  assert recs[0]['source'] == '"He said ""hi""."' and recs[1]['source'] == '"Stop!"'


def test_tsv_by_header_and_index(tmp_path):
  p = tmp_path / 't.tsv'
  p.write_text('sentence\tlabel\ngood film\t1\nbad film\t0\n', encoding='utf-8')
  assert docs(kind='tsv', path=str(p), field='sentence') == ['good film', 'bad film']
  assert docs(kind='tsv', path=str(p), field='1') == ['label', '1', '0']
  with pytest.raises(DataError, match="no column named 'text'"):
    docs(kind='tsv', path=str(p), field='text')


def test_paths_dir_glob_list_missing(tmp_path):
  for name in ('b.txt', 'a.txt', 'skip.md'):
    (tmp_path / name).write_text(name, encoding='utf-8')
  assert docs(kind='text', path=str(tmp_path)) == ['a.txt', 'b.txt']
  assert docs(kind='text', path=str(tmp_path / '*.md')) == ['skip.md']
  assert docs(kind='text', path=f'{tmp_path}/b.txt,{tmp_path}/a.txt') == ['b.txt', 'a.txt']
  with pytest.raises(DataError, match='no such file or directory: .*nope.txt'):
    docs(kind='text', path=str(tmp_path / 'nope.txt'))
  with pytest.raises(DataError, match='no file matches'):
    docs(kind='text', path=str(tmp_path / '*.xyz'))
  with pytest.raises(DataError, match="gensim ships no test file named 'nope.cor'"):
    docs(kind='text', path='gensim:nope.cor')


def test_wiki_dump_reader():
  out = docs(kind='wiki',
             path='gensim:enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2')
  assert len(out) > 50
  assert not any(d.lstrip().upper().startswith('#REDIRECT') for d in out)
  assert not any('[[' in d for d in out[:20])  # markup stripped


def test_plain_text_read_as_a_wiki_dump_says_which_kind_reads_it(tmp_path):
  p = tmp_path / 'corpus.txt'
  p.write_text('plain text, no XML\n', encoding='utf-8')
  with pytest.raises(DataError, match=r"corpus\.txt: not a MediaWiki XML dump .*set "
                                      r"data\.kind='text' for plain text"):
    docs(kind='wiki', path=str(p))


def test_tfds_missing_dataset_fails_fast(tmp_path):
  t0 = time.perf_counter()
  with pytest.raises(DataError, match="TFDS dataset 'imdb_reviews' is not prepared .*"
                                      "download_and_prepare\\(file_format='array_record'\\)"):
    docs(kind='tfds', path='imdb_reviews', data_dir=str(tmp_path))
  assert time.perf_counter() - t0 < 30  # TFDS alone would retry downloads for minutes
  with pytest.raises(DataError, match="TFDS has no dataset 'no_such_dataset_xyz'"):
    docs(kind='tfds', path='no_such_dataset_xyz', data_dir=str(tmp_path))


def test_tokenize_keeps_inner_apostrophes_and_unicode():
  assert tokenize("Don't STOP: café-au-lait, o'clock 42!") == [
      "don't", 'stop', 'café', 'au', 'lait', "o'clock", '42']


def test_turkish_dotted_capital_i_lowercases_to_i_and_bad_fallbacks_are_named(tmp_path):
  from translearn_jax.data.vocab import fold
  assert tokenize('İstanbul istanbul İZMİR') == ['istanbul', 'istanbul', 'izmir']
  # Chinese characters a word each (a clause is no word); other scripts as before
  assert tokenize('今天天气很好，我们去公园。ABC 2024年') == [
      '今', '天', '天', '气', '很', '好', '我', '们', '去', '公', '园', 'abc', '2024', '年']
  assert fold('İstanbul') == 'istanbul'
  p = tmp_path / 'c.txt'
  p.write_bytes(b'ok\n\x81 \xff\n')
  with pytest.raises(DataError, match=r"unknown encoding 'latin1x' \(data\.encoding_fallback\)"):
    readers.read_text(str(p), 'utf-8', 'latin1x')
  with pytest.raises(DataError, match=r"c\.txt:2: bytes are valid neither as utf-8 nor as cp1252"):
    readers.read_text(str(p), 'utf-8', 'cp1252')
  # the fallback reads only the lines that are not valid UTF-8: the others keep their text
  p.write_bytes('Книга дом\ncafé\n'.encode() + 'naïve\n'.encode('latin-1'))
  assert readers.read_text(str(p), 'utf-8', 'latin-1') == 'Книга дом\ncafé\nnaïve\n'


def test_wiki_redirects_in_any_language_and_gzip_dumps(tmp_path):
  import gzip
  page = ('<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><id>{i}</id><text>{b}'
          '</text></revision></page>')
  xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"><siteinfo><sitename>x'
         '</sitename></siteinfo>' + page.format(t='A', i=1, b='Ein Text über Berlin.')
         + page.format(t='B', i=2, b='#WEITERLEITUNG [[A]]')
         + page.format(t='C', i=3, b='#重定向 [[A]]') + '</mediawiki>')
  (tmp_path / 'dump.xml.gz').write_bytes(gzip.compress(xml.encode('utf-8')))
  docs = list(readers.read_documents(readers.TextSpec(kind='wiki',
                                                      path=str(tmp_path / 'dump.xml.gz'))))
  assert [d.strip() for d in docs] == ['Ein Text über Berlin.']


def test_tokenize_keeps_combining_marks_inside_words():
  import unicodedata
  # Devanagari vowel signs and virama, Arabic vowel points: marks, not word breaks
  assert tokenize('हिन्दी भाषा, कि') == ['हिन्दी', 'भाषा', 'कि']
  assert tokenize('كِتَاب جميل') == ['كِتَاب', 'جميل']
  # decomposed accents are the composed word (NFC), so they meet the same vocabulary row
  assert tokenize(unicodedata.normalize('NFD', 'Café DÉJÀ vu')) == ['café', 'déjà', 'vu']
  assert tokenize('e\u0301_x') == ['é', 'x']


def test_vocab_min_count_max_size_order():
  v = Vocabulary.from_counts({'a': 5, 'b': 9, 'c': 5, 'd': 1}, min_count=2)
  assert v.words == ['b', 'a', 'c'] and v.counts.tolist() == [9, 5, 5]
  assert Vocabulary.from_counts({'a': 5, 'b': 9, 'c': 5}, max_size=2).words == ['b', 'a']
  with pytest.raises(DataError, match='vocabulary of corpus is empty.*min_count=10'):
    Vocabulary.from_counts({'a': 5}, min_count=10)


def test_encode_corpus_drops_oov_and_marks_documents(tmp_path):
  c = encode_corpus(['x a b a', 'b a c', 'zzz'], min_count=2)
  assert c.vocab.words == ['a', 'b']
  assert [c.vocab.words[i] for i in c.ids] == ['a', 'b', 'a', 'b', 'a']
  assert c.segments.tolist() == [0, 0, 0, 1, 1]
  assert c.raw_words == 8
  with pytest.raises(DataError, match='empty'):
    encode_corpus(['', '  ...  '])
  split = encode_corpus([' '.join(['w'] * 25)], min_count=1, max_document_words=10)
  assert np.bincount(split.segments).tolist() == [10, 10, 5]


def test_vocab_save_load_roundtrip(tmp_path):
  v = Vocabulary.from_counts({'émigré': 3, 'b': 2})
  v.save(str(tmp_path / 'v.tsv'))
  w = Vocabulary.load(str(tmp_path / 'v.tsv'))
  assert w.words == v.words and w.counts.tolist() == v.counts.tolist()


def test_tfds_prepared_dataset_reads_without_tensorflow(tmp_path):
  from tfds_tiny_text.tiny_text_dataset_builder import TEXTS, Builder
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  out = docs(kind='tfds', path='tiny_text', data_dir=str(tmp_path), field='text')
  assert out == TEXTS
  with pytest.raises(DataError, match="record 0 has no feature 'body'"):
    docs(kind='tfds', path='tiny_text', data_dir=str(tmp_path), field='body')
  import sys
  assert 'tensorflow' not in sys.modules  # TFDS ran on its own


def test_valid_fraction_of_few_documents_warns_how_much_it_holds_out():
  from translearn_jax.data.lm_data import held_out_mask
  with pytest.warns(UserWarning, match=r'valid_fraction=0\.05 of 3 documents holds out 1 '
                                       r'\(33% of them\)'):
    assert held_out_mask(3, 0.05, 0).sum() == 1
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert held_out_mask(1000, 0.05, 0).sum() == 50


def test_tokenizer_vocab_size_below_what_the_corpus_needs_names_the_field():
  from translearn_jax.data.tokenizer import Tokenizer
  with pytest.raises(DataError, match=r'tokenizer\.vocab_size=100 is below the \d+ pieces '
                                      r'this corpus needs at least.*set tokenizer\.vocab_size >='):
    Tokenizer.train(['привет мир как дела'] * 20, 100)


def test_tfds_text_from_a_feature_that_is_no_text_is_an_error(tmp_path):
  from tfds_tiny_labelled.tiny_labelled_dataset_builder import Builder
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  with pytest.raises(DataError, match=r"TFDS 'tiny_labelled' split 'train' record 0: feature "
                                      r"'label' is \w+, not text"):
    docs(kind='tfds', path='tiny_labelled', data_dir=str(tmp_path), field='label')
  assert docs(kind='tfds', path='tiny_labelled', data_dir=str(tmp_path), field='sentence')


def test_tfds_labelled_splits_for_classification(tmp_path):
  """`data.kind='tfds'` for classification: ClassLabel names kept, predefined TFDS splits,
  batched reads; an unlabelled split (-1) is one clear error."""
  import ml_collections
  from tfds_tiny_labelled.tiny_labelled_dataset_builder import NEG, POS, Builder
  from translearn_jax.data import labelled
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  cfg = ml_collections.ConfigDict(dict(
      kind='tfds', path='tiny_labelled', data_dir=str(tmp_path), text_field='sentence',
      label_field='label', dev_path='validation', test_path='validation', split='0.8,0.1,0.1',
      split_seed=0))
  splits = labelled.read_splits(cfg)
  train = splits['train']
  assert train.label_names == ['negative', 'positive'] and len(train.texts) == 24
  assert sorted(zip(train.texts, train.labels.tolist())) == sorted(
      [(t, 1) for t in POS * 3] + [(t, 0) for t in NEG * 3])
  dev = splits['dev']
  assert sorted(zip(dev.texts, dev.labels.tolist())) == sorted(
      [(t, 1) for t in POS] + [(t, 0) for t in NEG])          # TFDS orders records by key hash
  cfg.dev_path = cfg.test_path = ''
  assert sum(len(s.texts) for s in labelled.read_splits(cfg).values()) == 24   # cut by fractions
  cfg.dev_path, cfg.test_path = 'validation', 'test'
  with pytest.raises(DataError, match=r"TFDS 'tiny_labelled' split 'test' record \d: label -1 "
                                      r"is no class of \['negative', 'positive'\]"):
    labelled.read_splits(cfg)
  cfg.test_path, cfg.label_field = 'validation', 'polarity'
  with pytest.raises(DataError, match="TFDS 'tiny_labelled' has no feature 'polarity'"):
    labelled.read_splits(cfg)


def test_tfds_tagging_corpus_shaped_like_conll2003(tmp_path):
  """Tagging reads TFDS token/tag sequences (ClassLabel names), as the CoNLL files."""
  from tfds_tiny_ner.tiny_ner_dataset_builder import SENTENCES, Builder
  from translearn_jax.data import conll
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  corpus = conll.read_tfds('tiny_ner', 'validation', data_dir=str(tmp_path))
  assert sorted(zip(map(tuple, corpus.sentences), map(tuple, corpus.tags))) == sorted(
      (tuple(w), tuple(t)) for w, t in SENTENCES)
  assert corpus.path == 'tfds:tiny_ner/validation'
  with pytest.raises(DataError, match="TFDS 'tiny_ner' has no feature 'labels'"):
    conll.read_tfds('tiny_ner', 'train', tags_field='labels', data_dir=str(tmp_path))


def test_csv_records_follow_rfc4180_and_name_the_line_a_row_starts_on(tmp_path):
  """Quoted commas, doubled quotes and line breaks inside a field are one cell (as Python's
  csv reads them); header names or column numbers choose fields; a bad row is named by the
  line it starts on."""
  import csv
  import io
  rows = [['label', 'title', 'body'], ['3', 'Wall St., again', 'He said "no"\nthen left'],
          ['1', 'Plain', 'x'], ['2', '', 'only a body']]
  buf = io.StringIO()
  csv.writer(buf).writerows(rows)
  p = tmp_path / 'news.csv'
  p.write_text(buf.getvalue(), encoding='utf-8')
  got = list(readers.iter_records(str(p), 'csv', ['title', 'body']))
  assert [(n, r['title'], r['body']) for _, n, r in got] == [
      (2, 'Wall St., again', 'He said "no"\nthen left'), (4, 'Plain', 'x'), (5, '', 'only a body')]
  headless = tmp_path / 'ag.csv'                 # AG News' layout: no header, label first
  headless.write_text(buf.getvalue().split('\n', 1)[1], encoding='utf-8')
  assert [r['0'] for _, _, r in readers.iter_records(str(headless), 'csv', ['0', '2'])] == \
      ['3', '1', '2']
  assert [d for d in docs(kind='csv', path=str(p), field='title')] == \
      ['Wall St., again', 'Plain', '']
  bad = tmp_path / 'bad.csv'
  bad.write_text('text,label\n"a, b",1\n"two\nlines",0\nc,d,1\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'bad\.csv:5: has 3 comma-separated columns but the '
                                      r'header has 2 \(an unquoted comma inside a field\?\)'):
    list(readers.iter_records(str(bad), 'csv', ['text', 'label']))
  quote = tmp_path / 'quote.csv'
  quote.write_text('text,label\nok,1\n"a"b,1\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'quote\.csv:3: not readable as CSV'):
    list(readers.iter_records(str(quote), 'csv', ['text', 'label']))
  with pytest.raises(DataError, match=r"news\.csv:1: no column named 'text' in header"):
    list(readers.iter_records(str(p), 'csv', ['text']))


def test_labelled_csv_with_several_text_fields(tmp_path):
  """AG News as distributed: headerless CSV, class number first, title and description
  joined in order; the label field cannot also be a text field."""
  from translearn_jax.data import labelled
  from translearn_jax.errors import ConfigError
  p = tmp_path / 'train.csv'
  p.write_text('"3","Wall St. Bears","Short-sellers, Wall Street\'s dwindling band"\n'
               '"10","Title only",""\n"2"," ","Body only"\n', encoding='utf-8')
  lt = labelled.read_fields('csv', str(p), '1,2', '0')
  assert lt.texts == ["Wall St. Bears Short-sellers, Wall Street's dwindling band",
                      'Title only', 'Body only']
  assert lt.label_names == ['2', '3', '10'] and list(lt.labels) == [1, 2, 0]
  for field, match in (('0,1', "label_field '0' is also a text field"),
                       ('1,,2', 'an empty field name'), ('1,1', 'a field named twice')):
    with pytest.raises(ConfigError, match=match):
      labelled.read_fields('csv', str(p), field, '0')


def test_csv_long_fields_and_rows_of_empty_cells(tmp_path):
  """A field longer than the csv module's default limit (128 KiB) is read; a headed CSV whose
  every row is empty cells is one error, not a traceback."""
  big = tmp_path / 'big.csv'
  body = 'word ' * 40000
  big.write_text(f'text,label\n"{body}",1\n', encoding='utf-8')
  assert [r['text'] for _, _, r in readers.iter_records(str(big), 'csv', ['text'])] == [body]
  empty = tmp_path / 'cells.csv'
  empty.write_text(',,\n,,\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'cells\.csv:1: no header row'):
    list(readers.iter_records(str(empty), 'csv', ['text', 'label']))


def test_a_small_class_always_has_a_training_example_and_empty_texts_are_named(tmp_path):
  """data.split fractions rounded a one- or two-example class's training share to none: it
  was scored in dev/test, never trained on, silently (a review). Empty texts are counted in
  a warning; a split of nothing else is an error."""
  from translearn_jax.data import labelled
  labels = np.array([0] * 40 + [1] * 40 + [2])
  for fractions in ((0.5, 0.25, 0.25), (0.4, 0.1, 0.5), (0.8, 0.1, 0.1)):
    for seed in range(5):
      tr, dv, te = labelled.split_indices(labels, fractions, seed)
      assert 80 in tr and len(set(tr) | set(dv) | set(te)) == 81
      assert not (set(tr) & set(dv) or set(dv) & set(te) or set(tr) & set(te))
  big = np.repeat(np.arange(2), 500)
  a = labelled.split_indices(big, (0.8, 0.1, 0.1), 0)
  assert [len(x) for x in a] == [800, 100, 100]           # large classes: as before
  rows = [{'text': t, 'label': l} for t, l in
          [('good film', 'pos'), ('', 'neg'), ('bad film', 'neg'), ('   ', 'pos')] * 5]
  path = tmp_path / 'd.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  cfg = ml_collections.ConfigDict({'kind': 'jsonl', 'path': str(path), 'text_field': 'text',
                                   'label_field': 'label', 'split': '0.6,0.2,0.2',
                                   'split_seed': 0, 'encoding': 'utf-8'})
  with pytest.warns(UserWarning, match=r'texts are empty .*classified from nothing'):
    labelled.read_splits(cfg)
  path.write_text(''.join(json.dumps({**r, 'text': ''}) + '\n' for r in rows))
  with pytest.raises(DataError, match=r'every text of the train split is empty'):
    labelled.read_splits(cfg)
