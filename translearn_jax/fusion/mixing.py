"""Task mixing for multi-task training: which task each step draws its batch from.

Modes (the usual ones for multi-task / multilingual training):
* `proportional`: p_i ∝ n_i (examples in task i);
* `temperature`: p_i ∝ n_i^(1/T) (T = 1 is proportional, T → ∞ is equal);
* `equal`: p_i = 1 / #tasks.

`TaskSampler.task_at(step)` is a pure function of (seed, step), so a resumed
run draws the same task sequence without saving sampler state.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from translearn_jax.errors import ConfigError

MODES = ('proportional', 'temperature', 'equal')


def task_probabilities(sizes: Sequence[int], mode: str, temperature: float = 1.0) -> np.ndarray:
  sizes = np.asarray(sizes, np.float64)
  if sizes.ndim != 1 or len(sizes) == 0 or (sizes <= 0).any():
    raise ConfigError(f'task sizes must be positive counts, got {list(sizes)}')
  if mode == 'proportional':
    w = sizes
  elif mode == 'temperature':
    if not 0 < temperature < float('inf'):      # NaN fails too (it drew the first task only)
      raise ConfigError(f'mixing temperature must be a finite number > 0, got {temperature}')
    w = sizes ** (1.0 / temperature)
  elif mode == 'equal':
    w = np.ones_like(sizes)
  else:
    raise ConfigError(f'mixing mode must be one of {MODES}, got {mode!r}')
  return w / w.sum()


class TaskSampler:
  def __init__(self, sizes: Sequence[int], mode: str, temperature: float = 1.0, seed: int = 0):
    self.probs = task_probabilities(sizes, mode, temperature)
    self.cdf = np.cumsum(self.probs)
    self.seed = seed

  def task_at(self, step: int) -> int:
    u = np.random.default_rng([self.seed, 1, step]).random()
    return int(min(np.searchsorted(self.cdf, u, side='right'), len(self.cdf) - 1))

  def tasks(self, start: int, stop: int) -> np.ndarray:
    return np.array([self.task_at(s) for s in range(start, stop)], np.int64)
