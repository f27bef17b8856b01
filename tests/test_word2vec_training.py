"""End-to-end skip-gram/CBOW training: learning, sharding, resume, signals, NaN."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import StopAfter

from translearn_jax.data.word2vec_stream import BlockStream, StreamConfig, StreamState
from translearn_jax.errors import ConfigError, DataError, NonFiniteLossError
from translearn_jax.models import word2vec as w2v
from translearn_jax.pretraining import word2vec
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def restore_params(workdir, config, vocab_size):
  cfg = word2vec.model_config(config, vocab_size)
  template = word2vec.init_state(cfg, 0, mesh_lib.make_mesh(1))
  ckpt = Checkpointer(workdir)
  state, data = ckpt.restore(template)
  ckpt.close()
  return state, data


@pytest.mark.parametrize('mode', ['skipgram', 'cbow', 'skipgram-pair_negatives'])
def test_loss_decreases_on_real_text(tiny_config, tmp_path, mode):
  config = tiny_config
  mode, _, pairs = mode.partition('-')
  config.model.mode, config.model.pair_negatives = mode, bool(pairs)
  if mode == 'cbow' or pairs:      # the config's shared draws are skip-gram's
    config.model.negative_draws = 0
  config.optim.learning_rate = 0.025 if mode == 'skipgram' else 0.05
  config.train.epochs = 3
  summary = word2vec.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  losses = [r['loss'] for r in records]
  assert len(losses) >= 5
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
  # WordSim-353 pairs with both words in the vocabulary are scored, the others counted OOV
  from translearn_jax.data.vocab import Vocabulary
  from translearn_jax.evaluation import word_vectors
  vocab = set(Vocabulary.load(str(tmp_path / 'vocab.tsv')).words)
  used = sum(a in vocab and b in vocab
             for a, b, _ in word_vectors.read_similarity_pairs('gensim:wordsim353.tsv'))
  ws = summary['eval']['wordsim353']
  assert used > 20 and (ws['pairs'], ws['oov_pairs']) == (used, 353 - used)
  assert 'words_per_sec' in records[-1]


def test_learning_rate_warmup_then_word2vec_decay(tiny_config, tmp_path):
  """`optim.warmup_steps` W: α rises linearly from 0 to α0 over W steps, then decays
  linearly to α0·end_lr_ratio at the last step; W = 0 is word2vec's plain decay."""
  c = tiny_config
  c.optim.learning_rate, c.optim.end_lr_ratio = 0.04, 1e-2
  plain = word2vec.lr_schedule(c, 100)
  assert [float(plain(s)) for s in (0, 50, 100)] == pytest.approx([0.04, 0.0202, 0.0004])
  c.optim.warmup_steps = 10
  warm = word2vec.lr_schedule(c, 100)
  want = [0.0, 0.02, 0.04, 0.0202, 0.0004]       # steps 0, 5, 10, 55, 100
  assert [float(warm(s)) for s in (0, 5, 10, 55, 100)] == pytest.approx(want, rel=1e-5)
  c.optim.warmup_steps = 10**6       # beyond the run: refused before training, naming it
  with pytest.raises(ConfigError, match=r"^config\.optim\.warmup_steps: must be below the "
                                        r"run's \d+ steps"):
    word2vec.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_run_past_the_uncapped_batch_limit_warns_and_names_the_cap(tiny_config, tmp_path):
  """Past 4 rows a step with no `optim.row_cap`, a run says it may diverge and names the
  measured recipe; at 4 rows, or with a cap, it says nothing."""
  import warnings
  c = tiny_config
  c.train.batch_size, c.optim.warmup_steps = 8, 10**6   # refused right after the warning
  with pytest.warns(UserWarning, match=r"^train\.batch_size=8 with optim\.row_cap=0: .*"
                                       r"optim\.row_cap=1 with optim\.row_cap_mode='curvature'"):
    with pytest.raises(ConfigError, match='optim.warmup_steps'):
      word2vec.train_and_evaluate(c, str(tmp_path / 'w'))
  for batch, cap in ((word2vec.UNCAPPED_BATCH_LIMIT, 0.0), (16, 1.0)):
    c.train.batch_size, c.optim.row_cap = batch, cap
    with warnings.catch_warnings():
      warnings.simplefilter('error')
      word2vec.warn_uncapped_large_batch(c)
  # word2vec's order (the default) takes the curvature cap, not the count cap
  from configs import skipgram
  seq = skipgram.get_config()
  seq.train.batch_size = 16
  with pytest.warns(UserWarning, match=r"optim\.row_cap=1 with optim\.row_cap_mode='curvature'"):
    word2vec.warn_uncapped_large_batch(seq)
  seq.optim.row_cap, seq.optim.row_cap_mode = 1.0, 'count'
  with pytest.raises(ConfigError,
                     match=r"config\.optim\.row_cap: .*needs optim\.row_cap_mode='curvature'"):
    word2vec.validate(seq)
  seq.optim.row_cap_mode = 'curvature'
  word2vec.validate(seq)
  # the shipped large-batch config: that order, capped, valid, no warning; on one CPU device
  # 'auto' takes the CPU kernel (it computes the capped sequential step)
  from configs import skipgram_large_batch
  big = skipgram_large_batch.get_config()
  word2vec.validate(big)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    word2vec.warn_uncapped_large_batch(big)
  cfg = word2vec.model_config(big, 100)
  assert (cfg.pair_order, cfg.row_cap_mode, cfg.row_cap, big.train.batch_size) == (
      'sequential', 'curvature', 1.0, 64)
  assert w2v.cpu_kernel_in_scope(cfg)
  # its rows come from across the epoch (the run's stream takes the field; batch 2 keeps
  # consecutive rows)
  from translearn_jax.data.vocab import encode_corpus
  corpus = encode_corpus([' '.join(f'w{i % 50}' for i in range(5000))], min_count=1)
  assert word2vec.block_stream(big, cfg, corpus, 0, 64).cfg.batch_rows == 'spread'
  assert word2vec.block_stream(seq, cfg, corpus, 0, 16).cfg.batch_rows == 'block'


