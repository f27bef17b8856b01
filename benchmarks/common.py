"""Helpers shared by the benchmarks: optimiser config, matmul peak, timing."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def _cpu_ticks() -> tuple[int, int] | None:
  """(steal, total) jiffies of all CPUs from /proc/stat; None where there is none."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
  return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


@contextlib.contextmanager
def steal_share():
  """Yields a dict whose 'steal' is set on exit to the share of CPU time the hypervisor
  gave to other guests while the block ran (/proc/stat's steal), or None off Linux: a
  shared host's neighbours move throughput between runs, and this names it."""
  out = {'steal': None}
  before = _cpu_ticks()
  yield out
  after = _cpu_ticks()
  if before and after and after[1] > before[1]:
    out['steal'] = (after[0] - before[0]) / (after[1] - before[1])


WORD2VEC_CONFIGS = ('skipgram', 'skipgram_shared', 'skipgram_large_batch', 'cbow')


def shipped_config(name: str) -> ml_collections.ConfigDict:
  """`configs/<name>.py`'s `get_config()` (a shipped config, e.g. one of `WORD2VEC_CONFIGS`)."""
  import importlib
  return importlib.import_module(f'configs.{name}').get_config()


def override(config: ml_collections.ConfigDict, items) -> None:
  """Apply `FIELD=VALUE` overrides (dotted field names) to `config`, each value cast to
  the field's type ('True' for booleans)."""
  for item in items:
    key, _, value = item.partition('=')
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value == 'True' if isinstance(node[leaf], bool) else type(node[leaf])(value)


def optim_config(lr: float = 1e-3) -> ml_collections.ConfigDict:
  """AdamW (b2 0.98, eps 1e-9, wd 0.01 on everything), clip 1.0, constant LR."""
  c = ml_collections.ConfigDict()
  c.optim = dict(learning_rate=lr, schedule='constant', warmup_steps=0, end_lr_ratio=1.0,
                 b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.01, grad_clip=1.0, no_decay='')
  return c


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
  """fp32 FLOP/s of XLA on n³ matmuls: the practical peak MFU is measured against."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    r = f(a)
  r.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def interleaved(runners: dict[str, tuple[Callable[[int], object], Callable[[], None]]],
                warmup: int, rounds: int, steps: int) -> dict[str, list[float]]:
  """Seconds per round for each runner, the runners taking turns round by round.

  `runners[name] = (step(i), sync())`. Alternating short rounds exposes every
  runner to the same slow and fast phases of a noisy machine, so the ratio of
  their per-round times (take the median) is far steadier than the ratio of two
  long back-to-back runs.
  """
  for step, sync in runners.values():
    for i in range(warmup):
      step(i)
    sync()
  out: dict[str, list[float]] = {name: [] for name in runners}
  for r in range(rounds):
    for name, (step, sync) in runners.items():
      t0 = time.perf_counter()
      for i in range(steps):
        step(warmup + r * steps + i)
      sync()
      out[name].append(time.perf_counter() - t0)
  return out
