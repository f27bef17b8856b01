"""Labelled text for downstream classification, and reproducible splits.

* MR sentence polarity (`kind='mr'`): a directory with `rt-polarity.pos` /
  `rt-polarity.neg`, one sentence a line, Latin-1 encoded (Pang & Lee 2005; a file
  that is valid UTF-8, e.g. a re-saved copy, is read as UTF-8).
  It has no official split; `split_indices` makes a stratified, seeded
  train/dev/test split (80/10/10 by default).
* A prepared TFDS dataset (`kind='tfds'`, `path` its name, e.g. 'glue/sst2';
  `data_dir` where it is): the `text_field`/`label_field` features of the
  split `tfds_split` (default 'train'), with `dev_path`/`test_path` naming
  TFDS splits (e.g. 'validation') for a predefined split; `ClassLabel` ids
  keep their names. Read through `tfds.data_source` in batches, no TensorFlow.
* Any TSV/CSV/JSONL file (`kind='tsv'|'csv'|'jsonl'`) with a text field and a label
  field (GLUE SST-2's `sentence`/`label` columns, for instance; without a header, column
  numbers: AG News' CSV is `label_field='0'`, `text_field='1,2'`), split the
  same way — or, with `dev_path` and `test_path`, three files of a predefined
  split (`path` is then the training file). `text_field` may name several fields,
  comma-separated (a title and a body): their texts are joined with a space, in order.

`read_splits(cfg)` gives the train/dev/test splits either way.

TSV/CSV fields named by column number are read without a header row; `data.header`
('auto' | 'yes' | 'no') says whether the files have one. With 'auto', a first row whose
label occurs nowhere else in its file ('Class Index' above labels 1..4) is an error when
every other label is a number, a warning otherwise: a header read as data would be one
more class.

Labels are strings mapped to ids in sorted order (numerically when all are integers); in
JSONL they may also be numbers or booleans (read as their JSON text), while the text
field must be a string. A whole number is one class however it is written (`1`, `1.0`,
`+1`, exactly however long), named (`label_names`, what a saved model predicts) as the
training file first writes it. A malformed row (wrong TSV column count, a null text, an
empty label) is a `DataError` naming the file and line; so are an empty split and
training data of a single class.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import unicodedata
import warnings

import numpy as np

from translearn_jax.data import readers, tfds_source
from translearn_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class LabelledText:
  texts: list
  labels: np.ndarray       # int32 ids into label_names
  label_names: list        # each class as the data writes it ('+1', '1.0', 'positive')
  source: str
  label_keys: list | None = None   # what makes two labels one class ('1' for '+1' and '1.0')

  @property
  def keys(self) -> list:
    return self.label_names if self.label_keys is None else self.label_keys

  def subset(self, idx) -> 'LabelledText':
    return dataclasses.replace(self, texts=[self.texts[i] for i in idx], labels=self.labels[idx])


def read_mr(directory: str, encoding: str = 'utf-8', fallback: str = 'latin-1'
            ) -> LabelledText:
  """MR's two files: `encoding`, or `fallback` for a file that is not valid `encoding`
  (the released files are Latin-1; a re-saved UTF-8 copy reads as UTF-8)."""
  texts, labels = [], []
  for name, label in (('rt-polarity.neg', 0), ('rt-polarity.pos', 1)):
    path = os.path.join(directory, name)
    lines = [l for l in readers.read_text(path, encoding, fallback).split('\n') if l.strip()]
    if not lines:
      raise DataError(f'{path}: no sentences')
    texts.extend(lines)
    labels.extend([label] * len(lines))
  return LabelledText(texts, np.asarray(labels, np.int32), ['negative', 'positive'], directory)


_WHOLE_NUMBER = re.compile(r'[+-]?\d+(?:\.0*)?')


def label_order(names) -> list[str]:
  """Class names in id order: numerically when every name is an integer ('2' before
  '10'), else as sorted strings."""
  names = list(names)
  if all(re.fullmatch(r'-?\d+', n) for n in names):
    return sorted(names, key=int)
  return sorted(names)


def text_fields(text_field: str) -> list[str]:
  """The field names of a `text_field` setting ('title,description': two, joined in order)."""
  names = [f.strip() for f in str(text_field).split(',')]
  if not all(names):
    raise ConfigError(f'text_field {text_field!r}: an empty field name')
  if len(set(names)) < len(names):
    raise ConfigError(f'text_field {text_field!r}: a field named twice')
  return names


def join_fields(rec: dict, names: list[str]) -> str:
  """The text of several fields of a record, joined with a space (empty ones left out)."""
  return ' '.join(t for t in (rec[f].strip() for f in names) if t) if len(names) > 1 \
      else rec[names[0]]




def _class_key(label: str) -> str:
  """The class a label names: a whole number however written ('+1', '1.0', '01' → '1',
  exactly, however long), else the label itself in Unicode NFC."""
  if _WHOLE_NUMBER.fullmatch(label):
    return str(int(label.split('.')[0]))
  return unicodedata.normalize('NFC', label)     # 'négatif' composed or decomposed: one class


def _check_first_row(file: str, rows: list, label_field: str):
  """`header='auto'` with column numbers: a first row whose label, not a number, occurs
  nowhere else in its file reads like a header ('Class Index' above 1..4): an error when
  every other label is a whole number, a warning when every other class has two examples
  or more."""
  n, key = rows[0]
  if len(rows) < 2 or _WHOLE_NUMBER.fullmatch(key) or any(k == key for _, k in rows[1:]):
    return                                   # a header cell is no number
  ask = ('set data.header=yes to skip a header row, or data.header=no to keep this row as '
         'an example')
  others = collections.Counter(k for _, k in rows[1:])
  if all(_WHOLE_NUMBER.fullmatch(k) for k in others):
    raise DataError(f'{file}:{n}: label {key!r} (column {label_field}) is not a number, and '
                    f'every other row\'s is: a header row? {ask}')
  if min(others.values()) > 1:               # the one class of a single example
    warnings.warn(f'{file}:{n}: the first row\'s label {key!r} (column {label_field}) occurs '
                  f'nowhere else in the file: a header row? {ask}', stacklevel=3)


def read_fields(kind: str, path: str, text_field: str, label_field: str,
                encoding: str = 'utf-8', fallback: str = '', header: str = 'auto'
                ) -> LabelledText:
  """The (text, label) records of TSV/CSV/JSONL `path`. TSV/CSV fields given by column
  number are read without a header row unless `header='yes'`; with 'auto', a first row
  that looks like a header is an error (or a warning) asking which it is."""
  if kind not in readers.RECORD_KINDS:
    raise DataError(f"labelled data kind must be 'mr', 'tsv', 'csv', 'jsonl' or 'tfds', "
                    f'got {kind!r}')
  names = text_fields(text_field)
  numbered = readers.numbered_fields(kind, [*names, label_field], header)
  if label_field in names:
    raise ConfigError(f'label_field {label_field!r} is also a text field ({text_field!r})')
  texts, keys, spelling, per_file = [], [], {}, {}
  for file, n, rec in readers.iter_records(path, kind, [*names, label_field], encoding,
                                           fallback, label_fields=[label_field],
                                           header=numbered and header == 'yes'):
    label = rec[label_field].strip()
    if not label:
      raise DataError(f'{file}:{n}: empty label (field {label_field!r})')
    key = _class_key(label)
    spelling.setdefault(key, label)          # a class is named as the file first wrote it
    per_file.setdefault(file, []).append((n, key))
    texts.append(join_fields(rec, names))
    keys.append(key)
  if not texts:
    raise DataError(f'{path}: no labelled examples')
  if numbered and header == 'auto':
    for file, rows in per_file.items():
      _check_first_row(file, rows, label_field)
  order = label_order(set(keys))
  ids = {k: i for i, k in enumerate(order)}
  return LabelledText(texts, np.asarray([ids[k] for k in keys], np.int32),
                      [spelling[k] for k in order], path, order)


def read_tfds(name: str, split: str, text_field: str, label_field: str,
              data_dir: str | None = None) -> LabelledText:
  """The (text, label) records of a prepared TFDS split; `ClassLabel` names kept."""
  names = tfds_source.feature_names(name, label_field, data_dir)
  fields = text_fields(text_field)
  for f in fields:                                          # a missing feature: one error
    tfds_source.feature_names(name, f, data_dir)
  texts, raw = [], []
  for i, rec in tfds_source.records(name, split, data_dir):
    label = rec[label_field]
    if names is not None:
      if not 0 <= int(label) < len(names):
        raise DataError(f'TFDS {name!r} split {split!r} record {i}: label {int(label)} is no '
                        f'class of {names} (an unlabelled split, like GLUE test?)')
      label = names[int(label)]
    raw.append(tfds_source.text(label))
    texts.append(join_fields({f: tfds_source.text(rec[f]) for f in fields}, fields))
  if not texts:
    raise DataError(f'TFDS {name!r} split {split!r}: no examples')
  label_names = names if names is not None else label_order(set(raw))
  ids = {n: i for i, n in enumerate(label_names)}
  return LabelledText(texts, np.asarray([ids[r] for r in raw], np.int32), label_names,
                      f'tfds:{name}/{split}')


def read_labelled(cfg, path: str | None = None) -> LabelledText:
  """The examples of `path` (default `cfg.path`; for TFDS the split name, default
  `cfg.tfds_split`) read as `cfg` says."""
  if cfg.kind == 'tfds':
    return read_tfds(cfg.path, path or cfg.get('tfds_split', 'train'), cfg.text_field,
                     cfg.label_field, cfg.get('data_dir') or None)
  path = cfg.path if path is None else path
  encoding, fallback = readers.config_encodings(cfg)
  if cfg.kind == 'mr':
    return read_mr(path, encoding, fallback or 'latin-1')
  return read_fields(cfg.kind, path, cfg.text_field, cfg.label_field, encoding, fallback,
                     cfg.get('header', 'auto'))


def split_indices(labels: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0
                  ) -> tuple[np.ndarray, ...]:
  """Stratified, seeded split into len(fractions) disjoint index sets. A class whose
  share of the first set (training) rounds to none gets one example there, taken from the
  next set: a class scored but never trained on is no split anyone means."""
  if abs(sum(fractions) - 1.0) > 1e-6:
    raise DataError(f'split fractions {fractions} do not sum to 1')
  rng = np.random.default_rng([seed, 11])
  parts = [[] for _ in fractions]
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
    if fractions[0] > 0:
      bounds = np.maximum(bounds, 1)
    for k, (lo, hi) in enumerate(zip(np.r_[0, bounds[:-1]], bounds)):
      parts[k].extend(idx[lo:hi])
  return tuple(np.sort(np.asarray(p, np.int64)) for p in parts)


def split_fractions(text: str) -> tuple[float, float, float]:
  """`data.split`'s 'train,dev,test' fractions: three numbers in [0, 1] summing to 1."""
  bad = ConfigError(f'config.data.split must be three train,dev,test fractions in [0, 1] '
                    f'that sum to 1 (e.g. 0.8,0.1,0.1), got {text!r}')
  try:
    fractions = tuple(float(x) for x in str(text).split(','))
  except ValueError:
    raise bad from None
  if (len(fractions) != 3 or not all(0.0 <= f <= 1.0 for f in fractions)
      or abs(sum(fractions) - 1.0) > 1e-6):
    raise bad
  return fractions


