"""The `translearn` console script, the configs shipped in the package, and the pip extras.

`translearn --help` / `translearn configs` list without importing JAX; `--config NAME`
resolves to the shipped file; the subcommands parse their flags; a wheel installed
(without dependencies) into a temporary folder trains from a directory outside the
checkout; a missing optional package names its extra.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from translearn_jax import cli
from translearn_jax.cli import catalogue
from translearn_jax.errors import ConfigError, MissingExtraError, TranslearnError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'configs')
NAMES = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith('.py') and f != '__init__.py')
TINY_SKIPGRAM = [  # configs/skipgram.py shrunk to seconds (conftest's tiny_config is the shared one)
    '--config.data.kind=text', '--config.data.path=gensim:lee_background.cor',
    '--config.model.dim=16', '--config.train.epochs=1', '--config.train.batch_size=8',
    '--config.train.seq_length=64', '--config.train.steps_per_call=4', '--config.num_devices=1',
    '--config.progress=False', '--config.eval.analogy=', '--config.train.log_every_steps=8']


def translearn(*args, cwd=ROOT, env=None, timeout=120):
  """`translearn ARGS` from this checkout (python -m translearn_jax.cli), in a subprocess."""
  return subprocess.run([sys.executable, '-m', 'translearn_jax.cli', *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_help_and_configs_list_everything_without_importing_jax():
  code = ('import io, contextlib, json, sys\n'
          'from translearn_jax.cli import main\n'
          'out = {}\n'
          'for args in (["--help"], ["configs"]):\n'
          '  buf = io.StringIO()\n'
          '  with contextlib.redirect_stdout(buf):\n'
          '    rc = main(args)\n'
          '  out[args[0]] = (rc, buf.getvalue())\n'
          'heavy = sorted(m for m in sys.modules if m.split(".")[0] in '
          '("jax", "jaxlib", "flax", "numpy", "tensorflow_datasets"))\n'
          'print(json.dumps({"out": out, "heavy": heavy}))\n')
  res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
  assert res.returncode == 0, res.stderr
  got = json.loads(res.stdout)
  assert got['heavy'] == [], got['heavy']
  (rc_help, help_text), (rc_configs, configs_text) = got['out']['--help'], got['out']['configs']
  assert rc_help == 0 and rc_configs == 0
  for command in ('train', 'predict', 'translate', 'sample', 'convert', 'configs'):
    assert f'\n  {command} ' in help_text, command
  for family in catalogue.FAMILIES:
    assert f'\n  {family} ' in help_text, family
  for name in NAMES:
    assert f'\n  {name} ' in help_text, name
    assert f'\n  {name} ' in configs_text, name
  line = next(l for l in configs_text.splitlines() if l.startswith('  skipgram '))
  assert line.split(None, 1)[1] == "Skip-gram with negative sampling, in word2vec's update order."


def test_console_script_errors_are_one_line_exit_2(capsys):
  assert cli.main([]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith('error: translearn needs')
  assert cli.main(['fly']) == 2
  assert capsys.readouterr().err.strip() == (
      "error: unknown command 'fly'; commands: train, predict, translate, sample, convert, "
      "pretokenize, configs (see translearn --help)")
  assert cli.main(['pretokenize', '--tokenizer', 'x.model']) == 2   # the module's own errors
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
      'error: the following arguments are required: --input, --out')
  assert cli.main(['configs', 'extra']) == 2
  assert capsys.readouterr().err.startswith('error: ')


def test_configs_package_is_the_root_configs_folder():
  """In a checkout, `translearn_jax.configs` is the checkout's own configs/ (not the folder an
  editable install of another checkout maps), and configs import each other through it."""
  import translearn_jax.configs
  from translearn_jax.configs import cbow
  assert [os.path.realpath(p) for p in translearn_jax.configs.__path__] == [
      os.path.realpath(CONFIGS)]
  assert os.path.realpath(cbow.__file__) == os.path.realpath(os.path.join(CONFIGS, 'cbow.py'))
  assert cbow.get_config().model.mode == 'cbow'
  assert list(catalogue.shipped_configs()) == NAMES


def test_config_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
  skipgram = os.path.join(CONFIGS, 'skipgram.py')
  monkeypatch.chdir(tmp_path)  # outside the checkout: `configs/skipgram.py` is not a file here
  for value in ('skipgram', 'skipgram.py', 'configs/skipgram.py'):
    assert os.path.realpath(catalogue.resolve_config(value)) == os.path.realpath(skipgram)
  assert catalogue.resolve_config('skipgram:arg').endswith('skipgram.py:arg')
  own = tmp_path / 'skipgram.py'  # a file that exists wins over the shipped config
  own.write_text('')
  assert catalogue.resolve_config('skipgram.py') == 'skipgram.py'
  assert catalogue.resolve_config(str(own)) == str(own)
  assert catalogue.resolve_config('elsewhere/x.py') == 'elsewhere/x.py'  # config_flags reports it
  with pytest.raises(ConfigError, match=r"--config skipgrm: no such file and no shipped config "
                                        r"'skipgrm'; shipped configs: bert_base, .*skipgram"):
    catalogue.resolve_config('skipgrm')


def test_train_unknown_config_and_bad_override_exit_2(tmp_path):
  res = translearn('train', '--config', 'skipgrm', '--workdir', str(tmp_path / 'w'))
  assert res.returncode == 2, res.stderr
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --config skipgrm: no such file and no shipped config 'skipgrm'")
  assert 'skipgram' in last
  res = translearn('train', '--config=skipgram', '--workdir', str(tmp_path / 'w'),
                   '--config.model.nosuch=3')
  assert res.returncode == 2, res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith(
      "error: --config.model.nosuch: config.model has no field 'nosuch' (")
  assert 'family \'word2vec\'' in res.stderr and 'dim, ' in res.stderr
  res = translearn('train', '--config', os.path.join(CONFIGS, 'transfer_mr_skipgram.py'),
                   '--workdir', str(tmp_path / 'w'), '--config.pretrained.path=v.txt')
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1] == (
      'error: --config.pretrained.path was renamed: use --config.init.path')
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('config, field, has', [
    # the experiment configs hold only what their family reads: the curves take their
    # strategies and epochs from `curve`, DANN its steps and schedule from its own fields
    ('curves_mr_skipgram', 'transfer.strategies', 'factor, freeze_bottom'),
    ('curves_mr_skipgram', 'train.epochs', 'batch_size'),
    ('dann_mr', 'optim.schedule', 'learning_rate'),
    ('dann_mr', 'train.epochs', 'batch_size, steps'),
    ('dann_mr', 'seed', 'seeds')])
def test_an_override_of_a_field_the_family_does_not_read_is_refused(tmp_path, capsys, config,
                                                                      field, has):
  from translearn_jax.cli import train as cli
  with pytest.raises(SystemExit) as e:
    cli._parse_flags(['train', '--config', config, '--workdir', str(tmp_path),
                      f'--config.{field}=1'])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  parent, _, key = ('config.' + field).rpartition('.')
  assert err.startswith(f"error: --config.{field}: {parent} has no field '{key}'")
  assert has in err


@pytest.mark.parametrize('text, match', [
    ('def get_config(:\n', r'cannot load --config \S+c\.py \(line 1\): SyntaxError'),
    ('import nosuchmodule_xyz\n', r"ModuleNotFoundError: No module named 'nosuchmodule_xyz'"),
    ('x = 1\n', r'defines no get_config\(\)'),
    ('def get_config():\n  return {"family": "word2vec"}\n',
     r'get_config\(\) returned a dict, not an ml_collections\.ConfigDict'),
    ('def get_config():\n  raise RuntimeError("boom")\n',
     r'get_config\(\) raised RuntimeError: boom'),
])
def test_a_config_file_that_does_not_load_is_one_error(tmp_path, text, match):
  from translearn_jax.cli import train as cli_train
  path = tmp_path / 'c.py'
  path.write_text(text)
  for argv in (['t', '--config', str(path)], ['t', f'--config={path}', '--config.x=1']):
    with pytest.raises(TranslearnError, match=match):
      cli_train._check_config_file(argv)
  cli_train._check_config_file(['t', '--config', os.path.join(ROOT, 'configs', 'skipgram.py')])


def test_train_help_is_train_py_help():
  res = translearn('train', '--help')
  assert res.returncode == 0, res.stderr
  assert 'translearn train --config skipgram' in res.stdout
  assert '--workdir' in res.stdout and '--[no]distributed' in res.stdout
  assert '\n  word2vec ' in res.stdout and '\n  gpt2_small ' in res.stdout


def test_convert_and_sample_delegate(tmp_path):
  res = translearn('convert', '--help')
  assert res.returncode == 0, res.stderr
  assert res.stdout.startswith('usage: translearn convert') and 'import-hf' in res.stdout
  res = translearn('convert', 'import-hf', str(tmp_path / 'nothing'), str(tmp_path / 'run'))
  assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith('error: ')
  res = translearn('sample', '--help')
  assert res.returncode == 0, res.stderr
  for flag in ('--workdir', '--prompt', '--max_new_tokens', '--temperature'):
    assert flag in res.stdout, flag
  res = translearn('sample', '--prompt', 'The')  # no --workdir
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1].startswith('error: flag --workdir=None')
  res = translearn('sample', '--workdir', str(tmp_path / 'no_run'), '--prompt', 'The')
  assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith('error: ')


@pytest.mark.parametrize('command,flags', [
    ('predict', ['--batch_size', '--format', '--text_field', '--header', '--output_format',
                 '--no_progress']),
    ('translate', ['--beam', '--length_penalty', '--batch_size', '--max_len', '--source_lang',
                   '--target_lang', '--no_progress'])])
def test_serving_commands_parse_their_flags(command, flags, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([command, '--help'])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith(f'usage: translearn {command} [-h]')
  for flag in ['--input', '--output', *flags]:
    assert flag in out, flag
  with pytest.raises(SystemExit) as e:  # --output missing
    cli.main([command, 'model_dir', '--input', 'in.txt'])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f'usage: translearn {command}')
  assert 'error: the following arguments are required: --output' in err


def test_serving_commands_pass_the_given_options(monkeypatch, capsys):
  """Wiring only, with a stand-in for `translearn_jax.serving` (its own tests run the real one):
  options not given keep the library's defaults; a TranslearnError is one line, exit 2."""
  import types
  import translearn_jax
  calls = []

  def fake(name):
    def f(model_dir, input_path, output_path, **kw):
      calls.append((name, model_dir, input_path, output_path, kw))
      if model_dir == 'bad':
        raise TranslearnError(f'{input_path}: line 3 is empty')
    return f
  serving = types.SimpleNamespace(predict_file=fake('predict'), translate_file=fake('translate'))
  monkeypatch.setitem(sys.modules, 'translearn_jax.serving', serving)
  monkeypatch.setattr(translearn_jax, 'serving', serving, raising=False)
  assert cli.main(['predict', 'm', '--input', 'i.tsv', '--output', 'o.jsonl', '--format', 'tsv',
                   '--text_field', 'sentence', '--batch_size', '7', '--no_progress']) == 0
  assert cli.main(['translate', 'm', '--input', 'i.txt', '--output', 'o.txt', '--beam', '4',
                   '--length_penalty', '0.6', '--min_length', '5',
                   '--no_repeat_ngram_size', '3', '--early_stopping', 'heuristic']) == 0
  assert calls == [
      ('predict', 'm', 'i.tsv', 'o.jsonl', dict(progress=False, batch_size=7, input_format='tsv',
                                                  text_field='sentence')),
      ('translate', 'm', 'i.txt', 'o.txt', dict(progress=True, beam=4, length_penalty=0.6,
                                                min_length=5, no_repeat_ngram_size=3,
                                                early_stopping='heuristic'))]
  assert cli.main(['predict', 'bad', '--input', 'i.txt', '--output', 'o.txt']) == 2
  assert capsys.readouterr().err == 'error: i.txt: line 3 is empty\n'


