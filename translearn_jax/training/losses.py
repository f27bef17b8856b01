"""Losses over large vocabularies without materialising (batch × length × vocabulary) logits.

`chunked_softmax_xent(hidden, kernel, targets)` is the summed token cross-entropy
`Σ -log softmax(hidden @ kernel + bias)[target]`, computed `chunk` rows at a
time in a `lax.scan`: forward and backward hold one (chunk, V) fp32 logits block
at a time instead of (B·T, V) — GPT-2's 50k vocabulary at B·T = 8k rows is 1.6 GB
of fp32 logits plain, 26 MB in chunks of 128. It equals the plain loss and its
gradients (`tests/test_accelerator_paths.py`).

The backward pass is written out (`jax.custom_vjp`) rather than derived through a
rematerialised scan body. A profile of GPT-2 small on an H200 (README, "On an
accelerator") found the derived one spending ~12 of a 31-ms step in the loss: each
chunk cast the fp32 table to the compute dtype again (fused into slower GEMMs),
padded the vocabulary again, and the forward pass was recomputed per chunk. Here
the table is cast and padded to a multiple of 128 columns once per pass, the
forward pass keeps each row's log-sum-exp (4 bytes a row), and the backward pass
computes each chunk's softmax once, with the table's gradient accumulated in fp32.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


_LANES = 128          # the vocabulary padded to a multiple of this once per pass


def chunked_softmax_xent(hidden: jax.Array, kernel: jax.Array, targets: jax.Array,
                         weights: Optional[jax.Array] = None, bias: Optional[jax.Array] = None,
                         chunk: int = 1024) -> jax.Array:
  """Σ weights · (logsumexp(logits) − logits[target]) over every position, in fp32.

  hidden (..., D), kernel (D, V), targets (...) int, weights (...) or None (all 1),
  bias (V,) or None. Rows are processed `chunk` at a time (the last chunk padded
  with zero-weight rows). The logits are `hidden @ kernel` in `hidden`'s dtype with
  fp32 accumulation and output (so bf16 hidden states give bf16 products, fp32 logits).
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
  b = jnp.zeros((kernel.shape[1],), jnp.float32) if bias is None else bias
  return _xent(h.reshape(steps, chunk, d), kernel, b, t.reshape(steps, chunk),
               w.reshape(steps, chunk))


def _table(kernel: jax.Array, bias: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  """The table cast to the compute dtype and the bias in fp32, both padded once to a
  multiple of `_LANES` columns (padded columns: bias -inf, so they take no probability)."""
  v = kernel.shape[1]
  extra = -v % _LANES
  k = kernel.astype(dtype)
  b = bias.astype(jnp.float32)
  if extra:
    k = jnp.pad(k, ((0, 0), (0, extra)))
    b = jnp.concatenate([b, jnp.full((extra,), -jnp.inf, jnp.float32)])
  return k, b


def _logits(h_c, k, b):
  return jnp.dot(h_c, k, preferred_element_type=jnp.float32) + b


@jax.custom_vjp
def _xent(h, kernel, bias, t, w):
  return _xent_fwd(h, kernel, bias, t, w)[0]


def _xent_fwd(h, kernel, bias, t, w):
  k, b = _table(kernel, bias, h.dtype)

  def body(total, xs):
    h_c, t_c, w_c = xs
    logits = _logits(h_c, k, b)
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = lse - jnp.take_along_axis(logits, t_c[:, None], axis=-1)[:, 0]
    return total + jnp.sum(nll * w_c), (lse, nll)

  total, (lse, nll) = jax.lax.scan(body, jnp.zeros((), jnp.float32), (h, t, w))
  return total, (h, kernel, bias, t, w, lse, nll)


def _xent_bwd(res, g):
  h, kernel, bias, t, w, lse, nll = res
  k, b = _table(kernel, bias, h.dtype)
  cols = jnp.arange(k.shape[1], dtype=jnp.int32)

  def body(carry, xs):
    dk, db = carry
    h_c, t_c, w_c, lse_c = xs
    p = jnp.exp(_logits(h_c, k, b) - lse_c[:, None])
    dlogits = (p - (cols[None, :] == t_c[:, None])) * (g * w_c)[:, None]
    dl = dlogits.astype(h.dtype)
    dh_c = jnp.dot(dl, k.T, preferred_element_type=jnp.float32).astype(h.dtype)
    dk = dk + jnp.dot(h_c.T, dl, preferred_element_type=jnp.float32)
    return (dk, db + jnp.sum(dlogits, 0)), dh_c

  zeros = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(k.shape[1:], jnp.float32))
  (dk, db), dh = jax.lax.scan(body, zeros, (h, t, w, lse))
  v = kernel.shape[1]
  return (dh, dk[:, :v].astype(kernel.dtype), db[:v].astype(bias.dtype), None, g * nll)


_xent.defvjp(_xent_fwd, _xent_bwd)
