"""The one optimiser builder: AdamW over parameter groups chosen by path regexes.

In the spirit of big_vision's `optax.make(config, params)`: `make(optim, params,
total_steps, groups)` builds the optimiser of every run here — pretraining,
every fine-tuning strategy, multi-task heads and backbone, DANN. Parameters are
selected by regular expressions over '/'-joined paths like
`decoder/block_0/attn/query/kernel` (first matching pattern wins). Each `Group`
gives its parameters
* a learning-rate multiplier (`lr_mult`; `None` = frozen: `optax.set_to_zero`,
  no optimiser state at all),
* a start step (`start`: the group trains from there — gradual unfreezing — its
  Adam count beginning there, through `optax.conditionally_mask`, one compiled
  program for the whole run).
The weight-decay mask is `optim.no_decay` (path patterns exempt from decay);
the schedule is `optim.schedule` with `optim.warmup_steps` over the run's steps, one
schedule for every group (ULMFiT: a group unfrozen late joins the slanted triangle
where it is, at its multiple of the base rate); global-norm clipping
(`optim.grad_clip`) comes first.
A strategy (`transfer.strategies`) is a table of groups, not a new builder.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from translearn_jax.errors import ConfigError
from translearn_jax.training import memo


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


def slanted_triangular(peak: float, total_steps: int, cut_frac: float = 0.1,
                       ratio: float = 32.0) -> optax.Schedule:
  """ULMFiT's STLR: a short linear rise to `peak`, a long linear decay to peak/ratio."""
  cut = max(1, int(total_steps * cut_frac))

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    p = jnp.where(t < cut, t / cut, 1.0 - (t - cut) / max(cut * (1.0 / cut_frac - 1.0), 1.0))
    p = jnp.clip(p, 0.0, 1.0)
    return peak * (1.0 + p * (ratio - 1.0)) / ratio
  return schedule


SCHEDULES = ('cosine', 'linear', 'constant', 'slanted_triangular')


@memo.memoized(maxsize=64)
def lr_schedule(kind: str, peak: float, total_steps: int, warmup_steps: int = 0,
                end_ratio: float = 0.0) -> optax.Schedule:
  """Linear warmup to `peak`, then 'cosine', 'linear' or 'constant'; or ULMFiT's
  'slanted_triangular' (its own rise; warmup unused)."""
  if kind == 'slanted_triangular':
    return slanted_triangular(peak, total_steps)
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
  raise ConfigError(f'optim.schedule must be one of {SCHEDULES}, got {kind!r}')


@dataclasses.dataclass(frozen=True)
class Group:
  """Parameters whose path matches `pattern` (first matching group wins)."""
  name: str
  pattern: str
  lr_mult: Optional[float] = 1.0   # None: frozen (no update, no optimiser state)
  start: int = 0                   # first step the group trains


# Defaults of the AdamW fields an `optim` config may leave out.
DEFAULTS = {'warmup_steps': 0, 'end_lr_ratio': 0.0, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-8,
            'weight_decay': 0.0, 'grad_clip': 0.0, 'no_decay': 'bias,scale',
            'schedule': 'cosine'}


def _get(optim, name):
  value = optim.get(name, None) if hasattr(optim, 'get') else getattr(optim, name, None)
  return DEFAULTS[name] if value is None else value


def decay_mask(params, no_decay: str):
  patterns = [p.strip() for p in no_decay.split(',') if p.strip()]
  return match_tree(params, [(p, False) for p in patterns], default=True, field='optim.no_decay')


def group_labels(params, groups: Sequence[Group], field: str = 'groups'):
  """Tree of group names (first matching pattern); an uncovered parameter is an error."""
  return match_tree(params, [(g.pattern, g.name) for g in groups], field=field,
                    require_all=True)


def _make_key(optim, params, total_steps, groups=None, field='groups'):
  """`make`'s result depends on the `optim` fields it reads, the parameters' paths (not
  their values or shapes), the steps, the groups and the field name."""
  fields = tuple((n, _get(optim, n)) for n in ('learning_rate', *DEFAULTS))
  structure = None if params is None else jax.tree.structure(params)
  return memo.key_of(fields, structure, total_steps, tuple(groups or ()), field)


