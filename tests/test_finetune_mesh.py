"""Fine-tuning on a device mesh (issue #18): a pretrained backbone's parameters and
optimiser state are placed by the logical-axis rules (FSDP x tensor), batches split over
data x fsdp, and the run computes what the one-device run computes."""

import copy
import json

import jax
import numpy as np
import pytest

from translearn_jax.downstream import classification as task
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.experiments import classification


def losses(d):
  return [r['loss'] for r in map(json.loads, open(d / 'metrics.jsonl')) if 'loss' in r]


def test_finetuning_shards_the_backbone_by_the_rules_and_computes_the_same(
    tmp_path, topic_task, tiny_lm_run):
  from configs import transfer_mr_lm
  c = transfer_mr_lm.get_config()
  c.data.kind, c.data.path, c.init.path = 'tsv', topic_task, tiny_lm_run
  c.train.epochs, c.train.batch_size, c.train.log_every_steps = 1, 32, 5
  c.model.max_tokens = 48
  one = classification.run_once(task.ClassificationTask(c), 'finetune', 0, c,
                                str(tmp_path / 'one'))
  c8 = copy.deepcopy(c)
  c8.num_devices, c8.mesh.fsdp, c8.mesh.tensor = 8, 2, 2          # data = 8 / (2 x 2) = 2
  eight = classification.run_once(task.ClassificationTask(c8), 'finetune', 0, c8,
                                  str(tmp_path / 'eight'))
  flat = jax.tree_util.tree_leaves_with_path(eight['params'])
  sharded = [jax.tree_util.keystr(p) for p, x in flat if not x.sharding.is_fully_replicated]
  assert any('backbone' in p for p in sharded) and not any('head' in p for p in sharded)
  assert all(len(x.sharding.device_set) == 8 for _, x in flat)
  a, b = losses(tmp_path / 'one'), losses(tmp_path / 'eight')
  assert len(a) == len(b) >= 3
  np.testing.assert_allclose(a, b, rtol=2e-4)
  assert eight['dev'] == pytest.approx(one['dev'], abs=0.5)     # accuracy in %: one example at most
  for (p, x), y in zip(flat, jax.tree.leaves(one['params'])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-5, err_msg=str(p))
  c8.train.batch_size = 30                                       # not a multiple of 2 x 2
  with pytest.raises(DataError, match='batch_size=30 does not split'):
    classification.run_once(task.ClassificationTask(c8), 'finetune', 0, c8, str(tmp_path / 'bad'))


