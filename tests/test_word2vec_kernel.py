"""word2vec's hand-written XLA:CPU steps (`model.step_kernel='cpu'`,
kernels/word2vec_cpu.cc: CBOW, skip-gram with shared negatives, and skip-gram in word2vec's
order with or without the curvature cap) against the XLA steps they stand in for."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from translearn_jax.errors import ConfigError
from translearn_jax.kernels import cpu
from translearn_jax.models import word2vec as w2v

pytestmark = pytest.mark.skipif(cpu.compiler() is None,
                                reason='no C++ compiler (CXX, g++, c++ or clang++) to build '
                                       'the CPU kernel with')


@pytest.fixture(scope='module', autouse=True)
def kernel_cache(tmp_path_factory):
  """A private build cache: the module builds the kernel once, from this checkout's source."""
  old = os.environ.get('TRANSLEARN_KERNEL_CACHE')
  os.environ['TRANSLEARN_KERNEL_CACHE'] = str(tmp_path_factory.mktemp('kernels'))
  yield os.environ['TRANSLEARN_KERNEL_CACHE']
  if old is None:
    os.environ.pop('TRANSLEARN_KERNEL_CACHE')
  else:
    os.environ['TRANSLEARN_KERNEL_CACHE'] = old


def batches(rng, steps, vocab, b, length, draws, window):
  seg = np.cumsum(rng.random((steps, b, length)) < 0.15, axis=-1).astype(np.int32)
  seg[:, 0, -3:] = -1                                     # padding at the end of a row
  return {'tokens': rng.integers(0, vocab, (steps, b, length)).astype(np.int32),
          'segment': seg,
          'window': rng.integers(1, window + 1, (steps, b, length)).astype(np.int32),
          'negatives': rng.integers(0, vocab, (steps, b, length, draws)).astype(np.int32)}


def tables(rng, vocab, dim):
  return {name: jnp.asarray(rng.normal(0, 0.3, (vocab, dim)), jnp.float32)
          for name in ('in_embed', 'out_embed')}


@functools.cache
def scanned(cfg):
  def run(params, blocks, lr):
    def body(p, batch):
      p, loss, pairs = w2v.sparse_sgd_step(p, batch, lr, cfg)
      return p, (loss, pairs)
    return jax.lax.scan(body, params, blocks)
  return jax.jit(run)


@pytest.mark.parametrize('mode', ['cbow', 'skipgram', 'sequential'])
@pytest.mark.parametrize('vocab,dim,window,extra', [
    (11, 6, 3, {}),                                      # every row hit many times a step
    (50, 37, 2, {'negative_draws': 7}),                  # D not a multiple of the 16 lanes
    (11, 16, 3, {'skip_target_negatives': True}),
    (30, 20, 4, {'max_score': 0.05}),
    (40, 8, 2, {'negative_draws': 70}),                  # the loss's log-of-products flushes
])
def test_cpu_kernel_computes_the_xla_steps_update(mode, vocab, dim, window, extra):
  """Three steps in a scan, each reading what the last wrote: the tables, the loss and the
  pair counts of the kernel equal the XLA step's up to float summation order."""
  negatives = 4
  if mode == 'sequential':   # per-pair draws, one context offset at a time; K = draws / 2
    negatives = extra.get('negative_draws', 2 * negatives) // 2   # 35: 36 terms flush
    extra = {k: v for k, v in extra.items() if k != 'negative_draws'}
    mode, extra = 'skipgram', {**extra, 'pair_negatives': True, 'pair_order': 'sequential'}
  base = w2v.Word2VecConfig(vocab_size=vocab, dim=dim, window=window, negatives=negatives,
                            mode=mode, **extra)
  kern = base.__class__(**{**base.__dict__, 'step_kernel': 'cpu'})
  rng = np.random.default_rng(vocab + dim)
  blocks = jax.tree.map(jnp.asarray, batches(rng, 3, vocab, 2, 24, kern.negatives_per_position,
                                             window))
  params = tables(rng, vocab, dim)
  want, (loss_w, pairs_w) = scanned(base)(params, blocks, 0.1)
  got, (loss_g, pairs_g) = scanned(kern)(params, blocks, 0.1)
  for name in params:
    moved = np.abs(np.asarray(want[name]) - np.asarray(params[name])).max()
    assert moved > 0.05                                   # the steps did move the rows
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(loss_g, loss_w, rtol=1e-5)
  np.testing.assert_array_equal(pairs_g, pairs_w)
  if 'max_score' in extra:   # the bound did drop gradients: without it the update differs
    free = scanned(base.__class__(**{**base.__dict__, 'max_score': 0.0}))(params, blocks, 0.1)[0]
    assert np.abs(np.asarray(free['in_embed']) - np.asarray(want['in_embed'])).max() > 1e-3


