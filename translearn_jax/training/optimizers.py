"""Optimisers, schedules and parameter selection by '/'-joined path patterns.

Weight-decay masks (and, later, freezing and per-group learning rates) select
parameters with regular expressions over paths like
`decoder/block_0/attn/query/kernel`: the first matching pattern wins.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import optax

from translearn_jax.errors import ConfigError


def path_str(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))))
  return '/'.join(parts)


def param_paths(params) -> list[str]:
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def match_tree(params, patterns: Sequence[tuple[str, Any]], default=None,
               field: str = 'patterns', require_all: bool = False):
  """A tree like `params` whose leaves are the value of the first matching pattern.

  With `require_all`, a parameter that no pattern matches is an error listing
  the uncovered paths.
  """
  compiled = []
  for pat, value in patterns:
    try:
      compiled.append((re.compile(pat), value))
    except re.error as e:
      raise ConfigError(f'{field}: bad regular expression {pat!r}: {e}') from None
  uncovered = []

  def pick(path, _):
    name = path_str(path)
    for rx, value in compiled:
      if rx.fullmatch(name) or rx.search(name):
        return value
    uncovered.append(name)
    return default

  tree = jax.tree_util.tree_map_with_path(pick, params)
  if require_all and uncovered:
    raise ConfigError(f'{field}: no pattern matches {uncovered}')
  return tree


def lr_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int,
                end_ratio: float = 0.0) -> optax.Schedule:
  """Linear warmup to `peak`, then 'cosine', 'linear' or 'constant'."""
  total_steps = max(total_steps, warmup_steps + 1)
  end = peak * end_ratio
  if kind == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup_steps, 0), total_steps,
                                              end)
  if kind == 'linear':
    return optax.join_schedules([
        optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
        optax.linear_schedule(peak, end, total_steps - warmup_steps)], [warmup_steps])
  if kind == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
                                 optax.constant_schedule(peak)], [warmup_steps])
  raise ConfigError(f"optim.schedule must be 'cosine', 'linear' or 'constant', got {kind!r}")


def adamw(config, total_steps: int, params) -> tuple[optax.GradientTransformation,
                                                     optax.Schedule]:
  """AdamW with clipping and a decay mask from `config.optim`.

  `optim.no_decay` is a comma-separated list of path patterns exempt from
  weight decay (biases, norms and embeddings by default).
  """
  o = config.optim
  schedule = lr_schedule(o.schedule, o.learning_rate, total_steps, o.warmup_steps,
                         o.end_lr_ratio)
  no_decay = [p.strip() for p in o.no_decay.split(',') if p.strip()]
  mask = match_tree(params, [(p, False) for p in no_decay], default=True,
                    field='optim.no_decay')
  tx = optax.chain(
      optax.clip_by_global_norm(o.grad_clip) if o.grad_clip > 0 else optax.identity(),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                  mask=mask))
  return tx, schedule
