"""Learning curves: vmapped seeds == seeds one by one, budgets, metrics, output files."""

import csv
import json

import numpy as np
import pytest

from test_classification import base_config
from translearn_jax.downstream import classification as task
from translearn_jax.errors import ConfigError
from translearn_jax.experiments import learning_curves as lc


def curve_config(task, vecs):
  c = base_config(task, vecs[0])
  c.family = 'curves'
  c.seeds = 3
  c.curve = dict(budgets='40,120,all', strategies='finetune,feature_extraction', epochs=3,
                 min_steps=12, time_sequential=True, title='test')
  return c


def test_vmapped_seeds_equal_seeds_one_by_one(topic_task, vectors):
  c = curve_config(topic_task, vectors)
  runner = lc.CurveRunner(task.ClassificationTask(c), c)
  for strategy in ('scratch', 'feature_extraction'):
    acc_v, _, par_v = runner.run(strategy, 120, [0, 1, 2], vmapped=True)
    acc_s, _, par_s = runner.run(strategy, 120, [0, 1, 2], vmapped=False)
    np.testing.assert_array_equal(acc_v, acc_s)
    for pv, ps in zip(par_v, par_s):
      for a, b in zip(jax_leaves(pv), jax_leaves(ps)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # the seeds really differ (different subsets, inits and batch orders)
    assert not np.allclose(jax_leaves(par_v[0])[-1], jax_leaves(par_v[1])[-1])


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_stratified_subsets_and_batch_plans():
  labels = np.array([0] * 90 + [1] * 10)
  sub = lc.stratified_subset(labels, 20, seed=0)
  assert len(sub) == 20 and len(set(sub)) == 20 and (labels[sub] == 1).sum() == 2
  assert (labels[lc.stratified_subset(labels, 5, 0)] == 1).sum() == 1  # at least one per class
  assert not np.array_equal(sub, lc.stratified_subset(labels, 20, seed=1))
  np.testing.assert_array_equal(lc.stratified_subset(labels, 500, 0), np.arange(100))
  plan = lc.batch_plan(10, 4, 5, 0, 10)
  assert plan.shape == (5, 4)
  np.testing.assert_array_equal(np.sort(np.concatenate([plan[0], plan[1], plan[2][:2]])),
                                np.arange(10))  # first pass covers every example once
  with pytest.raises(ConfigError, match='budget 1 is smaller'):
    lc.stratified_subset(labels, 1, 0)
  assert lc.parse_budgets('50, all,10', 80) == [10, 50, 80]
  with pytest.raises(ConfigError, match='curve.budgets'):
    lc.parse_budgets('50,most', 80)


def test_transfer_metrics_on_known_curves():
  budgets = [10, 100, 1000]
  res = {('scratch', 10): [0.5, 0.6], ('scratch', 100): [0.7, 0.7], ('scratch', 1000): [0.9, 0.9],
         ('ft', 10): [0.7, 0.7], ('ft', 100): [0.55, 0.56], ('ft', 1000): [0.95, 0.95]}
  rows = {(r['strategy'], r['budget']): r for r in lc.transfer_metrics(res, budgets)}
  assert rows[('ft', 10)]['scratch_labels_to_match'] == pytest.approx(100.0)
  assert rows[('ft', 10)]['data_efficiency'] == pytest.approx(10.0)
  assert rows[('ft', 10)]['gain_mean'] == pytest.approx(0.15)
  assert not rows[('ft', 10)]['negative_transfer']
  assert rows[('ft', 100)]['negative_transfer']  # gains -0.15, -0.14: CI below zero
  assert rows[('ft', 1000)]['scratch_labels_to_match'] is None  # scratch never gets there
  assert [rows[('ft', b)]['scratch_labels_bound'] for b in budgets] == [
      'interpolated', 'interpolated', 'above_max']
  # a strategy at or below scratch's first point (0.55 at 10 labels): scratch needs at most
  # 10, a bound and not a point estimate of 10
  res[('ft', 100)] = [0.5, 0.52]
  rows = {(r['strategy'], r['budget']): r for r in lc.transfer_metrics(res, budgets)}
  assert rows[('ft', 100)]['scratch_labels_bound'] == 'at_most'
  assert rows[('ft', 100)]['scratch_labels_to_match'] == 10.0
  table = lc.format_rows(list(rows.values())).splitlines()
  assert [line.split()[-1] for line in table if line.startswith('ft ')] == ['100', '10', 'max']
  assert [line for line in table if line.startswith('ft ')][1].endswith('≤ 10')
  # halfway between 0.7 and 0.9 on the log axis: sqrt(100 * 1000)
  assert lc.scratch_labels_to_match(0.8, budgets, [0.55, 0.7, 0.9]) == pytest.approx(316.2, 0.01)


def test_train_py_writes_curves_files(tmp_path, topic_task, vectors):
  import train
  c = curve_config(topic_task, vectors)
  out = train.run(c, str(tmp_path))
  saved = json.loads((tmp_path / 'curves.json').read_text())
  assert len(saved['rows']) == 3 * len(saved['budgets']) and saved['seeds'] == 3
  with open(tmp_path / 'curves.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['strategy'] for r in rows} == {'scratch', 'finetune', 'feature_extraction'}
  # each row: 3 seeds' test accuracies (over 120 examples), their mean, as in the CSV
  csv_mean = {(r['strategy'], int(r['budget'])): float(r['mean']) for r in rows}
  for r in saved['rows']:
    accs = np.asarray(r['accuracies'])
    assert len(accs) == 3 and np.allclose(accs * 120, np.round(accs * 120), atol=1e-9)
    assert r['mean'] == pytest.approx(accs.mean())
    assert csv_mean[(r['strategy'], r['budget'])] == pytest.approx(r['mean'])
  png = (tmp_path / 'curves.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
  t = out['vmap_timing']
  assert t['max_accuracy_difference'] == 0.0
  assert (t['strategy'], t['budget'], t['seeds']) == ('feature_extraction', 120, 3)
  assert t['speedup'] == pytest.approx(t['sequential_seconds'] / t['vmapped_seconds'])


def test_strategy_search_respects_its_budget_and_ranks_on_dev(tmp_path, topic_task, vectors,
                                                              monkeypatch):
  import train
  from configs import search_mr_skipgram
  from translearn_jax.experiments import search
  c = search_mr_skipgram.get_config()
  base = base_config(topic_task, vectors[0])
  c.data, c.model, c.init, c.train = base.data, base.model, base.init, base.train
  c.train.epochs = 1
  c.transfer.unfreeze_every = base.transfer.unfreeze_every
  c.search.trials, c.search.final_seeds = 3, 2
  cands = search.candidates(c, 2)
  # every strategy's default first, then the knob variations
  assert [x['strategy'] for x in cands[:6]] == c.search.strategies.split(',')
  assert len(cands) == 3 * 2 + 3 * 2 * 2 + 3 * 2 + 3 + 2
  seen = []
  real = search.run_trial
  monkeypatch.setattr(search, 'run_trial',
                      lambda *a: seen.append((a[2]['strategy'], a[3])) or real(*a))
  out = train.run(c, str(tmp_path))
  assert len(out['trials']) == 3  # trial budget
  devs = [t['dev'] for t in out['trials']]
  assert out['ranking'][0] == search.describe(out['trials'][int(np.argmax(devs))]['candidate'])
  assert len(out['final']['test']) == 2 and len(seen) == 3 + 2 * 2
  # the trials run on config.seed, the final estimates on other seeds (the selected trial's
  # run, the best of several by dev, is not one of them)
  assert {s for _, s in seen[:3]} == {c.seed} and out['final']['seeds'] == [c.seed + 1, c.seed + 2]
  assert {s for _, s in seen[3:]} == {c.seed + 1, c.seed + 2}
  assert (tmp_path / 'search.json').exists()
  # time budget: with ~0 seconds only the first trial runs
  c.search.trials, c.search.seconds = 0, 1e-3
  trials, _ = search.search(task.ClassificationTask(c), c, str(tmp_path))
  assert len(trials) == 1
