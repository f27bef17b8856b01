"""The one entry point: runs any config under configs/.

  python train.py --config configs/skipgram.py --workdir /tmp/run [--config.FIELD=VALUE ...]

Bad input (a missing file, an unknown config field, an empty corpus, ...)
prints one line `error: ...` and exits 2; a non-finite loss exits 3 and keeps
the last good checkpoint; SIGTERM checkpoints and exits 0.
"""

import importlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from translearn_jax.errors import NonFiniteLossError, TranslearnError

FAMILIES = {
    'word2vec': 'translearn_jax.pretraining.word2vec',
    'lm': 'translearn_jax.pretraining.lm',
    'seq2seq': 'translearn_jax.pretraining.seq2seq',
    'classify': 'translearn_jax.experiments.classification',
    'tag': 'translearn_jax.experiments.tagging',
    'zero_shot': 'translearn_jax.experiments.zero_shot',
    'curves': 'translearn_jax.experiments.learning_curves',
    'search': 'translearn_jax.experiments.search',
    'dann': 'translearn_jax.experiments.dann',
    'multitask': 'translearn_jax.experiments.multitask',
}

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Call jax.distributed.initialize() (multi-host runs).')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Log INFO messages of all libraries (orbax, ...).')
config_flags.DEFINE_config_file('config', None, 'A config file under configs/.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def run(config, workdir: str) -> dict:
  family = config.get('family')
  if family not in FAMILIES:
    raise TranslearnError(f'config.family: unknown family {family!r}; known: {sorted(FAMILIES)}')
  return importlib.import_module(FAMILIES[family]).train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  logging.set_verbosity(logging.INFO if _VERBOSE.value else logging.WARNING)
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
  if summary.get('stopped_by_signal'):
    print(f'stopped by signal at step {summary["steps"]}; checkpoint saved', file=sys.stderr)


def _parse_flags(argv):
  """absl flag parsing with a one-line error for bad config overrides."""
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


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