def test_multitask_shards_the_shared_backbone_and_computes_the_same(tmp_path, tiny_lm_run):
  from configs import multitask as mt_config
  from translearn_jax.errors import ConfigError
  from translearn_jax.experiments import multitask
  rows = ['sentence\tlabel'] + [f'{"good fine nice" if i % 2 else "bad poor sad"} film {i}\t{i % 2}'
                                for i in range(64)]
  (tmp_path / 'mr.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  c = mt_config.get_config()
  c.init.path = tiny_lm_run
  c.mr.data.kind, c.mr.data.path, c.mr.model.max_tokens = 'tsv', str(tmp_path / 'mr.tsv'), 32
  c.lm.data.kind, c.lm.data.path, c.lm.seq_len = 'text', 'gensim:lee_background.cor', 32
  c.multitask.tasks, c.multitask.mixing, c.train.batch_size = 'mr,lm', 'equal', 8
  one, draws = multitask.train(multitask.MultiTask(c), 0, 6, str(tmp_path / 'one'), log_every=1)
  c8 = copy.deepcopy(c)
  c8.num_devices, c8.mesh.fsdp, c8.mesh.tensor = 8, 2, 2          # data = 8 / (2 x 2) = 2
  eight, draws8 = multitask.train(multitask.MultiTask(c8), 0, 6, str(tmp_path / 'eight'),
                                  log_every=1)
  assert draws8 == draws and min(draws.values()) > 0
  flat = jax.tree_util.tree_leaves_with_path(eight)
  sharded = [jax.tree_util.keystr(p) for p, x in flat if not x.sharding.is_fully_replicated]
  assert any('backbone' in p for p in sharded) and not any('heads' in p for p in sharded)
  assert all(len(x.sharding.device_set) == 8 for _, x in flat)
  np.testing.assert_allclose(losses(tmp_path / 'eight'), losses(tmp_path / 'one'), rtol=2e-4)
  for (p, x), y in zip(flat, jax.tree.leaves(one)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-5, err_msg=str(p))
  c8.train.batch_size = 6                                        # not a multiple of 2 x 2
  with pytest.raises(ConfigError, match='batch_size=6 does not split'):
    multitask.train(multitask.MultiTask(c8), 0, 2, str(tmp_path / 'bad'))


def test_learning_curve_seeds_split_over_devices_compute_the_same(topic_task, vectors,
                                                                  monkeypatch):
  from test_learning_curves import curve_config
  from translearn_jax.experiments import learning_curves as lc
  c = curve_config(topic_task, vectors)
  one = lc.CurveRunner(task.ClassificationTask(c), c)
  acc_1, _, par_1 = one.run('finetune', 40, [0, 1, 2, 3], vmapped=True)
  c4 = copy.deepcopy(c)
  c4.num_devices = 4                                  # data = 4: one seed a device
  four = lc.CurveRunner(task.ClassificationTask(c4), c4)
  trained = []
  loop = lc.train_loop
  monkeypatch.setattr(lc, 'train_loop', lambda **k: trained.append(loop(**k)) or trained[-1])
  acc_4, _, par_4 = four.run('finetune', 40, [0, 1, 2, 3], vmapped=True)
  np.testing.assert_array_equal(acc_4, acc_1)
  for p4, p1 in zip(par_4, par_1):
    for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(p1)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
  # the stacked state kept its runs axis split over the four devices, one seed each
  for x in jax.tree.leaves(trained[-1].state.params):
    assert x.shape[0] == 4 and len(x.sharding.device_set) == 4
    assert {s.data.shape[0] for s in x.addressable_shards} == {1}
  with pytest.raises(ConfigError, match='seeds=3: the vmapped seeds are split'):
    four.run('finetune', 40, [0, 1, 2], vmapped=True)


def test_dann_splits_its_batches_over_devices_and_computes_the_same(tmp_path, monkeypatch):
  from test_fusion import dann_config
  from translearn_jax.experiments import dann
  from translearn_jax.training import loop
  c = dann_config(tmp_path)
  c.train.steps = 12
  one = dann.run_once(dann.DannSetup(c), 0, 0.5, str(tmp_path / 'one'))
  c4 = copy.deepcopy(c)
  c4.num_devices = 4                                  # data = 4: two rows of 8 a device
  trained = []
  real = loop.Run.train
  monkeypatch.setattr(loop.Run, 'train',
                      lambda self, **k: trained.append(real(self, **k)) or trained[-1])
  four = dann.run_once(dann.DannSetup(c4), 0, 0.5, str(tmp_path / 'four'))
  assert (four['test'], four['dev']) == (one['test'], one['dev'])
  for k in ('final_task_loss', 'final_domain_loss'):
    assert four[k] == pytest.approx(one[k], rel=1e-4)
  assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(trained[-1].state.params))
  c4.train.batch_size = 6                                        # not a multiple of 4
  with pytest.raises(ConfigError, match='batch_size=6 does not split'):
    dann.run_once(dann.DannSetup(c4), 0, 0.5, str(tmp_path / 'bad'))


def test_search_trials_run_on_the_configs_mesh(tmp_path, topic_task, tiny_lm_run, monkeypatch):
  from configs import search_mr_skipgram, transfer_mr_lm
  from translearn_jax.experiments import search
  from translearn_jax.training import loop
  c = search_mr_skipgram.get_config()
  base = transfer_mr_lm.get_config()
  c.data, c.model, c.init, c.train = base.data, base.model, base.init, base.train
  c.optim = base.optim
  c.data.kind, c.data.path, c.init.path = 'tsv', topic_task, tiny_lm_run
  c.train.epochs, c.train.batch_size, c.model.max_tokens = 1, 32, 48
  c.train.log_every_steps = 5
  c.num_devices, c.mesh.fsdp, c.mesh.tensor = 8, 2, 2             # data 2 x fsdp 2 x tensor 2
  # (that fine-tuning on a mesh computes what one device does is the first test's check;
  # here: a trial's config keeps the mesh, and the trial's state is placed by it. The
  # first test's mesh, optimiser and learning rate: its compiled step serves the trial)
  trained = []
  real = loop.Run.train
  monkeypatch.setattr(loop.Run, 'train',
                      lambda self, **k: trained.append(real(self, **k)) or trained[-1])
  out = search.run_trial(task.ClassificationTask(c), c, {'strategy': 'finetune',
                                                          'learning_rate': 1e-3}, 0,
                         str(tmp_path / 'trial'))
  assert 0 <= out['dev'] <= 100 and trained
  flat = jax.tree_util.tree_leaves_with_path(trained[-1].state.params)
  assert any('backbone' in jax.tree_util.keystr(p) and not x.sharding.is_fully_replicated
             for p, x in flat)
  assert all(len(x.sharding.device_set) == 8 for _, x in flat)
