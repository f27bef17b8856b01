"""Building blocks shared by every Transformer in the project.

One implementation of multi-head attention (self and cross, causal or not,
rotary or not) with one KV cache for incremental decoding. The LM and, later,
the seq2seq decoder use these; do not write another.

Parameters carry logical axis names (`nn.with_logical_partitioning` on their
initialisers): `embed` (model width), `heads` (attention heads × head width,
flattened), `mlp` (feed-forward width), `vocab`, `norm`; `training/mesh.py`
maps them to mesh axes. `model.init` then returns `nn.Partitioned` boxes;
`training.state.init_params` (or `nn.unbox`) gives the plain arrays the rest of
the project uses, and `apply` takes either.

Dense layers flatten the leading axes into one `(B·T, D)` matmul: on XLA:CPU a
2-D matmul ran ~2× faster than the same contraction on 3-D activations.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
NEG_INF = -1e9  # finite: fully masked rows stay NaN-free
# model.attention_impl -> `jax.nn.dot_product_attention`'s implementation ('einsum': ours below,
# which also serves cached decoding and attention dropout; 'dot_product': JAX's choice;
# 'xla'; 'cudnn': the fused flash kernel on NVIDIA GPUs)
ATTENTION_IMPLEMENTATIONS = {'einsum': None, 'dot_product': None, 'xla': 'xla', 'cudnn': 'cudnn'}
# model.remat -> what a rematerialised block keeps for the backward pass ('none': everything,
# no remat; 'full': only its input; 'dots': also matmul outputs without batch dimensions,
# i.e. the projections, recomputing attention scores and elementwise work)
REMAT_POLICIES = {'none': None, 'full': jax.checkpoint_policies.nothing_saveable,
                  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def check_options(cfg) -> None:
  """ValueError naming the `model.*` field when a Transformer config's shared options are bad:
  `activation`, `attention_impl`, `remat` (those it has) and heads dividing `d_model`."""
  for field, table in (('activation', ACTIVATIONS), ('attention_impl', ATTENTION_IMPLEMENTATIONS),
                       ('remat', REMAT_POLICIES)):
    value = getattr(cfg, field, None)
    if value is not None and value not in table:
      raise ValueError(f'model.{field} must be one of {sorted(table)}, got {value!r}')
  if cfg.d_model % cfg.num_heads:
    raise ValueError(f'model.d_model={cfg.d_model} is not divisible by '
                     f'model.num_heads={cfg.num_heads}')


def remat(block_cls, policy: str):
  """`block_cls`, rematerialised by the `REMAT_POLICIES[policy]` (itself for 'none')."""
  if policy == 'none':
    return block_cls
  return nn.remat(block_cls, policy=REMAT_POLICIES[policy], prevent_cse=True)
ACTIVATIONS = {
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),   # erf (BERT, RoBERTa)
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
    'silu': jax.nn.silu,        # x·sigmoid(x): Marian's 'swish'
}


def logical(init: Callable, axes: Optional[tuple]) -> Callable:
  """`init` annotated with the logical axis names `axes` (None: left unannotated)."""
  return init if axes is None else nn.with_logical_partitioning(init, axes)


class Dense(nn.Module):
  """`x @ kernel + bias` over the last axis, computed as one 2-D matmul.

  With `lora_rank > 0` a low-rank update `(x @ lora_a) @ lora_b · alpha/rank`
  is added (LoRA, Hu et al. 2021); `lora_b` starts at zero, so a LoRA layer
  computes exactly what the plain layer does until it is trained, and `lora_a` is drawn
  as `peft` and `loralib` draw it (`kaiming_uniform_(a=sqrt(5))`: uniform in
  ±1/sqrt(fan_in)).
  `axes` = (input, output) logical axis names of the kernel (None: unannotated);
  the bias takes the output's, LoRA's `a` the input's and `b` the output's.
  """
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.xavier_uniform()
  lora_rank: int = 0
  lora_alpha: float = 16.0
  axes: Optional[tuple] = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ax_in, ax_out = self.axes if self.axes is not None else (None, None)
    ann = lambda init, names: logical(init, None if self.axes is None else names)
    kernel = self.param('kernel', ann(self.kernel_init, (ax_in, ax_out)),
                        (x.shape[-1], self.features), self.param_dtype)
    flat = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    y = jnp.dot(flat, kernel.astype(self.dtype))
    if self.lora_rank > 0:
      a = self.param('lora_a', ann(nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'),
                                   (ax_in, None)),
                     (x.shape[-1], self.lora_rank), self.param_dtype)
      b = self.param('lora_b', ann(nn.initializers.zeros, (None, ax_out)),
                     (self.lora_rank, self.features), self.param_dtype)
      y = y + (flat @ a.astype(self.dtype)) @ b.astype(self.dtype) * (
          self.lora_alpha / self.lora_rank)
    if self.use_bias:
      y = y + self.param('bias', ann(nn.initializers.zeros, (ax_out,)), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))


def rotary(x: Array, positions: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding (RoFormer) of `x` (B, T, H, Dh) at `positions` (B, T)."""
  dh = x.shape[-1]
  half = dh // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * freqs          # (B, T, half)
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:2 * half].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
  if dh % 2:
    out = jnp.concatenate([out, x[..., 2 * half:].astype(jnp.float32)], -1)
  return out.astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention with an optional KV cache.

  `__call__(x, context=None, mask=None, positions=None)`:
  * self-attention when `context` is None, else cross-attention to `context`;
  * `mask` (B, 1|H, Tq, Tk) bool, True = may attend;
  * `positions` (B, Tq) for rotary embeddings (self-attention only);
  * with `decode=True` (self-attention) keys/values are appended to the
    `cache` collection and queries attend to every cached position up to
    their own; `mask` then only needs to cover padding of cached keys.
  * with `cross=True` and `decode=True` (cross-attention while decoding) the
    projected keys/values of `context` are stored in the cache on the call
    that passes `context`; later calls pass `context=None` and reuse them, so
    the encoder output is projected once per sequence, not once per token.
  """
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dropout: float = 0.0
  deterministic: bool = True
  use_rotary: bool = False
  decode: bool = False
  lora_rank: int = 0           # LoRA on the query and value projections
  lora_alpha: float = 16.0     # their scale: alpha / rank
  cross: bool = False          # cross-attention (only matters with decode=True)
  implementation: str = 'einsum'   # a key of ATTENTION_IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None, mask: Optional[Array] = None,
               positions: Optional[Array] = None) -> Array:
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f'd_model {d} is not divisible by num_heads {self.num_heads}')
    dh = d // self.num_heads
    dense = lambda name: Dense(d, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                               lora_rank=self.lora_rank if name in ('query', 'value') else 0,
                               lora_alpha=self.lora_alpha,
                               axes=('heads', 'embed') if name == 'out' else ('embed', 'heads'))
    b, tq = x.shape[:2]
    heads = lambda y: y.reshape(y.shape[0], y.shape[1], self.num_heads, dh)
    q = heads(dense('query')(x))
    if self.cross and self.decode:
      k, v = self._cross_cache(context, dense, heads)
    else:
      if self.cross and context is None:
        raise ValueError('cross-attention needs a context outside cached decoding')
      kv_in = x if context is None else context
      k, v = heads(dense('key')(kv_in)), heads(dense('value')(kv_in))
      if self.use_rotary and context is None:
        q, k = rotary(q, positions), rotary(k, positions)
      if self.implementation != 'einsum' and not self.decode:
        return dense('out')(self._fused(q, k, v, mask).reshape(b, tq, d))
      # (B, H, T, Dh) from here on: batched matmuls over (B, H) ran 1.3-4x
      # faster on XLA:CPU than contracting the (B, T, H, Dh) layout.
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    q = q.transpose(0, 2, 1, 3)
    if self.decode and not self.cross:
      k, v, mask = self._update_cache(k, v, mask)
    scores = jnp.einsum('bhqd,bhkd->bhqk', q, k).astype(jnp.float32) / jnp.sqrt(dh)
    if mask is not None:
      scores = jnp.where(mask, scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    if self.dropout > 0 and not self.deterministic:
      probs = nn.Dropout(self.dropout, deterministic=False)(probs)
    out = jnp.einsum('bhqk,bhkd->bhqd', probs, v).transpose(0, 2, 1, 3).reshape(b, tq, d)
    return dense('out')(out)

  def _fused(self, q, k, v, mask):
    """`jax.nn.dot_product_attention` on (B, T, H, Dh): XLA's, or cuDNN's flash kernel."""
    if self.dropout > 0 and not self.deterministic:
      raise ValueError(f'attention implementation {self.implementation!r} has no attention '
                       'dropout; set model.attention_dropout=0 or attention_impl=einsum')
    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask, implementation=ATTENTION_IMPLEMENTATIONS[self.implementation])
    return out.astype(self.dtype)

  def _cross_cache(self, context, dense, heads):
    have = self.has_variable('cache', 'cross_key')
    if context is None:
      if not have:
        raise ValueError('cached cross-attention called without a context before the '
                         'first decoding step stored one')
      return (self.get_variable('cache', 'cross_key'),
              self.get_variable('cache', 'cross_value'))
    k = heads(dense('key')(context)).transpose(0, 2, 1, 3)
    v = heads(dense('value')(context)).transpose(0, 2, 1, 3)
    if have or self.is_mutable_collection('cache'):
      self.put_variable('cache', 'cross_key', k)
      self.put_variable('cache', 'cross_value', v)
    return k, v

  def _update_cache(self, k, v, mask):
    """k, v: (B, H, Tq, Dh) of the new positions; the cache is (B, H, max_len, Dh)."""
    initialized = self.has_variable('cache', 'cached_key')
    ck = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cv = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    idx = self.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
    if not initialized:  # the init pass only creates the cache
      return k, v, mask
    tq, max_len = k.shape[2], ck.value.shape[2]
    i = idx.value
    ck.value = jax.lax.dynamic_update_slice(ck.value, k, (0, 0, i, 0))
    cv.value = jax.lax.dynamic_update_slice(cv.value, v, (0, 0, i, 0))
    idx.value = i + tq
    q_pos = i + jnp.arange(tq)
    causal = (jnp.arange(max_len)[None, :] <= q_pos[:, None])[None, None]  # (1,1,Tq,max_len)
    mask = causal if mask is None else (mask & causal)
    return ck.value, cv.value, mask


class MlpBlock(nn.Module):
  d_ff: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  activation: str = 'gelu_tanh'            # a key of ACTIVATIONS

  @nn.compact
  def __call__(self, x):
    h = Dense(self.d_ff, dtype=self.dtype, param_dtype=self.param_dtype, name='wi',
              axes=('embed', 'mlp'))(x)
    h = ACTIVATIONS[self.activation](h)
    return Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype, name='wo',
                 axes=('mlp', 'embed'))(h)


def layer_norm(name: Optional[str], epsilon: float, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, **kw) -> nn.LayerNorm:
  """A LayerNorm whose scale and bias carry the logical axis `norm`.

  The variance is computed in two passes, mean((x - mean)²), as PyTorch's LayerNorm
  does, not Flax's default one-pass E[x²] - E[x]², which cancels catastrophically in
  float32 when activations carry a large common offset (imported checkpoints then drift
  from their reference)."""
  kw.setdefault('use_fast_variance', False)
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=logical(nn.initializers.ones, ('norm',)),
                      bias_init=logical(nn.initializers.zeros, ('norm',)), **kw)


def embed(num: int, features: int, init: Callable, name: Optional[str], dtype: Any = jnp.float32,
          param_dtype: Any = jnp.float32, axes: tuple = ('vocab', 'embed')) -> nn.Embed:
  """An `nn.Embed` whose table carries the logical axes `axes` (rows, width)."""
  return nn.Embed(num, features, dtype=dtype, param_dtype=param_dtype,
                  embedding_init=logical(init, axes), name=name)


def causal_mask(length: int) -> Array:
  return jnp.tril(jnp.ones((length, length), bool))[None, None]
