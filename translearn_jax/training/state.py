"""Explicit training state shared by every model family."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


class TrainState(flax.struct.PyTreeNode):
  """step, params, optimiser state and the base RNG key, as one pytree.

  Families whose update is not an optax transform (word2vec's sparse SGD)
  keep `opt_state` as an empty dict. Per-step randomness is
  `jax.random.fold_in(rng, step)`, so a resumed run draws the same numbers.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def init_train_state(model, tx, seed: int, mesh, *dummy_inputs) -> TrainState:
  """Fresh state (params from `model.init(rng, *dummy_inputs)`), replicated over `mesh`."""
  from translearn_jax.training import mesh as mesh_lib

  def init(rng):
    params = model.init({'params': rng}, *dummy_inputs)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.fold_in(rng, 1))
  return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(jax.random.key(seed))
