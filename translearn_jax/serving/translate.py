"""Translations (or summaries) of every line of a file by a saved seq2seq model (`translate_file`).

`model_dir` is a saved seq2seq model (`workdir/model` of a seq2seq run), or a
seq2seq run directory itself (its newest checkpoint, through
`transfer.sources.load`). Sources are encoded and decoded by the functions the
run's evaluation uses (`generation.seq2seq_decode.encode_sources` /
`translate`: cut to `max_source_len` pieces, sorted by length, batches of
`batch_size`), with the run's `eval.beam`, `eval.length_penalty` and
`max_target_len` unless given, so the run's `hypotheses.test.txt` is what
this writes for its test sources. A blank input line gives a blank output
line (it is not decoded). Output: one line per input line, written
atomically.
"""

from __future__ import annotations

import os
import re
import time

from translearn_jax.data import readers
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.generation import seq2seq_decode
from translearn_jax.models import seq2seq as s2s_models
from translearn_jax.serving.saved_model import MODEL_JSON, load, read_meta, trained_data_config
from translearn_jax.serving.predict import (check_output, format_of, read_lines, require_file,
                                             write_output)
from translearn_jax.transfer import sources


# Every character Python's str.splitlines breaks a line at (CR, LF, VT, FF, FS, GS, RS, NEL,
# LS, PS): a hypothesis holding one (byte-fallback output can) must not split its line.
_LINE_BREAKS = re.compile('[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+')


def one_line(text: str) -> str:
  """A hypothesis as one output line (line-breaking characters inside it become spaces)."""
  return _LINE_BREAKS.sub(' ', text)


def write_lines(path: str, lines) -> None:
  write_output(path, ''.join(one_line(h) + '\n' for h in lines))


def load_seq2seq(model_dir: str):
  """(model config, params, tokenizer, defaults {beam, length_penalty, max_source_len,
  max_target_len, source_lang, data: the `data` config it was trained with, {} when it
  does not say}) of a saved seq2seq model or a seq2seq run directory."""
  has = lambda name: os.path.exists(os.path.join(model_dir, name))
  if os.path.isdir(model_dir) and not has(MODEL_JSON) and has('config.json'):
    src = sources.load('seq2seq', model_dir, field='model_dir')
    c = src.run_config
    ev = c.get('eval') or {}              # an imported checkpoint's run has no eval group
    return src.model_config, src.params, src.tokenizer, {
        'beam': ev.get('beam', 4), 'length_penalty': ev.get('length_penalty', 0.6),
        'length_penalty_form': ev.get('length_penalty_form', 'gnmt'),
        'min_length': ev.get('min_length', 0),
        'no_repeat_ngram_size': ev.get('no_repeat_ngram_size', 0),
        'early_stopping': ev.get('early_stopping', 'never'),
        'max_source_len': c.max_source_len, 'max_target_len': c.max_target_len,
        'source_lang': (c.get('tokenizer') or {}).get('source_lang', ''),
        'data': trained_data_config({'provenance': {'config': c.to_dict()}})}
  meta = read_meta(model_dir)
  if meta['task'] != 'seq2seq':
    raise DataError(f'{model_dir}: a {meta["task"]} model; translate_file takes a seq2seq '
                    'model (predict_file runs a classifier or tagger)')
  m = load(model_dir)
  return m.module.config, m.params, m.tokenizer, {**m.inputs, 'data': trained_data_config(meta)}


def _trained_records(data: dict) -> tuple[str, bool]:
  """(the source field, `data.source_field`, a run read its TSV/CSV/JSONL pairs from, ''
  when it read aligned text files or its `data` config does not say; whether it skipped a
  header row above columns given by number, `data.header='yes'`)."""
  if data.get('kind') in readers.RECORD_KINDS and isinstance(data.get('source_field'), str):
    return data['source_field'], data.get('header') == 'yes'
  return '', False


def read_sources(model_dir: str, data: dict, input_path: str, encoding: str = 'utf-8',
                 header=None) -> list[str]:
  """The sources of `input_path`: one a line; a .jsonl/.json, .tsv or .csv file (the
  layouts seq2seq runs train on) is read record by record, the text in the source field
  the run read (`data.source_field` of `data`, the `data` config the model `model_dir` was
  trained with), never as raw lines of JSON or columns. A field given by column number
  reads the file without a header row unless `header` (None: as training read its files)."""
  kind = format_of(input_path)
  if kind not in readers.RECORD_KINDS:
    return read_lines(input_path, encoding)
  field, trained_header = _trained_records(data)
  if not field:
    raise DataError(f'{input_path}: a {kind} file, and {model_dir} was trained on aligned text '
                    'files: give one source a line (a .txt file), not its records')
  require_file(input_path)
  skip = kind != 'jsonl' and readers.by_index([field]) and (
      trained_header if header is None else bool(header))
  return [rec[field] for _, _, rec in readers.iter_records(input_path, kind, [field], encoding,
                                                           header=skip)]