@pytest.mark.parametrize('command', ['predict', 'translate'])
def test_serving_commands_reach_the_library_with_header(command, tmp_path, capsys):
  """Every option the parser passes is an argument of the real `translearn_jax.serving`
  function: 'translearn translate --header' raised TypeError (the package's translate_file
  lacked `header`) instead of running or printing one error line."""
  (tmp_path / 'in.csv').write_text('0\n')
  assert cli.main([command, str(tmp_path / 'no_model'), '--input', str(tmp_path / 'in.csv'),
                   '--output', str(tmp_path / 'out.txt'), '--header', 'yes',
                   '--no_progress']) == 2
  assert capsys.readouterr().err.startswith('error: ')


# -- a non-editable install ----------------------------------------------------------

def test_installed_wheel_trains_from_outside_the_checkout(tmp_path, topic_task):
  """`pip wheel` + `pip install --no-deps --target` of the package: the console script, the
  configs (as `translearn_jax.configs`) and a skip-gram run, from a directory outside the
  checkout, importing the installed copy (not the checkout or an editable install); then a
  classifier fine-tuned from those vectors and `translearn predict` with its saved model."""
  for module in ('pip', 'setuptools'):
    if importlib.util.find_spec(module) is None:
      pytest.skip(f'{module} is not installed: cannot build the wheel')
  src = tmp_path / 'src'  # a copy: the build writes build/ and *.egg-info into its source
  for name in ('pyproject.toml', 'README.md'):
    os.makedirs(src, exist_ok=True)
    shutil.copy(os.path.join(ROOT, name), src / name)
  for name in ('translearn_jax', 'configs'):
    shutil.copytree(os.path.join(ROOT, name), src / name,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
  subprocess.run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                  '-w', str(tmp_path / 'wheel'), str(src)], check=True, timeout=300)
  [wheel] = os.listdir(tmp_path / 'wheel')
  site = tmp_path / 'site'
  subprocess.run([*pip, 'install', '--no-deps', '--no-index', '--target', str(site),
                  str(tmp_path / 'wheel' / wheel)], check=True, timeout=300)
  assert (site / 'translearn_jax' / 'configs' / 'skipgram.py').is_file()
  script = str(site / 'bin' / 'translearn')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(PYTHONPATH=str(site), JAX_PLATFORMS='cpu')
  outside = tmp_path / 'elsewhere'
  outside.mkdir()

  def run(*args, timeout=120):
    res = subprocess.run(args, cwd=outside, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    return res.stdout

  installed = os.path.realpath(site / 'translearn_jax')
  assert run(script, '--version').strip().endswith(f'({installed})')
  code = ('import translearn_jax, translearn_jax.configs as c\n'
          'from translearn_jax.configs import cbow\n'
          'print(translearn_jax.__file__); print(c.__path__[0]); print(cbow.__file__)')
  files = run(sys.executable, '-c', code).split()
  assert [os.path.realpath(f) for f in files] == [
      os.path.join(installed, '__init__.py'), os.path.join(installed, 'configs'),
      os.path.join(installed, 'configs', 'cbow.py')]
  assert ("\n  skipgram                 Skip-gram with negative sampling, in word2vec's update order."
          in run(script, 'configs'))
  # without JAX_COMPILATION_CACHE_DIR (the tests' shared cache), the run keeps its compiled
  # programs in the default cache directory, under XDG_CACHE_HOME
  shared_cache = env.pop('JAX_COMPILATION_CACHE_DIR', None)
  env['XDG_CACHE_HOME'] = str(tmp_path / 'xdg')
  run(script, 'train', '--config', 'skipgram', '--workdir', str(tmp_path / 'w'), *TINY_SKIPGRAM,
      timeout=300)
  from translearn_jax.training import compilation_cache
  cache = tmp_path / 'xdg' / 'translearn_jax' / 'xla' / compilation_cache.host_key()
  assert len(os.listdir(cache)) >= 2   # init, step, ... (one directory a kind of CPU)
  if shared_cache:
    env['JAX_COMPILATION_CACHE_DIR'] = shared_cache
  with open(tmp_path / 'w' / 'vectors.txt', encoding='utf-8') as f:
    count, dim = map(int, f.readline().split())
  assert count > 1000 and dim == 16
  with open(tmp_path / 'w' / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['model']['dim'] == 16
  # fine-tune a classifier from those vectors, then `translearn predict` with its saved model
  run(script, 'train', '--config', 'transfer_mr_skipgram', '--workdir', str(tmp_path / 'c'),
      '--config.data.kind=tsv', f'--config.data.path={topic_task}',
      f'--config.init.path={tmp_path / "w" / "vectors.txt"}', '--config.model.dim=16',
      '--config.model.max_tokens=16', '--config.train.epochs=1', timeout=300)
  texts = ['the prime minister said he would resign', 'rain fell over the river all day']
  (outside / 'in.txt').write_text('\n'.join(texts) + '\n', encoding='utf-8')
  run(script, 'predict', str(tmp_path / 'c' / 'model'), '--input', 'in.txt', '--output',
      'out.jsonl', '--no_progress')
  with open(outside / 'out.jsonl', encoding='utf-8') as f:
    preds = [json.loads(line) for line in f]
  assert len(preds) == 2 and all(p['label'] in ('0', '1') for p in preds)
  assert all(abs(sum(p['probabilities'].values()) - 1) < 1e-5 for p in preds)


# -- optional dependencies (extras) -------------------------------------------------

def test_rouge_without_rouge_score_names_the_summarize_extra(monkeypatch):
  from translearn_jax.pretraining import seq2seq
  seq2seq.check_metric('bleu')
  with pytest.raises(ConfigError, match="eval.metric must be 'bleu' or 'rouge', got 'meteor'"):
    seq2seq.check_metric('meteor')
  monkeypatch.setitem(sys.modules, 'rouge_score', None)  # `import rouge_score` fails
  with pytest.raises(MissingExtraError, match=r"eval.metric='rouge' needs rouge-score, which is "
                                              r"not installed: pip install 'translearn_jax\["
                                              r"summarize\]'"):
    seq2seq.check_metric('rouge')


def test_plots_without_matplotlib_are_skipped_with_one_warning(monkeypatch, tmp_path):
  from translearn_jax.evaluation import plots
  from translearn_jax.experiments import learning_curves
  warnings = []
  monkeypatch.setitem(sys.modules, 'matplotlib', None)
  monkeypatch.setattr(plots, '_warned', False)
  monkeypatch.setattr(plots.logging, 'warning', lambda msg, *a: warnings.append(msg % a))
  rows = [{'strategy': 'finetune', 'seeds': 3, 'gain_mean': 0.02, 'gain_ci95': 0.01}]
  assert plots.gain_plot(rows, str(tmp_path / 'gains.png'), 'title') == []
  rows = [{'strategy': 'scratch', 'budget': 10, 'seeds': 1, 'mean': 0.5, 'ci95': None}]
  learning_curves.save_outputs(rows, str(tmp_path), 'title')
  assert sorted(os.listdir(tmp_path)) == ['curves.csv']
  assert len(warnings) == 1 and "pip install 'translearn_jax[plots]'" in warnings[0]


def test_compilation_cache_directory_choice(tmp_path, monkeypatch):
  """The entry point's cache: JAX_COMPILATION_CACHE_DIR wins, '' is off, and the default sits
  under XDG_CACHE_HOME (a run writing there: the installed-wheel test)."""
  from translearn_jax.training import compilation_cache as cc
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'env'))
  assert cc.configure(str(tmp_path / 'flag')) == str(tmp_path / 'env')
  assert not (tmp_path / 'flag').exists()
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert cc.configure('') == ''
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert cc.default_dir() == str(tmp_path / 'xdg' / 'translearn_jax' / 'xla' / cc.host_key())
  assert cc.host_key() == cc.host_key() and cc.host_key().count('-') >= 1


