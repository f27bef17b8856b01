"""Length-bucketed batches of padded sequences (seq2seq training).

Padding every pair to the longest allowed length wastes most of the compute on
short-sentence corpora (Multi30k: median 14 pieces against a 48-piece limit).
`BucketStream` groups rows by length into buckets with the given boundaries and
trims each batch to its bucket's boundary, so a step costs what its longest
row needs. One jit compilation per bucket shape.

Per epoch (deterministic from `[seed, epoch]`): rows of each bucket are
shuffled and cut into full batches; the rows left over in a bucket move up to
the next, longer bucket (so every row is trained on in every epoch except at
most `batch - 1` from the longest bucket); the batch order is shuffled across
buckets. The number of batches per epoch depends only on the bucket sizes,
so `total_steps` is known up front and a run resumed at `(epoch, batch)` sees
the batches the uninterrupted run saw.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from translearn_jax.data.lm_data import EpochBatches
from translearn_jax.errors import ConfigError, DataError


def parse_boundaries(spec: str | Sequence[int], max_len: int) -> list[int]:
  """'12,16,24' -> [12, 16, 24, max_len]; '' -> [max_len] (one bucket: no bucketing)."""
  if isinstance(spec, str):
    try:
      vals = [int(x) for x in spec.replace(' ', '').split(',') if x]
    except ValueError:
      raise ConfigError(f'length_buckets must be comma-separated integers, got {spec!r}'
                        ) from None
  else:
    vals = [int(x) for x in spec]
  if any(v <= 0 for v in vals) or vals != sorted(set(vals)):
    raise ConfigError(f'length_buckets must be increasing positive integers, got {spec!r}')
  return [v for v in vals if v < max_len] + [max_len]


class BucketStream(EpochBatches):
  """Shuffled, resumable batches `{name: (1, batch, L_bucket)}` of length-bucketed rows.

  arrays: name -> (N, width) 0-padded int arrays (each is trimmed to
    `min(width, boundary)` in a batch).
  lengths: (N,) the length each row needs (e.g. max of source and target).
  Only rows `[row_start, row_stop)` of every global batch are returned (this
  process's share).
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], lengths: np.ndarray,
               boundaries: Sequence[int], batch: int, epochs: int, seed: int,
               row_start: int = 0, row_stop: Optional[int] = None):
    n = len(lengths)
    for name, a in arrays.items():
      if len(a) != n:
        raise ValueError(f'array {name!r} has {len(a)} rows, lengths has {n}')
    self.arrays, self.batch, self.epochs, self.seed = dict(arrays), batch, epochs, seed
    self.boundaries = list(boundaries)
    self.row_start, self.row_stop = row_start, (batch if row_stop is None else row_stop)
    lengths = np.asarray(lengths)
    if n and lengths.max() > self.boundaries[-1]:
      raise DataError(f'a row needs length {lengths.max()} > the last bucket boundary '
                      f'{self.boundaries[-1]}')
    self.bucket = np.searchsorted(np.asarray(self.boundaries), lengths, side='left')
    sizes = np.bincount(self.bucket, minlength=len(self.boundaries))
    self.batches_per_epoch, carry = 0, 0
    for size in sizes:
      pool = carry + int(size)
      self.batches_per_epoch += pool // batch
      carry = pool % batch
    if self.batches_per_epoch == 0:
      raise DataError(f'{n} training rows cannot fill one batch of batch_size={batch}')
    self.bucket_sizes = sizes.tolist()
    self._cached_epoch, self._cached_plan = None, None

  @property
  def total_steps(self) -> int:
    return self.batches_per_epoch * self.epochs

  def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    if self._cached_epoch == epoch:
      return self._cached_plan
    rng = np.random.default_rng([self.seed, epoch])
    plan, carry = [], np.zeros(0, np.int64)
    for b in range(len(self.boundaries)):
      members = np.flatnonzero(self.bucket == b)
      pool = np.concatenate([carry, members[rng.permutation(len(members))]])
      full = len(pool) // self.batch * self.batch
      plan += [(b, pool[i:i + self.batch]) for i in range(0, full, self.batch)]
      carry = pool[full:]
    plan = [plan[i] for i in rng.permutation(len(plan))]
    self._cached_epoch, self._cached_plan = epoch, plan
    return plan

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    b, rows = self._plan(epoch)[index]
    rows = rows[self.row_start:self.row_stop]
    length = self.boundaries[b]
    return {name: np.ascontiguousarray(a[rows, :min(a.shape[1], length)])[None]
            for name, a in self.arrays.items()}
