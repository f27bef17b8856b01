"""Explicit training state shared by every model family."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


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
