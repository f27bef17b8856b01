"""Builders of jitted functions, memoised by their arguments: one trace per program.

A runner builds its jitted functions per run (`make_train_fn(model, tx, schedule,
mesh, ...)` returns a new `jax.jit` of a new closure). Runs in one process with equal
arguments -- the seeds of a comparison, the cells of a learning curve, a run resumed
after a stop, a multi-task run's per-task baselines -- would each trace, lower and fetch
the same program again (about a second per step function of a small model, most of a
short run). `memoized` keys a builder by its arguments, so an equal call returns the
same jitted function and JAX's own cache serves its programs.

A key is the arguments' pytree structure and leaves, compared by value: Flax modules,
frozen config dataclasses, meshes, shardings, numbers and strings. Functions, optax
transforms and other objects without value equality compare by identity, so they hit
only when the same object is passed again: the optimiser builders
(`optimizers.make`, `optimizers.lr_schedule`) are memoised by value for that reason, and
a builder given a fresh closure simply misses. An argument with an unhashable leaf (an
array, a ConfigDict) bypasses the cache. Each builder keeps its last `maxsize` results
(their compiled programs stay alive with them).
"""

from __future__ import annotations

import collections
import functools
import threading
from typing import Any, Callable, Optional

import jax


def key_of(*args, **kwargs) -> Optional[tuple]:
  """A hashable key equal for equal arguments, or None when an argument is unhashable."""
  leaves, treedef = jax.tree.flatten((args, kwargs))
  key = (treedef, tuple((type(leaf), leaf) for leaf in leaves))
  try:
    hash(key)
  except TypeError:
    return None
  return key


class _Memo:
  """Least-recently-used results of one builder."""

  def __init__(self, maxsize: int):
    self.maxsize, self.entries, self.lock = maxsize, collections.OrderedDict(), threading.Lock()
    self.hits = self.misses = 0

  def get(self, key, build: Callable[[], Any]):
    with self.lock:
      if key in self.entries:
        self.entries.move_to_end(key)
        self.hits += 1
        return self.entries[key]
    value = build()   # outside the lock: a build may itself use memoised builders
    with self.lock:
      self.misses += 1
      self.entries[key] = value
      while len(self.entries) > self.maxsize:
        self.entries.popitem(last=False)
    return value

  def clear(self):
    with self.lock:
      self.entries.clear()
      self.hits = self.misses = 0


def memoized(maxsize: int = 16, key: Optional[Callable[..., Any]] = None):
  """Decorator: memoise a builder by `key(*args, **kwargs)` (default `key_of`; a None key
  calls the builder without caching). The wrapper has `.memo` (hits, misses, clear())."""
  def decorate(builder):
    memo = _Memo(maxsize)
    key_fn = key_of if key is None else key

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
      k = key_fn(*args, **kwargs)
      if k is None:
        return builder(*args, **kwargs)
      return memo.get(k, lambda: builder(*args, **kwargs))
    wrapper.memo = memo
    return wrapper
  return decorate
