"""Accelerator paths of issue #18: the chunked cross-entropy and fused attention equal the plain
ones (values and gradients), GPT-2 small builds at its size, the MFU benchmark runs."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from translearn_jax.errors import ConfigError
from translearn_jax.training.losses import chunked_softmax_xent
from translearn_jax.training.state import init_params


def plain(hidden, kernel, targets, weights, bias):
  logits = hidden @ kernel + (0 if bias is None else bias)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.sum(nll * weights)


def value_and_grads(loss, *args):
  """`loss` and its gradients in its first two arguments, jitted: one program, not one per
  operation, as a training step runs it."""
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(*args)


@pytest.mark.parametrize('chunk', [1, 7, 64, 1000])
@pytest.mark.parametrize('with_bias', [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_ones(chunk, with_bias):
  k = jax.random.split(jax.random.key(0), 5)
  hidden = jax.random.normal(k[0], (3, 21, 16))          # 63 rows: chunks do not divide it
  kernel = jax.random.normal(k[1], (16, 50)) * 0.5
  targets = jax.random.randint(k[2], (3, 21), 0, 50)
  weights = (jax.random.uniform(k[3], (3, 21)) > 0.3).astype(jnp.float32)
  bias = jax.random.normal(k[4], (50,)) if with_bias else None
  want, want_g = value_and_grads(lambda h, w: plain(h, w, targets, weights, bias),
                                 hidden, kernel)
  got, got_g = value_and_grads(
      lambda h, w: chunked_softmax_xent(h, w, targets, weights, bias, chunk=chunk),
      hidden, kernel)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for a, b in zip(got_g, want_g):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(got) > 0


def test_chunks_bound_the_logits_held_for_the_backward_pass():
  """Only (chunk, V) logits blocks exist inside the scan: no residual of (rows, V)."""
  hidden = jnp.ones((512, 8))
  kernel = jnp.ones((8, 1000))
  targets = jnp.zeros((512,), jnp.int32)
  f = lambda h: chunked_softmax_xent(h, kernel, targets, chunk=32)
  jaxpr = str(jax.make_jaxpr(jax.grad(f))(hidden))
  # the vocabulary is padded once to a multiple of 128 columns: blocks of (32, 1024)
  assert 'f32[32,1024]' in jaxpr and 'f32[512,1000]' not in jaxpr
  assert 'f32[512,1024]' not in jaxpr


def _scan_bodies(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'scan':
      yield eqn.params['jaxpr'].jaxpr
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _scan_bodies(sub)


def test_bf16_chunked_loss_casts_the_table_once_per_pass_and_keeps_fp32_gradients():
  """bf16 hidden states, fp32 table (GPT-2 small's layout): the table's cast and padding
  happen outside the chunk loops (the per-chunk cast was a third of the loss's time on an
  H200), the table's gradient stays fp32, and the loss is the fp32 one up to bf16 inputs."""
  k = jax.random.split(jax.random.key(1), 3)
  hidden = jax.random.normal(k[0], (4, 40, 16)).astype(jnp.bfloat16)
  kernel = jax.random.normal(k[1], (16, 300)) * 0.3
  targets = jax.random.randint(k[2], (4, 40), 0, 300)
  f = lambda h, w: chunked_softmax_xent(h, w, targets, chunk=32)
  closed = jax.make_jaxpr(jax.value_and_grad(f, argnums=(0, 1)))(hidden, kernel)
  bodies = list(_scan_bodies(closed.jaxpr))
  assert len(bodies) == 2                                 # the forward and backward loops
  for body in bodies:
    for eqn in body.eqns:
      assert not any(getattr(v.aval, 'shape', ()) in ((16, 300), (16, 384))
                     for v in eqn.outvars if eqn.primitive.name in ('convert_element_type',
                                                                    'pad')), eqn
  loss, (g_h, g_k) = value_and_grads(f, hidden, kernel)
  assert g_k.dtype == jnp.float32 and g_h.dtype == jnp.bfloat16
  w = jnp.ones(targets.shape)
  want, (want_h, want_k) = value_and_grads(
      lambda h, kk: plain(h, kk, targets, w, None),
      hidden.astype(jnp.float32), kernel.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(loss, want, rtol=1e-5)       # fp32 products of bf16 values
  np.testing.assert_allclose(g_k, want_k, rtol=2e-2, atol=2e-3)
  np.testing.assert_allclose(g_h.astype(jnp.float32), want_h, rtol=2e-2, atol=2e-2)


def test_lm_training_with_the_chunked_loss_equals_the_plain_loss(tmp_path):
  """Three LM steps with `train.loss_chunk` give the parameters the plain loss gives (the
  wiring; Adam hides a loss scale, which the test above checks)."""
  from conftest import lm_config
  from translearn_jax.pretraining import lm
  from translearn_jax.transfer import sources
  params = {}
  for chunk in (0, 48):
    cfg = lm_config(**{'train.steps': 3, 'train.loss_chunk': chunk})
    lm.train_and_evaluate(cfg, str(tmp_path / f'c{chunk}'))
    params[chunk] = sources.load('lm', str(tmp_path / f'c{chunk}')).params
  init = jax.tree.leaves(params[0])
  for a, b in zip(jax.tree.leaves(params[48]), init):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(ConfigError, match="config.train.loss_chunk: the chunked loss exists for "
                                       "model.arch='transformer', not 'lstm'"):
    lm.train_and_evaluate(lm_config(**{'train.loss_chunk': 8, 'model.arch': 'lstm'}),
                          str(tmp_path / 'lstm'))


# -- fused attention (jax.nn.dot_product_attention) ----------------------------------

@pytest.mark.parametrize('arch', ['transformer', 'encoder'])
def test_dot_product_attention_equals_ours_with_gradients(arch):
  """`model.attention_impl='xla'` (JAX's dot_product_attention) computes today's attention:
  causal for the LM, padding-masked for the encoder; outputs and parameter gradients."""
  from translearn_jax.models import encoder, transformer_lm
  if arch == 'transformer':
    cfg = transformer_lm.TransformerConfig(vocab_size=50, d_model=32, num_heads=4,
                                           num_layers=2, d_ff=64, max_len=16)
    make = transformer_lm.TransformerLM
  else:
    cfg = encoder.EncoderConfig(vocab_size=50, d_model=32, num_heads=4, num_layers=2, d_ff=64,
                                max_len=16, pad_id=0)
    make = encoder.Encoder
  tokens = jax.random.randint(jax.random.key(1), (3, 12), 1, 50).at[1, 7:].set(0)
  params = init_params(make(cfg), jax.random.key(0), tokens)     # jitted model.init

  def loss(p, impl):
    out = make(cfg.replace(attention_impl=impl)).apply({'params': p}, tokens)
    keep = (tokens != 0)[..., None]
    return jnp.sum(jnp.where(keep, out, 0.0) ** 2) / 100, out

  # jitted: one program an implementation instead of hundreds of eagerly compiled operations
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l0, out0), g0 = grad(params, 'einsum')
  (l1, out1), g1 = grad(params, 'xla')
  keep = np.asarray(tokens != 0)
  np.testing.assert_allclose(np.asarray(out1)[keep], np.asarray(out0)[keep], atol=2e-5,
                             rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)
  jaxprs = {impl: str(jax.make_jaxpr(lambda p: loss(p, impl)[0])(params))
            for impl in ('einsum', 'xla')}
  assert jaxprs['einsum'] != jaxprs['xla']        # the fused path really ran
  with pytest.raises(ValueError, match="model.attention_impl must be one of"):
    cfg.replace(attention_impl='flash')


# -- GPT-2 small and the accelerator benchmark ---------------------------------------

def test_gpt2_small_config_has_gpt2_smalls_parameter_count():
  """configs/gpt2_small.py built abstractly: OpenAI's GPT-2 small has 124,439,808 parameters
  (tied 50,257 x 768 table, 1,024 positions)."""
  from configs import gpt2_small
  from translearn_jax.models import lm as lm_models
  c = gpt2_small.get_config()
  cfg = lm_models.config_from(c.model, c.tokenizer.vocab_size, c.dtype)
  model = lm_models.make(cfg)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0),
                                                     jnp.zeros((1, 8), jnp.int32))['params']))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 124_439_808
  assert (c.train.seq_length, c.dtype, c.train.loss_chunk) == (1024, 'bfloat16', 1024)