def test_compilation_cache_is_bounded_least_recently_used_first(tmp_path):
  """--compilation_cache_max_gb: past the bound JAX deletes the least recently used programs,
  so the directory stays under it while a run compiles more than fits."""
  from translearn_jax.training import compilation_cache as cc
  assert cc.max_bytes(0) == -1 and cc.max_bytes(-2) == -1 and cc.max_bytes(1.0) == 2**30
  with pytest.raises(ValueError, match='compilation_cache_max_gb: must be a finite'):
    cc.max_bytes(float('nan'))
  script = '''
import os, sys, jax, jax.numpy as jnp
from translearn_jax.training import compilation_cache as cc
d = cc.configure(sys.argv[1], float(sys.argv[2]))
sizes = []
for n in range(int(sys.argv[3]), int(sys.argv[3]) + 12):      # twelve different programs
  jax.jit(lambda x, n=n: jnp.tanh(x @ x.T + n).sum(0))(jnp.ones((8, 4 + n))).block_until_ready()
  sizes.append(sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith('-cache')))
print(' '.join(map(str, sizes)))
'''
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}

  def run(d, max_gb, first=0, used=None):
    done = subprocess.run([sys.executable, '-c', script, str(tmp_path / d), str(max_gb),
                           str(first)], env=env, check=True, capture_output=True, text=True,
                          timeout=120)
    assert 'Error writing persistent compilation cache' not in done.stderr, done.stderr
    entries = [f for f in os.listdir(tmp_path / (used or d)) if f.endswith('-cache')]
    return [int(s) for s in done.stdout.split()], len(entries)

  unbounded, n_unbounded = run('u', 0)
  limit = unbounded[-1] // 2                             # half of what the programs take
  bounded, n_bounded = run('b', limit / 2**30)
  assert max(bounded) <= limit                           # never over the bound ...
  assert 0 < n_bounded < n_unbounded                     # ... so older programs were deleted
  assert bounded[-1] > limit // 2                        # and it still keeps recent ones
  # a directory an unbounded run filled (an earlier version's) takes new programs under a
  # bound, evicting its old ones
  later, n_later = run('u', limit / 2**30, first=12)
  assert max(later) <= limit and 0 < n_later < n_unbounded
  # the environment's directory is JAX's to bound, not ours (other programs write there too)
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'env')
  os.makedirs(tmp_path / 'env')
  envdir, n_env = run('ignored', limit / 2**30, used='env')
  assert envdir[-1] > limit and n_env == n_unbounded and not (tmp_path / 'ignored').exists()


