"""One config vocabulary across families, and the old spellings it replaced.

Every family spells the same idea the same way:
* `optim.*`: learning_rate, schedule, warmup_steps, weight_decay, grad_clip (+ b1, b2,
  eps, end_lr_ratio, no_decay where a family exposes them);
* `train.*`: batch_size, steps or epochs, sequence length, eval and checkpoint cadence;
* `init.*`: kind, path (and binary, remap_init, rules) of any pretrained source;
* `data.*`: the files and fields to read;
* `mesh.*`: data, fsdp, tensor (sizes of the device mesh's axes, -1: the rest) and
  rules (logical axis -> mesh axes overrides); see `training/mesh.py`.

`RENAMED` maps a field of an older spelling to its name now; `check(config)`
turns a config (file or overrides) that still uses one into one error naming
the new field, instead of a silently ignored setting.
"""

from __future__ import annotations

import ml_collections

from translearn_jax.errors import ConfigError


def mesh_fields() -> ml_collections.ConfigDict:
  """The `mesh` group every sharded family's config carries, at its defaults: all devices
  on `data` (-1: the devices the other axes leave), no FSDP or tensor parallelism, the
  default logical-axis rules."""
  return ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1, 'rules': ''})

RENAMED = {
    'pretrained.kind': 'init.kind',
    'pretrained.path': 'init.path',
    'pretrained.binary': 'init.binary',
    'pretrained.remap_init': 'init.remap_init',
    'graft.rules': 'init.rules',
    'transfer.learning_rate': 'optim.learning_rate',
    'transfer.schedule': 'optim.schedule',
    'transfer.warmup_steps': 'optim.warmup_steps',
    'transfer.weight_decay': 'optim.weight_decay',
    'transfer.grad_clip': 'optim.grad_clip',
    'multitask.learning_rate': 'optim.learning_rate',
    'multitask.schedule': 'optim.schedule',
    'multitask.weight_decay': 'optim.weight_decay',
    'multitask.steps': 'train.steps',
    'multitask.batch_size': 'train.batch_size',
    'multitask.lm_seq_len': 'lm.seq_len',
    'multitask.lm_eval_rows': 'lm.eval_rows',
    'pretrained_lm': 'init.path',
    'lm_data': 'lm.data',
    'zero_shot.vectors_path': 'init.path (with init.kind=word2vec)',
    'zero_shot.lm_path': 'init.path (with init.kind=lm)',
    'zero_shot.binary': 'init.binary',
    'zero_shot.methods': 'init.kind (the source picks the method)',
}


# Top-level fields of the pretraining families (matched only at the top level: the
# same names are right inside `train.*`).
RENAMED_TOP = {f: f'train.{f}' for f in (
    'batch_size', 'seq_length', 'grad_accum', 'epochs', 'checkpoint_every_steps',
    'log_every_steps', 'eval_every_steps', 'keep_checkpoints', 'eval_max_rows',
    'steps_per_call', 'prefetch')}
RENAMED_TOP.update({'max_steps': 'train.steps', 'init_from': 'init.path',
                    'learning_rate': 'optim.learning_rate',
                    'min_learning_rate_ratio': 'optim.end_lr_ratio'})


def renamed(field: str) -> str | None:
  """The new name of `field` (a dotted path, possibly inside a sub-config such as
  `mr.pretrained.path`), or None when it is not an old spelling."""
  if field in RENAMED_TOP:
    return RENAMED_TOP[field]
  parts = field.split('.')
  for i in range(len(parts)):
    tail = '.'.join(parts[i:])
    if tail in RENAMED:
      return '.'.join(parts[:i] + [RENAMED[tail]])
  return None


def _paths(d, prefix=''):
  for k, v in d.items():
    path = f'{prefix}{k}'
    yield path
    if hasattr(v, 'items'):
      yield from _paths(v, path + '.')


def check(config) -> None:
  """One `ConfigError` naming every old-spelling field of `config` and its new name."""
  old = [(p, renamed(p)) for p in _paths(config) if renamed(p)]
  if old:
    raise ConfigError('config fields were renamed: ' + '; '.join(
        f'config.{p} is now config.{new}' for p, new in old))
