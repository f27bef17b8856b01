"""Losses over large vocabularies without materialising (batch × length × vocabulary) logits.

`chunked_softmax_xent(hidden, kernel, targets)` is the summed token cross-entropy
`Σ -log softmax(hidden @ kernel + bias)[target]`, computed `chunk` rows at a
time in a `lax.scan` whose body is rematerialised (`jax.checkpoint`): forward
and backward hold one (chunk, V) fp32 logits block at a time instead of
(B·T, V) — GPT-2's 50k vocabulary at B·T = 8k rows is 1.6 GB of fp32 logits
plain, 26 MB in chunks of 128. It equals the plain loss and its gradients
(`tests/test_losses.py`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def chunked_softmax_xent(hidden: jax.Array, kernel: jax.Array, targets: jax.Array,
                         weights: Optional[jax.Array] = None, bias: Optional[jax.Array] = None,
                         chunk: int = 1024) -> jax.Array:
  """Σ weights · (logsumexp(logits) − logits[target]) over every position, in fp32.

  hidden (..., D), kernel (D, V), targets (...) int, weights (...) or None (all 1),
  bias (V,) or None. Rows are processed `chunk` at a time (the last chunk padded
  with zero-weight rows).
  """
  d = hidden.shape[-1]
  h = hidden.reshape(-1, d)
  t = targets.reshape(-1).astype(jnp.int32)
  w = (jnp.ones(t.shape, jnp.float32) if weights is None
       else jnp.broadcast_to(weights, targets.shape).reshape(-1).astype(jnp.float32))
  n = h.shape[0]
  chunk = max(1, min(int(chunk), n))
  pad = -n % chunk
  if pad:
    h = jnp.concatenate([h, jnp.zeros((pad, d), h.dtype)])
    t = jnp.concatenate([t, jnp.zeros((pad,), t.dtype)])
    w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
  steps = h.shape[0] // chunk

  @jax.checkpoint
  def block(h_c, t_c, w_c):
    logits = jnp.dot(h_c, kernel.astype(h_c.dtype)).astype(jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, t_c[:, None], axis=-1)[:, 0]
    return jnp.sum((lse - picked) * w_c)

  def body(total, xs):
    return total + block(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                          (h.reshape(steps, chunk, d), t.reshape(steps, chunk),
                           w.reshape(steps, chunk)))
  return total
