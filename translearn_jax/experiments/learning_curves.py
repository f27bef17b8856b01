"""Learning curves of transfer: test accuracy against the number of labelled examples.

(Over 300 lines: the vmapped curve runner, the transfer metrics over its cells and
the CSV/PNG outputs form one experiment.)

For every strategy (always including `scratch`) and label budget, `seeds`
models are trained on seeded, stratified subsets of the training split of a
classification config (`downstream.classification.ClassificationTask`), all
seeds in one compiled program: parameters, optimiser states, dropout keys and
batches are stacked on a leading seed axis and the step is fine-tuning's
under `jax.vmap` (`finetune.make_step(stacked=True)`). It runs on the shared
loop (`training.loop.train_loop`) without checkpoints and without waiting for
each step: the losses are checked once at the end, and a non-finite one
names its strategy, budget and seeds (exit 3). On a mesh (`num_devices`, `mesh.*`) the
vmapped seeds are split over its batch axes: each device trains its share of the seeds
(`seeds` a multiple of data x fsdp). Every run takes
`max(curve.min_steps, ceil(curve.epochs · budget / batch))` steps, then is
scored on the test split (no early stopping on the large dev split, which a
low-budget user would not have).

Transfer metrics per (strategy, budget):
* gain: transferred − scratch accuracy, paired by seed, mean ± 95% CI;
* negative transfer: the whole CI of the gain lies below zero;
* data efficiency: the labels scratch needs to reach the strategy's mean
  accuracy, read off the scratch curve (linear in log-budget between measured
  budgets; `None` when scratch never reaches it within the budgets measured).

Outputs in the workdir: `curves.json`, `curves.csv`, `curves.png` (with
matplotlib, the `[plots]` extra; see `evaluation.plots.pyplot`). With
`curve.time_sequential`, one (strategy, budget) cell is also run seed by seed
to report the wall-clock speed-up of vmapping.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translearn_jax.downstream.classification import ClassificationTask, require_accuracy
from translearn_jax.downstream.task import trimmed_width
from translearn_jax.experiments import classification, finetune
from translearn_jax.errors import ConfigError, NonFiniteLossError
from translearn_jax.evaluation import plots
from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training.loop import train_loop
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.state import TrainState
from translearn_jax.transfer import strategies


def stratified_subset(labels: np.ndarray, budget: int, seed: int) -> np.ndarray:
  """`budget` indices with class proportions as in `labels` (at least one per class)."""
  if budget >= len(labels):
    return np.arange(len(labels))
  rng = np.random.default_rng([seed, budget, 5])
  classes = np.unique(labels)
  if budget < len(classes):
    raise ConfigError(f'label budget {budget} is smaller than the {len(classes)} classes')
  counts = np.array([(labels == c).sum() for c in classes])
  share = np.maximum(1, np.floor(budget * counts / counts.sum()).astype(int))
  while share.sum() < budget:  # hand out the remainder to the largest classes
    share[np.argmax(counts / share)] += 1
  while share.sum() > budget:
    share[np.argmax(share)] -= 1
  picks = [rng.choice(np.flatnonzero(labels == c), k, replace=False)
           for c, k in zip(classes, share)]
  return np.sort(np.concatenate(picks))


def batch_plan(n: int, batch: int, steps: int, seed: int, budget: int) -> np.ndarray:
  """(steps, batch) positions into a subset of size n: reshuffled every pass."""
  rng = np.random.default_rng([seed, budget, 9])
  out, pool = [], np.zeros(0, np.int64)
  while len(out) < steps:
    if len(pool) < batch:
      pool = np.concatenate([pool, rng.permutation(n)])
    out.append(pool[:batch])
    pool = pool[batch:]
  return np.stack(out)


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


class CurveRunner:
  """Trains the seeds of one (strategy, budget) cell, vmapped or one after another."""

  def __init__(self, setup: ClassificationTask, config):
    self.setup, self.config = setup, config
    toks, mask, labels = setup.inputs['train']
    self.toks, self.mask, self.labels = toks, mask, labels
    model = setup.model
    self._logits = jax.jit(jax.vmap(lambda p, t, m: model.apply({'params': p}, t, m),
                                    in_axes=(0, None, None)))

  def steps_for(self, budget: int, batch: int) -> int:
    c = self.config.curve
    return max(c.min_steps, math.ceil(c.epochs * budget / batch))

  def run(self, strategy: str, budget: int, seeds: Sequence[int], vmapped: bool = True
          ) -> tuple[np.ndarray, float, list]:
    """(test accuracy per seed, seconds, final params per seed)."""
    t0 = time.perf_counter()
    setup = self.setup
    bs = min(self.config.train.batch_size, budget)
    steps = self.steps_for(budget, bs)
    subsets = [stratified_subset(self.labels, budget, s) for s in seeds]
    plans = [sub[batch_plan(len(sub), bs, steps, s, budget)] for s, sub in zip(seeds, subsets)]
    inits, reports = zip(*[setup.init_params(s, strategy) for s in seeds])
    tx, plan = strategies.build(finetune.strategy_config(self.config, strategy,
                                                         max(1, budget // bs)),
                                inits[0], setup.groups, steps)
    if reports[0] is not None:
      reports[0].frozen = strategies.frozen_paths(inits[0], setup.groups, plan)
      reports[0].refuse_frozen_random(inits[0], strategy)
    frozen = strategies.frozen_mask(inits[0], setup.groups, plan)
    mesh = mesh_lib.mesh_from_config(self.config) if vmapped else None
    if mesh is not None and mesh.devices.size > 1:
      if len(seeds) % mesh_lib.batch_ways(mesh):
        raise ConfigError(f'config.seeds={len(seeds)}: the vmapped seeds are split over the '
                          f"mesh's {mesh_lib.batch_ways(mesh)} batch shards (data x fsdp) and "
                          f'must be a multiple of them')
    else:
      mesh = None

    # one width per step for all seeds (the vmapped batch is one array); the
    # sequential peer uses the same widths, so both compute the same thing
    widths = [trimmed_width(self.mask[np.concatenate([p[i] for p in plans])])
              for i in range(steps)]

    def inputs(i, which):
      idx = np.stack([plans[k][i] for k in which])            # (len(which), bs)
      idx = idx if vmapped else idx[0]
      w = widths[i]
      return {'tokens': self.toks[idx, :w], 'mask': self.mask[idx, :w],
              'labels': self.labels[idx]}

    def train(which):  # the seeds at positions `which`, stacked on a leading axis when vmapped
      keys = [jax.random.key(seeds[k] + setup.dropout_seed_offset) for k in which]
      if vmapped:
        params, rng = stack([inits[k] for k in which]), stack(keys)
        opt_state = jax.vmap(tx.init)(params)
      else:
        params, rng = jax.tree.map(jnp.copy, inits[which[0]]), keys[0]  # own buffers: donated
        opt_state = tx.init(params)
      state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                         rng=rng)
      shardings = runs_shardings(state, mesh) if mesh is not None else None
      if shardings is not None:
        state = jax.device_put(state, shardings)
      step = finetune.make_step(setup, tx, frozen, stacked=vmapped, shardings=shardings,
                                mesh=mesh)
      try:
        return train_loop(
            state=state, stream=(({}, inputs(i, which)) for i in range(steps)), step_fn=step,
            to_device=(lambda b: b) if shardings is None else functools.partial(
                mesh_lib.shard_global_batch, mesh=mesh),
            checkpointer=None, writer=None, total_steps=steps,
            steps_per_call=1, checkpoint_every=steps, log_every=steps,
            units_per_step=bs * len(which), units_name='examples', progress=False,
            sync_every_step=False).state.params
      except NonFiniteLossError as e:
        bad = [seeds[which[r]] for r in e.runs] if vmapped else [seeds[which[0]]]
        raise NonFiniteLossError(f'learning curve {strategy}, {budget} labels: the loss became '
                                 f'non-finite for seed(s) {bad} ({e})', runs=e.runs) from None

    if vmapped:
      params = train(list(range(len(seeds))))
      finals = [unstack(params, k) for k in range(len(seeds))]
    else:
      finals = [train([k]) for k in range(len(seeds))]
    accs = self.accuracy(stack(finals), 'test')
    return accs, time.perf_counter() - t0, finals

  def accuracy(self, stacked_params, split: str, batch: int = 512) -> np.ndarray:
    toks, mask, labels = self.setup.inputs[split]
    correct = 0
    for lo in range(0, len(labels), batch):
      logits = self._logits(stacked_params, toks[lo:lo + batch], mask[lo:lo + batch])
      correct = correct + (np.asarray(jnp.argmax(logits, -1)) == labels[lo:lo + batch]).sum(1)
    return correct / len(labels)


def runs_shardings(state: TrainState, mesh) -> TrainState:
  """Shardings of a state stacked over runs (seeds): every leaf's leading runs axis split
  over the mesh's batch axes (each device trains its own seeds; no communication but the
  shared step count), the step count replicated."""
  runs = mesh_lib.batch_sharding(mesh)
  return TrainState(step=mesh_lib.replicated(mesh),
                    params=jax.tree.map(lambda _: runs, state.params),
                    opt_state=jax.tree.map(
                        lambda x: runs if np.ndim(x) else mesh_lib.replicated(mesh),
                        state.opt_state),
                    rng=runs)


def scratch_labels_to_match(acc: float, budgets: Sequence[int], scratch_means: Sequence[float]
                            ) -> Optional[float]:
  """Smallest budget at which the scratch curve reaches `acc` (log-linear interpolation)."""
  if scratch_means[0] >= acc:
    return float(budgets[0])
  for (b0, a0), (b1, a1) in zip(zip(budgets, scratch_means), zip(budgets[1:], scratch_means[1:])):
    if a1 >= acc > a0:
      frac = (acc - a0) / (a1 - a0)
      return float(math.exp(math.log(b0) + frac * (math.log(b1) - math.log(b0))))
  return None


def transfer_metrics(results: dict, budgets: Sequence[int]) -> list[dict]:
  """Rows per (strategy, budget) with mean ± CI, paired gain, flags and data efficiency."""
  scratch_means = [float(np.mean(results[('scratch', b)])) for b in budgets]
  rows = []
  for (strategy, budget), accs in results.items():
    m, h = mean_ci(list(map(float, accs)))
    row = {'strategy': strategy, 'budget': budget, 'seeds': len(accs), 'mean': m, 'ci95': h,
           'accuracies': list(map(float, accs))}
    if strategy != 'scratch':
      gains = np.asarray(accs) - np.asarray(results[('scratch', budget)])
      gm, gh = mean_ci(list(map(float, gains)))
      need = scratch_labels_to_match(m, budgets, scratch_means)
      # scratch's curve starts at budgets[0]: at or above it there, it may need fewer (a
      # bound, not a point); never reaching it: more than the largest budget
      bound = ('above_max' if need is None else
               'at_most' if scratch_means[0] >= m else 'interpolated')
      row.update(gain_mean=gm, gain_ci95=gh,
                 negative_transfer=gh is not None and bool(gm + gh < 0),
                 scratch_labels_to_match=need, scratch_labels_bound=bound,
                 data_efficiency=(need / budget) if need is not None else None)
    rows.append(row)
  return rows


def save_outputs(rows: list[dict], workdir: str, title: str) -> None:
  keys = ['strategy', 'budget', 'seeds', 'mean', 'ci95', 'gain_mean', 'gain_ci95',
          'negative_transfer', 'scratch_labels_to_match', 'scratch_labels_bound',
          'data_efficiency']
  tmp = os.path.join(workdir, 'curves.csv.tmp')
  with open(tmp, 'w', newline='') as f:
    w = csv.DictWriter(f, keys, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, os.path.join(workdir, 'curves.csv'))
  plt = plots.pyplot()
  if plt is None:  # matplotlib (the [plots] extra) is missing: curves.csv only
    return
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for strategy in dict.fromkeys(r['strategy'] for r in rows):
    rs = sorted((r for r in rows if r['strategy'] == strategy), key=lambda r: r['budget'])
    x = [r['budget'] for r in rs]
    m = np.array([100 * r['mean'] for r in rs])
    h = np.array([100 * (r['ci95'] or 0.0) for r in rs])     # one seed: no band
    ax.plot(x, m, marker='o', label=strategy)
    ax.fill_between(x, np.clip(m - h, 0, 100), np.clip(m + h, 0, 100), alpha=0.2)
  plots.budget_curve_axes(ax, {r['budget'] for r in rows}, 'labelled training examples',
                          'test accuracy % (mean ± 95% CI)', title)
  plots.save_png(plt, fig, os.path.join(workdir, 'curves.png'))


def parse_budgets(spec: str, n_train: int) -> list[int]:
  out = []
  for part in spec.split(','):
    part = part.strip()
    if not part:
      continue
    try:
      b = n_train if part == 'all' else int(part)
    except ValueError:
      raise ConfigError(f"curve.budgets: {part!r} is neither an integer nor 'all'") from None
    if b <= 0:
      raise ConfigError(f'curve.budgets: budgets must be positive, got {b}')
    out.append(min(b, n_train))
  if not out:
    raise ConfigError('curve.budgets is empty')
  return sorted(set(out))


def format_rows(rows: list[dict]) -> str:
  out = [f'{"strategy":<20} {"labels":>6} {"acc % (95% CI)":>16} {"gain (paired)":>16} '
         f'{"scratch needs":>13}']
  for r in rows:
    gain = (fmt(r['gain_mean'], r['gain_ci95'], sign=True) +
            (' NEG' if r['negative_transfer'] else '')) if 'gain_mean' in r else ''
    need = r.get('scratch_labels_to_match', '')
    at_most = '≤ ' if r.get('scratch_labels_bound') == 'at_most' else ''
    need = ('' if r['strategy'] == 'scratch' else
            '> max' if need is None else f'{at_most}{need:,.0f}')
    out.append(f'{r["strategy"]:<20} {r["budget"]:>6} {fmt(r["mean"], r["ci95"]):>16} '
               f'{gain:>16} {need:>13}')
  return '\n'.join(out)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  require_accuracy(config, 'learning-curve')
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  setup = ClassificationTask(config)
  runner = CurveRunner(setup, config)
  budgets = parse_budgets(config.curve.budgets, len(runner.labels))
  names = ['scratch'] + [s.strip() for s in config.curve.strategies.split(',')
                         if s.strip() and s.strip() != 'scratch']
  for s in names:
    if s in classification.PROBES:
      raise ConfigError(f'curve.strategies: {s} is a probe, not a trained strategy')
  seeds = list(range(config.seeds))
  results, seconds = {}, {}
  for strategy in names:
    for budget in budgets:
      accs, secs, _ = runner.run(strategy, budget, seeds)
      results[(strategy, budget)], seconds[(strategy, budget)] = accs, secs
      info('%-20s %6d labels: %s %% (95%% CI) over %d seeds (%.1f s)', strategy, budget,
           fmt(*mean_ci(list(map(float, accs)))), len(seeds), secs)
  rows = transfer_metrics(results, budgets)
  summary = {'rows': rows, 'budgets': budgets, 'seeds': len(seeds),
             'seconds': time.perf_counter() - t0}
  if config.curve.time_sequential:
    strategy = names[-1]
    budget = budgets[len(budgets) // 2]
    seq_accs, seq_secs, _ = runner.run(strategy, budget, seeds, vmapped=False)
    vm_accs, vm_secs, _ = runner.run(strategy, budget, seeds, vmapped=True)  # compiled again
    summary['vmap_timing'] = {
        'strategy': strategy, 'budget': budget, 'seeds': len(seeds),
        'sequential_seconds': seq_secs, 'vmapped_seconds': vm_secs,
        'speedup': seq_secs / vm_secs,
        'max_accuracy_difference': float(np.abs(seq_accs - vm_accs).max())}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'curves.json'), summary)
    data = os.path.basename(os.path.normpath(str(config.data.get('path', '') or 'data')))
    save_outputs(rows, workdir, config.curve.title or
                 f'{data}: scratch vs {config.init.kind} transfer')
    print(format_rows(rows))
    if 'vmap_timing' in summary:
      t = summary['vmap_timing']
      print(f'vmap over {t["seeds"]} seeds ({t["strategy"]}, {t["budget"]} labels): '
            f'{t["vmapped_seconds"]:.1f} s vs {t["sequential_seconds"]:.1f} s one by one '
            f'({t["speedup"]:.2f}x)')
  return summary
