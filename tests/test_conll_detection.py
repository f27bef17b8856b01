"""`conll.looks_like_conll` (how `translearn predict` decides that a tagger's input is
CoNLL): the file's start is decoded as the readers decode the whole file."""

import pytest

from translearn_jax.data import conll
from translearn_jax.errors import DataError

CONLL = 'the O\nparis B-LOC\nsaid O\n\nmary B-PER\nsmith I-PER\nlaughed O\n'


def test_utf16_and_cr_only_conll_files_are_detected(tmp_path):
  utf8 = tmp_path / 'a.txt'
  utf8.write_text(CONLL, encoding='utf-8')
  assert conll.looks_like_conll(str(utf8))
  u16 = tmp_path / 'u16.txt'                      # Notepad / Excel "Unicode text": BOM
  u16.write_bytes(CONLL.encode('utf-16'))
  assert conll.read_conll(str(u16)).sentences[1] == ['mary', 'smith', 'laughed']
  assert conll.looks_like_conll(str(u16))
  cr = tmp_path / 'cr.txt'                        # classic Mac line ends
  cr.write_bytes(CONLL.replace('\n', '\r').encode())
  assert len(conll.read_conll(str(cr)).sentences) == 2
  assert conll.looks_like_conll(str(cr))
  assert not conll.looks_like_conll(str(tmp_path / 'none.txt'))


def test_tag_column_other_than_last(tmp_path):
  f = tmp_path / 'mid.txt'                        # token TAG POS, trained with tag_column=1
  f.write_text(''.join(l + ' NN\n' if l else '\n' for l in CONLL.split('\n')[:-1]))
  assert not conll.looks_like_conll(str(f))
  assert conll.looks_like_conll(str(f), tag_column=1)


def test_unknown_encoding_is_a_data_error(tmp_path):
  f = tmp_path / 'a.txt'
  f.write_text(CONLL)
  with pytest.raises(DataError, match='unknown encoding'):
    conll.looks_like_conll(str(f), 'no-such-codec')


def test_prediction_input_has_the_sentences_evaluation_reads(tmp_path):
  """JNLPBA's one-column `###MEDLINE:...` lines above a tagged sentence are comments for
  prediction as for `read_conll` (they were sentences of their own, written back with one
  column fewer than the others, which conlleval refuses); a file of tokens alone keeps a
  leading `#hashtag` as a token."""
  f = tmp_path / 'Genia4EReval1.iob2'
  f.write_text('###MEDLINE:96206025\n\nIL-2\tB-DNA\ngene\tI-DNA\n\n###MEDLINE:1\n\n'
               '#\tO\nx\tO\n', encoding='utf-8')
  doc = conll.read_token_lines(str(f))
  assert doc.sentences == conll.read_conll(str(f)).sentences == [['IL-2', 'gene'], ['#', 'x']]
  out = conll.with_predictions(doc, [['B-DNA', 'I-DNA'], ['O', 'O']])
  assert out == '\nIL-2\tB-DNA\tB-DNA\ngene\tI-DNA\tI-DNA\n\n\n#\tO\tO\nx\tO\tO\n'
  tokens = tmp_path / 'tweets.txt'
  tokens.write_text('#hashtag\nrocks\n\n# sent_id = 2\nx\n', encoding='utf-8')
  assert conll.read_token_lines(str(tokens)).sentences == [['#hashtag', 'rocks'], ['x']]


def test_prefixed_tags_read_as_io_are_warned_about_and_io_types_are_not(tmp_path):
  """Read with scheme 'io', a file whose every tag is prefixed (B-PER, I-PER) would score
  types 'B-PER' and 'I-PER': a warning names the file and the fix. IO types (Few-NERD's
  `person-actor`) and prefixed files read as prefixed say nothing."""
  import warnings
  bio = tmp_path / 'bio.txt'
  bio.write_text(CONLL, encoding='utf-8')
  with pytest.warns(UserWarning, match=r"bio\.txt: every tag is prefixed \(B-LOC, B-PER, "
                                       r"I-PER\).*Leave data\.tag_scheme empty"):
    read = conll.read_conll(str(bio), scheme='io')
  assert read.tags[1] == ['B-B-PER', 'B-I-PER', 'O']     # what the warning is about
  io = tmp_path / 'io.txt'
  io.write_text('the O\nparis location-GPE\n\nmary person-actor\nsmith person-actor\n',
                encoding='utf-8')
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert conll.read_conll(str(io), scheme='io').tags[1] == ['B-person-actor', 'I-person-actor']
    conll.read_conll(str(bio))


def test_a_stray_untagged_line_leaves_a_conll_file_conll(tmp_path):
  """One line without its tag (a review's edit of a CoNLL-2002 file) made predict read the
  whole file as one sentence a line, tagging the gold tags as words, with exit 0. Nine in
  ten tagged lines are CoNLL; a short file must be tagged throughout; sentences are not."""
  lines = [f'w{i} {"B-LOC" if i % 3 else "O"}' if i % 7 else '' for i in range(1, 40)]
  lines[10] = 'Kyoto'                                         # its tag lost
  f = tmp_path / 'a.txt'
  f.write_text('\n'.join(lines) + '\n')
  assert conll.looks_like_conll(str(f))
  lines[11] = lines[12] = lines[13] = lines[15] = 'Osaka'    # 5 of 34 untagged: not CoNLL
  f.write_text('\n'.join(lines) + '\n')
  assert not conll.looks_like_conll(str(f))
  short = tmp_path / 'short.txt'
  short.write_text('the O\nparis\nsaid O\n\n')
  assert not conll.looks_like_conll(str(short))
  sentences = tmp_path / 's.txt'
  sentences.write_text('\n'.join(['We went to Paris', 'She said O', '', 'It rained'] * 5))
  assert not conll.looks_like_conll(str(sentences))


def test_a_taggers_text_input_splits_words_as_conll_lines_do():
  """At ASCII whitespace only: a no-break or ideographic space is inside a CoNLL token, so
  text input keeps it there too (str.split cut 'Nueva\\u00a0York' in two)."""
  assert conll.split_words('Nueva\u00a0York es\tbonita \u3000x') == [
      'Nueva\u00a0York', 'es', 'bonita', '\u3000x']
  assert conll._columns('Nueva\u00a0York B-LOC') == ['Nueva\u00a0York', 'B-LOC']
  assert conll.split_words('  a \r\n b\x0bc ') == ['a', 'b', 'c']