def test_sharded_step_matches_single_device(tiny_config):
  assert jax.device_count() == 8, 'conftest forces 8 CPU devices'
  config = tiny_config
  corpus = word2vec.load_corpus(config)
  cfg = word2vec.model_config(config, len(corpus.vocab))
  stream = BlockStream(corpus, StreamConfig(batch=8, length=64, steps=4, window=cfg.window,
                                            negatives=cfg.negatives_per_position, sample=1e-3,
                                            seed=0),
                       epochs=1)
  blocks = [b for _, b in stream.iterate(StreamState(), prefetch=0)][:3]
  schedule = word2vec.lr_schedule(config, 100)
  results = []
  for n in (1, 8):
    mesh = mesh_lib.make_mesh(n)
    state = word2vec.init_state(cfg, 0, mesh)
    fn = word2vec.make_train_fn(cfg, schedule, mesh)
    losses = []
    for b in blocks:
      dev = mesh_lib.shard_batch(b, mesh, batch_axis=1)
      if n == 8:
        assert len(dev['tokens'].sharding.device_set) == 8
      state, m = fn(state, dev)
      losses.append(float(m['loss_sum']))
    results.append((jax.device_get(state.params), losses))
  (p1, l1), (p8, l8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for k in p1:
    np.testing.assert_allclose(p8[k], p1[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('rows', ['block', 'spread'])
def test_resume_reproduces_uninterrupted_run(tiny_config, tmp_path, monkeypatch, rows):
  config = tiny_config
  config.train.epochs = 2
  config.train.batch_rows = rows
  full = word2vec.train_and_evaluate(config, str(tmp_path / 'full'))
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(5))
  part = word2vec.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert part['stopped_by_signal'] and part['steps'] == 6 * config.train.steps_per_call
  monkeypatch.undo()
  resumed = word2vec.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert resumed['steps'] == full['steps']
  n = full['vocab_size']
  a, da = restore_params(str(tmp_path / 'full'), config, n)
  b, db = restore_params(str(tmp_path / 'cut'), config, n)
  assert da == db
  for k in a.params:
    np.testing.assert_array_equal(np.asarray(a.params[k]), np.asarray(b.params[k]))
  assert resumed['eval'] == full['eval']


def test_keeps_newest_checkpoints(tiny_config, tmp_path, monkeypatch):
  import threading
  from translearn_jax.data.word2vec_stream import BlockStream
  tiny_config.train.keep_checkpoints = 2
  tiny_config.train.checkpoint_every_steps = 4
  tiny_config.train.input_workers = 2            # (the run's blocks drawn by a pool)
  drawn_on, draw = set(), BlockStream._draw
  monkeypatch.setattr(BlockStream, '_draw', lambda self, *a: (
      drawn_on.add(threading.current_thread().name), draw(self, *a))[1])
  word2vec.train_and_evaluate(tiny_config, str(tmp_path))
  assert drawn_on and all(n.startswith('translearn-blocks') for n in drawn_on), drawn_on
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert len(steps) == 2 and steps[-1] == json.load(open(tmp_path / 'eval.json'))['steps']


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
  tiny_config.train.epochs = 1
  word2vec.train_and_evaluate(tiny_config, str(tmp_path))
  ckpt_dir = tmp_path / 'checkpoints'
  before = {d: sorted(os.listdir(ckpt_dir / d)) for d in os.listdir(ckpt_dir)}
  last = max(int(d) for d in before)
  mtime = os.path.getmtime(ckpt_dir / str(last))
  tiny_config.train.epochs = 3  # continue training...
  tiny_config.optim.learning_rate = 1e30  # ...with a step size that overflows
  with pytest.raises(NonFiniteLossError, match=f'last good checkpoint \\(step {last}\\)'
                     r'.*train.batch_size=8 is a large batch: try optim.row_cap=1 .*'
                     r'or a lower optim.learning_rate \(now 1e\+30\)'):
    word2vec.train_and_evaluate(tiny_config, str(tmp_path))
  after = {d: sorted(os.listdir(ckpt_dir / d)) for d in os.listdir(ckpt_dir)}
  assert after == before
  assert os.path.getmtime(ckpt_dir / str(last)) == mtime


def test_a_capped_large_batch_that_diverges_is_told_of_the_warmup(tiny_config, tmp_path):
  tiny_config.train.epochs = 1
  tiny_config.train.batch_size = 8
  tiny_config.optim.row_cap, tiny_config.optim.row_cap_mode = 1.0, 'curvature'
  tiny_config.optim.learning_rate = 1e30
  with pytest.raises(NonFiniteLossError, match=r'train.batch_size=8 under optim.row_cap=1: '
                     r'try optim.row_cap_cross=0.1 .*, a few warmup steps '
                     r'\(optim.warmup_steps, now 0\)'):
    word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'a'))
  tiny_config.optim.row_cap_cross = 0.1            # set: the hint moves on to the warmup
  with pytest.raises(NonFiniteLossError, match=r'optim.row_cap=1: try a few warmup steps'):
    word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'b'))