def _checked(splits: dict, how: str = '') -> dict:
  """`splits`, if every split has an example and training has two classes or more; empty
  texts are counted in a warning (a split of nothing but empty texts is an error)."""
  for name, part in splits.items():
    if not part.texts:
      raise DataError(f'the {name} split of {part.source} is empty{how}: nothing to '
                      f'{"train on" if name == "train" else "score"}')
    empty = [k for k, t in enumerate(part.texts) if not str(t).strip()]
    if len(empty) == len(part.texts):
      raise DataError(f'{part.source}: every text of the {name} split is empty{how} (the '
                      'text field read: config.data.text_field)')
    if empty:
      warnings.warn(f'{part.source}: {len(empty)} of the {name} split\'s {len(part.texts)} '
                    f'texts are empty (example {empty[0] + 1} of the split is the first): they '
                    'are classified from nothing', stacklevel=2)
  present = np.unique(splits['train'].labels)
  if len(present) < 2:
    raise DataError(f'{splits["train"].source}: the training examples have one class '
                    f'({splits["train"].label_names[present[0]]!r}); a classifier needs two or '
                    'more')
  return splits


def read_splits(cfg) -> dict[str, LabelledText]:
  """{'train', 'dev', 'test'}: `cfg.path` cut by the `cfg.split` fractions
  (stratified, `cfg.split_seed`), or, when `cfg.dev_path` and `cfg.test_path`
  are set, the three files of a predefined split (label ids from the training
  file's labels; a dev/test label absent from it is an error naming the file)."""
  dev_path, test_path = cfg.get('dev_path', ''), cfg.get('test_path', '')
  if bool(dev_path) != bool(test_path):
    raise ConfigError('config.data.dev_path and config.data.test_path go together: set both '
                      '(a predefined split; data.path is the training file) or neither '
                      f'(data.split fractions); got dev_path={dev_path!r}, test_path={test_path!r}')
  if not dev_path:
    fractions = split_fractions(cfg.split)
    data = read_labelled(cfg)
    tr, dv, te = split_indices(data.labels, fractions, cfg.split_seed)
    return _checked({'train': data.subset(tr), 'dev': data.subset(dv), 'test': data.subset(te)},
                    f' (data.split={cfg.split!r} of {len(data.texts)} examples)')
  if cfg.kind == 'mr':
    raise ConfigError("config.data.kind='mr' has no predefined split: leave data.dev_path and "
                      'data.test_path empty')
  train = read_labelled(cfg)
  out = {'train': train}
  for name, path in (('dev', dev_path), ('test', test_path)):
    part = read_labelled(cfg, path)
    unknown = [n for n, k in zip(part.label_names, part.keys) if k not in train.keys]
    if unknown:
      raise DataError(f'{path}: label(s) {unknown} do not occur in the training file {cfg.path} '
                      f'(its labels: {train.label_names})')
    ids = np.asarray([train.keys.index(k) for k in part.keys], np.int32)
    out[name] = dataclasses.replace(train, texts=part.texts, labels=ids[part.labels],
                                    source=path)
  return _checked(out)
