"""Predictions of a saved classifier or tagger for every example of a file (`predict_file`).

Inputs (`format_of`, 'auto' by the extension: .tsv, .jsonl/.json, else text):
* text: one example a line (a tagger's sentence is split at whitespace); a
  blank line is an (empty) example, so output line k answers input line k;
* TSV/CSV: the text is in column `text_field`, by default the column(s) training read,
  else the header's 'sentence' or 'text' (a header with neither is an error asking for
  `text_field`); columns given by number (a file without a header, as AG News) are read
  without a header row unless `header` (default: as training read its files);
* CoNLL (a tagger; .conll/.iob/.bio/.iobes, a file whose lines read as tokens and tags
  with blank lines between sentences, or `input_format='conll'`): a token a line
  in the column training read, sentences split by blank and `-DOCSTART-` lines, other
  columns (a gold tag) kept; the output is then the same lines with the predicted tag
  appended, which conlleval scores (JSONL for an output named .jsonl, or
  `output_format='jsonl'`);
* JSONL: one object a line (blank lines skipped), the text in `text_field`,
  by default 'text' or 'sentence'; a tagger also reads a `tokens` list of
  words (used when present and `text_field` is not given).

Encoding is the task's own (`downstream.classification.encode_words` /
`encode_pieces`, `downstream.tagging.encode_sentences`) and batches are made
as the task evaluates: sorted by length, each cut to its longest row
(`downstream.task.trimmed_width`), the same jitted function — so with the
task's evaluation batch size (classification 512, tagging 256) a saved model
repeats its run's test predictions exactly.

Output: JSONL, one line per example in input order, written atomically:
* classification: `{"label": name, "probabilities": {name: p, ...}}`;
* tagging: `{"tokens": [...], "tags": [...], "probabilities": [...]}`, the
  probability of each word's predicted tag (the maximum of its softmax); a
  word beyond `max_tokens` is tagged 'O' with probability null, as the task's
  evaluation counts it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np

from translearn_jax.data import conll, labelled, readers
from translearn_jax.data.fields import MISSING, field_value
from translearn_jax.downstream import classification, tagging
from translearn_jax.downstream.task import trimmed_width
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.serving.saved_model import SavedModel, load, read_meta, trained_data_config
from translearn_jax.training.files import atomic_write
from translearn_jax.training.metrics import dumps

FORMATS = ('auto', 'text', 'tsv', 'csv', 'jsonl', 'conll')
OUTPUT_FORMATS = ('auto', 'jsonl', 'conll')
CONLL_SUFFIXES = ('.conll', '.iob', '.bio', '.iobes')
TEXT_FIELDS = {'tsv': ('sentence', 'text'), 'csv': ('sentence', 'text'),
               'jsonl': ('text', 'sentence')}


def format_of(path: str, fmt: str = 'auto') -> str:
  """'text', 'tsv', 'csv' or 'jsonl': `fmt`, or with 'auto' the extension's."""
  if fmt not in FORMATS:
    raise ConfigError(f'input_format must be one of {FORMATS}, got {fmt!r}')
  if fmt != 'auto':
    return fmt
  base = path.lower()
  for z in readers.COMPRESSED_SUFFIXES:  # read decompressed: the format is the inner name's
    base = base[:-len(z)] if base.endswith(z) else base
  ext = os.path.splitext(base)[1]
  if ext in CONLL_SUFFIXES:
    return 'conll'
  return {'.tsv': 'tsv', '.csv': 'csv', '.jsonl': 'jsonl', '.json': 'jsonl'}.get(ext, 'text')


def require_file(path: str) -> None:
  """A `DataError` unless `path` is a regular file (the readers read an input twice: its
  format sniffed, then the whole of it)."""
  if os.path.isfile(path):
    return
  if not os.path.exists(path):
    raise DataError(f'{path}: no such input file')
  raise DataError(f'{path}: is a {"directory" if os.path.isdir(path) else "pipe or device"}, '
                  "not a file (translearn predict/translate copy '-', standard input, or a "
                  'pipe to a file first)')


def read_lines(path: str, encoding: str = 'utf-8') -> list[str]:
  """The lines of a text file (a final newline ends the last line, it adds none)."""
  require_file(path)
  lines = readers.read_text(path, encoding).split('\n')
  return lines[:-1] if lines and lines[-1] == '' else lines


