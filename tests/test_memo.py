"""Memoised builders of jitted functions (`training.memo`): equal arguments share one
built function, unequal ones never do, and unhashable arguments bypass the cache."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translearn_jax.data import masking
from translearn_jax.models import seq2seq as s2s
from translearn_jax.training import memo, optimizers
from translearn_jax.training import mesh as mesh_lib


def test_keys_compare_by_value_and_unhashable_arguments_have_none():
  cfg = s2s.Seq2SeqConfig(vocab_size=30)
  mesh = mesh_lib.make_mesh(1)
  a = memo.key_of(s2s.Seq2Seq(cfg), mesh, 0.1, frozen={'a': True, 'b': False})
  assert a == memo.key_of(s2s.Seq2Seq(cfg), mesh_lib.make_mesh(1), 0.1,
                          frozen={'b': False, 'a': True})
  assert a != memo.key_of(s2s.Seq2Seq(cfg.replace(d_model=128)), mesh, 0.1,
                          frozen={'a': True, 'b': False})
  assert a != memo.key_of(s2s.Seq2Seq(cfg), mesh, 0.1, frozen={'a': False, 'b': False})
  assert memo.key_of(1) != memo.key_of(1.0) != memo.key_of(True)   # types are part of it
  assert memo.key_of(jnp.zeros(3)) is None and memo.key_of(np.zeros(3)) is None
  assert memo.key_of(ml_collections.ConfigDict({'a': 1})) is None


def test_builder_is_called_once_per_distinct_key_and_keeps_the_last_few():
  calls = []

  @memo.memoized(maxsize=2)
  def build(x, y=0):
    calls.append((x, y))
    return object()

  first = build(1, y=2)
  assert build(1, y=2) is first and calls == [(1, 2)]
  assert build(2) is not first and build(3) is not None     # evicts (1, 2)
  assert build(1, y=2) is not first and len(calls) == 4
  arr = np.zeros(2)
  assert build(arr) is not build(arr) and len(calls) == 6   # unhashable: never cached


def test_optimiser_is_shared_by_equal_configs_and_reads_its_config_once():
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  optim = ml_collections.ConfigDict({'learning_rate': 1e-2, 'weight_decay': 0.5,
                                     'no_decay': 'bias'})
  tx, sched = optimizers.make(optim, params, 10)
  again = optimizers.make(ml_collections.ConfigDict(optim.to_dict()), params, 10)
  assert again[0] is tx and again[1] is sched
  assert optimizers.make(optim, params, 11)[0] is not tx
  other = ml_collections.ConfigDict({**optim.to_dict(), 'learning_rate': 2e-2})
  assert optimizers.make(other, params, 10)[0] is not tx
  # only the paths of the parameters matter, not their values or shapes
  assert optimizers.make(optim, jax.tree.map(lambda x: x * 0 + 3, params), 10)[0] is tx
  assert optimizers.make(optim, {'dense': {'kernel': jnp.ones((2, 2))}}, 10)[0] is not tx
  # changing the config afterwards changes nothing the built optimiser does
  optim.no_decay = 'kernel'
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates['dense']['bias']).max()) == 0.0       # bias: no decay
  assert float(jnp.abs(updates['dense']['kernel']).max()) > 0.0      # kernel: decayed


def test_maskers_compare_by_their_tables():
  a = masking.Masker(20, [0, 1, 2], 3, 0.15, 4)
  assert a == masking.Masker(20, [0, 1, 2], 3, 0.15, 4) and hash(a) == hash(
      masking.Masker(20, [0, 1, 2], 3, 0.15, 4))
  assert a != masking.Masker(20, [0, 1], 3, 0.15, 4)
  assert a != masking.Masker(20, [0, 1, 2], 3, 0.2, 4)
  assert a != masking.Masker(20, [0, 1, 2], 3, 0.15, 4, word_starts=np.ones(20, bool))


def test_runs_of_one_config_share_their_step_and_other_configs_do_not(tiny_config, tmp_path):
  from translearn_jax.pretraining import word2vec

  def losses(run):
    return [json.loads(x)['loss'] for x in open(tmp_path / run / 'metrics.jsonl')]
  # (the process may have run this config in an earlier test: count from the first run)
  word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'a'))
  after_first = word2vec.make_train_fn.memo.hits
  word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'b'))
  assert word2vec.make_train_fn.memo.hits == after_first + 1
  assert losses('b') == losses('a')
  tiny_config.optim.learning_rate *= 4.125   # another schedule: its own step, other losses
  misses = word2vec.make_train_fn.memo.misses
  word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'c'))
  assert word2vec.make_train_fn.memo.hits == after_first + 1
  assert word2vec.make_train_fn.memo.misses == misses + 1
  assert losses('c') != losses('a')
