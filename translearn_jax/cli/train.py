"""`translearn train` and the root `train.py`: runs a shipped config or any config file.

  translearn train --config skipgram --workdir /tmp/run [--config.FIELD=VALUE ...]
  python train.py --config configs/skipgram.py --workdir /tmp/run [--config.FIELD=VALUE ...]

`--config` takes a shipped config's name (`skipgram`, `skipgram.py` or
`configs/skipgram.py` from any directory) or the path of a config file.
Bad input (a missing file, an unknown config field, an empty corpus, a
workdir in use by another run or holding a run of another config, ...)
prints one line `error: ...` and exits 2; a non-finite loss exits 3 and keeps
the last good checkpoint. SIGTERM exits 0 in every phase: during training it
checkpoints first; see `translearn_jax/training/preemption.py` for the rest.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from translearn_jax import config_fields
from translearn_jax.cli.absl_flags import HELP_FLAGS, flag_help
from translearn_jax.cli.catalogue import FAMILIES, catalogue, resolve_config
from translearn_jax.errors import NonFiniteLossError, TranslearnError
from translearn_jax.training import distributed, preemption

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'A multi-process run on a cluster JAX detects (SLURM, TPU, '
                                 'Open MPI): jax.distributed.initialize().')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '',
                                   'Multi-process run by hand: HOST:PORT of process 0 '
                                   '(or JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Multi-process run by hand: the '
                                      'number of processes (or JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Multi-process run by hand: this '
                                   "process's index, 0..N-1 (or JAX_PROCESS_ID).")
_CACHE = flags.DEFINE_string(
    'compilation_cache', None, 'Directory of compiled programs reused by later runs of the '
    "same model and shapes ('': off; default: $XDG_CACHE_HOME/translearn_jax/xla/<this CPU>; "
    'JAX_COMPILATION_CACHE_DIR in the environment wins).')
_CACHE_MAX_GB = flags.DEFINE_float(
    'compilation_cache_max_gb', 4.0, 'Bound on the compilation cache directory in GiB: past '
    'it the least recently used programs are deleted (<= 0: no bound; a '
    'JAX_COMPILATION_CACHE_DIR is bounded by JAX_COMPILATION_CACHE_MAX_SIZE alone).')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Log INFO messages of all libraries (orbax, ...).')
config_flags.DEFINE_config_file('config', None, 'A shipped config name (see --help) or a '
                                'config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])

# Families whose training goes through `training.loop.train_loop`: a SIGTERM
# waits for the loop's next safe point (or the end of the run), see preemption.
LOOP_FAMILIES = ('word2vec', 'lm', 'seq2seq', 'mlm', 'seq2seq_curves')


def run(config, workdir: str) -> dict:
  """Validates `config`, takes `workdir` (lock, resume check, config.json), runs the family."""
  from translearn_jax.training import workdir as workdir_lib
  family = config.get('family')
  if family not in FAMILIES:
    raise TranslearnError(f'config.family: unknown family {family!r}; known: {sorted(FAMILIES)}')
  config_fields.check(config)
  workdir_lib.validate_fields(config)
  module = importlib.import_module(FAMILIES[family])
  if callable(getattr(module, 'validate', None)):
    module.validate(config)       # the family's own checks: before config.json is written
  workdir_lib.check_directory(workdir)
  import jax
  distributed.check_shared_workdir(workdir)
  with workdir_lib.open_workdir(config, workdir, primary=jax.process_index() == 0):
    with (preemption.deferred(raise_at_end=False) if family in LOOP_FAMILIES
          else contextlib.nullcontext()):
      return module.train_and_evaluate(config, workdir)


def main(argv):
  """absl main: the parsed flags' run, its errors as `error:` lines and exit codes."""
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]} (every setting is a flag: '
          '--config.FIELD=VALUE; see --help)', file=sys.stderr)
    sys.exit(2)
  try:
    explicit = distributed.settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if explicit or _DISTRIBUTED.value:
      distributed.initialize(**explicit)
      preemption.release(signal.SIGINT)     # only SIGTERM stops the processes together
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  logging.set_verbosity(logging.INFO if _VERBOSE.value else logging.WARNING)
  from translearn_jax.training import compilation_cache
  try:
    compilation_cache.configure(compilation_cache.default_dir() if _CACHE.value is None
                                else _CACHE.value, _CACHE_MAX_GB.value)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  try:
    config = flags.FLAGS.config
    config.get('family')  # an unloadable file raises here, not at parse time
  except OSError as e:  # config_flags defers a load failure to first access
    cause = e.__cause__ or e
    print(f'error: cannot load --config {flags.FLAGS["config"].config_filename}: '
          f'{" ".join(str(cause).split())}', file=sys.stderr)
    sys.exit(2)
  try:
    summary = run(config, _WORKDIR.value)
  except NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    # a full disk or quota while writing a run's files (vocab.tsv, vectors.txt, results):
    # one line, as a full disk during a checkpoint save is (what was written is whole:
    # every file is written under a temporary name first)
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    where = f' writing {e.filename}' if e.filename else ''
    print(f'error: disk full{where} ({e.strerror}); free space in --workdir '
          f'{_WORKDIR.value} and rerun the command to resume', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    # a config file that leaves out a field its family reads (ml_collections raises these)
    if not _is_missing_field(e):
      raise
    name = str(e.args[0] if e.args else e).strip('"\'')
    print(f'error: the config has no field {name!r} that the '
          f'{config.get("family")!r} family reads: start the config from a shipped one '
          '(translearn configs) and change what differs', file=sys.stderr)
    sys.exit(2)
  if summary.get('stopped_by_signal') and 'steps' in summary:
    saved = os.path.isdir(os.path.join(_WORKDIR.value, 'checkpoints', str(summary['steps'])))
    print(f'stopped by signal at step {summary["steps"]}; '
          + ('checkpoint saved' if saved else 'no checkpoint saved'), file=sys.stderr)
  elif summary.get('stopped_by_signal'):
    print('stopped by signal; the run in progress checkpointed in its folder; rerun the '
          'command to resume', file=sys.stderr)
  elif preemption.received() is not None:
    print(f'signal {preemption.received()} arrived after training; outputs written',
          file=sys.stderr)
  if summary.get('stopped_by_signal') and preemption.received() == signal.SIGINT:
    sys.exit(exit_code(signal.SIGINT))


def _is_missing_field(e: BaseException) -> bool:
  """Whether `e` is ml_collections' error for reading a field a ConfigDict lacks."""
  tb = e.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and 'ml_collections' in tb.tb_frame.f_code.co_filename


def _check_config_file(argv: list[str]) -> None:
  """The `--config` file loads and its `get_config()` returns a ConfigDict; else one error
  naming the file (config_flags would print the loader's traceback)."""
  import importlib.util
  import ml_collections
  path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ('--config', '-config')),
              None) or next((a.split('=', 1)[1] for a in argv
                             if a.startswith(('--config=', '-config='))), None)
  if not path or not os.path.isfile(path.split(':', 1)[0]):
    return                                # config_flags names a missing file itself
  path = path.split(':', 1)[0]            # config_flags' `file.py:arg` form
  try:
    spec = importlib.util.spec_from_file_location('_translearn_config_check', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except Exception as e:                  # SyntaxError, ImportError, anything it raises
    where = f' (line {e.lineno})' if isinstance(e, SyntaxError) and e.lineno else ''
    raise TranslearnError(f'cannot load --config {path}{where}: {type(e).__name__}: '
                          f'{" ".join(str(e).split())}') from None
  if not callable(getattr(module, 'get_config', None)):
    raise TranslearnError(f'--config {path}: defines no get_config() (a config file returns '
                          'an ml_collections.ConfigDict from get_config())')
  import inspect
  if inspect.signature(module.get_config).parameters:
    return                                # takes config_flags' argument: checked when parsed
  try:
    config = module.get_config()
  except Exception as e:
    raise TranslearnError(f'--config {path}: get_config() raised {type(e).__name__}: '
                          f'{" ".join(str(e).split())}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise TranslearnError(f'--config {path}: get_config() returned a {type(config).__name__}, '
                          'not an ml_collections.ConfigDict')
  for a in argv[1:]:
    if a.startswith('--config.'):
      _check_override_field(config, a[len('--config.'):].split('=', 1)[0], path)


def _check_override_field(config, name: str, path: str) -> None:
  """An override names a field the config has: a config holds the fields its family reads,
  so a field it lacks would not be read (one error naming it and the fields that are)."""
  import ml_collections
  if '[' in name:                 # config_flags' `model["dim"]`, `lst[0]`: its own parser
    return
  node, at = config, 'config'
  for key in name.split('.'):
    if isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
      node, at = node[int(key)], f'{at}.{key}'
      continue
    if not isinstance(node, ml_collections.ConfigDict):
      return                              # inside a value config_flags parses itself
    if key not in node:
      import difflib
      family = f", family {config.get('family')!r}" if 'family' in config else ''
      near = difflib.get_close_matches(key, list(node.keys()), n=1)
      hint = f'did you mean {near[0]!r}? ' if near else ''
      raise TranslearnError(f'--config.{name}: {at} has no field {key!r} ({hint}{path}{family}, '
                            f'which reads only the fields it has; {at}: '
                            f'{", ".join(sorted(node.keys()))})')
    node, at = node[key], f'{at}.{key}'


def _resolve_config_args(argv: list[str]) -> list[str]:
  """`argv` with the value of `--config` (not `--config.FIELD`) made a file path."""
  out = list(argv)
  for i, a in enumerate(out):
    if a in ('--config', '-config') and i + 1 < len(out):
      out[i + 1] = resolve_config(out[i + 1])
    elif a.startswith(('--config=', '-config=')):
      flag, value = a.split('=', 1)
      out[i] = f'{flag}={resolve_config(value)}'
  return out


def _parse_flags(argv):
  """absl flag parsing with a one-line error for a bad `--config` or config override."""
  for a in argv[1:]:
    name = a[len('--config.'):].split('=', 1)[0] if a.startswith('--config.') else None
    new = config_fields.renamed(name) if name else None
    if new:
      print(f'error: --config.{name} was renamed: use --config.{new}', file=sys.stderr)
      sys.exit(2)
  try:
    argv = _resolve_config_args(argv)
    _check_config_file(argv)
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    bad = [a for a in argv[1:] if a.startswith('--config.')]
    detail = ' '.join(str(e).replace('\\n', ' ').replace('\\', '').replace("'", '').split())
    print(f'error: bad config override among {bad}: {type(e).__name__}: {detail}',
          file=sys.stderr)
  sys.exit(2)


def usage() -> str:
  """`--help`: this module's docstring, its flags, the families and the shipped configs."""
  return '\n'.join([(__doc__ or '').rstrip(), '', 'Flags:', flag_help(__name__), catalogue()])



def entry(argv: list[str]) -> None:
  """Runs the command line `argv` (argv[0]: the program's name) and exits: what both
  `python train.py` and `translearn train` do."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(usage())
    sys.exit(0)
  preemption.install((signal.SIGTERM, signal.SIGINT))
  try:
    app.run(main, argv=argv, flags_parser=_parse_flags)
  except preemption.Preempted as e:
    print(f'stopped by signal {e.signum} outside a training loop; work finished so far is '
          'kept in the workdir', file=sys.stderr)
    sys.exit(exit_code(e.signum))


def exit_code(signum) -> int:
  """A run stopped by a signal: 0 for SIGTERM (a preemption: the scheduler requeues it), 130
  for Ctrl-C (the shell's code for an interrupt: `translearn train ... && next` stops)."""
  return 130 if signum == signal.SIGINT else 0
