"""What the command line knows without importing JAX: the families and the shipped configs.

`FAMILIES` maps `config.family` to its runner module (imported only when a run
starts). The shipped configs are the modules of `translearn_jax.configs` (the
root `configs/` folder, see `translearn_jax/configs/__init__.py`);
`resolve_config` turns `--config skipgram` into the path of that file, and
`catalogue()` lists both, each with its first docstring line read by `ast`.
"""

from __future__ import annotations

import ast
import glob
import os

from translearn_jax.errors import ConfigError

FAMILIES = {
    'word2vec': 'translearn_jax.pretraining.word2vec',
    'lm': 'translearn_jax.pretraining.lm',
    'seq2seq': 'translearn_jax.pretraining.seq2seq',
    'mlm': 'translearn_jax.pretraining.mlm',
    'classify': 'translearn_jax.experiments.classification',
    'tag': 'translearn_jax.experiments.tagging',
    'zero_shot': 'translearn_jax.experiments.zero_shot',
    'curves': 'translearn_jax.experiments.learning_curves',
    'search': 'translearn_jax.experiments.search',
    'dann': 'translearn_jax.experiments.dann',
    'multitask': 'translearn_jax.experiments.multitask',
    'seq2seq_curves': 'translearn_jax.experiments.seq2seq_curves',
}


def config_dirs() -> list[str]:
  """The folders `translearn_jax.configs` loads from (the checkout's or the install's)."""
  import translearn_jax.configs
  return list(translearn_jax.configs.__path__)


def shipped_configs() -> dict[str, str]:
  """{name: file} of every shipped config, sorted by name."""
  out = {}
  for d in config_dirs():
    for path in sorted(glob.glob(os.path.join(d, '*.py'))):
      name = os.path.basename(path)[:-3]
      if not name.startswith('_'):
        out.setdefault(name, path)
  return dict(sorted(out.items()))


def resolve_config(value: str) -> str:
  """The `--config` value config_flags should load. A file that exists is kept as given;
  otherwise a shipped config named `NAME`, `NAME.py` or `configs/NAME.py` becomes the
  path of its file (a `:ARG` suffix, passed to `get_config`, is kept). Any other path is
  kept too (loading it fails with the file's name); an unknown name raises `ConfigError`."""
  path, sep, arg = value.partition(':')
  if os.path.isfile(path):
    return value
  head, base = os.path.split(os.path.normpath(path))
  name = base[:-3] if base.endswith('.py') else base
  if head not in ('', 'configs'):
    return value
  known = shipped_configs()
  if name in known:
    return known[name] + sep + arg
  raise ConfigError(f'--config {value}: no such file and no shipped config {name!r}; '
                    f'shipped configs: {", ".join(known)}')


def first_line(path: str) -> str:
  """The first line of a Python file's module docstring ('' if none or unreadable)."""
  try:
    with open(path, encoding='utf-8') as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ''
  except (OSError, SyntaxError):
    return ''
  return doc.strip().split('\n', 1)[0]


def config_lines() -> list[str]:
  """One line per shipped config: its name and first docstring line."""
  return [f'  {name:<24} {first_line(path)}' for name, path in shipped_configs().items()]


def catalogue() -> str:
  """The families (`config.family`) and the shipped configs, each with its first docstring
  line, read with `ast` (nothing is imported): what `--help` lists."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # translearn_jax/
  lines = ['', 'Families (config.family):']
  for family, module in FAMILIES.items():
    path = os.path.join(root, *module.split('.')[1:]) + '.py'
    lines.append(f'  {family:<10} {first_line(path)}')
  lines += ['', 'Configs (--config NAME, or a config file; any field: --config.FIELD=VALUE):']
  return '\n'.join(lines + config_lines())