@pytest.mark.parametrize('vocab,dim,window,extra', [
    (11, 6, 3, {'row_cap': 0.1, 'row_cap_cross': 0.05}),   # hot rows, the cross term
    (60, 20, 2, {'row_cap': 0.05, 'skip_target_negatives': True, 'max_score': 0.4}),
])
def test_cpu_kernel_computes_the_capped_sequential_step(vocab, dim, window, extra):
  """word2vec's order under the curvature cap (`configs/skipgram_large_batch.py`'s step):
  each sub-step's rows scaled by their own summed curvature, as the XLA step scales them
  (which `test_word2vec_model`'s float64 pair-by-pair reference checks), with the cap
  binding: the uncapped step differs."""
  base = w2v.Word2VecConfig(vocab_size=vocab, dim=dim, window=window, negatives=2,
                            mode='skipgram', pair_negatives=True, pair_order='sequential',
                            row_cap_mode='curvature', **extra)
  kern = base.__class__(**{**base.__dict__, 'step_kernel': 'cpu'})
  rng = np.random.default_rng(vocab)
  blocks = jax.tree.map(jnp.asarray, batches(rng, 3, vocab, 2, 24, kern.negatives_per_position,
                                             window))
  params = tables(rng, vocab, dim)
  want, (loss_w, pairs_w) = scanned(base)(params, blocks, 0.5)
  got, (loss_g, pairs_g) = scanned(kern)(params, blocks, 0.5)
  free = scanned(base.__class__(**{**base.__dict__, 'row_cap': 0.0, 'row_cap_cross': 0.0}))(
      params, blocks, 0.5)[0]
  for name in params:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=2e-6)
    assert np.abs(np.asarray(free[name]) - np.asarray(want[name])).max() > 1e-2, name
  np.testing.assert_allclose(loss_g, loss_w, rtol=1e-5)
  np.testing.assert_array_equal(pairs_g, pairs_w)


def test_cpu_kernel_leaves_undonated_tables_and_rejects_ids_outside_them():
  cfg = w2v.Word2VecConfig(vocab_size=9, dim=5, window=2, negatives=3, mode='cbow',
                           step_kernel='cpu')
  rng = np.random.default_rng(3)
  batch = jax.tree.map(lambda x: jnp.asarray(x[0]), batches(rng, 1, 9, 2, 10, 3, 2))
  params = {'in_embed': jnp.ones((9, 5)), 'out_embed': jnp.full((9, 5), 0.5)}
  step = jax.jit(w2v.sparse_sgd_step, static_argnums=3)
  new, _, _ = step(params, batch, 0.1, cfg)
  assert float(jnp.abs(new['in_embed'] - 1.0).max()) > 0       # updated...
  np.testing.assert_array_equal(params['in_embed'], 1.0)       # ...into a new buffer
  np.testing.assert_array_equal(params['out_embed'], 0.5)
  bad = dict(batch, negatives=batch['negatives'].at[1, 4, 2].set(9))
  with pytest.raises(Exception, match='batch position 14 is outside the 9-row tables'):
    jax.block_until_ready(step(params, bad, 0.1, cfg))


