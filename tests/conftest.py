"""Test setup: 8 virtual CPU devices (set before JAX is imported) and shared fixtures."""

import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data'))


def shared_data(*parts):
  """Path under ../shared/data, or skip the test when it is absent."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent (the shared datasets sit beside the project root)')
  return path


@pytest.fixture
def tiny_config():
  """The skip-gram config shrunk to seconds: Lee corpus, small model."""
  from configs import skipgram
  config = skipgram.get_config()
  config.data.kind = 'text'
  config.data.path = 'gensim:lee_background.cor'
  config.model.dim = 16
  config.train.epochs = 1
  config.train.batch_size = 8
  config.train.seq_length = 64
  config.train.steps_per_call = 4
  config.num_devices = 1
  config.progress = False
  config.train.checkpoint_every_steps = 8
  config.train.log_every_steps = 8
  config.eval.analogy = ''
  config.export.format = ''
  return config


class StopAfter:
  """Stands in for `training.loop.StopSignal`: reports SIGTERM after `n` loop iterations."""

  def __init__(self, n):
    self.n, self.seen = n, 0

  def __call__(self, *a, **k):
    outer = self

    class Ctx:
      signum = 15

      @property
      def requested(self):
        outer.seen += 1
        return outer.seen > outer.n

      def __enter__(self):
        return self

      def __exit__(self, *exc):
        return False
    return Ctx()
