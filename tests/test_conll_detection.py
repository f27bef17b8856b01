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
