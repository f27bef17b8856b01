"""Downstream runners: a diverging run stops with `NonFiniteLossError` (train.py: exit 3)
naming the run; a fine-tuning comparison killed with SIGKILL mid-run resumes to the result
of an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import train
from test_classification import base_config
from translearn_jax.errors import DataError, NonFiniteLossError


def diverging(task, vecs):
  c = base_config(task, vecs[0])
  c.optim.learning_rate = 1e30   # Adam moves every weight by ~1e30: the loss overflows
  c.optim.grad_clip = 0.0
  c.train.epochs = 1
  return c


def test_finetune_comparison_names_strategy_and_seed(tmp_path, topic_task, vectors):  # noqa: F811
  c = diverging(topic_task, vectors)
  c.compare_scratch, c.seeds, c.transfer.strategies = True, 1, 'finetune'
  with pytest.raises(NonFiniteLossError, match=r'^scratch seed 0: loss is (nan|inf)'):
    train.run(c, str(tmp_path / 'cmp'))


def test_learning_curve_names_strategy_budget_and_seeds(tmp_path, topic_task, vectors):  # noqa: F811
  c = diverging(topic_task, vectors)
  c.family, c.seeds = 'curves', 2
  c.curve = dict(budgets='64', strategies='finetune', epochs=1, min_steps=4,
                 time_sequential=False, title='t')
  with pytest.raises(NonFiniteLossError,
                     match=r'^learning curve scratch, 64 labels: the loss became non-finite '
                           r'for seed\(s\) \[0, 1\]'):
    train.run(c, str(tmp_path / 'curves'))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comparison_fields(task, vecs):
  return {'data.kind': 'tsv', 'data.path': task, 'model.dim': 16, 'init.path': vecs[0],
          'train.epochs': 3, 'train.batch_size': 32, 'transfer.unfreeze_every': 20,
          'compare_scratch': True, 'seeds': 1, 'transfer.strategies': 'finetune'}


def comparison_cmd(task, vecs, workdir):
  return [sys.executable, 'train.py', '--config', 'configs/transfer_mr_skipgram.py',
          '--workdir', str(workdir),
          *(f'--config.{k}={v}' for k, v in comparison_fields(task, vecs).items())]


def test_kill9_mid_finetuning_then_resume_equals_uninterrupted(tmp_path, topic_task,  # noqa: F811
                                                             vectors):  # noqa: F811
  from conftest import set_fields
  from configs import transfer_mr_skipgram
  env = {**os.environ, 'PYTHONPATH': ROOT}
  config = lambda: set_fields(transfer_mr_skipgram.get_config(),  # noqa: E731
                              comparison_fields(topic_task, vectors))
  # the uninterrupted reference: the same config, run in this process
  train.run(config(), str(tmp_path / 'ref'))
  work = tmp_path / 'killed'
  proc = subprocess.Popen(comparison_cmd(topic_task, vectors, work), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpts = work / 'runs' / 'finetune-seed0' / 'checkpoints'
  deadline = time.time() + 240
  while time.time() < deadline and not (ckpts.exists() and any(
      p.name.isdigit() for p in ckpts.iterdir())):
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)   # mid-way through the second run (after epoch 1)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  recs = [json.loads(l) for l in (work / 'runs.jsonl').read_text().splitlines()]
  assert [r['strategy'] for r in recs] == ['scratch']   # the finetune run was cut off
  # resumed in this process (the reference's compiled programs; train.py's resume of a
  # killed run is the subprocess tests' of test_reliability.py)
  train.run(config(), str(work))
  want = {r['strategy']: r['test'] for r in json.loads((tmp_path / 'ref' / 'results.json')
                                                         .read_text())['rows']}
  got = {r['strategy']: r['test'] for r in json.loads((work / 'results.json').read_text())['rows']}
  assert got == want
  assert not ckpts.exists()   # a recorded run's checkpoints are removed


def test_restored_source_with_nan_names_the_leaf(tmp_path):
  import jax.numpy as jnp
  import numpy as np
  from translearn_jax.data.vocab import Vocabulary
  from translearn_jax.training.checkpoint import Checkpointer
  from translearn_jax.training.state import TrainState
  from translearn_jax.transfer import sources
  run = tmp_path / 'w2v_run'
  table = np.ones((3, 4), np.float32)
  table[1, 2] = np.nan
  state = TrainState(step=jnp.zeros((), jnp.int32),
                     params={'in_embed': jnp.asarray(table), 'out_embed': jnp.zeros((3, 4))},
                     opt_state={}, rng=jax_key())
  ck = Checkpointer(str(run))
  ck.save(1, state, {})
  ck.close()
  Vocabulary(['a', 'b', 'c'], np.array([3, 2, 1])).save(str(run / 'vocab.tsv'))
  with pytest.raises(DataError, match=r"config\.init\.path: .*w2v_run holds non-finite "
                                      r"parameters in \['in_embed'\]"):
    sources.load('word2vec_run', str(run))


def jax_key():
  import jax
  return jax.random.key(0)


def test_row_sharded_word2vec_run_source_is_in_vocabulary_order(tmp_path):
  # a run trained with model.table_sharding='rows' saves its tables interleaved (row r on
  # shard r % n, padded); as a source its rows must line up with its vocab.tsv again
  import jax.numpy as jnp
  import numpy as np
  from translearn_jax.data.vocab import Vocabulary
  from translearn_jax.models import row_sharded
  from translearn_jax.training.checkpoint import Checkpointer
  from translearn_jax.training.state import TrainState
  from translearn_jax.transfer import graft as graft_lib
  from translearn_jax.transfer import sources
  run = tmp_path / 'w2v_rows'
  table = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
  sharded = np.asarray(row_sharded.to_sharded_layout(jnp.asarray(table), 2))   # 6 rows
  state = TrainState(step=jnp.zeros((), jnp.int32),
                     params={'in_embed': jnp.asarray(sharded),
                             'out_embed': jnp.asarray(-sharded)},
                     opt_state={}, rng=jax_key())
  ck = Checkpointer(str(run))
  ck.save(1, state, {'epoch': 0, 'block': 1, 'table_shards': 2})
  ck.close()
  words = ['a', 'b', 'c', 'd', 'e']
  Vocabulary(words, np.array([5, 4, 3, 2, 1])).save(str(run / 'vocab.tsv'))
  src = sources.load('word2vec_run', str(run))
  assert src.vocab == words
  np.testing.assert_array_equal(src.params['in_embed'], table)
  np.testing.assert_array_equal(src.params['out_embed'], -table)
  rows, stats = graft_lib.remap_rows(src.params['in_embed'], src.vocab, ['<pad>', 'c', 'e'],
                                     np.zeros((3, 3), np.float32), init='init')
  np.testing.assert_array_equal(rows[1:], table[[2, 4]])
  assert stats['found'] == 2
