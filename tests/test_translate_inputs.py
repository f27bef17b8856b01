"""`translate`'s inputs: a JSONL/TSV/CSV file of the layout a seq2seq run trained on is read
by its source field, never translated as raw lines of JSON or columns."""

import json

import pytest

from translearn_jax.errors import DataError
from translearn_jax.serving import translate


def _run_dir(tmp_path, data: dict):
  d = tmp_path / 'run'
  d.mkdir()
  (d / 'config.json').write_text(json.dumps({'family': 'seq2seq', 'data': data}))
  return str(d)


def test_jsonl_input_is_read_by_the_trained_source_field(tmp_path):
  run = _run_dir(tmp_path, {'kind': 'jsonl', 'source_field': 'translation.fr'})
  f = tmp_path / 'test.jsonl'
  f.write_text(''.join(json.dumps({'id': i, 'translation': {'fr': fr, 'en': en}}) + '\n'
                       for i, (fr, en) in enumerate([('Le chat.', 'The cat.'),
                                                     ('Un chien\nnoir.', 'A black dog.')])))
  assert translate.read_sources(run, str(f)) == ['Le chat.', 'Un chien\nnoir.']


def test_tsv_input_is_read_by_the_trained_column(tmp_path):
  run = _run_dir(tmp_path, {'kind': 'tsv', 'source_field': 'document'})
  f = tmp_path / 'test.tsv'
  f.write_text('summary\tdocument\nshort\tA long document.\n')
  assert translate.read_sources(run, str(f)) == ['A long document.']


def test_records_for_a_model_trained_on_aligned_text_are_refused(tmp_path):
  run = _run_dir(tmp_path, {'kind': 'text', 'source_field': 'source'})
  f = tmp_path / 'test.jsonl'
  f.write_text(json.dumps({'source': 'x', 'target': 'y'}) + '\n')
  with pytest.raises(DataError, match='one source a line'):
    translate.read_sources(run, str(f))
  txt = tmp_path / 'test.txt'                   # plain lines: as before
  txt.write_text('{"source": "x"}\n\nb\n')
  assert translate.read_sources(run, str(txt)) == ['{"source": "x"}', '', 'b']
