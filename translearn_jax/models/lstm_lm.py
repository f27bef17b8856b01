"""Stacked LSTM language model in the AWD-LSTM / ULMFiT spirit (Merity et al., 2018).

Regularisation, each a config field: embedding dropout (whole rows of the
embedding matrix dropped), variational ("locked") dropout — one mask per
sequence, shared over time — on the embedded input, between layers and on the
output, and weight drop (DropConnect) on each layer's hidden-to-hidden matrix,
sampled once per forward pass.

The input-to-hidden projection of a layer is one `(B·T, D) @ (D, 4H)` matmul
over all time steps; only `h @ W_hh` runs inside the `lax.scan` over time.
`__call__(tokens, carry=None)` returns `(logits, carry)`; passing the carry back
in continues the sequence (generation, or truncated BPTT across batches).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from translearn_jax.models import layers


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
  arch: ClassVar[str] = 'lstm'
  vocab_size: int
  embed_dim: int = 400
  hidden_dim: int = 1150
  num_layers: int = 3
  dropout_embed: float = 0.1      # embedding rows
  dropout_input: float = 0.65     # locked, on embeddings
  dropout_hidden: float = 0.3     # locked, between layers
  dropout_output: float = 0.4     # locked, before the softmax
  weight_drop: float = 0.5        # DropConnect on W_hh
  tie_embeddings: bool = True     # last layer's size is then embed_dim
  max_len: int = 100_000          # no positional limit; a guard for configs
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  deterministic: bool = True
  decode: bool = False            # unused: the carry is the decoding state

  def replace(self, **kw) -> 'LSTMConfig':
    return dataclasses.replace(self, **kw)

  def layer_sizes(self) -> list[tuple[int, int]]:
    sizes = []
    for i in range(self.num_layers):
      d_in = self.embed_dim if i == 0 else self.hidden_dim
      last = i == self.num_layers - 1
      d_out = self.embed_dim if (last and self.tie_embeddings) else self.hidden_dim
      sizes.append((d_in, d_out))
    return sizes


def _locked_dropout(module: nn.Module, x, rate: float, deterministic: bool):
  """One dropout mask per sequence, shared by all time steps. x: (B, T, D)."""
  if deterministic or rate == 0.0:
    return x
  rng = module.make_rng('dropout')
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0], 1, x.shape[2]))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class LSTMLayer(nn.Module):
  hidden: int
  weight_drop: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, carry):
    h4 = 4 * self.hidden
    xw = layers.Dense(h4, dtype=self.dtype, param_dtype=self.param_dtype, name='wi')(x)
    w_hh = self.param('wh', nn.initializers.orthogonal(), (self.hidden, h4), self.param_dtype)
    if self.weight_drop > 0 and not self.deterministic:
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - self.weight_drop, w_hh.shape)
      w_hh = jnp.where(keep, w_hh / (1.0 - self.weight_drop), 0.0)
    w_hh = w_hh.astype(self.dtype)

    def step(c_h, xw_t):
      c, h = c_h
      z = xw_t + h @ w_hh
      i, f, g, o = jnp.split(z.astype(jnp.float32), 4, axis=-1)
      c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)  # forget bias 1
      h = (jax.nn.sigmoid(o) * jnp.tanh(c)).astype(self.dtype)
      return (c, h), h

    carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(xw, 0, 1))
    return jnp.swapaxes(hs, 0, 1), carry


def initial_carry(cfg: LSTMConfig, batch: int) -> tuple:
  """Zero (c, h) per layer; c in float32, h in the compute dtype."""
  return tuple((jnp.zeros((batch, d_out), jnp.float32), jnp.zeros((batch, d_out), cfg.dtype))
               for _, d_out in cfg.layer_sizes())


class LSTMLM(nn.Module):
  config: LSTMConfig

  def initial_carry(self, batch: int):
    return initial_carry(self.config, batch)

  @nn.compact
  def __call__(self, tokens: jax.Array, carry: Optional[tuple] = None,
               return_hidden: bool = False):
    cfg = self.config
    b, t = tokens.shape
    if carry is None:
      carry = self.initial_carry(b)
    embedding = self.param('embed', nn.initializers.normal(0.1),
                           (cfg.vocab_size, cfg.embed_dim), cfg.param_dtype)
    table = embedding
    if cfg.dropout_embed > 0 and not cfg.deterministic:
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - cfg.dropout_embed,
                                  (cfg.vocab_size, 1))
      table = jnp.where(keep, table / (1.0 - cfg.dropout_embed), 0.0)
    x = jnp.take(table, tokens, axis=0).astype(cfg.dtype)
    x = _locked_dropout(self, x, cfg.dropout_input, cfg.deterministic)
    new_carry = []
    for i, (_, d_out) in enumerate(cfg.layer_sizes()):
      x, c = LSTMLayer(d_out, cfg.weight_drop, cfg.deterministic, cfg.dtype, cfg.param_dtype,
                       name=f'lstm_{i}')(x, carry[i])
      new_carry.append(c)
      rate = cfg.dropout_hidden if i < cfg.num_layers - 1 else cfg.dropout_output
      x = _locked_dropout(self, x, rate, cfg.deterministic)
    if return_hidden:
      return x, tuple(new_carry)
    flat = x.reshape(b * t, -1)
    if cfg.tie_embeddings:
      logits = flat @ embedding.astype(cfg.dtype).T
    else:
      logits = layers.Dense(cfg.vocab_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                            name='head')(flat)
    return logits.reshape(b, t, -1).astype(jnp.float32), tuple(new_carry)


def flops_per_token(cfg: LSTMConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6 × (recurrent + input matmul params + softmax)."""
  n = sum(4 * d_out * (d_in + d_out) for d_in, d_out in cfg.layer_sizes())
  last = cfg.layer_sizes()[-1][1]
  return 6.0 * (n + last * cfg.vocab_size)
