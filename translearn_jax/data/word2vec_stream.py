"""Host-side input pipeline for skip-gram/CBOW: subsampled token blocks.

Per epoch, every token is kept with word2vec's probability
`(sqrt(f/(s·N)) + 1) · s·N/f` (f: the word's count, N: corpus tokens, s:
`sample`); the kept stream is cut into blocks of `steps × batch × length`
tokens, each with a reduced window per position (uniform in `1..window`) and
`K` negatives per position drawn from the unigram^0.75 table. With
`batch_rows='spread'` row r of every step reads on through the r-th of `batch` equal parts
of the epoch instead, as word2vec's thread r reads the r-th part of the file: a step
then holds `batch` distant stretches of text, not one (README, Results: "A large
batch's rows from across the epoch").

Everything random is drawn from `np.random.default_rng([seed, epoch])` (keep
decisions) and `[seed, epoch, block]` (windows, negatives), so a block depends
only on its position: resuming from `(epoch, block)` reproduces the
uninterrupted stream exactly. A background thread prepares the next blocks
while the device trains on the current one; with `workers` > 1 it cuts the blocks'
tokens in order and a pool of threads draws their windows and negatives (numpy releases
the GIL there), so the same blocks come `workers` at a time.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
from typing import Iterator, Optional

import numpy as np

from translearn_jax.data.vocab import EncodedCorpus
from translearn_jax.errors import DataError

NEG_TABLE_SIZE = 10_000_000
BLOCK, SPREAD = 'block', 'spread'
ROW_LAYOUTS = (BLOCK, SPREAD)


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
  """word2vec.c / gensim frequent-word subsampling keep probability."""
  counts = np.asarray(counts, np.float64)
  if sample <= 0:
    return np.ones_like(counts)
  threshold = sample * counts.sum()
  safe = np.maximum(counts, 1.0)  # words absent from the corpus (count 0) are never drawn
  p = (np.sqrt(safe / threshold) + 1.0) * threshold / safe
  return np.minimum(p, 1.0)


def negative_table(counts: np.ndarray, power: float = 0.75,
                   size: int = NEG_TABLE_SIZE) -> np.ndarray:
  """word2vec's unigram^power table: id i fills a share ∝ count_i^power."""
  weights = np.asarray(counts, np.float64) ** power
  cdf = np.cumsum(weights) / weights.sum()
  # slot i holds the first id whose cdf reaches (i + 0.5) / size (what searching every
  # slot's position in the cdf gives, ids past the end clipped to the last), built from
  # each id's slot count: one pass over the vocabulary, no array of `size` positions
  pos = lambda i: (i + 0.5) / size            # noqa: E731  (the slots' positions, float64)
  n = np.clip(np.floor(cdf * size - 0.5).astype(np.int64) + 1, 0, size)
  for _ in range(2):                         # exact: as the float comparison decides
    n = np.where((n < size) & (pos(n.astype(np.float64)) <= cdf), n + 1, n)
    n = np.where((n > 0) & (pos(n.astype(np.float64) - 1) > cdf), n - 1, n)
  reached = np.concatenate([[0], n[:-1], [size]])   # slots past the cdf's end: the last id
  slots = np.diff(np.maximum.accumulate(reached))
  return np.repeat(np.arange(len(counts), dtype=np.int32), slots)


SUBSAMPLE_CHUNK = 1 << 20


