"""How often each vocabulary piece occurs in a pretraining run's training data.

An LM or masked-LM run writes `piece_counts.npy` (int64, one count per vocabulary id,
read back without pickle). A piece the run never saw keeps an embedding row that only
ever moved as a softmax negative: with a tied output layer all such rows drift along one
shared direction (measured: the German Multi30k LM's 2,966 English-only pieces of a joint
8k vocabulary are collinear, |mean unit vector| 0.998, at 3.7× the norm of seen rows). A
graft into a model whose inputs do use those pieces (the encoder of a translation model
sharing the embedding) then gives every such piece the same vector; `unseen_rows` names
them so the graft keeps the target's fresh rows there instead.
"""

from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np

from translearn_jax.errors import DataError
from translearn_jax.training.files import atomic_write

FILE = 'piece_counts.npy'


def count(token_rows, vocab_size: int) -> np.ndarray:
  """Occurrences of each id in `token_rows` (any integer array or list of arrays)."""
  flat = np.concatenate([np.asarray(r).ravel() for r in token_rows]) if isinstance(
      token_rows, (list, tuple)) else np.asarray(token_rows).ravel()
  return np.bincount(flat.astype(np.int64), minlength=vocab_size)[:vocab_size]


def write(workdir: str, counts: np.ndarray) -> None:
  """`workdir/piece_counts.npy`, written atomically."""
  buf = io.BytesIO()
  np.save(buf, np.asarray(counts, np.int64), allow_pickle=False)
  atomic_write(os.path.join(workdir, FILE), buf.getvalue())


def record(workdir: str, train_rows, vocab_size: int, source: str = '',
           counts: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
  """Writes the counts of a run's `train_rows` (or `counts` given: a pretokenized
  directory's), plus those of the run it continues (`source`); a continued source without
  counts (an imported checkpoint trained on data unknown here) leaves the run without
  counts too, so no graft takes its rows for unseen ones. Returns what was written, or
  None."""
  if counts is None:
    if train_rows is None:
      return None
    counts = count(train_rows, vocab_size)
  if source:
    before = read(source, vocab_size)
    if before is None:
      return None
    counts = counts + before
  write(workdir, counts)
  return counts


def read(run_dir: str, vocab_size: int) -> Optional[np.ndarray]:
  """The run's counts, or None when it has none (a run from before counts were kept, an
  imported checkpoint); a file of another length or type is an error naming it."""
  path = os.path.join(run_dir, FILE)
  if not os.path.exists(path):
    return None
  try:
    counts = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: not a piece-count array ({e})') from None
  if counts.shape != (vocab_size,) or counts.dtype.kind not in 'iu':
    raise DataError(f'{path}: expected {vocab_size} integer counts (one per vocabulary id), '
                    f'got {counts.dtype} {counts.shape}')
  return counts


def unseen_rows(counts: np.ndarray) -> np.ndarray:
  """Ids the run never saw in its training data."""
  return np.flatnonzero(np.asarray(counts) == 0)