def test_cpu_kernel_scope_is_checked_where_the_config_names_it():
  scope = "model.step_kernel='cpu' is the step with model.negative_share=1 and"
  with pytest.raises(ValueError, match=scope):
    w2v.Word2VecConfig(vocab_size=9, mode='skipgram', pair_negatives=True, step_kernel='cpu')
  w2v.Word2VecConfig(vocab_size=9, mode='skipgram', pair_negatives=True,
                     pair_order='sequential', step_kernel='cpu')
  w2v.Word2VecConfig(vocab_size=9, mode='skipgram', pair_negatives=True, pair_order='sequential',
                     row_cap=1.0, row_cap_mode='curvature', step_kernel='cpu')
  with pytest.raises(ValueError, match=scope):
    w2v.Word2VecConfig(vocab_size=9, mode='cbow', negative_share=2, step_kernel='cpu')
  for mode in ('skipgram', 'cbow'):
    with pytest.raises(ValueError, match=scope):
      w2v.Word2VecConfig(vocab_size=9, mode=mode, row_cap=1.0, step_kernel='cpu')
  with pytest.raises(ValueError, match='model.step_kernel must be'):
    w2v.Word2VecConfig(vocab_size=9, mode='cbow', step_kernel='gpu')


def test_runner_refuses_the_cpu_kernel_off_one_cpu_device(tiny_config):
  from translearn_jax.pretraining import word2vec
  from translearn_jax.training import mesh as mesh_lib
  tiny_config.model.step_kernel = 'cpu'
  tiny_config.model.pair_negatives, tiny_config.model.negative_draws = True, 0
  with pytest.raises(ConfigError, match="config.model.step_kernel: 'cpu' is the step with "
                                        'model.negative_share=1'):
    word2vec.validate(tiny_config)
  tiny_config.model.pair_order = 'sequential'   # per-pair draws one offset at a time: in scope
  word2vec.validate(tiny_config)
  tiny_config.model.pair_order = 'summed'
  tiny_config.model.pair_negatives, tiny_config.model.negative_draws = False, 15
  word2vec.validate(tiny_config)
  cfg = word2vec.model_config(tiny_config, 20)
  schedule = word2vec.lr_schedule(tiny_config, 100)
  with pytest.raises(ConfigError, match=r"one CPU device .* this run has 8 cpu device\(s\)"):
    word2vec.make_train_fn(cfg, schedule, mesh_lib.make_mesh(8))
  with pytest.raises(ConfigError, match="model.table_sharding='rows'"):
    word2vec.make_train_fn(cfg, schedule, mesh_lib.make_mesh(1), True)


def test_build_is_cached_by_its_inputs_and_written_whole(kernel_cache, monkeypatch):
  path = cpu.build('word2vec_cpu')
  assert os.path.dirname(path) == kernel_cache and os.path.getsize(path) > 0
  assert cpu.build('word2vec_cpu') == path                          # reused, not rebuilt
  assert not [f for f in os.listdir(kernel_cache) if f.startswith('.')]   # no temporaries
  monkeypatch.setattr(cpu, '_cpu_signature', lambda: 'another CPU')
  other = cpu.build('word2vec_cpu')
  assert other != path and os.path.exists(path)                     # another CPU: its own
  monkeypatch.setattr(cpu, 'compiler', lambda: None)
  with pytest.raises(cpu.KernelUnavailable, match='none was found'):
    cpu.build('word2vec_cpu')