def test_accelerator_benchmark_runs_on_cpu(tmp_path):
  import json
  from benchmarks import accelerator_mfu
  out = accelerator_mfu.main(['--steps', '2', '--batch', '2', '--seq', '32', '--peer', 'torch',
                              '--trace', str(tmp_path / 'trace'),
                              '--json', str(tmp_path / 'o.json')])
  saved = json.loads((tmp_path / 'o.json').read_text())
  assert saved == out and out['tokens_per_s'] > 0 and out['seq'] == 32
  assert out['memory_per_device_bytes'] > 0 and np.isfinite(out['final_loss'])
  # the PyTorch peer trains the same model: the same parameter count, a finite loss
  peer = out['peer']
  assert peer['params'] == out['params'] and peer['tokens_per_s'] > 0
  assert np.isfinite(peer['final_loss']) and peer['peer'] == 'torch eager'
  assert list((tmp_path / 'trace').rglob('*.xplane.pb'))     # --trace: a profile was written


def test_chunked_loss_benchmark_runs(tmp_path):
  import os
  from benchmarks import chunked_loss
  from translearn_jax.training import losses
  out = chunked_loss.main(['--rows', '96', '--dim', '16', '--vocab', '300', '--chunk', '32',
                           '--reps', '1', '--dtype', 'float32', '--other', losses.__file__,
                           '--json', str(tmp_path / 'o.json')])
  assert os.path.exists(tmp_path / 'o.json') and out['ours_s'] > 0 and out['plain_s'] > 0
  np.testing.assert_allclose(out['loss'], out['plain_loss'], rtol=1e-5)
  assert out['other_table_grad_max_gap'] == 0.0           # the same file: the same gradients


