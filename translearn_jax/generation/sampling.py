"""Batched, jit-compiled sampling from autoregressive models.

`generate` runs one loop for every decoding rule (greedy = temperature 0,
temperature, top-k, top-p) and every model: a `step_fn(state, buffer, t)`
returns the logits for position `t + 1` given the tokens up to `t`. Prompts of
different lengths share the loop: while `t + 1` is inside a row's prompt the
prompt token is copied instead of sampled (the Flax lm1b sampler's scheme).
After a row emits EOS it emits PAD.

Step functions provided:
* `transformer_step(model, params, cached=True)`: one token per step through
  the KV cache; with `cached=False` the whole buffer is recomputed each step
  (the reference the cache must equal, and the no-cache speed baseline);
* `lstm_step(model, params)`: one token per step with the carried (c, h).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from translearn_jax.data.tokenizer import EOS, PAD
from translearn_jax.errors import ConfigError
from translearn_jax.models.lstm_lm import initial_carry


def filter_logits(logits: jax.Array, temperature: float, top_k: int, top_p: float):
  """Scaled logits with everything outside top-k / the top-p nucleus at -inf. The most
  likely token's logit is subtracted before the division (what softmax does anyway), so a
  tiny temperature leaves the others at -inf and the most likely at 0: dividing first made
  every positive logit +inf at 1e-39, and the draw took the lowest such id."""
  logits = logits.astype(jnp.float32)
  # a temperature below float32's smallest normal number is that number (a subnormal one
  # is flushed to zero on some devices: 0/0 would be NaN)
  temperature = max(temperature, float(np.finfo(np.float32).tiny))
  logits = (logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature
  if 0 < top_k < logits.shape[-1]:    # top_k >= the vocabulary keeps every token
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    # transformers' TopPLogitsWarper: sorted ascending (ties in index order, a stable sort),
    # the tokens whose cumulative probability is <= 1 - top_p go, the most likely always
    # stays; of tokens tied at the boundary only the later ones may stay
    order = jnp.argsort(logits, axis=-1, stable=True)
    cum = jnp.cumsum(jax.nn.softmax(jnp.take_along_axis(logits, order, -1), axis=-1), axis=-1)
    remove = (cum <= 1 - top_p).at[..., -1].set(False)
    remove = jnp.take_along_axis(remove, jnp.argsort(order, axis=-1), -1)
    logits = jnp.where(remove, -jnp.inf, logits)
  return logits


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
  if not 0 <= temperature < float('inf'):      # NaN fails too
    raise ConfigError(f'temperature must be a finite number >= 0 (0: greedy), got {temperature}')
  if top_k < 0:
    raise ConfigError(f'top_k must be >= 0, got {top_k}')
  if not 0 < top_p <= 1:
    raise ConfigError(f'top_p must be in (0, 1], got {top_p}')


@functools.partial(jax.jit, static_argnames=('step_fn', 'total_len', 'temperature', 'top_k',
                                             'top_p', 'eos_id', 'suppress', 'vocab_limit'))
def generate(step_fn: Callable, state: Any, prompts: jax.Array, prompt_lengths: jax.Array,
             rng: jax.Array, *, total_len: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int = EOS, suppress: tuple = (),
             vocab_limit: int = 0) -> jax.Array:
  """Returns `(B, total_len)` tokens: the prompts followed by the continuations.

  `prompts` (B, P) are right-padded; every `prompt_lengths` must be >= 1. Ids in
  `suppress` (pad, unk, mask: pieces that are never text) and rows at or beyond
  `vocab_limit` (> 0: a model vocabulary padded past the tokenizer's) are never generated.
  """
  b, p = prompts.shape
  buf = jnp.zeros((b, total_len), jnp.int32).at[:, :p].set(prompts[:, :total_len])
  banned = np.asarray(sorted(set(suppress)), np.int32)

  def body(t, carry):
    buf, state, done = carry
    logits, state = step_fn(state, buf, t)
    logits = logits.astype(jnp.float32)
    if banned.size:
      logits = logits.at[..., banned].set(-jnp.inf)
    if 0 < vocab_limit < logits.shape[-1]:
      logits = logits.at[..., vocab_limit:].set(-jnp.inf)
    if temperature == 0:
      sampled = jnp.argmax(logits, -1).astype(jnp.int32)
    else:
      key = jax.random.fold_in(rng, t)
      sampled = jax.random.categorical(
          key, filter_logits(logits, temperature, top_k, top_p)).astype(jnp.int32)
    in_prompt = t + 1 < prompt_lengths
    nxt = jnp.where(in_prompt, buf[:, t + 1], jnp.where(done, PAD, sampled))
    done = done | (~in_prompt & (nxt == eos_id))
    return buf.at[:, t + 1].set(nxt), state, done

  buf, _, _ = jax.lax.fori_loop(0, total_len - 1, body,
                                (buf, state, jnp.zeros((b,), bool)))
  return buf


@functools.lru_cache(maxsize=None)
def transformer_step(model, cached: bool = True):
  """(step_fn, init_state) for a `TransformerLM`; state = {'params', 'cache'}.

  `model` must be built with `decode=True` when `cached`. Parameters travel in
  the state (not closed over), so they are arguments of the compiled loop.
  """
  if cached:
    def step(state, buf, t):
      tok = jax.lax.dynamic_slice_in_dim(buf, t, 1, axis=1)
      logits, mut = model.apply({'params': state['params'], 'cache': state['cache']}, tok,
                                mutable=['cache'])
      return logits[:, 0], {'params': state['params'], 'cache': mut['cache']}

    def init(params, batch: int, total_len: int):
      dummy = jnp.zeros((batch, total_len), jnp.int32)
      cache = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))['cache']
      return {'params': params, 'cache': jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                      cache)}
  else:
    def step(state, buf, t):
      logits = model.apply({'params': state['params']}, buf)
      return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), state

    def init(params, batch: int, total_len: int):
      return {'params': params}
  return step, init


@functools.lru_cache(maxsize=None)
def lstm_step(model, cached: bool = True):
  """(step_fn, init_state) for an `LSTMLM`; state = {'params', 'carry'} (the carry is
  the recurrent cache: `cached` changes nothing)."""
  del cached

  def step(state, buf, t):
    tok = jax.lax.dynamic_slice_in_dim(buf, t, 1, axis=1)
    logits, carry = model.apply({'params': state['params']}, tok, state['carry'])
    return logits[:, 0], {'params': state['params'], 'carry': carry}

  def init(params, batch: int, total_len: int):
    return {'params': params, 'carry': initial_carry(model.config, batch)}
  return step, init


# `model.arch` -> its (step_fn, init_state) builder.
STEPS = {'transformer': transformer_step, 'lstm': lstm_step}
