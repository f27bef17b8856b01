"""Pair generation statistics of the skip-gram/CBOW input pipeline."""

import threading
import time

import numpy as np
import pytest

from translearn_jax.data.vocab import encode_corpus
from translearn_jax.data.word2vec_stream import (BlockStream, Prefetched, StreamConfig,
                                                 StreamState, keep_probabilities, negative_table,
                                                 subsample)
from translearn_jax.errors import DataError


def zipf_corpus(n_words=50, n_tokens=200_000, seed=0):
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, n_words + 1)
  ids = rng.choice(n_words, size=n_tokens, p=p / p.sum())
  words = [f'w{i}' for i in ids]
  docs = [' '.join(words[i:i + 1000]) for i in range(0, n_tokens, 1000)]
  return encode_corpus(docs, min_count=1)


def cfg(**kw):
  base = dict(batch=4, length=64, steps=8, window=5, negatives=5, sample=1e-3, seed=3)
  base.update(kw)
  return StreamConfig(**base)


def test_keep_probability_formula():
  counts = np.array([1000, 100, 10, 1])
  s = 0.01
  t = s * counts.sum()
  expected = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)
  np.testing.assert_allclose(keep_probabilities(counts, s), expected)
  assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]
  assert keep_probabilities(counts, s)[-1] == 1.0 and keep_probabilities(counts, s)[0] < 0.5


@pytest.mark.parametrize('chunk', [1, 7, 4096, 10**9])
def test_subsample_in_chunks_draws_what_one_call_draws(chunk):
  """The chunked pass keeps exactly the tokens one draw of the whole corpus keeps (the
  formula resuming depends on), whatever the chunk size, odd ones included."""
  corpus = zipf_corpus(n_tokens=20_011)
  keep_p = keep_probabilities(corpus.vocab.counts, 1e-2)
  rng = np.random.default_rng([3, 1])
  keep = rng.random(len(corpus.ids), dtype=np.float32) < keep_p[corpus.ids]
  ids, segs = subsample(corpus.ids, corpus.segments, keep_p, [3, 1], chunk=chunk)
  assert 0.2 * len(keep) < keep.sum() < len(keep)       # the test thins, and keeps some
  np.testing.assert_array_equal(ids, corpus.ids[keep])
  np.testing.assert_array_equal(segs, corpus.segments[keep])
  assert ids.dtype == corpus.ids.dtype and segs.dtype == corpus.segments.dtype


def test_subsampling_frequencies_match_keep_probability():
  corpus = zipf_corpus()
  stream = BlockStream(corpus, cfg(sample=1e-2), epochs=1)
  kept, _ = stream._kept(0)
  before = np.bincount(corpus.ids, minlength=len(corpus.vocab))
  after = np.bincount(kept, minlength=len(corpus.vocab))
  p = stream.keep_p
  # Binomial tolerance: 5 standard deviations per word.
  sd = np.sqrt(before * p * (1 - p)) + 1
  assert np.all(np.abs(after - before * p) < 5 * sd)
  assert after[0] < 0.5 * before[0]  # the most frequent word is thinned
  assert stream.expected_kept_per_epoch() == pytest.approx(len(kept), rel=0.02)


def test_window_uniform_and_negatives_follow_unigram_075():
  corpus = zipf_corpus()
  stream = BlockStream(corpus, cfg(sample=0), epochs=1)
  blocks = [b for _, b in stream.iterate(StreamState(), prefetch=0)]
  win = np.concatenate([b['window'].ravel() for b in blocks])
  assert win.min() == 1 and win.max() == 5
  np.testing.assert_allclose(np.bincount(win)[1:] / len(win), 0.2, atol=0.01)
  neg = np.concatenate([b['negatives'].ravel() for b in blocks])
  want = corpus.vocab.counts ** 0.75
  want = want / want.sum()
  got = np.bincount(neg, minlength=len(want)) / len(neg)
  assert np.all(np.abs(got - want) < 4 * np.sqrt(want / len(neg)) + 1e-4)


