"""Language-model data: documents -> tokenizer -> packed, shuffled sequences.

Documents are tokenised in batches, each followed by EOS, and concatenated
into one stream that is cut into rows of `seq_len + 1` tokens overlapping by
one (inputs `row[:-1]`, targets `row[1:]`): no padding anywhere. Rows are
shuffled per epoch with `default_rng([seed, epoch])`, so a run resumed at
`(epoch, batch)` sees exactly the batches the uninterrupted run saw.

Held-out data: whole documents (`data.valid_fraction` of them, chosen with the
seed) or a separate `data.valid_path`; never rows cut from training documents.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterator, Optional, Sequence

import numpy as np

from translearn_jax.errors import DataError


def split_documents(docs: Sequence[str], valid_fraction: float, seed: int
                    ) -> tuple[list[str], list[str]]:
  """Holds out whole documents for validation (deterministic)."""
  docs = [d for d in docs if d.strip()]
  held = held_out_mask(len(docs), valid_fraction, seed)
  train = [d for i, d in enumerate(docs) if not held[i]]
  valid = [d for i, d in enumerate(docs) if held[i]]
  return train, valid


def held_out_mask(n_docs: int, valid_fraction: float, seed: int) -> np.ndarray:
  """(n_docs,) bool: which of `n_docs` non-empty documents `split_documents` holds out
  (the streaming pretokeniser counts documents first, then picks the same ones)."""
  if not n_docs:
    raise DataError('no non-empty documents to train on')
  held = np.zeros(n_docs, bool)
  if valid_fraction <= 0:
    return held
  n_valid = max(1, int(round(valid_fraction * n_docs)))
  if n_valid >= n_docs:
    raise DataError(f'data.valid_fraction={valid_fraction} leaves no training documents '
                    f'out of {n_docs}')
  if n_valid > 2 * valid_fraction * n_docs:      # a whole document is the least held out
    warnings.warn(f'data.valid_fraction={valid_fraction} of {n_docs} documents holds out '
                  f'{n_valid} ({100 * n_valid / n_docs:.0f}% of them): with so few documents '
                  '(data.unit=file?), give the held-out text as data.valid_path, or '
                  'valid_fraction=0', stacklevel=2)
  held[np.random.default_rng([seed, 7]).permutation(n_docs)[:n_valid]] = True
  return held


def pack(stream: np.ndarray, seq_len: int, what: str = 'training') -> np.ndarray:
  """(N, seq_len + 1) rows over a flat token stream, consecutive rows overlapping by 1.

  A view (no copy); the tail that does not fill a row is dropped.
  """
  n = (len(stream) - 1) // seq_len
  if n < 1:
    fields = ('data.valid_fraction or data.valid_path' if what == 'held-out'
              else 'data.path')
    raise DataError(f'{what} data has {len(stream)} tokens, fewer than one sequence of '
                    f'seq_len + 1 = {seq_len + 1}: more text ({fields}) or a shorter '
                    'train.seq_length')
  return np.lib.stride_tricks.as_strided(
      stream, shape=(n, seq_len + 1), strides=(stream.strides[0] * seq_len, stream.strides[0]),
      writeable=False)


def unpack(rows: np.ndarray) -> np.ndarray:
  """Inverse of `pack` on the covered prefix."""
  return np.concatenate([rows[:, :-1].reshape(-1), rows[-1:, -1]])


@dataclasses.dataclass
class LMState:
  epoch: int = 0
  batch: int = 0

  def to_dict(self):
    return {'epoch': self.epoch, 'batch': self.batch}


class EpochBatches:
  """Resumable iteration over `epochs` epochs of `batches_in(epoch)` batches from `make_batch`."""
  epochs: int
  batches_per_epoch: int

  def batches_in(self, epoch: int) -> int:
    """Batches of `epoch` (the same for every epoch unless a subclass plans each one)."""
    return self.batches_per_epoch

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def iterate(self, start: LMState) -> Iterator[tuple[LMState, dict[str, np.ndarray]]]:
    """Yields `(state after this batch, batch)` from `start` to the last epoch."""
    epoch, index = start.epoch, start.batch
    while epoch < self.epochs:
      if index >= self.batches_in(epoch):
        epoch, index = epoch + 1, 0
        continue
      yield LMState(epoch, index + 1), self.make_batch(epoch, index)
      index += 1


class LMStream(EpochBatches):
  """Batches `(accum, batch, *row shape)` of shuffled rows (LM rows: `seq_len + 1` tokens;
  masked-LM rows: `(3, width)`, see `mlm_data`); this process's rows only."""

  def __init__(self, rows: np.ndarray, batch: int, accum: int, epochs: int, seed: int,
               row_start: int = 0, row_stop: Optional[int] = None):
    self.rows, self.batch, self.accum, self.epochs, self.seed = rows, batch, accum, epochs, seed
    self.row_start, self.row_stop = row_start, (batch if row_stop is None else row_stop)
    self.per_step = batch * accum
    if len(rows) < self.per_step:
      raise DataError(f'{len(rows)} training sequences cannot fill one step of '
                      f'batch_size × grad_accum = {self.per_step}; lower them or add data')
    self.batches_per_epoch = len(rows) // self.per_step
    self._cached_epoch, self._cached_order = None, None

  @property
  def total_steps(self) -> int:
    return self.batches_per_epoch * self.epochs

  def _order(self, epoch: int) -> np.ndarray:
    if self._cached_epoch != epoch:
      self._cached_order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
      self._cached_epoch = epoch
    return self._cached_order

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    pick = self._order(epoch)[index * self.per_step:(index + 1) * self.per_step]
    tokens = self.rows[pick].reshape(self.accum, self.batch, *self.rows.shape[1:])
    return {'tokens': np.ascontiguousarray(tokens[:, self.row_start:self.row_stop])}