def check(optim, prefix: str = 'config.optim') -> None:
  """One `ConfigError` naming the first AdamW field of `optim` out of its range: a negative
  learning rate trains away from the data without a word (exit 0), a negative warmup or an
  end ratio above 1 gives a schedule nobody meant. A rate of 0 is allowed: it leaves the
  parameters as they are (the README's "before stage 2" perplexity evaluates a start so)."""
  def need(ok, name, what):
    if not ok:
      raise ConfigError(f'{prefix}.{name}: must be {what}, got {_get(optim, name)!r}')
  finite = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
  peak = _get(optim, 'learning_rate')
  need(finite(peak) and peak >= 0, 'learning_rate', 'a finite number >= 0 (0: no change)')
  warmup = _get(optim, 'warmup_steps')
  need(finite(warmup) and warmup >= 0 and float(warmup).is_integer(),
       'warmup_steps', 'an integer >= 0 (0: none)')
  end = _get(optim, 'end_lr_ratio')
  need(finite(end) and 0 <= end <= 1, 'end_lr_ratio', 'in [0, 1] (of the peak rate)')
  for name in ('b1', 'b2'):
    v = _get(optim, name)
    need(finite(v) and 0 <= v < 1, name, 'in [0, 1)')
  eps = _get(optim, 'eps')
  need(finite(eps) and eps > 0, 'eps', 'a finite number > 0')
  for name in ('weight_decay', 'grad_clip'):
    v = _get(optim, name)
    need(finite(v) and v >= 0, name, 'a finite number >= 0 (0: none)')


@memo.memoized(maxsize=64, key=_make_key)
def make(optim, params, total_steps: int, groups: Optional[Sequence[Group]] = None,
         field: str = 'groups') -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, schedule of the base learning rate) for `params`.

  `optim` (a ConfigDict or any object with these fields; missing ones take
  `DEFAULTS`): learning_rate, schedule, warmup_steps, end_lr_ratio, b1, b2, eps,
  weight_decay, grad_clip, no_decay. Without `groups`, every parameter trains
  with the base schedule (one AdamW, no partition). `params` may be abstract
  (`jax.eval_shape`): only paths are read. Memoised (`training.memo`): equal arguments
  return the same (optimiser, schedule) objects, so the steps built on them are reused
  by the runs of one process.
  """
  check(optim)
  decay_mask(params, _get(optim, 'no_decay'))  # a bad pattern fails here, not in the step
  peak, kind = _get(optim, 'learning_rate'), _get(optim, 'schedule')
  warmup, end_ratio = _get(optim, 'warmup_steps'), _get(optim, 'end_lr_ratio')
  clip, no_decay = _get(optim, 'grad_clip'), _get(optim, 'no_decay')

  def adamw(mult: float, steps: int, start: int = 0):
    sched = lr_schedule(kind, peak * mult, steps, warmup, end_ratio)
    if start:       # the inner count starts at the group's start step: the run's schedule
      sched = _shifted(sched, start)
    return optax.adamw(sched, b1=_get(optim, 'b1'), b2=_get(optim, 'b2'), eps=_get(optim, 'eps'),
                       weight_decay=_get(optim, 'weight_decay'),
                       mask=lambda p: decay_mask(p, no_decay)), sched

  base_schedule = lr_schedule(kind, peak, total_steps, warmup, end_ratio)
  if not groups:
    tx, _ = adamw(1.0, total_steps)
    return optax.chain(optax.clip_by_global_norm(clip) if clip > 0 else optax.identity(),
                       tx), base_schedule
  names = [g.name for g in groups]
  if len(set(names)) != len(names):
    raise ConfigError(f'{field}: group names repeat: {names}')
  transforms = {}
  for g in groups:
    if g.lr_mult is None:
      transforms[g.name] = optax.set_to_zero()
      continue
    inner, _ = adamw(g.lr_mult, total_steps, g.start)
    if g.start > 0:
      inner = optax.conditionally_mask(inner, lambda count, s=g.start: count >= s)
    transforms[g.name] = inner
  tx = optax.partition(transforms, group_labels(params, groups, field))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, base_schedule


def _shifted(schedule: optax.Schedule, start: int) -> optax.Schedule:
  """`schedule` read `start` steps on: step c of a group that unfroze at `start` is step
  `start + c` of the run."""
  return lambda count: schedule(count + start)


def frozen_mask(params, groups: Sequence[Group], field: str = 'groups'):
  """Tree of bools over `params`: True where the group is frozen (never trained)."""
  frozen = {g.name: g.lr_mult is None for g in groups}
  return jax.tree.map(lambda name: frozen[name], group_labels(params, groups, field))


def adamw(config, total_steps: int, params) -> tuple[optax.GradientTransformation,
                                                     optax.Schedule]:
  """The pretraining optimiser: `make(config.optim, params, total_steps)`."""
  return make(config.optim, params, total_steps)
