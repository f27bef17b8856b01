"""Test setup: 8 virtual CPU devices (set before JAX is imported) and shared fixtures.

Expensive inputs are session fixtures, built once per pytest process (with
`-n 2 --dist loadfile`, once per worker that runs a test needing them) and
used read-only: `tiny_lm_run` (a small trained Transformer LM run directory),
`topic_task` (a labelled TSV made from the Lee corpus), `vectors` (a vectors
file for its words) and `conll_task` (CoNLL-format files). A test that must
change a run directory copies it to its own tmp_path first.

Each process also gets a fresh, private JAX compilation cache (deleted at
exit): the runners build a new jitted step per run, so e.g. the ten
fine-tuning runs of one comparison would otherwise compile the same program
ten times. The subprocesses a test starts (train.py, the console script)
inherit it through the environment (JAX_COMPILATION_CACHE_DIR), so the
reference, killed and resumed runs of a kill -9 test compile once. A cache
entry cut short by a kill is read as a miss (JAX warns and recompiles).

Compilation dominates the suite's time (tiny models, hundreds of programs), so
the tests ask XLA:CPU for fast compilation rather than fast code: LLVM
optimisation level 0 and the classic (non-MLIR) fusion emitters, about half
the compile time of the defaults. Only for the jaxlib release these flags are
known to (0.10.x: an unknown XLA flag aborts the process), and not when
XLA_FLAGS already picks an optimisation level or TRANSLEARN_TEST_DEFAULT_XLA=1
(to run the suite on XLA's default pipeline). Subprocesses inherit the flags.
"""

import atexit
import os
import shutil
import sys
import tempfile

def _fast_compile_flags(xla_flags: str) -> str:
  """XLA:CPU flags trading run speed for compile speed (see the module doc), or ''."""
  from importlib import metadata
  try:
    jaxlib = metadata.version('jaxlib')
  except metadata.PackageNotFoundError:
    return ''
  if (os.environ.get('TRANSLEARN_TEST_DEFAULT_XLA') == '1' or not jaxlib.startswith('0.10.')
      or 'xla_backend_optimization_level' in xla_flags):
    return ''
  return ' --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'


os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           _fast_compile_flags(os.environ.get('XLA_FLAGS', '')) +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# one cache for the whole session: pytest-xdist starts its workers with the environment of the
# process that loaded this file first, so they find the directory there and share it (programs
# compiled by one worker are read by the other); only the process that made it deletes it
_XLA_CACHE = os.environ.get('TRANSLEARN_TEST_XLA_CACHE', '')
if not _XLA_CACHE or not os.path.isdir(_XLA_CACHE):
  _XLA_CACHE = tempfile.mkdtemp(prefix='translearn_jax_test_xla_cache_')
  os.environ['TRANSLEARN_TEST_XLA_CACHE'] = _XLA_CACHE
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
# read by this process's JAX at import and inherited by the subprocesses tests start
os.environ['JAX_COMPILATION_CACHE_DIR'] = _XLA_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_compilation_cache_dir', _XLA_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data'))


def shared_data(*parts):
  """Path under ../shared/data, or skip the test when it is absent."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent (the shared datasets sit beside the project root)')
  return path


class LazyModule:
  """A module imported on first attribute use, or the test using it skipped when it is not
  installed: a test file's `torch = LazyModule('torch')` costs collection nothing (every
  pytest-xdist worker collects every file, so a module-level import of PyTorch was paid
  by workers that never ran those tests)."""

  def __init__(self, name: str):
    self._name = name

  def __getattr__(self, attr):
    # pytest's collection probes (`__test__`, `__wrapped__`, `_mock_name`, ...) must not
    # import the module: no test uses a private attribute of one
    if attr.startswith('_'):
      raise AttributeError(attr)
    return getattr(pytest.importorskip(self._name), attr)


@pytest.fixture
def tiny_config():
  """The shared-draw skip-gram config shrunk to seconds: Lee corpus, small model. Its
  summed order takes every option the tests set (CBOW, caps, per-pair draws); the
  default's sequential order has tests of its own."""
  from configs import skipgram_shared
  config = skipgram_shared.get_config()
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


# -- shared inputs (session-scoped, read-only) -----------------------------------

def lm_config(**over):
  """configs/lm_transformer.py shrunk to seconds (Lee corpus, 1 layer × 32, 400 pieces)."""
  from configs import lm_transformer
  return _tiny_rows(lm_transformer.get_config(), over)


def mlm_config(**over):
  """configs/mlm_encoder.py shrunk like `lm_config`."""
  from configs import mlm_encoder
  return _tiny_rows(mlm_encoder.get_config(), over)


def _tiny_rows(c, over):
  c.data.kind, c.data.path = 'text', 'gensim:lee_background.cor'
  c.tokenizer.vocab_size = 400
  c.model.d_model, c.model.num_layers, c.model.d_ff, c.model.max_len = 32, 1, 64, 64
  c.train.seq_length, c.train.batch_size, c.train.epochs = 32, 8, 1
  c.num_devices, c.progress = 1, False
  c.train.log_every_steps, c.train.checkpoint_every_steps, c.train.eval_every_steps = 10, 20, 1000
  c.optim.warmup_steps = 5
  return set_fields(c, over)


