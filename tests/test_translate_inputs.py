"""`translate`'s inputs: a JSONL/TSV/CSV file of the layout a seq2seq run trained on is read
by its source field, never translated as raw lines of JSON or columns."""

import json

import pytest

from translearn_jax.errors import DataError
from translearn_jax.serving import translate


def _model(tmp_path, data: dict, name: str = 'run'):
  """(a model's name, the `data` config it was trained with), as read_sources takes them."""
  return str(tmp_path / name), data


def test_jsonl_input_is_read_by_the_trained_source_field(tmp_path):
  run = _model(tmp_path, {'kind': 'jsonl', 'source_field': 'translation.fr'})
  f = tmp_path / 'test.jsonl'
  f.write_text(''.join(json.dumps({'id': i, 'translation': {'fr': fr, 'en': en}}) + '\n'
                       for i, (fr, en) in enumerate([('Le chat.', 'The cat.'),
                                                     ('Un chien\nnoir.', 'A black dog.')])))
  assert translate.read_sources(*run, str(f)) == ['Le chat.', 'Un chien\nnoir.']


def test_tsv_input_is_read_by_the_trained_column(tmp_path):
  run = _model(tmp_path, {'kind': 'tsv', 'source_field': 'document'})
  f = tmp_path / 'test.tsv'
  f.write_text('summary\tdocument\nshort\tA long document.\n')
  assert translate.read_sources(*run, str(f)) == ['A long document.']


def test_records_for_a_model_trained_on_aligned_text_are_refused(tmp_path):
  run = _model(tmp_path, {'kind': 'text', 'source_field': 'source'})
  f = tmp_path / 'test.jsonl'
  f.write_text(json.dumps({'source': 'x', 'target': 'y'}) + '\n')
  with pytest.raises(DataError, match='one source a line'):
    translate.read_sources(*run, str(f))
  txt = tmp_path / 'test.txt'                   # plain lines: as before
  txt.write_text('{"source": "x"}\n\nb\n')
  assert translate.read_sources(*run, str(txt)) == ['{"source": "x"}', '', 'b']


def test_numbered_columns_and_a_header_row(tmp_path):
  """Pairs by column number: a header row is skipped only when data.header=yes says so;
  'auto' reads it as a pair but warns naming it (nothing tells 'English,French' from a
  pair), 'no' reads it silently; translate follows what training read, or --header."""
  import warnings

  from translearn_jax.data import parallel
  from translearn_jax.errors import ConfigError
  f = tmp_path / 'pairs.csv'
  f.write_text('English words/sentences,French words/sentences\nGo.,Va !\nHi.,Salut !\n')
  read = lambda header: parallel.read_pairs_fields('csv', str(f), '0', '1',   # noqa: E731
                                                   header=header)
  assert read('yes') == [('Go.', 'Va !'), ('Hi.', 'Salut !')]
  with pytest.warns(UserWarning, match=r"pairs.csv:1: .* first pair \('English words/sentences'"
                                       r" -> 'French words/sentences'\).* data.header=yes"):
    assert len(read('auto')) == 3
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert len(read('no')) == 3
  with pytest.raises(ConfigError, match='data.header must be one of'):
    read('maybe')
  with pytest.raises(ConfigError, match='data.header=no: fields .* column numbers'):
    parallel.read_pairs_fields('csv', str(f), 'en', 'fr', header='no')
  run = _model(tmp_path, {'kind': 'csv', 'source_field': '0', 'header': 'yes'})
  assert translate.read_sources(*run, str(f)) == ['Go.', 'Hi.']
  assert translate.read_sources(*run, str(f), header=False)[0] == 'English words/sentences'
  run2 = _model(tmp_path, {'kind': 'csv', 'source_field': '0'}, 'run2')   # an older run
  assert len(translate.read_sources(*run2, str(f))) == 3
  assert translate.read_sources(*run2, str(f), header=True) == ['Go.', 'Hi.']