def translate_file(model_dir: str, input_path: str, output_path: str, *, beam=None,
                   length_penalty=None, batch_size: int = 64, max_len=None,
                   progress: bool = False, encoding: str = 'utf-8', source_lang=None,
                   target_lang=None, header=None, length_penalty_form=None,
                   min_length=None, no_repeat_ngram_size=None, early_stopping=None) -> dict:
  """Writes the translation of every source of `input_path` (a line; a record of a
  .jsonl/.tsv/.csv file, `read_sources`) to `output_path`, one a line; returns a summary
  (examples, beam, length_penalty, max_len, output, seconds). `length_penalty_form`: 'gnmt'
  or 'length' (`seq2seq_decode._length_penalty`; None: the run's).
  `source_lang` / `target_lang`: language codes of a multilingual checkpoint (mBART:
  `en_XX`, `ro_RO`), as transformers' `src_lang` and `tgt_lang` (the target's sets where
  decoding starts, `seq2seq_decode.language_start`); None: the run's own."""
  t0 = time.perf_counter()
  if batch_size < 1:
    raise ConfigError(f'batch_size must be >= 1, got {batch_size}')
  check_output(output_path, input_path)
  cfg, params, tok, defaults = load_seq2seq(model_dir)
  given_source = source_lang is not None
  if source_lang is None:
    source_lang = defaults.get('source_lang', '')
  if target_lang:
    cfg = cfg.replace(**seq2seq_decode.language_start(tok, target_lang, '--target_lang'))
  beam = defaults['beam'] if beam is None else beam
  alpha = defaults['length_penalty'] if length_penalty is None else length_penalty
  max_len = defaults['max_target_len'] if max_len is None else max_len
  form = (defaults.get('length_penalty_form', 'gnmt') if length_penalty_form is None
          else length_penalty_form)
  seq2seq_decode.check_penalty_form(form, 'length_penalty_form')
  min_len = defaults.get('min_length', 0) if min_length is None else min_length
  ngram = (defaults.get('no_repeat_ngram_size', 0) if no_repeat_ngram_size is None
           else no_repeat_ngram_size)
  seq2seq_decode.check_constraints(min_len, ngram, ('min_length', 'no_repeat_ngram_size'))
  stopping = (defaults.get('early_stopping', 'never') if early_stopping is None
              else early_stopping)
  seq2seq_decode.check_stopping(stopping, 'early_stopping')
  if beam < 1:
    raise ConfigError(f'beam must be >= 1 (1: greedy), got {beam}')
  seq2seq_decode.check_length_penalty(alpha, 'length_penalty')
  if not 1 <= max_len <= cfg.max_len:
    raise ConfigError(f'max_len must be in [1, {cfg.max_len}] (the model\'s positions), '
                      f'got {max_len}')
  lines = read_sources(model_dir, defaults['data'], input_path, encoding, header)
  if not lines:
    raise DataError(f'{input_path}: no input lines')
  real = [i for i, line in enumerate(lines) if line.strip()]
  out = [''] * len(lines)
  n_cut = 0
  if real:
    decode_model = s2s_models.Seq2Seq(cfg.replace(deterministic=True, decode=True))
    src, n_cut = seq2seq_decode.encode_sources(tok, [lines[i] for i in real],
                                        defaults['max_source_len'], source_lang,
                                        '--source_lang' if given_source else
                                        'tokenizer.source_lang')
    hyps = seq2seq_decode.translate(decode_model, params, tok, src, max_len, beam, alpha,
                                    batch_size, progress, form, min_len, ngram, stopping)
    for i, h in zip(real, hyps):
      out[i] = h
  write_lines(output_path, out)
  return {'task': 'seq2seq', 'examples': len(lines), 'beam': beam, 'length_penalty': alpha,
          'length_penalty_form': form, 'min_length': min_len, 'no_repeat_ngram_size': ngram,
          'early_stopping': stopping,
          'max_len': max_len, 'model': model_dir, 'output': output_path,
          'truncated_sources': n_cut, 'max_source_len': defaults['max_source_len'],
          'seconds': time.perf_counter() - t0}