# -- activation checkpointing ---------------------------------------------------------

def _residuals(f, *args):
  """[(dtype, shape, source)] of what `f`'s backward pass keeps, from JAX's own listing
  (`print_saved_residuals`); the differentiated arguments themselves are left out."""
  import contextlib
  import io
  import re
  from jax.ad_checkpoint import print_saved_residuals
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    print_saved_residuals(f, *args)
  out = []
  for line in buf.getvalue().splitlines():
    m = re.match(r'(\w+)\[([\d,]*)\] (.*)', line)
    if m and 'from the argument' not in m.group(3):
      out.append((m.group(1), tuple(int(x) for x in m.group(2).split(',') if x), m.group(3)))
  return out


def _nbytes(res):
  size = {'f32': 4, 'bf16': 2, 'bool': 1, 'i32': 4, 'u32': 4, 'f16': 2}
  return sum(int(np.prod(s)) * size.get(d, 4) for d, s, _ in res)


def test_gpt2_small_residuals_with_remat_and_fused_attention():
  """GPT-2 small at T=1024 (bf16, chunked loss): plain, the backward pass keeps ~2.6 GiB
  per sequence, fp32 (1, 12, T, T) attention scores among it; with `model.remat='full'`
  and `jax.nn.dot_product_attention` at most 0.25 GiB and no (B, heads, T, T) float."""
  from translearn_jax.models import lm as lm_models
  from translearn_jax.models import transformer_lm

  def residuals(remat, attention):
    cfg = transformer_lm.TransformerConfig(
        vocab_size=50257, d_model=768, num_heads=12, num_layers=12, d_ff=3072, max_len=1024,
        positions='learned', dropout=0.0, dtype=jnp.bfloat16, remat=remat,
        attention_impl=attention, deterministic=False)
    model = transformer_lm.TransformerLM(cfg)
    params = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0),
                                                       jnp.zeros((1, 8), jnp.int32))['params']))

    def loss(p, t):
      h = model.apply({'params': p}, t[:, :-1], return_hidden=True)
      kernel, bias = lm_models.output_projection(cfg, p)
      return chunked_softmax_xent(h, kernel, t[:, 1:], bias=bias, chunk=1024)
    return _residuals(loss, params, jax.ShapeDtypeStruct((1, 1025), jnp.int32))

  scores = lambda res: [r for r in res if r[1] == (1, 12, 1024, 1024) and r[0] != 'bool']
  plain = residuals('none', 'einsum')
  assert _nbytes(plain) > 2 * 2 ** 30 and scores(plain)
  fused = residuals('full', 'dot_product')
  assert _nbytes(fused) <= 0.25 * 2 ** 30, _nbytes(fused) / 2 ** 30
  assert not scores(fused)


@pytest.mark.parametrize('policy', ['full', 'dots'])
def test_remat_computes_the_same_loss_and_gradients(policy):
  from translearn_jax.models import transformer_lm
  cfg = transformer_lm.TransformerConfig(vocab_size=50, d_model=32, num_heads=4, num_layers=2,
                                         d_ff=64, max_len=16, dropout=0.1, deterministic=False)
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 50)
  params = init_params(transformer_lm.TransformerLM(cfg), jax.random.key(0), tokens)  # jitted

  def loss(p, remat):
    logits = transformer_lm.TransformerLM(cfg.replace(remat=remat)).apply(
        {'params': p}, tokens, rngs={'dropout': jax.random.key(3)})
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).sum()

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  l0, g0 = grad(params, 'none')
  l1, g1 = grad(params, policy)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)    # recomputation reassociates
  assert len(_residuals(lambda p: loss(p, policy), params)) < len(
      _residuals(lambda p: loss(p, 'none'), params))
