"""Meshes with `data`, `fsdp` and `tensor` axes and parameters placed by logical-axis rules
(issue #18): the same losses on every mesh, FSDP's memory saving, checkpoints across meshes,
and the config errors of `mesh.*`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from translearn_jax.errors import ConfigError
from translearn_jax.models import seq2seq as s2s
from translearn_jax.models import transformer_lm
from translearn_jax.pretraining import lm
from translearn_jax.pretraining import seq2seq
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training.checkpoint import Checkpointer

MESHES = [{'data': 8}, {'data': 1, 'fsdp': 8}, {'data': 2, 'fsdp': 2, 'tensor': 2},
          {'data': 1, 'fsdp': 2, 'tensor': 4}]
# the other families on the two meshes that use every axis (each mesh is a compilation,
# most of these tests' time); the LM, whose rules they share, runs on all four
MIXED = MESHES[2:]
V, T, B = 64, 12, 16


def tiny_model():
  cfg = transformer_lm.TransformerConfig(vocab_size=V, d_model=32, num_heads=4, num_layers=1,
                                         d_ff=128, max_len=16, dropout=0.0,
                                         deterministic=False)
  return transformer_lm.TransformerLM(cfg)


def batches(n=3):
  rng = np.random.default_rng(0)
  return [rng.integers(1, V, (1, B, T + 1)).astype(np.int32) for _ in range(n)]


def setup(spec, devices=8):
  mesh = mesh_lib.make_mesh(spec, devices)
  model, tx = tiny_model(), optax.adamw(1e-2)
  state = lm.init_state(model, tx, 0, T, mesh)
  fn = lm.make_train_fn(model, tx, lambda s: 1e-2, mesh, mesh_lib.shardings_of(state))
  return mesh, state, fn


def train(spec, devices=8, steps=3):
  mesh, state, fn = setup(spec, devices)
  losses = []
  for b in batches(steps):
    state, m = fn(state, mesh_lib.shard_batch({'tokens': b}, mesh, 1))
    losses.append(float(m['loss_sum']) / float(m['loss_count']))
  return losses, state


def raw(x):
  return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
                    else x)


def per_device_bytes(tree, device):
  return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
             if s.device == device)


def test_same_losses_on_every_mesh():
  ref, ref_state = train({'data': 1}, devices=1)
  for spec in MESHES:
    losses, state = train(spec)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, err_msg=str(spec))
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
      # Adam divides by sqrt(v): a near-zero gradient turns reduction-order rounding into
      # ~1e-4 of a bias; the losses above are the tight check
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=2e-4)


def train_seq2seq(spec, devices=8, steps=3):
  cfg = s2s.Seq2SeqConfig(vocab_size=V, d_model=32, num_heads=4, d_ff=64, encoder_layers=1,
                          decoder_layers=1, max_len=16, dropout=0.0, deterministic=False)
  mesh, model, tx = mesh_lib.make_mesh(spec, devices), s2s.Seq2Seq(cfg), optax.adamw(1e-2)
  state = seq2seq.init_state(model, tx, 0, mesh, 10, 8)
  fn = seq2seq.make_train_fn(model, tx, lambda s: 1e-2, mesh, 0.1, mesh_lib.shardings_of(state))
  rng, losses = np.random.default_rng(1), []
  for _ in range(steps):
    b = {'source': rng.integers(1, V, (1, B, 10)), 'target_in': rng.integers(1, V, (1, B, 8)),
         'target_out': rng.integers(0, V, (1, B, 8))}
    state, m = fn(state, mesh_lib.shard_batch({k: v.astype(np.int32) for k, v in b.items()},
                                              mesh, 1))
    losses.append(float(m['loss_sum']) / float(m['loss_count']))
  return losses


def test_seq2seq_same_losses_on_every_mesh():
  ref = train_seq2seq({'data': 1}, devices=1)
  for spec in MIXED:
    np.testing.assert_allclose(train_seq2seq(spec), ref, rtol=1e-5, err_msg=str(spec))


def test_gpt2_small_shrunk_trains_the_same_two_steps_on_every_mesh():
  """configs/gpt2_small.py with its width, depth and vocabulary shrunk and everything else
  kept (bf16 compute, fused attention, full remat, chunked loss, learned positions): two
  steps on each mesh give the one-device losses within bf16 rounding."""
  from configs import gpt2_small
  from translearn_jax.models import lm as lm_models
  c = gpt2_small.get_config()
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.d_ff = 32, 4, 1, 64
  c.model.max_len, c.model.vocab_size, c.model.dropout = 16, V, 0.0
  cfg = lm_models.config_from(c.model, V, c.dtype, deterministic=False)
  assert (cfg.dtype, cfg.remat, cfg.attention_impl) == (jnp.bfloat16, 'full', 'dot_product')
  chunk = 4                                     # the config's 1024 shrunk with the sequence

  def two_steps(spec, devices=8):
    mesh, model, tx = mesh_lib.make_mesh(spec, devices), lm_models.make(cfg), optax.adamw(1e-2)
    state = lm.init_state(model, tx, 0, T, mesh)
    fn = lm.make_train_fn(model, tx, lambda s: 1e-2, mesh, mesh_lib.shardings_of(state),
                          loss_chunk=chunk)
    out = []
    for b in batches(2):
      state, m = fn(state, mesh_lib.shard_batch({'tokens': b}, mesh, 1))
      out.append(float(m['loss_sum']) / float(m['loss_count']))
    return out
  ref = two_steps({'data': 1}, devices=1)
  assert all(np.isfinite(ref))
  for spec in MIXED:
    np.testing.assert_allclose(two_steps(spec), ref, rtol=1e-2, err_msg=str(spec))


def test_rules_place_params_and_optimiser_state():
  _, state, _ = setup({'data': 2, 'fsdp': 2, 'tensor': 2})
  p, mu = state.params, state.opt_state[0].mu
  assert p['block_0']['mlp']['wi']['kernel'].sharding.spec == P('fsdp', 'tensor')
  assert p['block_0']['attn']['out']['kernel'].sharding.spec == P('tensor', 'fsdp')
  assert p['embed']['embedding'].sharding.spec == P('tensor', 'fsdp')
  assert p['ln_final']['scale'].sharding.spec == P()
  wi = p['block_0']['mlp']['wi']['kernel']
  assert mu['block_0']['mlp']['wi']['kernel'].sharding == wi.sharding
  assert state.opt_state[0].count.sharding.spec == P() and state.step.sharding.spec == P()
  # the 1-D data-parallel mesh of before: everything replicated
  _, state, _ = setup({'data': 8})
  assert {x.sharding.spec for x in jax.tree.leaves(state)} == {P()}


def test_fsdp_shrinks_per_device_memory():
  _, state, _ = setup({'data': 1, 'fsdp': 8})
  trees = (state.params, state.opt_state)
  total = sum(x.nbytes for x in jax.tree.leaves(trees))
  for d in jax.devices()[:8]:
    mine = per_device_bytes(trees, d)
    # only LayerNorm's scales and biases (`norm`) stay whole
    assert total / 8 <= mine <= 1.1 * total / 8, (mine, total)
  # without tensor parallelism, `mlp` and `heads` fall back to `fsdp`
  assert state.params['block_0']['mlp']['wi']['bias'].sharding.spec == P('fsdp')
  assert state.params['block_0']['attn']['query']['kernel'].sharding.spec == P('fsdp')


def test_checkpoint_restores_on_another_mesh_and_resumes_exactly(tmp_path):
  _, saved = train({'data': 1, 'fsdp': 8}, steps=2)
  ck = Checkpointer(str(tmp_path))
  ck.save(2, saved, {'pos': 2})
  _, template, fn = setup({'data': 2, 'fsdp': 2, 'tensor': 2})
  restored, data = ck.restore(template)
  assert data == {'pos': 2}
  for a, b, t in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), jax.tree.leaves(template)):
    assert a.sharding == t.sharding
    np.testing.assert_array_equal(raw(a), raw(b))
  # exact resume on the saving mesh: 2 steps + restore + 1 step == 3 steps straight
  mesh, template, fn = setup({'data': 1, 'fsdp': 8})
  state, _ = ck.restore(template)
  ck.close()
  state, m = fn(state, mesh_lib.shard_batch({'tokens': batches(3)[2]}, mesh, 1))
  straight, _ = train({'data': 1, 'fsdp': 8}, steps=3)
  assert float(m['loss_sum']) / float(m['loss_count']) == straight[2]


def test_mesh_config_errors_and_rules():
  assert mesh_lib.make_mesh(4).shape == {'data': 4, 'fsdp': 1, 'tensor': 1}
  assert mesh_lib.make_mesh({'fsdp': -1, 'tensor': 2}).shape == {'data': 1, 'fsdp': 4,
                                                                 'tensor': 2}
  with pytest.raises(ConfigError, match='config.mesh: mesh.data=2 × mesh.fsdp=2'):
    mesh_lib.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 1})
  with pytest.raises(ConfigError, match='config.mesh.fsdp: only one mesh axis may be -1'):
    mesh_lib.make_mesh({'data': -1, 'fsdp': -1})
  with pytest.raises(ConfigError, match='config.mesh.tensor=-1'):
    mesh_lib.make_mesh({'data': 3, 'tensor': -1})
  with pytest.raises(ConfigError, match='config.train.batch_size: 4 .* 8 batch shards'):
    mesh_lib.process_rows(4, mesh_lib.make_mesh({'data': 2, 'fsdp': 4}))
  assert mesh_lib.process_rows(4, mesh_lib.make_mesh({'data': 1, 'fsdp': 2, 'tensor': 4})) \
      == (0, 4)
  # a name no shipped model uses is added, with a warning (a misspelt 'embd' placed nothing)
  with pytest.warns(UserWarning, match=r"config\.mesh\.rules: logical axis 'extra' is none"):
    table = mesh_lib.parse_rules('vocab=, batch=data+fsdp+tensor, extra=tensor, mlp=tensor')
  assert [m for n, m in table if n == 'vocab'] == [None]
  assert [m for n, m in table if n == 'mlp'] == ['tensor']          # no fsdp fallback
  assert table[0] == ('batch', ('data', 'fsdp', 'tensor')) and table[-1] == ('extra', 'tensor')
  assert ('embed', 'fsdp') in table
  with pytest.raises(ConfigError, match="config.mesh.rules: 'embed=model'"):
    mesh_lib.parse_rules('embed=model')
  mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 2, 'tensor': 4})
  assert mesh_lib.spec_for(('vocab', 'embed'), (50257, 32), mesh,
                           mesh_lib.DEFAULT_RULES) == P(None, 'fsdp')   # 50257 % 4: whole


def test_lm_run_resumes_on_another_mesh(tmp_path):
  """The runner: 3 steps under (data 2, fsdp 2, tensor 2), resumed to 4 under (fsdp 8);
  `mesh.*` may change on resume."""
  from conftest import lm_config
  mesh_222 = {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}
  c = lm_config(**{'train.steps': 3, 'num_devices': 8, 'train.eval_max_rows': 16, **mesh_222})
  assert lm.train_and_evaluate(c, str(tmp_path))['steps'] == 3
  c = lm_config(**{'train.steps': 4, 'num_devices': 8, 'train.eval_max_rows': 16,
                   'mesh.data': 1, 'mesh.fsdp': 8})
  out = lm.train_and_evaluate(c, str(tmp_path))
  assert out['steps'] == 4 and np.isfinite(out['valid']['loss'])
  with pytest.raises(ConfigError, match='config.mesh: mesh.data=3'):
    lm.validate(lm_config(**{'num_devices': 8, 'mesh.data': 3}))
