"""Gradient reversal (Ganin & Lempitsky 2015, DANN).

`grad_reverse(x, lam)` is the identity in the forward pass and multiplies the
incoming gradient by `-lam` in the backward pass, so a domain classifier
trained on top of it pushes the shared features towards domain invariance.
`lam` is an ordinary (traced) argument and may follow a schedule; it receives
no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def grad_reverse(x, lam):
  return x


def _fwd(x, lam):
  return x, lam


def _bwd(lam, g):
  return jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam)


grad_reverse.defvjp(_fwd, _bwd)


def dann_lambda(progress, gamma: float = 10.0):
  """Ganin et al.'s schedule 2 / (1 + exp(-gamma · p)) - 1 for training progress p in [0, 1]."""
  return 2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0