def _trained_fields(trained: str, present) -> Optional[str]:
  """The training text field(s) `trained` if `present` (a header, a JSON object) has each."""
  if not trained:
    return None
  names = labelled.text_fields(trained)
  if isinstance(present, dict):            # a JSON object: dotted names reach inside
    return trained if all(field_value(present, n) is not MISSING
                          for n in names) else None
  return trained if all(n in present for n in names) else None


def _table_texts(path: str, kind: str, field, encoding: str, trained: str = '',
                 header=None):
  """The texts of a TSV/CSV file: the column(s) `field` names (several, comma-separated,
  are joined as training joins them; column numbers read a file without a header row
  unless `header`), else the columns training read (`trained`: column numbers when
  training read a headerless file, else the header's columns of those names), else the
  header's 'sentence' or 'text'."""
  if field is None and trained and readers.by_index(labelled.text_fields(trained)):
    field = trained
  if field is None or not readers.by_index(labelled.text_fields(field)):
    hdr = readers.table_header(path, kind, encoding)
    if field is None:
      field = _trained_fields(trained, hdr)
    if field is None:
      field = next((f for f in TEXT_FIELDS[kind] if f in hdr), None)
      if field is None:
        raise DataError(f'{path}:1: the header names no {" or ".join(TEXT_FIELDS[kind])} '
                        f'column (got {hdr[:5]}); name the text column with text_field '
                        '(--text_field: a name, or 0-based column numbers for a file without '
                        'a header), or read the file as text')
  names = labelled.text_fields(field)
  return [labelled.join_fields(rec, names)
          for _, _, rec in readers.iter_records(path, kind, names, encoding,
                                                header=bool(header))]


def _jsonl_inputs(path: str, field, words: bool, encoding: str, trained: str = '') -> list:
  """The texts (or `words`: word lists) of a JSONL file. The first record decides, as a
  header would, where every record's text is: `field`, else the field(s) training read
  when it has them, else a tagger's 'tokens' list, else 'text' or 'sentence'."""
  out, tokens = [], None
  for n, obj in readers.json_objects(path, read_lines(path, encoding)):
    if tokens is None:                       # the first record
      if field is None and _trained_fields(trained, obj):
        field = trained
      tokens = words and field is None and 'tokens' in obj
      if field is None and not tokens:
        field = next((f for f in TEXT_FIELDS['jsonl'] if f in obj), None)
        if field is None:
          looked = ' or '.join(repr(f) for f in list(TEXT_FIELDS['jsonl'])
                               + (['tokens'] if words else []))
          raise DataError(f'{path}:{n}: no field {looked}')
    if tokens:
      toks = obj.get('tokens')
      if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
        raise DataError(f'{path}:{n}: field "tokens" must be a list of strings (as on the '
                        'first line)' if 'tokens' in obj else
                        f'{path}:{n}: no field "tokens" (the first line has it)')
      out.append(toks)
      continue
    names = labelled.text_fields(field)              # each must be there
    values = {f: field_value(obj, f) for f in names}
    missing = [f for f in names if values[f] is MISSING]
    if missing:
      raise DataError(f'{path}:{n}: no field {missing[0]!r}')
    for name in names:
      if not isinstance(values[name], str):
        raise DataError(f'{path}:{n}: field {name!r} is not a string')
    text = labelled.join_fields(values, names)
    out.append(conll.split_words(text) if words else text)
  return out


def read_inputs(path: str, fmt: str, text_field, words: bool, encoding: str = 'utf-8',
                trained: str = '', header=None) -> list:
  """The examples of `path` (in `encoding`): texts, or (`words`) lists of words. Without
  `text_field`, the field(s) training read (`trained`) when the file has them. TSV/CSV
  columns given by number: `header` says whether the first row is a header to skip."""
  kind = format_of(path, fmt)
  require_file(path)
  if kind == 'jsonl':
    out = _jsonl_inputs(path, text_field, words, encoding, trained)
  else:
    texts = (_table_texts(path, kind, text_field, encoding, trained, header)
             if kind in ('tsv', 'csv') else read_lines(path, encoding))
    out = [conll.split_words(t) for t in texts] if words else texts
  if not out:
    raise DataError(f'{path}: no input examples')
  return out


