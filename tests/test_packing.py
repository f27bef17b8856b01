"""Packed seq2seq rows: every pair once, segments/positions, resume, and packed = unpacked."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from translearn_jax.data.lm_data import LMState
from translearn_jax.data.packing import PackStream, first_fit
from translearn_jax.data.tokenizer import BOS, EOS
from translearn_jax.errors import DataError
from translearn_jax.models import seq2seq as s2s
from translearn_jax.pretraining import seq2seq
from translearn_jax.training import mesh as mesh_lib


def pairs(n=57, width=12, seed=0, vocab=30, longest=None):
  """(source, target_in, target_out) rows as pair_arrays makes them; token ids trace the pair."""
  rng = np.random.default_rng(seed)
  src = np.zeros((n, width), np.int32)
  tin = np.zeros((n, width), np.int32)
  tout = np.zeros((n, width), np.int32)
  for i in range(n):
    top = longest or width
    ls, lt = rng.integers(1, top + 1), rng.integers(1, top)
    src[i, :ls] = rng.integers(4, vocab, ls)
    t = rng.integers(4, vocab, lt)
    tin[i, :lt + 1] = np.concatenate([[BOS], t])
    tout[i, :lt + 1] = np.concatenate([t, [EOS]])
  return src, tin, tout


def unpack(batch):
  """[(source, target_in, target_out)] of the pairs in a packed batch, by segment."""
  out = []
  b = {k: v[0] for k, v in batch.items()}
  for r in range(b['source'].shape[0]):
    for seg in range(1, b['source_segments'][r].max() + 1):
      s = b['source_segments'][r] == seg
      t = b['target_segments'][r] == seg
      np.testing.assert_array_equal(b['source_positions'][r][s], np.arange(s.sum()))
      np.testing.assert_array_equal(b['target_positions'][r][t], np.arange(t.sum()))
      out.append((tuple(b['source'][r][s]), tuple(b['target_in'][r][t]),
                  tuple(b['target_out'][r][t])))
  return out


def as_tuples(src, tin, tout, i):
  return (tuple(src[i][src[i] > 0]), tuple(tin[i][tout[i] > 0]), tuple(tout[i][tout[i] > 0]))


def test_every_pair_once_per_epoch_in_contiguous_segments():
  src, tin, tout = pairs()
  s = PackStream(src, tin, tout, rows=4, epochs=2, seed=5)
  expected = sorted(as_tuples(src, tin, tout, i) for i in range(len(src)))
  per_epoch = {0: [], 1: []}
  for state, b in s.iterate(LMState()):
    assert b['source'].shape == (1, 4, 12) and b['target_out'].shape == (1, 4, 12)
    # segments are contiguous runs 1, 2, ... followed by padding only
    for r in range(4):
      for side in ('source', 'target'):
        seg = b[f'{side}_segments'][0, r]
        k = int((seg > 0).sum())
        assert (seg[:k] > 0).all() and (seg[k:] == 0).all() and (np.diff(seg[:k]) >= 0).all()
      assert ((b['source'][0, r] > 0) == (b['source_segments'][0, r] > 0)).all()
    per_epoch[state.epoch] += unpack(b)
  for ep in (0, 1):
    assert sorted(per_epoch[ep]) == expected          # every pair once, content intact
  assert per_epoch[0] != per_epoch[1]                  # reshuffled per epoch
  fill = s.fill()
  # more of each batch is real tokens than with one pair a row (~0.53 / 0.59 here)
  assert fill['source'] > (src > 0).mean() + 0.05 and fill['target'] > (tout > 0).mean() + 0.05
  assert s.total_steps == sum(len(p) for p in s.plans) < 2 * len(src) / 4


def test_first_fit_respects_both_widths():
  src_len, tgt_len = np.array([5, 5, 2, 6, 1]), np.array([1, 6, 6, 1, 1])
  batches = first_fit(src_len, tgt_len, np.arange(5), rows=2, src_width=8, tgt_width=8)
  for batch in batches:
    for r in range(2):
      members = [i for i, row in batch if row == r]
      assert src_len[members].sum() <= 8 and tgt_len[members].sum() <= 8
  assert sorted(i for batch in batches for i, _ in batch) == list(range(5))
  with pytest.raises(DataError, match='pair 1 needs 9/1 source/target positions'):
    first_fit(np.array([1, 9]), np.array([1, 1]), np.arange(2), 2, 8, 8)


def test_resume_and_process_slices():
  src, tin, tout = pairs(n=40)
  full = [b for _, b in PackStream(src, tin, tout, 4, 2, 1).iterate(LMState())]
  s = PackStream(src, tin, tout, 4, 2, 1)
  resumed = [b for _, b in s.iterate(LMState(epoch=1, batch=2))]
  start = len(s.plans[0]) + 2
  assert len(resumed) == len(full) - start
  for a, b in zip(resumed, full[start:]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  half = PackStream(src, tin, tout, 4, 2, 1, row_start=2, row_stop=4)
  np.testing.assert_array_equal(half.make_batch(0, 1)['target_out'], full[1]['target_out'][:, 2:4])
  with pytest.raises(DataError, match='no training pairs'):
    PackStream(src[:0], tin[:0], tout[:0], 4, 1, 0)


def test_packed_rows_compute_what_each_pair_computes_alone():
  cfg = s2s.Seq2SeqConfig(vocab_size=30, d_model=16, num_heads=2, encoder_layers=1,
                          decoder_layers=1, d_ff=32, max_len=12, dropout=0.0)
  model = s2s.Seq2Seq(cfg)
  src, tin, tout = pairs(n=12, width=6, longest=3)
  batch = PackStream(src, tin, tout, rows=3, epochs=1, seed=0).make_batch(0, 0)
  b = {k: jnp.asarray(v[0]) for k, v in batch.items()}
  params = jax.jit(model.init)(jax.random.key(1), src[:1], tin[:1])['params']
  apply = jax.jit(lambda *a: model.apply({'params': params}, *a))
  packed = apply(b['source'], b['target_in'], b['source_segments'], b['source_positions'],
                 b['target_segments'], b['target_positions'])
  alone = apply(jnp.asarray(src), jnp.asarray(tin))
  checked = 0
  for r in range(3):
    for seg in range(1, int(b['target_segments'][r].max()) + 1):
      t = np.asarray(b['target_segments'][r] == seg)
      pair = unpack({k: v[:, r:r + 1] for k, v in batch.items()})[seg - 1]
      i = [j for j in range(len(src)) if as_tuples(src, tin, tout, j) == pair][0]
      np.testing.assert_allclose(packed[r][t], alone[i][:t.sum()], atol=2e-5, rtol=2e-5)
      checked += 1
  assert checked >= 4  # several pairs shared rows

  # the training step's loss over a packed batch = the loss over the same pairs padded
  mesh = mesh_lib.make_mesh(1)
  tx = optax.sgd(0.0)
  state = seq2seq.init_state(model, tx, 0, mesh, 6, 6)
  state = state.replace(params=jax.tree.map(jnp.copy, params))  # the step donates its state
  fn = seq2seq.make_train_fn(model, tx, lambda s: 0.0, mesh, 0.1)
  ids = [i for i, _ in PackStream(src, tin, tout, 3, 1, 0).plans[0][0]]
  padded = {'source': src[ids][None], 'target_in': tin[ids][None], 'target_out': tout[ids][None]}
  _, m_packed = fn(state, mesh_lib.shard_batch(batch, mesh, 1))
  state = seq2seq.init_state(model, tx, 0, mesh, 6, 6).replace(
      params=jax.tree.map(jnp.copy, params))
  _, m_padded = fn(state, mesh_lib.shard_batch(padded, mesh, 1))
  assert float(m_packed['loss_count']) == float(m_padded['loss_count'])
  np.testing.assert_allclose(float(m_packed['loss_sum']), float(m_padded['loss_sum']), rtol=1e-5)


def test_packed_decoding_is_refused():
  cfg = s2s.Seq2SeqConfig(vocab_size=30, d_model=16, num_heads=2, encoder_layers=1,
                          decoder_layers=1, d_ff=32, max_len=12, dropout=0.0)
  x = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(s2s.Seq2Seq(cfg).init)(jax.random.key(0), x, x)['params']
  with pytest.raises(ValueError, match='both source_segments and target_segments'):
    s2s.Seq2Seq(cfg).apply({'params': params}, x, x, source_segments=x)
