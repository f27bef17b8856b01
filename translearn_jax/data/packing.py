"""Packed seq2seq batches: several (source, target) pairs share one row.

Padding a batch of pairs to its longest member wastes every position past each
pair's own length (random lengths 8..32 in 32 columns: a third of the compute;
bucketing only narrows the width). Packing places pairs one after another in
fixed-width rows, both sides at once: pair *k* of a row occupies its own span
of the source row and its own span of the target row, tagged with segment id
*k* (1, 2, …; 0 = padding) and with positions restarting at 0. The model
(`models.seq2seq.Seq2Seq` with `*_segments` / `*_positions`) lets a position
attend only within its own segment (encoder self-attention, causal decoder
self-attention, cross-attention from target segment *k* to source segment *k*),
so a packed pair computes exactly what it computes alone.

`PackStream` (resumable like `BucketStream`): per epoch the pairs are shuffled
(deterministic from `[seed, epoch]`) and placed first-fit into the `rows` rows
of the current batch; a pair that fits in no row waits while later pairs fill
the gaps, and the batch closes when more than `rows` pairs are waiting. Every
pair is trained on exactly once per epoch; the epoch's last batch may be partly
empty. All batches have one shape, `(1, rows, width)` globally (each process
gets its rows `[row_start, row_stop)`): one compilation. Planning is a Python
loop over pairs × epochs (~0.2 s per epoch of Multi30k's 29k pairs).
The batch counts of all epochs are planned up front, so `total_steps` is known
before training starts.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from translearn_jax.data.lm_data import EpochBatches
from translearn_jax.errors import DataError

KEYS = ('source', 'source_segments', 'source_positions', 'target_in', 'target_out',
        'target_segments', 'target_positions')


def first_fit(src_len: np.ndarray, tgt_len: np.ndarray, order: np.ndarray, rows: int,
              src_width: int, tgt_width: int, lookahead: Optional[int] = None
              ) -> list[list[tuple[int, int]]]:
  """Batches of `(pair, row)` placements, pairs taken in `order`.

  A pair goes to the first row of the open batch with room on both sides. A
  pair that fits nowhere waits (up to `lookahead` pairs, default `rows`) while
  later, shorter pairs fill the gaps; when the waiting list is full the batch is
  closed and the waiting pairs open the next one. Every pair is placed once.
  """
  lookahead = rows if lookahead is None else lookahead
  too_long = np.flatnonzero((src_len > src_width) | (tgt_len > tgt_width))
  if len(too_long):
    i = int(too_long[0])
    raise DataError(f'pair {i} needs {int(src_len[i])}/{int(tgt_len[i])} source/target '
                    f'positions, more than a row holds ({src_width}/{tgt_width})')
  batches, current, waiting = [], [], []
  room_s = np.full(rows, src_width, np.int64)
  room_t = np.full(rows, tgt_width, np.int64)

  def place(i) -> bool:
    fit = np.flatnonzero((room_s >= src_len[i]) & (room_t >= tgt_len[i]))
    if not len(fit):
      return False
    r = int(fit[0])
    room_s[r] -= src_len[i]
    room_t[r] -= tgt_len[i]
    current.append((int(i), r))
    return True

  def close():
    nonlocal current
    batches.append(current)
    current = []
    room_s[:] = src_width
    room_t[:] = tgt_width

  for i in order:
    if place(i):
      continue
    waiting.append(i)
    if len(waiting) > lookahead:
      close()
      waiting = [j for j in waiting if not place(j)]
  while waiting:
    if current:
      close()
    waiting = [j for j in waiting if not place(j)]
  if current:
    batches.append(current)
  return batches


class PackStream(EpochBatches):
  """Shuffled, resumable packed batches `{KEYS: (1, rows, width)}`.

  source, target_in, target_out: (N, width) `pad_id`-padded, left-aligned rows of
  one pair each (as `pretraining.seq2seq.pair_arrays` makes them). Only rows
  `[row_start, row_stop)` of every global batch are returned (this process's
  share).
  """

  def __init__(self, source: np.ndarray, target_in: np.ndarray, target_out: np.ndarray,
               rows: int, epochs: int, seed: int, row_start: int = 0,
               row_stop: Optional[int] = None, pad_id: int = 0):
    n = len(source)
    if not (len(target_in) == len(target_out) == n):
      raise ValueError(f'source has {n} pairs, target_in {len(target_in)}, '
                       f'target_out {len(target_out)}')
    if n == 0:
      raise DataError('no training pairs to pack')
    self.source, self.target_in, self.target_out = source, target_in, target_out
    self.pad_id = pad_id
    self.src_len = (source != pad_id).sum(1)
    self.tgt_len = (target_out != pad_id).sum(1)
    self.rows, self.epochs, self.seed = rows, epochs, seed
    self.src_width, self.tgt_width = source.shape[1], target_out.shape[1]
    self.row_start, self.row_stop = row_start, (rows if row_stop is None else row_stop)
    self.plans = [self._plan(e) for e in range(epochs)]  # batch counts differ by epoch

  def _plan(self, epoch: int) -> list[list[tuple[int, int]]]:
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
    return first_fit(self.src_len, self.tgt_len, order, self.rows, self.src_width,
                     self.tgt_width)

  @property
  def total_steps(self) -> int:
    return sum(len(p) for p in self.plans)

  def batches_in(self, epoch: int) -> int:
    return len(self.plans[epoch])

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    out = {k: np.full((self.rows, self.src_width if k.startswith('source') else self.tgt_width),
                      self.pad_id if k in ('source', 'target_in', 'target_out') else 0, np.int32)
           for k in KEYS}
    fill_s = np.zeros(self.rows, np.int64)
    fill_t = np.zeros(self.rows, np.int64)
    seg = np.zeros(self.rows, np.int64)
    for i, r in self.plans[epoch][index]:
      ls, lt = self.src_len[i], self.tgt_len[i]
      seg[r] += 1
      s0, t0 = fill_s[r], fill_t[r]
      out['source'][r, s0:s0 + ls] = self.source[i, :ls]
      out['source_segments'][r, s0:s0 + ls] = seg[r]
      out['source_positions'][r, s0:s0 + ls] = np.arange(ls)
      out['target_in'][r, t0:t0 + lt] = self.target_in[i, :lt]
      out['target_out'][r, t0:t0 + lt] = self.target_out[i, :lt]
      out['target_segments'][r, t0:t0 + lt] = seg[r]
      out['target_positions'][r, t0:t0 + lt] = np.arange(lt)
      fill_s[r] += ls
      fill_t[r] += lt
    return {k: v[self.row_start:self.row_stop][None] for k, v in out.items()}

  def fill(self) -> dict[str, float]:
    """Fraction of source / target positions holding real tokens, over all epochs."""
    steps = self.total_steps
    real_s = float(self.src_len.sum()) * self.epochs
    real_t = float(self.tgt_len.sum()) * self.epochs
    return {'source': real_s / (steps * self.rows * self.src_width),
            'target': real_t / (steps * self.rows * self.tgt_width)}