def _batches(mask: np.ndarray, batch_size: int, progress: bool, what: str):
  """Index arrays of `batch_size` rows of similar length (shortest first), as the tasks
  evaluate."""
  order = np.argsort(mask.sum(1), kind='stable')
  starts = range(0, len(order), batch_size)
  if progress:
    from tqdm import tqdm
    starts = tqdm(starts, unit='batch', desc=what)
  for lo in starts:
    yield order[lo:lo + batch_size]


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits.astype(np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def classify(model: SavedModel, texts: list, batch_size: int,
             progress: bool = False) -> list[dict]:
  spec = model.inputs
  if spec['encoding'] == 'words':
    toks, mask = classification.encode_words(texts, model.vocab, spec['max_tokens'])
  else:
    toks, mask = classification.encode_pieces(texts, model.tokenizer, spec['max_tokens'],
                                              spec['causal'])
  module, labels = model.module, spec['labels']
  apply = classification.jitted_apply(module)   # the task's `_eval`
  out = [None] * len(texts)
  for idx in _batches(mask, batch_size, progress, 'predicting'):
    w = trimmed_width(mask[idx])
    logits = np.asarray(apply(model.params, toks[idx, :w], mask[idx, :w]))
    probs = _softmax(logits)
    for r, i in enumerate(idx):
      out[i] = {'label': labels[int(np.argmax(logits[r]))],
                'probabilities': {name: float(p) for name, p in zip(labels, probs[r])}}
  return out


def tag(model: SavedModel, sentences: list, batch_size: int,
        progress: bool = False) -> tuple[list[dict], int]:
  """(one record per sentence, words beyond max_tokens)."""
  spec = model.inputs
  toks, mask, pos = tagging.encode_sentences(sentences, model.tokenizer, spec['max_tokens'],
                                             spec['causal'])
  module, labels = model.module, spec['labels']
  predict = tagging.jitted_predictions(module)
  out, truncated = [None] * len(sentences), 0
  for idx in _batches(mask, batch_size, progress, 'tagging'):
    w = trimmed_width(mask[idx])
    ids, prob = (np.asarray(a) for a in predict(model.params, toks[idx, :w], mask[idx, :w]))
    for r, i in enumerate(idx):
      at = pos[i, :len(sentences[i])]
      truncated += int((at < 0).sum())
      tags = [labels[ids[r, q]] if q >= 0 else 'O' for q in at]
      out[i] = {'tokens': list(sentences[i]),
                'tags': conll.convert_tags(tags, spec['tag_scheme'])
                if spec.get('tag_scheme') else tags,
                'probabilities': [float(prob[r, q]) if q >= 0 else None for q in at]}
  return out, truncated


def _trained_tag_column(meta: dict) -> int:
  """The CoNLL tag column a saved tagger's training read (`data.tag_column` of its config;
  -1, the last, when the model does not say)."""
  col = trained_data_config(meta).get('tag_column', -1)
  return col if isinstance(col, int) and not isinstance(col, bool) else -1


STDOUT = '-'                   # an output path meaning standard output


def check_output(path: str, input_path: str = '') -> None:
  """An output path that can be written (or `STDOUT`), and not the input (`input_path`)
  itself: checked before any compute (the output replaced the input silently)."""
  if not path:
    raise DataError('the output path is empty')
  if path == STDOUT:
    return
  if input_path and input_path != '-' and os.path.exists(path) and os.path.exists(input_path):
    if os.path.samefile(path, input_path):
      raise DataError(f'{path}: the output is the input file {input_path}; writing it would '
                      'replace the input: name another output')
  if os.path.isdir(path):
    raise DataError(f'{path}: is a directory (the output is a file)')
  if readers.writes_in_place(path):
    return
  d = os.path.dirname(os.path.abspath(readers.write_target(path)))   # a link: its target's
  if not os.path.isdir(d):
    raise DataError(f'{path}: the output directory {d} does not exist')


def write_output(path: str, text: str) -> None:
  """`text` to `path` atomically (`training.files.atomic_write`), or to standard output."""
  check_output(path)
  if path == STDOUT:
    sys.stdout.write(text)
    sys.stdout.flush()
  else:
    atomic_write(path, text)


def write_jsonl(path: str, records: list) -> None:
  write_output(path, ''.join(dumps(r, ensure_ascii=False) + '\n' for r in records))


# The batch size each task evaluates with (`ClassificationTask.accuracy`,
# `TaggingTask.predict`): predicting with it repeats the run's own test computation
# shape for shape, so its predictions exactly; another size agrees up to float rounding.
EVAL_BATCH = {'classification': 512, 'tagging': 256}


def predict_file(model_dir: str, input_path: str, output_path: str, *, batch_size=None,
                 input_format: str = 'auto', text_field=None, progress: bool = False,
                 encoding: str = 'utf-8', header=None, output_format: str = 'auto') -> dict:
  """Writes the predictions of the saved classifier or tagger `model_dir` for every example
  of `input_path` to `output_path`; returns a summary (task, examples, output, ...).
  `batch_size` None: the task's evaluation batch (`EVAL_BATCH`). `header` (TSV/CSV columns
  by number): whether the first row is a header; None: as training read its files.
  A tagger reads CoNLL-layout input (`input_format='conll'`, or by the name: .conll, .iob,
  .bio, .iobes, or any file that reads as CoNLL) from the token column training read;
  `output_format` 'auto' then writes the input back with the predicted tag as a last
  column (`conll.with_predictions`, what conlleval scores) unless the output is named
  .jsonl/.json; 'jsonl' always writes JSONL."""
  t0 = time.perf_counter()
  if batch_size is not None and batch_size < 1:
    raise ConfigError(f'batch_size must be >= 1, got {batch_size}')
  if output_format not in OUTPUT_FORMATS:
    raise ConfigError(f'output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}')
  check_output(output_path, input_path)
  meta = read_meta(model_dir)
  if meta['task'] not in ('classification', 'tagging'):
    raise DataError(f'{model_dir}: a {meta["task"]} model; predict_file takes a classification '
                    'or tagging model (translate_file runs a seq2seq model)')
  words = meta['task'] == 'tagging'
  io = 'io' if words and meta['inputs'].get('tag_scheme') == 'io' else ''   # IO-tagged input
  known = {t[2:] for t in meta['inputs'].get('labels', []) if t != 'O'} if io else None
  kind = format_of(input_path, input_format)
  if (input_format == 'auto' and kind in ('text', 'tsv') and words
      and os.path.isfile(input_path)
      and conll.looks_like_conll(input_path, encoding, tag_column=_trained_tag_column(meta),
                                 scheme=io, known=known)):
    # CoNLL-2003's own eng.testb / test.txt, or BioBERT-style NER train.tsv: not sentences
    print(f'{input_path}: read as CoNLL (a token and a tag a line; --format {kind} reads '
          + ('one sentence a line)' if kind == 'text' else 'a table of sentences)'),
          file=sys.stderr)
    kind = 'conll'
  if kind == 'conll' and not words:
    raise ConfigError(f'{input_path}: CoNLL input is for a tagger; {model_dir} is a '
                      f'{meta["task"]} model')
  if output_format == 'conll' and kind != 'conll':
    raise ConfigError(f"output_format='conll' writes the input's CoNLL lines back with the "
                      f'tags: it needs CoNLL input, and {input_path} is read as {kind}')
  batch_size = batch_size or EVAL_BATCH[meta['task']]
  if header is None:
    header = meta['inputs'].get('header') == 'yes'
  doc = None
  if kind == 'conll':
    require_file(input_path)
    doc = conll.read_token_lines(input_path, encoding, meta['inputs'].get('token_column', 0),
                                 io, known)
    examples = doc.sentences
  else:
    examples = read_inputs(input_path, kind, text_field, words, encoding,
                           meta['inputs'].get('text_field') or '', header)
  model = load(model_dir)
  summary = {'task': model.task, 'examples': len(examples), 'model': model_dir,
             'output': output_path}
  if words:
    records, summary['truncated_words'] = tag(model, examples, batch_size, progress)
  else:
    records = classify(model, examples, batch_size, progress)
  if output_format == 'auto':      # CoNLL back for CoNLL input, unless the name says JSONL
    output_format = ('conll' if doc is not None and not output_path.lower().endswith(
        ('.jsonl', '.json')) else 'jsonl')
  if output_format == 'conll':
    write_output(output_path, conll.with_predictions(doc, [r['tags'] for r in records]))
  else:
    write_jsonl(output_path, records)
  summary['seconds'] = time.perf_counter() - t0
  return summary
