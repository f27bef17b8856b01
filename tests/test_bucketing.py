"""Length-bucketed batches: every row once per epoch, trimmed shapes, resume, errors."""

import numpy as np
import pytest

from translearn_jax.data.bucketing import BucketStream, parse_boundaries
from translearn_jax.data.lm_data import LMState
from translearn_jax.errors import ConfigError, DataError


def make(n=203, width=40, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, width + 1, n)
  rows = np.zeros((n, width), np.int32)
  for i, l in enumerate(lengths):
    rows[i, :l] = i + 1  # row id as content, so batches can be traced back
  return rows, lengths


def test_each_row_once_per_epoch_and_batches_fit_their_bucket():
  rows, lengths = make()
  bounds = parse_boundaries('8,16,24', 40)
  assert bounds == [8, 16, 24, 40]
  s = BucketStream({'x': rows}, lengths, bounds, batch=16, epochs=2, seed=3)
  seen = {0: [], 1: []}
  widths = set()
  for state, b in s.iterate(LMState()):
    x = b['x'][0]
    assert x.shape[0] == 16 and x.shape[1] in bounds
    widths.add(x.shape[1])
    ids = x[:, 0] - 1
    # nothing real is cut off: the row fits the batch width
    assert (lengths[ids] <= x.shape[1]).all()
    np.testing.assert_array_equal(x, rows[ids, :x.shape[1]])
    seen[state.epoch].extend(ids.tolist())
  assert len(widths) > 1
  for ep in (0, 1):
    assert len(seen[ep]) == len(set(seen[ep])) == s.batches_per_epoch * 16
    # at most batch-1 rows are left out, and only from the leftovers of the longest bucket
    assert 203 - len(seen[ep]) < 16
  assert seen[0] != seen[1]  # reshuffled per epoch
  # padding saved against one fixed width
  used = sum(16 * bounds[b] for b, _ in s._plan(0))
  assert used < 0.8 * s.batches_per_epoch * 16 * 40


def test_resume_sees_the_same_batches_and_process_slices():
  rows, lengths = make()
  bounds = parse_boundaries('10,20', 40)
  full = [b['x'] for _, b in BucketStream({'x': rows}, lengths, bounds, 8, 2, 1).iterate(LMState())]
  s = BucketStream({'x': rows}, lengths, bounds, 8, 2, 1)
  resumed = [b['x'] for _, b in s.iterate(LMState(epoch=1, batch=3))]
  start = s.batches_per_epoch + 3
  assert len(resumed) == len(full) - start
  for a, b in zip(resumed, full[start:]):
    np.testing.assert_array_equal(a, b)
  half = BucketStream({'x': rows}, lengths, bounds, 8, 2, 1, row_start=4, row_stop=8)
  np.testing.assert_array_equal(half.make_batch(0, 5)['x'], full[5][:, 4:8])


def test_bad_boundaries_and_too_little_data():
  with pytest.raises(ConfigError, match='length_buckets'):
    parse_boundaries('16,8', 40)
  with pytest.raises(ConfigError, match='length_buckets'):
    parse_boundaries('a,b', 40)
  assert parse_boundaries('', 40) == [40]
  assert parse_boundaries('8,40,64', 40) == [8, 40]
  rows, lengths = make(n=5)
  with pytest.raises(DataError, match='batch_size=8'):
    BucketStream({'x': rows}, lengths, [40], 8, 1, 0)