def test_negative_table_shares():
  table = negative_table(np.array([16, 1]), power=0.5, size=1000)
  assert abs((table == 0).mean() - 0.8) < 0.002


def test_blocks_cover_kept_stream_in_order_with_padding():
  corpus = zipf_corpus(n_tokens=5000)
  stream = BlockStream(corpus, cfg(), epochs=2)
  blocks = list(stream.iterate(StreamState(), prefetch=0))
  for epoch in (0, 1):
    kept, segs = stream._kept(epoch)
    toks = np.concatenate([b['tokens'].ravel() for s, b in blocks if
                           (s.epoch == epoch and s.block > 0)])
    seg = np.concatenate([b['segment'].ravel() for s, b in blocks if s.epoch == epoch])
    real = seg >= 0
    assert real.sum() == len(kept)
    np.testing.assert_array_equal(toks[real], kept)
    assert np.all(seg[~real] == -1) and np.all(~real[:len(kept)] == False)  # noqa: E712
  assert blocks[-1][0] == StreamState(1, stream.num_blocks(1))


def test_an_epoch_is_subsampled_only_as_far_as_its_blocks_need(monkeypatch):
  """The first block of an epoch waits for a chunk of the corpus, not all of it; the
  blocks are those of the epoch subsampled in one pass."""
  from translearn_jax.data import word2vec_stream
  monkeypatch.setattr(word2vec_stream, 'SUBSAMPLE_CHUNK', 1000)
  corpus = zipf_corpus(n_tokens=20_000)
  stream = BlockStream(corpus, cfg(sample=1e-2), epochs=1)     # 2,048 tokens a block
  blocks = stream.iterate(StreamState(), prefetch=0)
  first = next(blocks)[1]
  drawn = stream._epoch(0)._read
  assert 2_048 < drawn <= 2_048 / 0.4 + 1_000 < len(corpus.ids)   # ~40% of tokens kept
  rest = [b for _, b in blocks]
  assert stream._epoch(0).complete
  whole, _ = subsample(corpus.ids, corpus.segments, stream.keep_p, [3, 0])
  toks = np.concatenate([b['tokens'].ravel() for b in [first] + rest])
  np.testing.assert_array_equal(toks[:len(whole)], whole)
  assert len(rest) + 1 == -(-len(whole) // 2_048)


def spread_rows(blocks, batch):
  """Each row's real tokens and segments over an epoch's blocks, and its padding."""
  tok = np.concatenate([b['tokens'] for b in blocks])          # (steps, B, L)
  seg = np.concatenate([b['segment'] for b in blocks])
  return [(tok[:, r].ravel(), seg[:, r].ravel()) for r in range(batch)]


@pytest.mark.parametrize('n_tokens, batch', [(7000, 4), (9000, 3), (40, 64)])
def test_spread_rows_read_each_part_of_the_epoch_in_order(n_tokens, batch):
  """`batch_rows='spread'`: row r of every step holds the next tokens of the r-th of `batch`
  parts of the epoch's N kept tokens, `[r·N//B, (r+1)·N//B)` (word2vec's split between
  threads), each part's end padded; together the rows hold every kept token once; the
  block count is the block layout's. With fewer kept tokens than rows some parts are empty."""
  corpus = zipf_corpus(n_tokens=n_tokens)
  stream = BlockStream(corpus, cfg(batch=batch, batch_rows='spread', steps=2), epochs=2)
  blocks = list(stream.iterate(StreamState(), prefetch=0))
  for epoch in (0, 1):
    kept, segs = stream._kept(epoch)
    n = len(kept)
    bounds = [r * n // batch for r in range(batch + 1)]
    assert stream.num_blocks(epoch) == max(1, -(-n // (2 * batch * 64)))
    mine = [b for s, b in blocks if s.epoch == epoch]
    assert len(mine) == stream.num_blocks(epoch)
    if n_tokens == 7000:
      assert n % batch and len(mine) > 1
    if n_tokens == 40:
      assert n < batch and bounds.count(0) > 1
    for r, (row_tok, row_seg) in enumerate(spread_rows(mine, batch)):
      lo, hi = bounds[r], bounds[r + 1]
      np.testing.assert_array_equal(row_tok[:hi - lo], kept[lo:hi])
      np.testing.assert_array_equal(row_seg[:hi - lo], segs[lo:hi])
      assert np.all(row_seg[hi - lo:] == -1) and np.all(row_tok[hi - lo:] == 0)


@pytest.mark.parametrize('rows', ['block', 'spread'])
def test_an_epoch_that_keeps_no_token_is_one_padded_block(rows):
  stream = BlockStream(zipf_corpus(n_tokens=500), cfg(batch_rows=rows), epochs=1)
  stream.keep_p[:] = 0.0
  blocks = list(stream.iterate(StreamState(), prefetch=0))
  assert len(blocks) == 1 and blocks[0][0] == StreamState(0, 1)
  block = blocks[0][1]
  assert np.all(block['segment'] == -1) and np.all(block['tokens'] == 0)
  assert block['tokens'].dtype == block['segment'].dtype == np.int32


@pytest.mark.parametrize('rows', ['block', 'spread'])
def test_resume_from_state_reproduces_stream(rows):
  corpus = zipf_corpus(n_tokens=20000)
  stream = BlockStream(corpus, cfg(batch_rows=rows), epochs=2)
  full = list(stream.iterate(StreamState(), prefetch=2))
  cut = 3
  assert len(full) > cut + 2
  resumed = list(BlockStream(corpus, cfg(batch_rows=rows), epochs=2).iterate(full[cut - 1][0],
                                                                        prefetch=2))
  assert len(resumed) == len(full) - cut
  for (s1, b1), (s2, b2) in zip(full[cut:], resumed):
    assert s1 == s2
    for k in b1:
      np.testing.assert_array_equal(b1[k], b2[k])


@pytest.mark.parametrize('rows', ['block', 'spread'])
def test_process_rows_slice_global_batch(rows):
  corpus = zipf_corpus(n_tokens=5000)
  full = BlockStream(corpus, cfg(batch=4, batch_rows=rows), epochs=1).make_block(0, 0)
  part = BlockStream(corpus, cfg(batch=4, batch_rows=rows), epochs=1, row_start=2,
                     row_stop=4).make_block(0, 0)
  for k in full:
    np.testing.assert_array_equal(full[k][:, 2:4], part[k])


def test_tiny_corpus_is_an_error():
  corpus = encode_corpus(['word'], min_count=1)
  with pytest.raises(DataError, match='at least 2'):
    BlockStream(corpus, cfg(), epochs=1)


def test_group_shared_negatives_are_one_draw_per_group():
  """`negative_share=G` draws `(S, B, L/G, K)` negatives from the same unigram^0.75 table,
  and a share that does not divide the row is refused."""
  corpus = zipf_corpus()
  stream = BlockStream(corpus, cfg(negative_share=16), epochs=1)
  block = stream.make_block(0, 0)
  assert block['negatives'].shape == (8, 4, 64 // 16, 5)
  assert block['tokens'].shape == (8, 4, 64)
  draws = np.concatenate([stream.make_block(0, b)['negatives'].reshape(-1)
                          for b in range(stream.num_blocks(0))])
  table = negative_table(corpus.vocab.counts)
  want = np.bincount(table, minlength=len(corpus.vocab)) / len(table)
  got = np.bincount(draws, minlength=len(corpus.vocab)) / len(draws)
  np.testing.assert_allclose(got[:5], want[:5], atol=0.01)
  with pytest.raises(ValueError, match='negative_share=3 must be >= 1 and divide the row'):
    BlockStream(corpus, cfg(negative_share=3), epochs=1)


def test_negative_table_is_the_searched_unigram_table():
  """The table built from each id's slot count is, slot for slot, the table that
  searching every slot's position (i + 0.5) / size in the unigram^0.75 cdf gives (ids past
  the cdf's end clipped to the last), whatever the counts: zeros, ties, tiny tables."""
  def searched(counts, size):
    weights = np.asarray(counts, np.float64) ** 0.75
    cdf = np.cumsum(weights) / weights.sum()
    return np.searchsorted(cdf, (np.arange(size) + 0.5) / size).astype(np.int32).clip(
        0, len(counts) - 1)
  rng = np.random.default_rng(0)
  for trial in range(150):
    vocab, size = int(rng.integers(1, 200)), int(rng.integers(1, 3000))
    counts = np.ones(vocab) if trial % 3 == 0 else rng.integers(0, 50, vocab).astype(float)
    counts[rng.integers(0, vocab)] += 1
    np.testing.assert_array_equal(negative_table(counts, size=size), searched(counts, size))
  zipf = rng.zipf(1.3, 5000).astype(float)
  np.testing.assert_array_equal(negative_table(zipf, size=200_000), searched(zipf, 200_000))


def test_prefetched_starts_before_the_first_next_and_stops_on_close():
  made, first = [], threading.Event()

  def endless():
    i = 0
    while True:
      made.append(i)
      first.set()
      yield i
      i += 1
  # the threads alive before, not their count: an earlier test's producer may still be
  # ending while this one runs
  before = set(threading.enumerate())
  it = Prefetched(endless(), 2)
  assert first.wait(10), 'nothing produced before the first next()'
  assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
  it.close()
  deadline = time.monotonic() + 10
  while set(threading.enumerate()) - before and time.monotonic() < deadline:
    time.sleep(0.01)
  assert not set(threading.enumerate()) - before, 'the producer thread still runs after close()'
  assert len(made) <= 5 + 2 + 2                   # it stopped within a few items
  with pytest.raises(StopIteration):
    next(it)


def test_prefetched_raises_the_producers_error_in_order():
  def failing():
    yield from range(3)
    raise DataError('line 4: bad')
  it = Prefetched(failing(), 2)
  assert [next(it) for _ in range(3)] == [0, 1, 2]
  with pytest.raises(DataError, match='line 4'):
    next(it)
  with pytest.raises(StopIteration):
    next(it)


@pytest.mark.parametrize('workers,prefetch', [(2, 1), (3, 2)])
def test_worker_threads_give_the_same_blocks_in_order(workers, prefetch):
  """Blocks drawn by a pool (over two epochs, a padded last block each, process rows, a
  resumed start) equal the one-thread stream's, item for item."""
  corpus = zipf_corpus(n_tokens=20000)
  c = cfg(negative_share=2)
  one = list(BlockStream(corpus, c, epochs=2, row_start=1, row_stop=3).iterate(
      StreamState(), prefetch=0))
  threads = set()
  stream = BlockStream(corpus, c, epochs=2, row_start=1, row_stop=3)
  draw = stream._draw

  def spy(*args):
    threads.add(threading.current_thread().name)
    time.sleep(0.002 * (args[1] % 3 == 0))     # some blocks finish after later ones
    return draw(*args)
  stream._draw = spy
  many = list(stream.iterate(StreamState(), prefetch=prefetch, workers=workers))
  assert len(one) == len(many) > 4
  assert len(threads) > 1, threads                 # the blocks were drawn in the pool
  for (s1, b1), (s2, b2) in zip(one, many):
    assert s1 == s2 and b1.keys() == b2.keys()
    for k in b1:
      np.testing.assert_array_equal(b1[k], b2[k])
  resumed = list(BlockStream(corpus, c, epochs=2, row_start=1, row_stop=3).iterate(
      one[2][0], prefetch=prefetch, workers=workers))
  assert [s for s, _ in resumed] == [s for s, _ in one[3:]]
  np.testing.assert_array_equal(resumed[0][1]['negatives'], one[3][1]['negatives'])


def test_worker_threads_raise_a_draws_error_and_stop_on_close():
  corpus = zipf_corpus(n_tokens=20000)
  stream = BlockStream(corpus, cfg(), epochs=50)
  draw = stream._draw

  def failing(epoch, block, *rest):
    if (epoch, block) == (0, 2):
      raise DataError('block 2: bad')
    return draw(epoch, block, *rest)
  stream._draw = failing
  before = set(threading.enumerate())
  it = stream.iterate(StreamState(), prefetch=1, workers=2)
  next(it), next(it)
  with pytest.raises(DataError, match='block 2'):
    next(it)
  with pytest.raises(StopIteration):
    next(it)

  def wait_for_threads_to_end():
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
      time.sleep(0.01)
    assert not set(threading.enumerate()) - before, 'threads still run after an error or close()'
  wait_for_threads_to_end()
  it = BlockStream(corpus, cfg(), epochs=50).iterate(StreamState(), prefetch=1, workers=2)
  next(it)
  # the cutter and the pool's drawers: a pool starts its second thread only when a draw
  # arrives while the first is busy, so one or two of them
  started = set(threading.enumerate()) - before
  drawers = [t for t in started if t.name.startswith('translearn-blocks')]
  assert len(started) == len(drawers) + 1 and 1 <= len(drawers) <= 2, started
  it.close()
  wait_for_threads_to_end()
  with pytest.raises(ValueError, match='workers'):
    BlockStream(corpus, cfg(), epochs=1).iterate(StreamState(), workers=0)


@pytest.mark.parametrize('rows', ['block', 'spread'])
def test_schedule_steps_count_the_steps_that_train_not_an_epochs_padding(rows):
  """The rate follows the tokens trained (word2vec's rule), not the steps run: each step
  carries its place in the schedule, its place in the epoch after `steps_per_epoch` steps
  an epoch, so the padded steps that fill an epoch's last block spend none of the decay
  (a large batch on a short corpus ran 67% padding steps and ended at 0.14 alpha0)."""
  from translearn_jax.pretraining import word2vec
  corpus = zipf_corpus(n_tokens=30_000)
  s = BlockStream(corpus, cfg(batch=8, length=64, steps=16, batch_rows=rows), epochs=3)
  per_epoch = s.steps_per_epoch()
  assert s.estimated_total_steps() == 3 * per_epoch
  sched = word2vec._linear_schedule(1.0, 1e-4, s.estimated_total_steps())
  real, padded, rates = [], 0, []
  for state, b in s.iterate(StreamState(), prefetch=0):
    assert (b['schedule_step'] == b['schedule_step'][:, :1]).all()    # one place a step
    for k in range(16):
      if (b['segment'][k] >= 0).any():
        real.append((state.epoch, int(b['schedule_step'][k, 0])))
        rates.append(float(sched(real[-1][1])))
      else:
        padded += 1
  assert padded >= 3                          # every epoch ends in padded steps here
  for e in range(3):                          # each epoch's steps count on from e * per_epoch
    at = [x for ep, x in real if ep == e]
    assert at == list(range(e * per_epoch, e * per_epoch + len(at)))
    assert abs(len(at) - per_epoch) <= 1      # the expected kept tokens, the real ones
  # the decay is spent on the steps that train: the last one is at (about) its end
  assert rates[0] == 1.0 and real[-1][1] >= s.estimated_total_steps() - 2
  assert rates == sorted(rates, reverse=True)
  # the step takes its rate there, not at its count of steps run (padded ones included)
  import types
  batch, lr = word2vec._step_rate(sched, types.SimpleNamespace(step=50),
                                  {'tokens': 0, 'schedule_step': np.array([7, 7])})
  assert float(lr) == float(sched(7)) and 'schedule_step' not in batch
  assert float(word2vec._step_rate(sched, types.SimpleNamespace(step=50), {})[1]) == \
      float(sched(50))