def s2s_config(d, **over):
  """configs/seq2seq_multi30k.py shrunk to seconds: 48 made-up training pairs written under
  `d` (target: the source's first three words), no valid/test split, 1 + 1 layers × 32."""
  import numpy as np
  from configs import seq2seq_multi30k
  rng = np.random.default_rng(0)
  words = 'river stone forest light cloud market harbour engine garden letter'.split()
  docs = [' '.join(words[i] for i in rng.integers(0, len(words), rng.integers(3, 9)))
          for _ in range(48)]
  (d / 'train.src').write_text('\n'.join(docs) + '\n', encoding='utf-8')
  (d / 'train.tgt').write_text('\n'.join(' '.join(x.split()[:3]) for x in docs) + '\n',
                               encoding='utf-8')
  c = seq2seq_multi30k.get_config()
  c.data.train_source, c.data.train_target = str(d / 'train.src'), str(d / 'train.tgt')
  for s in ('valid', 'test'):
    c.data[f'{s}_source'] = c.data[f'{s}_target'] = ''
  return set_fields(c, {'tokenizer.vocab_size': 320, 'model.d_model': 32, 'model.num_heads': 2,
                        'model.d_ff': 64, 'model.encoder_layers': 1, 'model.decoder_layers': 1,
                        'max_source_len': 16, 'max_target_len': 8, 'length_buckets': '',
                        'train.batch_size': 16, 'train.steps': 3, 'progress': False,
                        'num_devices': 1, 'train.log_every_steps': 1, 'model.dropout': 0.0,
                        **over})


def set_fields(config, fields: dict):
  """`config` with each dotted field of `fields` set (a field the config lacks fails:
  a misspelt override must not pass silently as a new field)."""
  for k, v in fields.items():
    node = config
    *parents, leaf = k.split('.')
    for p in parents:
      node = node[p]
    assert leaf in node, f'no config field {k}'
    node[leaf] = v
  return config


def _snapshot(directory):
  """{relative path: (size, mtime)} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      st = os.stat(os.path.join(root, f))
      out[os.path.relpath(os.path.join(root, f), directory)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope='session')
def tiny_lm_run(tmp_path_factory):
  """A small Transformer LM run directory (lm_config: 1 layer × 32, max_len 64, a
  400-piece tokenizer, 10 steps): what the LM-transfer tests graft, fine-tune,
  sample from and continue pretraining. Read-only: its files must not change."""
  from translearn_jax.pretraining import lm
  lm_dir = str(tmp_path_factory.mktemp('tiny_lm_run'))
  lm.train_and_evaluate(lm_config(**{'train.steps': 10}), lm_dir)
  before = _snapshot(lm_dir)
  yield lm_dir
  assert _snapshot(lm_dir) == before, 'a test changed the shared tiny_lm_run (copy it first)'


@pytest.fixture(scope='session')
def topic_task(tmp_path_factory):
  """Lee-corpus sentences labelled by whether they mention a person-ish word."""
  from translearn_jax.data import readers
  d = tmp_path_factory.mktemp('task')
  docs = list(readers.read_documents(readers.TextSpec(kind='text',
                                                      path='gensim:lee_background.cor')))
  sents = [s.strip() for doc in docs for s in doc.split('. ') if len(s.split()) > 4][:1200]
  keys = {'he', 'she', 'his', 'her', 'minister', 'president', 'mr'}
  rows = ['sentence\tlabel'] + [f'{s}\t{int(bool(keys & set(s.lower().split())))}'
                                for s in sents]
  (d / 'task.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  return str(d / 'task.tsv')


@pytest.fixture(scope='session')
def vectors(tmp_path_factory, topic_task):
  """Made-up 16-d vectors for the task's words (deterministic): (path, words)."""
  import numpy as np
  from translearn_jax.downstream.classification import word_vocab
  from translearn_jax.export.word2vec_format import save_word2vec
  words = word_vocab([l.split('\t')[0] for l in open(topic_task).read().splitlines()[1:]])[2:]
  rng = np.random.default_rng(0)
  path = str(tmp_path_factory.mktemp('vec') / 'v.txt')
  save_word2vec(path, words[:300], rng.normal(size=(300, 16)).astype(np.float32))
  return path, words[:300]


def make_conll_task(tmp_path):
  """A tiny CoNLL-format task made from the Lee corpus: tag capitalised words."""
  from translearn_jax.data import readers
  docs = list(readers.read_documents(readers.TextSpec(kind='text',
                                                      path='gensim:lee_background.cor')))
  words = ' '.join(docs).split()
  blocks = []
  for i in range(0, 3000, 10):
    sent = words[i:i + 10]
    tags, prev = [], False
    for w in sent:
      cap = w[:1].isupper()
      tags.append(('I-NAME' if prev else 'B-NAME') if cap else 'O')
      prev = cap
    blocks.append('\n'.join(f'{w} {t}' for w, t in zip(sent, tags)))
  for name, part in (('train', blocks[:200]), ('dev', blocks[200:250]), ('test', blocks[250:])):
    (tmp_path / f'{name}.txt').write_text('\n\n'.join(part) + '\n', encoding='utf-8')
  return tuple(str(tmp_path / f'{n}.txt') for n in ('train', 'dev', 'test'))


@pytest.fixture(scope='session')
def conll_task(tmp_path_factory):
  """(train, dev, test) paths of `make_conll_task`."""
  return make_conll_task(tmp_path_factory.mktemp('conll'))
