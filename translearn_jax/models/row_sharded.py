"""Embedding tables sharded by rows, with lookups and sparse updates routed to owners.

Row `r` of a `V`-row table lives on device `r % n` of the `n` devices of a mesh axis, at
local row `r // n`: rows are interleaved, so the frequent words of a frequency-sorted
vocabulary (the low ids) spread evenly over the devices. The table is stored in that
*sharded layout*, `(n * ceil(V / n), D)`, whose block `d` is device `d`'s rows
(`to_sharded_layout` / `from_sharded_layout` convert), and a `shard_map` over the axis
hands each device its block.

Inside the `shard_map`, `RowShardedTables` serves a step's reads and writes:

* the ids a device needs are deduplicated (`jnp.unique`), so a frequent word costs one
  slot however often the batch names it;
* each unique id goes to its owner in an `all_to_all` of fixed-size buckets
  (`capacity` slots per destination), the owner gathers its rows and a second
  `all_to_all` returns them; a device whose ids overflow a bucket sends the rest in
  further rounds (a `while` loop, as many rounds as the fullest bucket of any device
  needs; one round in practice);
* updates take the same route back: summed per unique id, sent to the owner, and
  scatter-added into its block (with `row_cap`, the owner first sums every device's
  contribution counts of the row, or its step curvature with `row_cap_mode='curvature'`,
  so the cap sees the whole step's, as on one device).

At a fixed per-device batch the buckets hold `n * capacity ≈ ids per device` slots
(`default_capacity`) whatever `n` is, so each device's collective bytes stay flat as
devices double, where all-gathering every device's updates (the replicated tables' data parallelism)
grows linearly; and each device stores `1/n` of the table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from translearn_jax.models import word2vec

Array = jax.Array


def local_rows(vocab_size: int, shards: int) -> int:
  """Rows of each device's block: ceil(V / n)."""
  return -(-vocab_size // shards)


def layout_size(vocab_size: int, shards: int) -> int:
  """Rows of a `vocab_size`-word table in the layout of `shards` (0: vocabulary order)."""
  return local_rows(vocab_size, shards) * shards if shards else vocab_size


def vocab_ids(rows: np.ndarray, vocab_size: int, shards: int) -> np.ndarray:
  """The vocabulary id held by each of the layout's `rows` (`shards` 0: vocabulary order):
  row `d · ceil(V/n) + j` holds id `j · n + d`; an id >= `vocab_size` is a padding row."""
  if not shards:
    return rows
  local = local_rows(vocab_size, shards)
  return (rows % local) * shards + rows // local


def layout_rows(ids: np.ndarray, vocab_size: int, shards: int) -> np.ndarray:
  """Where each of the vocabulary `ids` lies in the layout of `shards` (`vocab_ids`'
  inverse)."""
  if not shards:
    return ids
  return (ids % shards) * local_rows(vocab_size, shards) + ids // shards


def to_sharded_layout(table: Array, shards: int) -> Array:
  """`(V, D)` in vocabulary order -> `(n * ceil(V/n), D)`, block `d` = rows `d, d+n, ...`
  (padding rows are zero). A numpy table stays on the host (numpy in, numpy out)."""
  vocab, dim = table.shape
  rows = local_rows(vocab, shards)
  pad = np.pad if isinstance(table, np.ndarray) else jnp.pad
  padded = pad(table, ((0, rows * shards - vocab), (0, 0)))
  return padded.reshape(rows, shards, dim).transpose(1, 0, 2).reshape(shards * rows, dim)


TABLE_SHARDS = 'table_shards'   # saved with a checkpoint: over how many shards its tables lie


def from_sharded_layout(table: Array, shards: int, vocab_size: int) -> Array:
  """Inverse of `to_sharded_layout`: the `(V, D)` table in vocabulary order (numpy in, numpy
  out)."""
  total, dim = table.shape
  if total % shards or total // shards != local_rows(vocab_size, shards):
    raise ValueError(f'a sharded-layout table of {total} rows is not {vocab_size} rows '
                     f'over {shards} shards')
  rows = total // shards
  return table.reshape(shards, rows, dim).transpose(1, 0, 2).reshape(-1, dim)[:vocab_size]


def default_capacity(num_ids: int, shards: int) -> int:
  """Bucket slots per destination for `num_ids` ids a device: 1.25 × the even share, or
  for small shares (< 144) the share plus three of its standard deviations (a
  multinomial's), at most `num_ids`. So `shards × capacity` is 1.25 × `num_ids` (flat in
  `shards`) wherever the share is large enough for the bytes to matter.

  Deduplication leaves fewer ids than that: on the Wikipedia excerpt (skip-gram, 256
  tokens a device), a device's fullest bucket held at most 0.37 (8 devices) / 0.63 (64)
  of the even share of its output-table ids, and 1.22 / 2.75 of the share of its 256
  center ids, which the margin covers at 8 devices. A bucket that still overflows costs
  another round, not a wrong result.
  """
  share = num_ids / shards
  return max(1, min(num_ids, math.ceil(max(1.25 * share, share + 3 * math.sqrt(share)))))


@dataclasses.dataclass
class Route:
  """Where each of a device's unique ids goes: bucket `owner`, slot `rank` (all rounds)."""
  uniq: Array      # (N,) unique ids, ascending, then -1 padding
  inverse: Array   # ids.size: position of each id in `uniq`
  owner: Array     # (N,) owning device; `shards` (no bucket) for padding
  rank: Array      # (N,) position among this device's ids for that owner
  rounds: Array    # () all_to_all rounds every device runs (the fullest bucket decides)


def plan(ids: Array, shards: int, axis, capacity: int) -> Route:
  flat = ids.reshape(-1)
  n_ids = flat.shape[0]
  uniq, inverse = jnp.unique(flat, size=n_ids, fill_value=-1, return_inverse=True)
  valid = uniq >= 0
  owner = jnp.where(valid, uniq % shards, shards)
  onehot = (owner[:, None] == jnp.arange(shards)).astype(jnp.int32)    # (N, n)
  rank = jnp.take_along_axis(jnp.cumsum(onehot, 0) - 1,
                             jnp.minimum(owner, shards - 1)[:, None], 1)[:, 0]
  fullest = jax.lax.pmax(jnp.max(onehot.sum(0)), axis)
  rounds = (fullest + capacity - 1) // capacity
  return Route(uniq, inverse.reshape(-1), owner, rank, rounds)


def _slots(route: Route, r, shards: int, capacity: int):
  """Flat bucket index (owner * capacity + slot) of each unique id sent in round `r`, or
  `shards * capacity` (out of range: dropped) for those not sent in it."""
  slot = route.rank - r * capacity
  send = (route.owner < shards) & (slot >= 0) & (slot < capacity)
  return jnp.where(send, route.owner * capacity + slot, shards * capacity), send


class RowShardedTables:
  """A step's row reads and writes on row-sharded tables, inside `shard_map` over `axis`.

  `blocks` maps a table name to this device's `(ceil(V/n), D)` block. `gather(name, *ids)`
  returns the rows of each id array (shape `ids.shape + (D,)`); `add(name, ids, updates)`
  scatter-adds `updates` (one per id array, shape `ids.shape + (D,)`) into their rows
  and returns the new block. When `add` gets the very id arrays `gather` got, the route
  is reused. `row_cap` and `row_cap_mode` are `models.word2vec.apply_rows`'s cap (0:
  plain sums); `capacity` is the slots of a bucket (None: `default_capacity`).
  """

  def __init__(self, blocks, axis, shards: int, row_cap: float = 0.0,
               capacity: int | None = None, row_cap_mode: str = 'count'):
    self.blocks = dict(blocks)
    self.axis, self.shards, self.row_cap = axis, shards, float(row_cap)
    self.row_cap_mode = row_cap_mode
    self.capacity = capacity
    self._routes: dict[str, tuple[tuple[Array, ...], Route, int]] = {}

  def _route(self, name: str, ids: Sequence[Array]) -> tuple[Route, int]:
    cached = self._routes.get(name)
    if cached and len(cached[0]) == len(ids) and all(a is b for a, b in zip(cached[0], ids)):
      return cached[1], cached[2]
    flat = jnp.concatenate([i.reshape(-1) for i in ids])
    capacity = self.capacity or default_capacity(flat.shape[0], self.shards)
    route = plan(flat, self.shards, self.axis, capacity)
    self._routes[name] = (tuple(ids), route, capacity)
    return route, capacity

  def _exchange(self, x):
    """Bucket `d` of `x` to device `d`; returns what each device sent this one."""
    return jax.lax.all_to_all(x, self.axis, 0, 0, tiled=True)

  def gather(self, name: str, *ids: Array) -> tuple[Array, ...]:
    block = self.blocks[name]
    route, cap = self._route(name, ids)
    n, dim = self.shards, block.shape[1]

    def one_round(r, rows):
      index, send = _slots(route, r, n, cap)
      asked = jnp.full((n * cap,), -1, jnp.int32).at[index].set(route.uniq, mode='drop')
      asked = self._exchange(asked)                                # ids others ask me for
      found = jnp.where((asked >= 0)[:, None], block[jnp.maximum(asked, 0) // n], 0)
      back = self._exchange(found)                                 # my rows, by bucket slot
      return jnp.where(send[:, None], back[jnp.minimum(index, n * cap - 1)], rows)

    rows = jax.lax.fori_loop(0, route.rounds, one_round,
                             jnp.zeros((route.uniq.shape[0], dim), block.dtype))
    out, start = [], 0
    for i in ids:
      out.append(rows[route.inverse[start:start + i.size]].reshape(i.shape + (dim,)))
      start += i.size
    return tuple(out)

  def add(self, name: str, ids: Sequence[Array], updates: Sequence[Array],
          curvature: Sequence[Array] | None = None) -> Array:
    block = self.blocks[name]
    route, cap = self._route(name, tuple(ids))
    n, dim = self.shards, block.shape[1]
    flat = jnp.concatenate([u.reshape(-1, dim) for u in updates])
    size = route.uniq.shape[0]
    norms = jnp.linalg.norm(flat, axis=-1)
    sums = jax.ops.segment_sum(flat, route.inverse, size)
    norm_sums = jax.ops.segment_sum(norms, route.inverse, size)
    used = jax.ops.segment_sum((norms > 0).astype(flat.dtype), route.inverse, size)

    def received(r, *values):
      """This round's ids and values that the devices send me, by bucket slot."""
      index, _ = _slots(route, r, n, cap)
      sent = [jnp.full((n * cap,), -1, jnp.int32).at[index].set(route.uniq, mode='drop')]
      for v in values:
        sent.append(jnp.zeros((n * cap,) + v.shape[1:], v.dtype).at[index].set(v, mode='drop'))
      return [self._exchange(x) for x in sent]

    def owned(got, blk):
      """The local rows of received ids (-1, an empty slot: out of range, dropped)."""
      return jnp.where(got >= 0, got // n, blk.shape[0])

    if self.row_cap > 0 and self.row_cap_mode == 'norm':
      def update_round(r, blk):
        # the devices' sums of one row are summed before the cap sees the row's norm (a
        # row two devices send in different overflow rounds is capped per round)
        got, u, ns, c = received(r, sums, norm_sums, used)
        uniq, _, (total, norm_total, count) = word2vec.sum_by_row(got, -1, u, ns, c)
        scale = word2vec.norm_cap_scale(total, norm_total, count, self.row_cap)
        return blk.at[owned(uniq, blk)].add((total * scale[:, None]).astype(blk.dtype),
                                            mode='drop')
      new = jax.lax.fori_loop(0, route.rounds, update_round, block)
      self.blocks[name] = new
      return new

    scale_of = None
    if self.row_cap > 0:
      curved = self.row_cap_mode == word2vec.CURVATURE
      per_id = used if not curved else jax.ops.segment_sum(
          jnp.concatenate([c.reshape(-1) for c in curvature]), route.inverse, size)

      def count_round(r, counts):
        got, c = received(r, per_id)
        return counts.at[owned(got, block)].add(c, mode='drop')

      # every device's contributions to a row (counts, or step curvature) are summed
      # before its scale is taken
      counts = jax.lax.fori_loop(0, route.rounds, count_round,
                                 jnp.zeros((block.shape[0],), jnp.float32))
      if curved:
        scale_of = lambda local: word2vec.curvature_scale(counts[local], self.row_cap)
      else:
        scale_of = lambda local: word2vec.count_scale(counts[local], self.row_cap)

    def update_round(r, blk):
      got, u = received(r, sums)
      local = owned(got, blk)
      if scale_of is not None:
        u = u * scale_of(jnp.minimum(local, blk.shape[0] - 1))[:, None]
      return blk.at[local].add(u.astype(blk.dtype), mode='drop')

    new = jax.lax.fori_loop(0, route.rounds, update_round, block)
    self.blocks[name] = new
    return new
