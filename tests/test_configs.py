"""Every config builds, names a family train.py runs, and the commands in the docs name real fields."""

import importlib
import os
import re

import pytest

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
               if f.endswith('.py') and f != '__init__.py')


def load(name):
  return importlib.import_module(f'configs.{name}').get_config()


def has_field(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False
    node = node[part]
  return True


def documented_commands(text: str):
  """(config name, [overridden fields]) of each `python train.py --config configs/X.py ...`
  and `translearn train --config X ...`."""
  text = re.sub(r'\\\n\s*', ' ', text)  # join continued lines
  for line in text.splitlines():
    for cmd in re.split(r'python train\.py|translearn train', line)[1:]:
      m = re.search(r'--config[ =](?:configs/)?([a-z0-9_]+)(?:\.py)?(?![\w/.])', cmd)  # not NAME
      if m:
        yield m.group(1), re.findall(r'--config\.([\w.]+)=', cmd)


@pytest.mark.parametrize('name', NAMES)
def test_config_builds_and_its_family_exists(name):
  config = load(name)
  assert config.get('family') in train.FAMILIES, (name, config.get('family'))


def test_commands_in_config_docstrings_and_readme_name_real_fields():
  sources = [os.path.join(ROOT, 'configs', f'{n}.py') for n in NAMES]
  sources.append(os.path.join(ROOT, 'README.md'))
  checked = 0
  for path in sources:
    with open(path, encoding='utf-8') as f:
      text = f.read()
    for name, fields in documented_commands(text):
      assert name in NAMES, f'{path}: a command runs configs/{name}.py, which does not exist'
      config = load(name)
      for field in fields:
        assert has_field(config, field), f'{path}: configs/{name}.py has no field {field!r}'
        checked += 1
  assert checked > 50


def test_old_field_spellings_name_their_new_field():
  import subprocess
  import sys
  from translearn_jax import config_fields
  from translearn_jax.errors import ConfigError
  from configs import transfer_mr_skipgram
  assert config_fields.renamed('pretrained.path') == 'init.path'
  assert config_fields.renamed('mr.transfer.learning_rate') == 'mr.optim.learning_rate'
  assert config_fields.renamed('optim.learning_rate') is None
  c = transfer_mr_skipgram.get_config()
  config_fields.check(c)  # the shipped configs use the new spelling
  c.graft = {'rules': 'x=>y'}
  with pytest.raises(ConfigError, match=r'config\.graft\.rules is now config\.init\.rules'):
    config_fields.check(c)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, 'train.py', '--config', 'configs/transfer_mr_skipgram.py',
                        '--workdir', '/tmp/unused', '--config.pretrained.path=v.txt'],
                       cwd=root, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      'error: --config.pretrained.path was renamed: use --config.init.path')


def test_train_help_lists_families_and_configs():
  import subprocess
  import sys
  out = subprocess.run([sys.executable, 'train.py', '--help'], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode in (0, 1), out.stderr      # absl's --help exits 1 after printing
  for family in train.FAMILIES:
    assert f'\n  {family} ' in out.stdout, family
  for name in NAMES:
    assert f'\n  {name} ' in out.stdout, name
  assert 'GPT-2 small (124M parameters)' in out.stdout