def test_a_config_without_a_field_its_family_reads_and_a_stray_argument_are_one_error(tmp_path):
  """A user config that leaves out a field (here all but `family`) was a traceback with exit
  1 (after training, for a field read at the end); a stray argument was absl's usage text."""
  cfg = tmp_path / 'fam.py'
  cfg.write_text("import ml_collections\ndef get_config():\n"
                 "  c = ml_collections.ConfigDict(); c.family = 'word2vec'; return c\n")
  env = {**os.environ, 'PYTHONPATH': ROOT}
  for args, match in (
      (['--config', str(cfg), '--workdir', str(tmp_path / 'a')],
       "error: the config has no field 'train' that the 'word2vec' family reads"),
      (['--config', 'skipgram', '--workdir', str(tmp_path / 'b'), 'extra'],
       "error: unexpected arguments ['extra']")):
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(match), res.stderr


def test_bracket_overrides_are_left_to_config_flags(tmp_path):
  """config_flags reads `--config.model["dim"]=8`; the field check split names at dots only
  and refused it (a review)."""
  res = subprocess.run(
      [sys.executable, '-c', 'import sys; from translearn_jax.cli import train as t; '
       't._parse_flags(sys.argv); print(t.flags.FLAGS.config.model.dim)',
       f'--config={os.path.join(CONFIGS, "transfer_mr_skipgram.py")}', f'--workdir={tmp_path}',
       '--config.model["dim"]=8'], capture_output=True, text=True, cwd=tmp_path)
  assert res.returncode == 0 and res.stdout.split() == ['8'], res.stderr[-500:]


def test_a_full_disk_while_writing_a_runs_files_is_one_error_line(tmp_path):
  """ENOSPC from vectors.txt or vocab.tsv was a traceback and exit 1 (a review on a tiny
  tmpfs); it is one line naming the file, exit 2, as a full disk during a save is."""
  code = ('import errno, sys; from translearn_jax.cli import train as t\n'
          'def full(config, workdir):\n'
          '  raise OSError(errno.ENOSPC, "No space left on device", workdir + "/vectors.txt")\n'
          't.run = full\n'
          't.entry(sys.argv)\n')
  res = subprocess.run([sys.executable, '-c', code, '--config', 'skipgram',
                        f'--workdir={tmp_path}/w'], capture_output=True, text=True)
  assert res.returncode == 2, res.stderr[-800:]
  lines = res.stderr.strip().splitlines()
  assert lines[-1].startswith(f'error: disk full writing {tmp_path}/w/vectors.txt (No space '
                              'left on device)') and 'Traceback' not in res.stderr