@pytest.mark.parametrize('mode', ['cbow', 'skipgram', 'sequential'])
def test_a_run_with_the_cpu_kernel_trains_the_xla_runs_vectors(tiny_config, tmp_path,
                                                               monkeypatch, mode):
  """The runner end to end (stream, scanned steps, checkpoints, export of the tables): the
  kernel's run ends where the XLA step's does, up to float summation order."""
  from translearn_jax.pretraining import word2vec
  from translearn_jax.transfer import sources
  c = tiny_config
  if mode == 'cbow':
    c.model.mode, c.model.negative_draws, c.optim.learning_rate = 'cbow', 0, 0.05
  if mode == 'sequential':   # configs/skipgram_sequential.py's fields
    from translearn_jax.configs import skipgram_sequential
    shipped = skipgram_sequential.get_config().model
    for field in ('pair_negatives', 'negative_draws', 'pair_order'):
      c.model[field] = shipped[field]
  traced = []        # the kernel is traced into the cpu run's step, not the xla run's
  monkeypatch.setattr(cpu, 'word2vec_step',
                      lambda *a, _f=cpu.word2vec_step, **k: traced.append(1) or _f(*a, **k))
  runs = {}
  for kernel in ('xla', 'cpu'):
    c.model.step_kernel = kernel
    summary = word2vec.train_and_evaluate(c, str(tmp_path / f'{mode}_{kernel}'))
    runs[kernel] = summary, sources.load_run(str(tmp_path / f'{mode}_{kernel}')).params
    assert bool(traced) == (kernel == 'cpu')
  (s_x, p_x), (s_c, p_c) = runs['xla'], runs['cpu']
  assert s_c['steps'] == s_x['steps'] > 20
  for name in ('in_embed', 'out_embed'):
    a, b = np.asarray(p_x[name]), np.asarray(p_c[name])
    assert np.abs(a).max() > 0.05                 # trained rows, not the tiny initial ones
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
  assert s_c['eval']['wordsim353']['spearman'] == pytest.approx(
      s_x['eval']['wordsim353']['spearman'], abs=2e-3)


@pytest.mark.parametrize('mode', ['cbow', 'skipgram'])
def test_cpu_kernel_gives_the_same_bits_on_one_thread_or_two_and_from_concurrent_calls(mode):
  """A call's parts (runs of positions to score, then one table's updates each) run on the
  calling thread and on the kernel's helper thread when it is free, else all on the calling
  thread; a part computes the same on either, so concurrent calls (some of which find the
  helper busy) give bit for bit what one call at a time gives."""
  import threading
  cfg = w2v.Word2VecConfig(vocab_size=300, dim=24, window=3, negatives=5, mode=mode,
                           step_kernel='cpu')
  rng = np.random.default_rng(7)
  blocks = [jax.tree.map(jnp.asarray, batches(rng, 8, 300, 2, 64, 5, 3)) for _ in range(4)]
  params = tables(rng, 300, 24)
  run = scanned(cfg)
  alone = [jax.block_until_ready(run(params, b, 0.1)) for b in blocks]
  together = [None] * len(blocks)

  def call(i):
    for _ in range(5):
      together[i] = jax.block_until_ready(run(params, blocks[i], 0.1))

  threads = [threading.Thread(target=call, args=(i,)) for i in range(len(blocks))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for a, b in zip(alone, together):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_auto_takes_the_cpu_kernel_only_where_the_run_allows_it(monkeypatch):
  from translearn_jax.pretraining import word2vec
  from translearn_jax.training import mesh as mesh_lib
  auto = w2v.Word2VecConfig(vocab_size=9, mode='skipgram', step_kernel='auto')
  one, eight = mesh_lib.make_mesh(1), mesh_lib.make_mesh(8)
  kernel = lambda cfg, mesh, rows=False: word2vec.resolve_step_kernel(cfg, mesh, rows).step_kernel
  assert kernel(auto, one) == 'cpu'
  assert kernel(auto.__class__(**{**auto.__dict__, 'mode': 'cbow'}), one) == 'cpu'
  assert kernel(auto, eight) == 'xla'                          # several devices
  assert kernel(auto, one, True) == 'xla'                      # row-sharded tables
  paired = auto.__class__(**{**auto.__dict__, 'pair_negatives': True})
  assert kernel(paired, one) == 'xla'                          # a layout it does not compute
  sequential = paired.__class__(**{**paired.__dict__, 'pair_order': 'sequential'})
  assert kernel(sequential, one) == 'cpu'
  assert kernel(auto.__class__(**{**auto.__dict__, 'step_kernel': 'xla'}), one) == 'xla'

  def unavailable(*a):
    raise cpu.KernelUnavailable('no compiler here')
  monkeypatch.setattr(cpu, 'target', unavailable)
  with pytest.warns(UserWarning, match="model.step_kernel='auto' runs the XLA step: no compiler"):
    assert kernel(auto, one) == 'xla'
