"""Explicit training state shared by every model family."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from translearn_jax.training import memo


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


def _init(model, rng, *inputs):
  return nn.unbox(model.init(rng, *inputs)['params'])


_init_jit = jax.jit(_init, static_argnums=0)


def init_params(model, rng, *inputs) -> Any:
  """`model.init(rng, *inputs)['params']` as plain arrays (logical-axis boxes removed).

  Computed by one jitted program (compiled once per module and input shapes), not op by
  op: an eager `init` dispatches, and on first use compiles, every primitive of the
  model separately.
  """
  try:
    hash(model)
  except TypeError:  # a module with an unhashable field: jit it as a closure
    return jax.jit(functools.partial(_init, model))(rng, *inputs)
  return _init_jit(model, rng, *inputs)


def _specs(inputs) -> tuple:
  """Hashable shapes and dtypes of example inputs (the memo keys below)."""
  return tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in inputs)


def abstract_params(model, *inputs) -> Any:
  """The shapes and dtypes of `init_params(model, key, *inputs)` (`jax.eval_shape`: no
  compute; traced once per module and input shapes in a process). Only the shapes and
  dtypes of `inputs` are used."""
  return jax.tree.map(lambda x: x, _abstract_params(model, _specs(inputs)))   # a copy to change


@memo.memoized(maxsize=64)
def _abstract_params(model, specs):
  return jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.key(0), *[jnp.zeros(s.shape, s.dtype) for s in specs])['params']))


def init_train_state(model, tx, seed: int, mesh, *dummy_inputs, rules=None) -> TrainState:
  """Fresh state (params from `model.init(rng, *dummy_inputs)`) placed over `mesh`.

  Parameters are placed by their logical axis names and the rules table `rules`
  (default `mesh.DEFAULT_RULES`; see `training/mesh.py`), the optimiser state
  mirrors them (Adam's moments sharded as their parameters, counts replicated),
  step and rng are replicated. Nothing is materialised on one device first: the
  shardings come from `jax.eval_shape` and the state is built by
  `jit(init, out_shardings=...)` (one per model, optimiser, input shapes, rules and
  mesh in a process: `training.memo`). The state's params are plain arrays. Only the
  shapes and dtypes of `dummy_inputs` are used.
  """
  return _state_initializer(model, tx, _specs(dummy_inputs), rules, mesh)(jax.random.key(seed))


@memo.memoized()
def _state_initializer(model, tx, specs, rules, mesh):
  """Jitted `key -> TrainState` of `init_train_state`."""
  from translearn_jax.training import mesh as mesh_lib
  rules = mesh_lib.DEFAULT_RULES if rules is None else rules

  def dummy():
    return [jnp.zeros(s.shape, s.dtype) for s in specs]

  def init(rng):
    params = init_params(model, {'params': rng}, *dummy())
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.fold_in(rng, 1))

  key = jax.random.key(0)
  boxed = jax.eval_shape(lambda k: model.init({'params': k}, *dummy())['params'], key)
  abstract = jax.eval_shape(init, key)
  p_sh = mesh_lib.param_shardings(boxed, mesh, rules)
  repl = mesh_lib.replicated(mesh)
  shardings = TrainState(step=repl, params=p_sh, rng=repl, opt_state=mesh_lib.mirror_shardings(
      abstract.opt_state, abstract.params, p_sh, mesh))
  return jax.jit(init, out_shardings=shardings)
