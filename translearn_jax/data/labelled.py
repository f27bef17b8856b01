"""Labelled text for downstream classification, and reproducible splits.

* MR sentence polarity (`kind='mr'`): a directory with `rt-polarity.pos` /
  `rt-polarity.neg`, one sentence a line, Latin-1 encoded (Pang & Lee 2005).
  It has no official split; `split_indices` makes a stratified, seeded
  train/dev/test split (80/10/10 by default).
* Any TSV/JSONL file (`kind='tsv'|'jsonl'`) with a text field and a label
  field (GLUE SST-2's `sentence`/`label` columns, for instance).

Labels are strings mapped to ids in sorted order (`label_names`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from translearn_jax.data import readers
from translearn_jax.errors import DataError


@dataclasses.dataclass
class LabelledText:
  texts: list
  labels: np.ndarray       # int32 ids into label_names
  label_names: list
  source: str

  def subset(self, idx) -> 'LabelledText':
    return LabelledText([self.texts[i] for i in idx], self.labels[idx], self.label_names,
                        self.source)


def read_mr(directory: str) -> LabelledText:
  texts, labels = [], []
  for name, label in (('rt-polarity.neg', 0), ('rt-polarity.pos', 1)):
    path = os.path.join(directory, name)
    lines = [l for l in readers.read_text(path, encoding='latin-1').split('\n') if l.strip()]
    if not lines:
      raise DataError(f'{path}: no sentences')
    texts.extend(lines)
    labels.extend([label] * len(lines))
  return LabelledText(texts, np.asarray(labels, np.int32), ['negative', 'positive'], directory)


def read_fields(kind: str, path: str, text_field: str, label_field: str,
                encoding: str = 'utf-8') -> LabelledText:
  if kind not in ('tsv', 'jsonl'):
    raise DataError(f"labelled data kind must be 'mr', 'tsv' or 'jsonl', got {kind!r}")
  texts, raw = [], []
  for _, _, rec in readers.iter_records(path, kind, [text_field, label_field], encoding):
    texts.append(rec[text_field])
    raw.append(rec[label_field].strip())
  if not texts:
    raise DataError(f'{path}: no labelled examples')
  names = sorted(set(raw))
  ids = {n: i for i, n in enumerate(names)}
  return LabelledText(texts, np.asarray([ids[r] for r in raw], np.int32), names, path)


def read_labelled(cfg) -> LabelledText:
  if cfg.kind == 'mr':
    return read_mr(cfg.path)
  return read_fields(cfg.kind, cfg.path, cfg.text_field, cfg.label_field,
                     cfg.get('encoding', 'utf-8'))


def split_indices(labels: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0
                  ) -> tuple[np.ndarray, ...]:
  """Stratified, seeded split into len(fractions) disjoint index sets."""
  if abs(sum(fractions) - 1.0) > 1e-6:
    raise DataError(f'split fractions {fractions} do not sum to 1')
  rng = np.random.default_rng([seed, 11])
  parts = [[] for _ in fractions]
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
    for k, (lo, hi) in enumerate(zip(np.r_[0, bounds[:-1]], bounds)):
      parts[k].extend(idx[lo:hi])
  return tuple(np.sort(np.asarray(p, np.int64)) for p in parts)