def _train_cmd(workdir, *overrides):
  return [sys.executable, os.path.join(ROOT, 'train.py'), '--config',
          os.path.join(ROOT, 'configs', 'skipgram.py'), '--workdir', str(workdir),
          '--config.progress=False', '--config.model.dim=16', '--config.num_devices=1',
          *overrides]


def test_sigterm_saves_checkpoint_and_exits_zero(tmp_path):
  proc = subprocess.Popen(
      _train_cmd(tmp_path, '--config.train.epochs=1000', '--config.data.kind=text',
                 '--config.data.path=gensim:lee_background.cor',
                 '--config.train.checkpoint_every_steps=100000000'),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
    time.sleep(0.2)
  assert metrics.exists(), proc.communicate(timeout=5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert 'stopped by signal' in err
  steps = [int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
  assert len(steps) == 1 and steps[0] > 0


# train.py's contract (exit 2, one `error:` line) through a subprocess: a data error and a
# flag error; the field errors of the config run in-process in test_bad_config_matrix.py
@pytest.mark.parametrize('overrides, message', [
    (['--config.data.kind=text', '--config.data.path=/no/such/corpus.txt'],
     'no such file or directory: /no/such/corpus.txt'),
    (['--config.model.dimm=3'], "config.model has no field 'dimm' \\(did you mean 'dim'\\?"),
])
def test_bad_input_is_one_line_error(tmp_path, overrides, message):
  res = subprocess.run(_train_cmd(tmp_path / 'w', *overrides), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 2, res.stderr
  lines = [l for l in res.stderr.strip().split('\n') if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), res.stderr
  import re
  assert re.search(message, lines[0]), lines[0]


# the corpora too small to train, through the one entry point in-process (the message
# train.py prints as its one `error:` line; a subprocess a case cost ~3 s of JAX start-up)
@pytest.mark.parametrize('text, min_count, message', [
    ('\n  \n', 5, 'is empty: no words found'),
    ('just three words\n', 1, 'only 3 in-vocabulary tokens, not more than model.window=5'),
    ('the cat sat on the mat\n' * 3, 50,
     'vocabulary of .* is empty: no word occurs at least min_count=50'),
])
def test_a_corpus_too_small_to_train_is_one_line_error(tmp_path, text, min_count, message):
  import train
  from configs import skipgram
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text(text, encoding='utf-8')
  c = skipgram.get_config()
  c.progress, c.model.dim, c.num_devices = False, 16, 1
  c.data.kind, c.data.path, c.vocab.min_count = 'text', str(corpus), min_count
  with pytest.raises(DataError, match=message) as info:
    train.run(c, str(tmp_path / 'w'))
  assert str(corpus) in str(info.value) and '\n' not in str(info.value)
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_a_bad_evaluation_set_stops_the_run_before_training(tiny_config, tmp_path):
  """Read at startup: a run never trains for an hour and then fails on its eval file."""
  from translearn_jax.errors import DataError
  bad = tmp_path / 'ws.txt'
  bad.write_text('a b 1\nc d x\n', encoding='utf-8')
  for field, value, match in (('similarity', f'ws={bad}', r"ws\.txt:2: score 'x'"),
                              ('analogy', str(tmp_path / 'none.txt'), 'no such file')):
    c = tiny_config.copy_and_resolve_references()
    c.eval[field] = value
    with pytest.raises(DataError, match=match):
      word2vec.train_and_evaluate(c, str(tmp_path / 'w'))
    assert not (tmp_path / 'w').exists()


def test_continued_pretraining_starts_from_another_run(tiny_config, tmp_path):
  """init_from: union vocabulary, source rows copied for both tables, then trained on."""
  from translearn_jax.data.vocab import Vocabulary
  from translearn_jax.training.checkpoint import Checkpointer
  src_dir, dst_dir = str(tmp_path / 'src'), str(tmp_path / 'dst')
  word2vec.train_and_evaluate(tiny_config, src_dir)
  c = tiny_config.copy_and_resolve_references()
  c.data.path = 'gensim:lee.cor'  # another corpus: a different vocabulary
  c.data.encoding = 'latin-1'
  c.init.path = src_dir
  c.train.epochs = 1
  src_vocab = Vocabulary.load(f'{src_dir}/vocab.tsv')
  cfg = word2vec.model_config(c, 1)
  corpus = word2vec.load_corpus(c)
  union = word2vec.union_vocabulary(corpus.vocab, src_vocab)
  assert union.words[:len(corpus.vocab)] == corpus.vocab.words
  assert set(src_vocab.words) <= set(union.words) and (union.counts[len(corpus.vocab):] == 0).all()
  import dataclasses
  state, stats = word2vec.init_from_run(c, dataclasses.replace(cfg, vocab_size=len(union)),
                                        union, 0, mesh_lib.make_mesh(1))
  ck = Checkpointer(src_dir)
  src_state, _ = ck.restore(word2vec.init_state(dataclasses.replace(cfg, vocab_size=len(src_vocab)),
                                                0, mesh_lib.make_mesh(1)))
  ck.close()
  for name in ('in_embed', 'out_embed'):
    for w in ('the', 'government', src_vocab.words[-1]):
      np.testing.assert_array_equal(np.asarray(state.params[name])[union.index[w]],
                                    np.asarray(src_state.params[name])[src_vocab.index[w]])
  assert stats['in_embed']['found'] == len(src_vocab)
  out = word2vec.train_and_evaluate(c, dst_dir)
  assert out['vocab_size'] == len(union)
  bad = c.copy_and_resolve_references()
  bad.init.path = str(tmp_path / 'nowhere')
  with pytest.raises(DataError, match='vocab.tsv not found'):
    word2vec.train_and_evaluate(bad, str(tmp_path / 'dst2'))


def test_corpora_without_pairs_or_with_one_word_are_refused(tmp_path):
  """One-word documents give no (word, context) pair and one distinct word nothing to
  tell apart: each an error naming why, not a run that reports loss 0 or learns nothing."""
  from configs import skipgram
  from translearn_jax.errors import DataError
  from translearn_jax.pretraining import word2vec
  c = skipgram.get_config()
  c.data.kind, c.data.path, c.vocab.min_count = 'text', str(tmp_path / 'c.txt'), 1
  (tmp_path / 'c.txt').write_text(''.join(f'{w}\n' for w in ['слово', 'книга', 'дом'] * 50))
  with pytest.raises(DataError, match=r"no document has two in-vocabulary words.*"
                                      r"data\.unit='paragraph'"):
    word2vec.load_corpus(c)
  (tmp_path / 'c.txt').write_text('слово ' * 20 + '\n')
  with pytest.raises(DataError, match=r"one distinct word \('слово'\)"):
    word2vec.load_corpus(c)
  (tmp_path / 'c.txt').write_text('слово книга дом\n' * 5)
  assert len(word2vec.load_corpus(c).vocab) == 3


def test_initial_tables_are_drawn_on_the_host_the_same_in_every_layout(monkeypatch):
  """The runner's initial tables: the input table uniform in ±0.5/dim, the output table
  zeros, a row's values set by the seed and its id (not the vocabulary size, the layout or
  the devices), no XLA program compiled to make them, and each chunk of the generator drawn
  once a process however many devices' blocks hold its rows."""
  from jax import monitoring
  from translearn_jax.models import row_sharded
  compiles = []

  def listen(event, secs, **kw):
    if event.endswith('backend_compile_duration'):
      compiles.append(event)

  cfg = w2v.Word2VecConfig(vocab_size=9000, dim=7, window=2, negatives=2)
  monitoring.register_event_duration_secs_listener(listen)
  try:
    one = word2vec.init_state(cfg, 3, mesh_lib.make_mesh(None, 1))
    table = np.asarray(one.params['in_embed'])
    assert not compiles
    jax.jit(lambda x: x * 3 + 1)(one.params['in_embed'])   # the listener does hear compiles
    assert compiles
  finally:
    monitoring.unregister_event_duration_listener(listen)
  assert np.abs(table).max() < 0.5 / 7 and np.abs(table).max() > 0.49 / 7
  assert abs(table.std() - 0.5 / 7 / np.sqrt(3)) < 1e-3      # uniform, not normal
  assert np.abs(np.asarray(one.params['out_embed'])).max() == 0
  # vocabulary row v: row v % 4096 of generator (seed, 0x77, v // 4096), scaled to ±0.5/dim
  block = np.random.default_rng((3, 0x77, 1)).random((word2vec.INIT_CHUNK_ROWS, 7), np.float32)
  np.testing.assert_array_equal(table[4096 + 5], (block[5] * 2 - 1) * np.float32(0.5 / 7))
  mesh = mesh_lib.make_mesh(None, 8)
  drawn = []
  rng = np.random.default_rng
  monkeypatch.setattr(np.random, 'default_rng', lambda seed: drawn.append(seed) or rng(seed))
  sharded = word2vec.init_state(cfg, 3, mesh, 8)
  monkeypatch.undo()
  assert sorted(drawn) == [(3, 0x77, c) for c in range(3)]   # not once per device's block
  np.testing.assert_array_equal(
      row_sharded.from_sharded_layout(np.asarray(sharded.params['in_embed']), 8, 9000), table)
  assert sharded.params['in_embed'].sharding == word2vec.table_sharding(mesh, 8)
  smaller = word2vec.init_state(cfg.__class__(**{**cfg.__dict__, 'vocab_size': 5000}), 3,
                                mesh_lib.make_mesh(None, 1))
  np.testing.assert_array_equal(np.asarray(smaller.params['in_embed']), table[:5000])
  other = np.asarray(word2vec.init_state(cfg, 4, mesh_lib.make_mesh(None, 1)).params['in_embed'])
  assert (np.abs(other - table).max(axis=1) > 0).all()        # another seed: other rows


def test_divergence_benchmark_steps_until_the_loss_is_not_finite(tmp_path):
  """benchmarks/word2vec_divergence.py: per-step losses and row norms; a run that blows up
  is cut at its first non-finite step, a sane one runs its steps."""
  from benchmarks import word2vec_divergence
  rng = np.random.default_rng(0)
  words = [f'w{i}' for i in range(60)]
  (tmp_path / 'c.txt').write_text('\n\n'.join(
      ' '.join(rng.choice(words, 40)) for _ in range(500)) + '\n', encoding='utf-8')
  args = ['--corpus', str(tmp_path / 'c.txt'), '--batch', '2', '--steps', '4']
  sane = word2vec_divergence.main(args)
  assert sane['diverged_at'] is None and [r['step'] for r in sane['steps']] == [1, 2, 3, 4]
  assert all(np.isfinite(r['loss_per_pair']) and r['max_in_embed'] > 0 for r in sane['steps'])
  blown = word2vec_divergence.main(args + ['--row_cap', '0', '--lr', '1e30', '--steps', '20'])
  last = blown['steps'][-1]
  assert blown['diverged_at'] == last['step'] and not np.isfinite(last['loss_per_pair'])


def test_input_workers_auto_is_one_on_cpu_devices_and_several_beside_an_accelerator(
    tiny_config, monkeypatch):
  import types
  cpu = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform='cpu')] * 2))
  gpu = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform='gpu')]))
  assert tiny_config.train.input_workers == 0
  monkeypatch.setattr(os, 'cpu_count', lambda: 16)
  assert word2vec.input_workers(tiny_config, cpu) == 1
  assert word2vec.input_workers(tiny_config, gpu) == 4
  monkeypatch.setattr(os, 'cpu_count', lambda: 2)
  assert word2vec.input_workers(tiny_config, gpu) == 1
  tiny_config.train.input_workers = 3
  assert word2vec.input_workers(tiny_config, cpu) == 3