def subsample(ids: np.ndarray, segments: np.ndarray, keep_p: np.ndarray, seed,
              chunk: int = SUBSAMPLE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
  """(ids, segments) of the tokens kept: token t stays when the t-th float32 of
  `np.random.default_rng(seed)` is below `keep_p[ids[t]]` (`Subsampled`, all of it)."""
  kept = Subsampled(ids, segments, keep_p, seed, chunk)
  kept.extend(len(ids))
  return kept.ids, kept.segments


class Subsampled:
  """One epoch's kept tokens (see `subsample`), drawn `chunk` corpus tokens at a time as far
  as they are asked for (`extend`), so the first block of an epoch waits for a chunk, not
  for the whole corpus, and the pass is spread over the epoch's blocks.

  Chunked, the generator draws the same floats as one call (its stream does not depend on
  how it is split). The temporaries are a chunk's few MiB, reused, instead of ~20 bytes a
  corpus token of freshly mapped memory, whose first touch dominated the epoch's pass
  (0.3-0.8 s on the 13.9M tokens of the novels, on a VM whose host backs the guest's pages
  on first use)."""

  def __init__(self, ids: np.ndarray, segments: np.ndarray, keep_p: np.ndarray, seed,
               chunk: int = SUBSAMPLE_CHUNK):
    self._src, self._src_seg, self._keep_p, self._chunk = ids, segments, keep_p, chunk
    self._rng = np.random.default_rng(seed)
    self._ids = np.empty(len(ids), ids.dtype)      # only the kept prefix is ever touched
    self._seg = np.empty(len(segments), segments.dtype)
    self._read = 0     # corpus tokens drawn for
    self.kept = 0      # tokens kept among them

  @property
  def complete(self) -> bool:
    return self._read >= len(self._src)

  @property
  def ids(self) -> np.ndarray:
    return self._ids[:self.kept]

  @property
  def segments(self) -> np.ndarray:
    return self._seg[:self.kept]

  def extend(self, kept: int) -> int:
    """Draws until at least `kept` tokens are kept or the corpus ends; returns the count."""
    while self.kept < kept and not self.complete:
      lo = self._read
      part = self._src[lo:lo + self._chunk]
      keep = self._rng.random(len(part), dtype=np.float32) < self._keep_p[part]
      m = int(np.count_nonzero(keep))
      np.compress(keep, part, out=self._ids[self.kept:self.kept + m])
      np.compress(keep, self._src_seg[lo:lo + self._chunk],
                  out=self._seg[self.kept:self.kept + m])
      self.kept += m
      self._read += len(part)
    return self.kept


@dataclasses.dataclass(frozen=True)
class StreamConfig:
  batch: int           # rows per step (global, all processes)
  length: int          # tokens per row
  steps: int           # steps per host→device call (scanned on device)
  window: int
  negatives: int
  sample: float
  seed: int
  negative_share: int = 1   # consecutive positions of a row sharing one draw of negatives
  # 'block': a step's rows are consecutive stretches of the kept stream (one stretch of
  # batch × length tokens a step); 'spread': row r reads the r-th of `batch` equal parts
  # of the epoch's kept stream, as word2vec's thread r reads the r-th part of the file
  batch_rows: str = 'block'


@dataclasses.dataclass
class StreamState:
  epoch: int = 0
  block: int = 0

  def to_dict(self):
    return {'epoch': self.epoch, 'block': self.block}


class BlockStream:
  """Iterates over `(state_after, block)`; `block` is a dict of numpy arrays.

  Arrays have a leading `steps` axis: tokens/segment/window `(S, B, L)`,
  negatives `(S, B, L/G, K)` (G: `negative_share`). Only this process's rows `[row_start, row_stop)`
  of the global batch are produced (multi-host data loading).
  """

  def __init__(self, corpus: EncodedCorpus, cfg: StreamConfig, epochs: int,
               row_start: int = 0, row_stop: Optional[int] = None):
    if len(corpus.ids) < 2:
      raise DataError(f'corpus has {len(corpus.ids)} in-vocabulary token(s); '
                      'skip-gram/CBOW need at least 2')
    if cfg.batch_rows not in ROW_LAYOUTS:
      raise ValueError(f'batch_rows must be one of {ROW_LAYOUTS}, got {cfg.batch_rows!r}')
    if cfg.negative_share < 1 or cfg.length % cfg.negative_share:
      raise ValueError(f'negative_share={cfg.negative_share} must be >= 1 and divide the row '
                       f'length {cfg.length}')
    self.corpus, self.cfg, self.epochs = corpus, cfg, epochs
    self.row_start, self.row_stop = row_start, (cfg.batch if row_stop is None else row_stop)
    self.keep_p = keep_probabilities(corpus.vocab.counts, cfg.sample)
    self.neg_table = negative_table(corpus.vocab.counts)
    self.block_tokens = cfg.steps * cfg.batch * cfg.length
    self._epoch_cache: tuple[int, Subsampled] | None = None
    self._epoch_steps = self.steps_per_epoch()

  # -- sizes ---------------------------------------------------------------
  def expected_kept_per_epoch(self) -> float:
    return float(np.sum(self.keep_p[self.corpus.ids]))

  def steps_per_epoch(self) -> int:
    """The steps an epoch trains on, by its expected kept tokens (`batch` rows of `length`
    a step, in either layout): the schedule's unit. The padded steps that fill an epoch's
    last block are not among them."""
    row_steps = self.cfg.batch * self.cfg.length
    return max(1, int(np.ceil(self.expected_kept_per_epoch() / row_steps)))

  def estimated_total_steps(self) -> int:
    """The learning-rate schedule's length: `steps_per_epoch` × epochs (each block's
    `schedule_step` counts on it)."""
    return self._epoch_steps * self.epochs

  # -- epoch / block generation ---------------------------------------------
  def _epoch(self, epoch: int) -> Subsampled:
    if self._epoch_cache is None or self._epoch_cache[0] != epoch:
      self._epoch_cache = (epoch, Subsampled(self.corpus.ids, self.corpus.segments,
                                             self.keep_p, [self.cfg.seed, epoch],
                                             SUBSAMPLE_CHUNK))
    return self._epoch_cache[1]

  def _kept(self, epoch: int):
    kept = self._epoch(epoch)
    kept.extend(len(self.corpus.ids))
    return kept.ids, kept.segments

  def num_blocks(self, epoch: int) -> int:
    """The epoch's blocks, in either layout (`batch_rows='spread'`: ⌈⌈kept/B⌉/(S·L)⌉ blocks
    cover each row's part, which is ⌈kept/(B·S·L)⌉)."""
    ids, _ = self._kept(epoch)
    return max(1, -(-len(ids) // self.block_tokens))

  def has_block(self, epoch: int, block: int) -> bool:
    """Whether `epoch` has block `block` (an epoch has at least one, padded), drawing its
    kept tokens only as far as that block's first (the whole epoch with `batch_rows='spread'`)."""
    if self.cfg.batch_rows == SPREAD:
      return block < self.num_blocks(epoch)
    return block == 0 or self._epoch(epoch).extend(block * self.block_tokens + 1) > (
        block * self.block_tokens)

  def make_block(self, epoch: int, block: int) -> dict[str, np.ndarray]:
    return self._draw(epoch, block, *self._tokens(epoch, block))

  def _tokens(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of the block's kept tokens and segments `(S, B_local, L)` (the
    epoch's subsampling drawn as far as the block): copies, so a later epoch may reuse the
    epoch's buffers while a worker draws for this block."""
    cfg = self.cfg
    if cfg.batch_rows == SPREAD:
      return self._spread_tokens(epoch, block)
    kept = self._epoch(epoch)
    lo = block * self.block_tokens
    kept.extend(lo + self.block_tokens)
    tok = kept.ids[lo:lo + self.block_tokens]
    seg = kept.segments[lo:lo + self.block_tokens]
    n = len(tok)
    if n < self.block_tokens:  # last block of the epoch: pad
      tok = np.concatenate([tok, np.zeros(self.block_tokens - n, np.int32)])
      seg = np.concatenate([seg, np.full(self.block_tokens - n, -1, np.int32)])
    shape = (cfg.steps, cfg.batch, cfg.length)
    rows = slice(self.row_start, self.row_stop)
    return (np.ascontiguousarray(tok.reshape(shape)[:, rows]),
            np.ascontiguousarray(seg.reshape(shape)[:, rows]))

  def _spread_tokens(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """`_tokens` with `batch_rows='spread'`: row r of step s of block k holds tokens
    `[(k·S + s)·L, +L)` of the r-th part of the epoch's N kept tokens, `[⌊r·N/B⌋,
    ⌊(r+1)·N/B⌋)` (word2vec's split of the file between threads: parts of ⌊N/B⌋ or ⌈N/B⌉
    tokens); a part's end is padded (token 0, segment -1), an epoch that kept nothing is all
    padding."""
    cfg = self.cfg
    ids, segs = self._kept(epoch)
    n = len(ids)
    rows = np.arange(self.row_start, self.row_stop, dtype=np.int64)[None, :, None]
    start, stop = rows * n // cfg.batch, (rows + 1) * n // cfg.batch     # (1, B_local, 1)
    at = ((block * cfg.steps + np.arange(cfg.steps))[:, None, None] * cfg.length
          + np.arange(cfg.length)[None, None, :])                       # (S, 1, L)
    idx = start + at                                                     # (S, B_local, L)
    valid = idx < stop
    if n == 0:
      return np.zeros(valid.shape, ids.dtype), np.full(valid.shape, -1, segs.dtype)
    idx = np.where(valid, idx, 0)
    return np.where(valid, ids[idx], 0), np.where(valid, segs[idx], -1)

  def _draw(self, epoch: int, block: int, tok: np.ndarray, seg: np.ndarray
            ) -> dict[str, np.ndarray]:
    """The block of tokens `tok` and segments `seg` (`_tokens`) with its windows and
    negatives, drawn from `[seed, epoch, block, 1]` alone (any thread, any order)."""
    cfg = self.cfg
    shape = (cfg.steps, cfg.batch, cfg.length)
    rows = slice(self.row_start, self.row_stop)
    rng = np.random.default_rng([cfg.seed, epoch, block, 1])
    window = rng.integers(1, cfg.window + 1, size=shape, dtype=np.int32)[:, rows]
    groups = (cfg.steps, cfg.batch, cfg.length // cfg.negative_share)
    neg_idx = rng.integers(0, len(self.neg_table), size=groups + (cfg.negatives,))
    negatives = self.neg_table[neg_idx[:, rows]]
    # where each step is in the schedule: its place in the epoch after the epochs before
    # it (`steps_per_epoch` each), so an epoch's padded steps do not advance the rate
    at = epoch * self._epoch_steps + block * cfg.steps + np.arange(cfg.steps, dtype=np.int32)
    sched = np.ascontiguousarray(np.broadcast_to(at[:, None], window.shape[:2]), np.int32)
    return {'tokens': tok, 'segment': seg, 'window': np.ascontiguousarray(window),
            'negatives': negatives, 'schedule_step': sched}

  def positions(self, start: StreamState) -> Iterator[tuple[int, int]]:
    epoch, block = start.epoch, start.block
    while epoch < self.epochs:
      if not self.has_block(epoch, block):
        epoch, block = epoch + 1, 0
        continue
      yield epoch, block
      block += 1

  def iterate(self, start: StreamState, prefetch: int = 2, workers: int = 1
              ) -> Iterator[tuple[StreamState, dict[str, np.ndarray]]]:
    """Yields `(state after this block, block)`. With `prefetch` > 0 a thread prepares the
    blocks, `prefetch` ahead, from this call on (not from the first `next`), so a caller
    can start it before work of its own (initialising, compiling); `close()` it (or drop
    it) when it is not read to the end. With `workers` > 1 that thread only cuts each
    block's tokens, in order, and `workers` threads draw the blocks' windows and negatives
    (the costly part: a gather from the unigram table per negative), up to `prefetch +
    workers` blocks ahead; the blocks are the same as with one."""
    if workers < 1:
      raise ValueError(f'workers must be >= 1, got {workers}')
    if prefetch <= 0 or workers == 1:
      def produce():
        for epoch, block in self.positions(start):
          yield StreamState(epoch, block + 1), self.make_block(epoch, block)
      return produce() if prefetch <= 0 else Prefetched(produce(), prefetch)
    pool = concurrent.futures.ThreadPoolExecutor(workers, 'translearn-blocks')

    def submit():
      for epoch, block in self.positions(start):
        yield StreamState(epoch, block + 1), pool.submit(self._draw, epoch, block,
                                                         *self._tokens(epoch, block))
    return _Resolved(Prefetched(submit(), prefetch + workers), pool)


_DONE = object()


class Prefetched:
  """The items of `gen`, produced `size` ahead by a daemon thread that starts at once; an
  error in `gen` is raised by the `next` that reaches it. `close()` (or garbage collection)
  stops the thread after the item it is working on."""

  def __init__(self, gen, size: int):
    self._q: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    q, stop = self._q, self._stop    # the thread holds these, not `self`: dropping it closes

    def worker():
      try:
        for item in gen:
          if stop.is_set():
            return
          q.put(item)
        q.put(_DONE)
      except BaseException as e:  # surfaced in the consumer
        q.put(e)

    threading.Thread(target=worker, daemon=True).start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._q.get()
    if item is _DONE or isinstance(item, BaseException):
      self.close()
      if item is _DONE:
        raise StopIteration
      raise item
    return item

  def close(self) -> None:
    self._done = True
    self._stop.set()
    while True:            # unblocks a worker waiting to put; it then sees the stop
      try:
        self._q.get_nowait()
      except queue.Empty:
        break

  def __del__(self):
    self.close()


class _Resolved:
  """`(state, block)` from the `(state, future)` items of `items` (a `Prefetched`), waiting
  for each future in turn; `close()` closes `items` and drops the pool's queued work."""

  def __init__(self, items: Prefetched, pool: concurrent.futures.ThreadPoolExecutor):
    self._items, self._pool = items, pool

  def __iter__(self):
    return self

  def __next__(self):
    try:
      state, future = next(self._items)
      return state, future.result()
    except BaseException:        # the end, or an error: the stream stops, as Prefetched does
      self.close()
      raise

  def close(self) -> None:
    self._items.close()
    self._pool.shutdown(wait=False, cancel_futures=True)

  def __del__(self):
    self.close()
