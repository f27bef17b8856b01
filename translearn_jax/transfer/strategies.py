"""Fine-tuning strategies as group tables for the one optimiser builder (`optimizers.make`).

Layer groups are `(name, regex)` pairs over '/'-joined parameter paths,
ordered from the top of the network (the task head, depth 0) down to the
embeddings; the first matching pattern labels a parameter, and a parameter no
pattern covers is an error listing it. Strategies:

* `finetune`: every group trains with the same learning rate;
* `feature_extraction`: only depth 0 (the head) trains; the rest is frozen;
* `discriminative`: group at depth d trains with `lr · factor**d` (ULMFiT:
  factor 1/2.6);
* `gradual_unfreezing`: the group at depth d starts training at step
  `d · unfreeze_every` (ULMFiT's "one more group every epoch": `transfer.unfreeze_every=0`
  is one epoch of the run's data, `unfreeze_interval`); combined with
  the discriminative factor when `factor != 1`;
* `lora`: like feature extraction, but parameters whose path matches
  `LORA_PATTERN` (the low-rank adapters of `layers.Dense`) train too.

`freeze_bottom = k` additionally freezes the k lowest groups under any
strategy (the "frozen depth" knob: e.g. fine-tune only the top layers).

`rules` turns a strategy into `optimizers.Group`s (learning-rate multiplier,
`None` for frozen, start step); `build` hands them to `optimizers.make`, where
frozen groups carry no optimiser state at all and groups waiting to unfreeze
do not advance their AdamW (its step count starts at 0 when the group
unfreezes) — one compiled program for the whole schedule. Every group follows the
run's one schedule (ULMFiT's: a group unfrozen at step s trains from the schedule's
step s, at its discriminative multiple of the base rate; before stop 52 each group
began its own schedule when it unfroze). Schedules:
`slanted_triangular` (Howard & Ruder 2018: cut_frac 0.1, ratio 32), `cosine`,
`linear`, `constant`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax
import optax

from translearn_jax.errors import ConfigError
from translearn_jax.training import optimizers

STRATEGIES = ('finetune', 'feature_extraction', 'discriminative', 'gradual_unfreezing', 'lora')
LORA_PATTERN = r'/lora_(a|b)$'
LORA_GROUP = '__lora__'


def parse_groups(spec: str) -> list[tuple[str, str]]:
  """'head=^head/,top=backbone/block_1/,...' (top first) -> [(name, regex)]."""
  groups = []
  for part in [p.strip() for p in spec.split(',') if p.strip()]:
    name, sep, rx = part.partition('=')
    if not sep or not name or not rx:
      raise ConfigError(f'transfer.groups entry {part!r} must look like name=regex')
    try:
      re.compile(rx)
    except re.error as e:
      raise ConfigError(f'transfer.groups entry {part!r}: bad regex: {e}') from None
    groups.append((name.strip(), rx.strip()))
  if not groups:
    raise ConfigError('transfer.groups is empty')
  return groups


def group_labels(params, groups: Sequence[tuple[str, str]]):
  """Tree of group names (first matching regex); uncovered parameters raise."""
  return optimizers.group_labels(params, [optimizers.Group(n, rx) for n, rx in groups],
                                 'transfer.groups')


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
  strategy: str = 'finetune'
  learning_rate: float = 1e-3
  schedule: str = 'slanted_triangular'
  warmup_steps: int = 0
  factor: float = 1.0 / 2.6          # discriminative LR per depth
  unfreeze_every: int = 100          # steps between unfreezing groups
  freeze_bottom: int = 0             # the lowest k groups stay frozen (any strategy)
  weight_decay: float = 0.0
  no_decay: str = 'bias,scale'
  grad_clip: float = 1.0

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ConfigError(f'transfer strategy must be one of {STRATEGIES}, got {self.strategy!r}')


def unfreeze_interval(unfreeze_every: int, steps_per_epoch: int) -> int:
  """`transfer.unfreeze_every` in steps: as given, or, when 0, one epoch of the training
  data (`steps_per_epoch`; ULMFiT's "one more group every epoch", whatever the dataset)."""
  if isinstance(unfreeze_every, bool) or not isinstance(unfreeze_every, int) \
      or unfreeze_every < 0:
    raise ConfigError(f'transfer.unfreeze_every must be a whole number of steps >= 0 '
                      f'(0: one epoch), got {unfreeze_every!r}')
  return unfreeze_every or max(1, int(steps_per_epoch))


def rules(cfg: StrategyConfig, params, groups: Sequence[tuple[str, str]], total_steps: int
          ) -> tuple[list[optimizers.Group], dict]:
  """The strategy as a table of `optimizers.Group`s, and its plan
  {group: (depth, lr multiplier, start step | None)}."""
  table: list[optimizers.Group] = []
  plan: dict[str, tuple] = {}
  if cfg.strategy == 'lora':
    if not any(re.search(LORA_PATTERN, p) for p in optimizers.param_paths(params)):
      raise ConfigError("strategy 'lora' but the model has no LoRA parameters "
                        '(set model.lora_rank > 0)')
    table.append(optimizers.Group(LORA_GROUP, LORA_PATTERN, 1.0, 0))
    plan[LORA_GROUP] = (0, 1.0, 0)
  names = [n for n, _ in groups]
  if not 0 <= cfg.freeze_bottom < len(names):
    raise ConfigError(f'transfer.freeze_bottom={cfg.freeze_bottom} must leave at least the top '
                      f'group trainable (there are {len(names)} groups: {names})')
  for depth, (name, rx) in enumerate(groups):
    frozen_below = depth >= len(names) - cfg.freeze_bottom
    if (cfg.strategy in ('feature_extraction', 'lora') and depth > 0) or frozen_below:
      table.append(optimizers.Group(name, rx, None))
      plan[name] = (depth, 0.0, None)
      continue
    mult = cfg.factor ** depth if cfg.strategy in ('discriminative', 'gradual_unfreezing') \
        else 1.0
    if cfg.strategy == 'gradual_unfreezing' and cfg.factor == 1.0:
      mult = 1.0
    start = depth * cfg.unfreeze_every if cfg.strategy == 'gradual_unfreezing' else 0
    table.append(optimizers.Group(name, rx, mult, start))
    plan[name] = (depth, mult, start)
  return table, plan


def build(cfg: StrategyConfig, params, groups: Sequence[tuple[str, str]], total_steps: int
          ) -> tuple[optax.GradientTransformation, dict]:
  """The optimiser for `cfg.strategy` (`optimizers.make` over its group table), and its plan."""
  table, plan = rules(cfg, params, groups, total_steps)
  tx, _ = optimizers.make(cfg, params, total_steps, table, field='transfer.groups')
  return tx, plan


def frozen_mask(params, groups, plan):
  """Tree of bools over `params`: True where the strategy never trains the leaf."""
  paths = set(frozen_paths(params, groups, plan))
  return jax.tree_util.tree_map_with_path(lambda p, _: optimizers.path_str(p) in paths, params)


def value_and_grad(fn, frozen=None, has_aux: bool = False):
  """`jax.value_and_grad(fn)` over `fn(params, ...)`'s params, skipping frozen leaves.

  Frozen leaves (`frozen_mask`) enter `fn` through `stop_gradient`: autodiff
  computes nothing for them or for what only they feed (a frozen backbone under
  a trained head costs its forward pass only; a frozen embedding table gets no
  scatter-add), their gradient is zero, and — as for PyTorch parameters with
  `requires_grad=False` — they do not count in global-norm clipping.
  Only never-trained leaves are skipped: under gradual unfreezing, a group
  waiting for its start step still gets gradients (masked out of its update)
  and counts in clipping until it thaws.
  """
  if frozen is None:
    return jax.value_and_grad(fn, has_aux=has_aux)

  def trainable_only(params, *args):
    params = jax.tree.map(lambda f, x: jax.lax.stop_gradient(x) if f else x, frozen, params)
    return fn(params, *args)
  return jax.value_and_grad(trainable_only, has_aux=has_aux)


def make_train_step(loss_fn, tx, frozen=None):
  """`(params, opt_state, *batch) -> (params, opt_state, loss)`: one `tx` step on
  `loss_fn(params, *batch)`, frozen leaves skipped (`value_and_grad`). Not jitted:
  callers jit it (donating params and optimiser state), or vmap it first."""
  grad_fn = value_and_grad(loss_fn, frozen)

  def step(params, opt_state, *batch):
    loss, grads = grad_fn(params, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def frozen_paths(params, groups, plan) -> list[str]:
  if LORA_GROUP in plan:
    groups = [(LORA_GROUP, LORA_PATTERN)] + list(groups)
  labels = group_labels(params, groups)
  flat = jax.tree_util.tree_flatten_with_path(labels)[0]
  return [optimizers.path_str(p) for p, name in flat if plan[name][1] == 0.0]