@pytest.mark.parametrize('n, rows, kernel', [(1, False, 'xla'), (8, False, 'xla'),
                                             (8, True, 'xla'), (1, False, 'cpu')])
def test_a_step_of_padding_alone_is_skipped_not_computed(tiny_config, n, rows, kernel):
  """An epoch's last block is padded to `steps_per_call` steps (67% of a large batch's steps
  on a short corpus); a step whose every token is padding runs none of the step. Row 0 (the
  padding's token id) set to inf shows it: computed and masked, the step's loss and row
  updates are 0 · NaN; skipped, the tables are untouched and the loss is 0. The real steps
  of the block train as before."""
  if kernel == 'cpu':
    from translearn_jax.kernels import cpu
    if cpu.compiler() is None:
      pytest.skip('no C++ compiler for the CPU kernel')
  config = tiny_config
  config.model.step_kernel = kernel
  corpus = word2vec.load_corpus(config)
  cfg = word2vec.model_config(config, len(corpus.vocab))
  stream = BlockStream(corpus, StreamConfig(batch=8, length=64, steps=4, window=cfg.window,
                                            negatives=cfg.negatives_per_position, sample=1e-3,
                                            seed=0), epochs=1)
  block = next(iter(stream.iterate(StreamState(), prefetch=0)))[1]
  padded = {k: v.copy() for k, v in block.items()}
  padded['tokens'][2:], padded['segment'][2:] = 0, -1       # steps 2 and 3: padding alone
  mesh = mesh_lib.make_mesh(n)
  shards = n if rows else 0
  fn = word2vec.make_train_fn(cfg, word2vec.lr_schedule(config, 100), mesh, rows)
  state = word2vec.init_state(cfg, 0, mesh, shards)
  before = {k: word2vec.embeddings(state, len(corpus.vocab), shards, k) for k in state.params}
  state, m = fn(state, mesh_lib.shard_batch(padded, mesh, batch_axis=1))
  after_two = {k: word2vec.embeddings(state, len(corpus.vocab), shards, k) for k in state.params}
  assert np.isfinite(float(m['loss_sum'])) and float(m['loss_count']) > 0
  assert not np.array_equal(after_two['in_embed'], before['in_embed'])    # steps 0-1 trained

  state = word2vec.init_state(cfg, 0, mesh, shards)
  all_pad = {k: v.copy() for k, v in block.items()}
  all_pad['tokens'][:], all_pad['segment'][:] = 0, -1
  table = np.array(word2vec.embeddings(state, len(corpus.vocab), shards))
  table[0] = np.inf
  params = dict(state.params, in_embed=word2vec.place_table(table, 0, shards, mesh,
                                                            len(corpus.vocab)))
  state, m = fn(state.replace(params=params), mesh_lib.shard_batch(all_pad, mesh, batch_axis=1))
  assert float(m['loss_sum']) == 0.0 and float(m['loss_count']) == 0.0
  got = word2vec.embeddings(state, len(corpus.vocab), shards)
  np.testing.assert_array_equal(got, table)
  np.testing.assert_array_equal(word2vec.embeddings(state, len(corpus.vocab), shards,
                                                    'out_embed'), before['out_embed'])
  assert int(state.step) == 4                  # the steps run are still counted
