"""Strategy search: choose the transfer strategy and its knobs by measurement.

Given a classification config with a pretrained source, candidates are built
from the strategies and their main knobs:

* learning-rate multiplier (`search.lr_multipliers`) for every strategy;
* frozen depth (`transfer.freeze_bottom`, `search.freeze_bottom`) for
  fine-tuning and discriminative LRs;
* the per-depth factor (`search.factors`) for discriminative LRs;
* the unfreezing interval (`search.unfreeze_every`) for gradual unfreezing;
* linear probes (logistic, SVM) as single candidates.

Each strategy's default candidate comes first, the rest follow in a seeded
random order. Trials run one after another, each trained on the training split
and scored on the validation (dev) split only, until the budget is spent:
at most `search.trials` trials and, when `search.seconds > 0`, no trial is
started once the time spent plus the mean trial time so far would exceed it
(the first trial always runs). The best candidate by the dev metric (accuracy, or
macro-F1 with `eval.metric`) is then retrained with `search.final_seeds` seeds and reported
on the test split, next to scratch trained on the same seeds with the config's own
(untuned) settings. The final seeds are `config.seed + 1, ...`: none of them is the trials'
seed, so the run picked for its best dev score is not one of the estimates (a winner's
curse). Scratch is not tuned: the gain is that of tuning the transfer on dev, against the
config's own scratch.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from translearn_jax.downstream.classification import ClassificationTask
from translearn_jax.experiments import classification, runs
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import strategies


def _floats(spec: str, what: str) -> list[float]:
  try:
    return [float(x) for x in str(spec).split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'{what}: expected comma-separated numbers, got {spec!r}') from None


def candidates(config, n_groups: int) -> list[dict[str, Any]]:
  """Every candidate as overrides of `config.transfer` (+ 'strategy'); defaults first."""
  s = config.search
  names = [x.strip() for x in s.strategies.split(',') if x.strip()]
  for n in names:
    if n not in strategies.STRATEGIES + tuple(classification.PROBES) or n == 'lora':
      raise ConfigError(f'search.strategies: unknown or unsupported strategy {n!r}')
  lrs = _floats(s.lr_multipliers, 'search.lr_multipliers')
  freeze = [int(x) for x in _floats(s.freeze_bottom, 'search.freeze_bottom')
            if 0 <= int(x) < n_groups]
  factors = _floats(s.factors, 'search.factors')
  unfreeze = [int(x) for x in _floats(s.unfreeze_every, 'search.unfreeze_every')]
  base_lr = config.optim.learning_rate
  grids = {}
  for n in names:
    if n in classification.PROBES:
      grids[n] = [{}]
      continue
    knobs = {'lr_mult': lrs or [1.0]}
    if n in ('finetune', 'discriminative'):
      knobs['freeze_bottom'] = freeze or [0]
    if n == 'discriminative':
      knobs['factor'] = factors or [config.transfer.factor]
    if n == 'gradual_unfreezing':
      knobs['unfreeze_every'] = unfreeze or [config.transfer.unfreeze_every]
    keys = list(knobs)
    grids[n] = [dict(zip(keys, vals)) for vals in itertools.product(*knobs.values())]
  out_first, rest = [], []
  for n, grid in grids.items():
    for i, knobs in enumerate(grid):
      cand = {'strategy': n, **knobs}
      (out_first if i == 0 else rest).append(cand)
  rng = np.random.default_rng([config.seed, 17])
  rest = [rest[i] for i in rng.permutation(len(rest))]
  for c in out_first + rest:
    if 'lr_mult' in c:
      c['learning_rate'] = base_lr * c['lr_mult']
  return out_first + rest


def trial_config(config, cand: dict) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  if 'learning_rate' in cand:
    c.optim.learning_rate = cand['learning_rate']
  for k in ('freeze_bottom', 'factor', 'unfreeze_every'):
    if k in cand:
      c.transfer[k] = cand[k]
  return c


def run_trial(setup, config, cand: dict, seed: int, run_dir: str) -> dict:
  """One trial on the shared loop in `run_dir` (its checkpoints are removed once it ends)."""
  r = classification.run_once(setup, cand['strategy'], seed, trial_config(config, cand), run_dir)
  runs.discard_checkpoints(run_dir)
  return r


def search(setup, config, workdir: str) -> tuple[list[dict], float]:
  """(trials with their dev score (the task's metric: accuracy or macro-F1), seconds);
  respects `search.trials` and `search.seconds`."""
  s = config.search
  cands = candidates(config, len(setup.groups))
  trials, t0 = [], time.perf_counter()
  for cand in cands[:max(s.trials, 0) or len(cands)]:
    spent = time.perf_counter() - t0
    if s.seconds > 0 and trials:
      mean = spent / len(trials)
      if spent + mean > s.seconds:
        info('search: time budget %.0f s reached after %d trials', s.seconds, len(trials))
        break
    ts = time.perf_counter()
    r = run_trial(setup, config, cand, config.seed,
                  os.path.join(workdir, 'trials', f'{len(trials)}-seed{config.seed}'))
    trials.append({'candidate': cand, 'dev': r['dev'], 'seconds': time.perf_counter() - ts})
    info('trial %2d %-60s dev %.4f (%.0f s)', len(trials), describe(cand), r['dev'],
         trials[-1]['seconds'])
  return trials, time.perf_counter() - t0


def describe(cand: dict) -> str:
  knobs = ', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}'
                    for k, v in cand.items() if k not in ('strategy', 'learning_rate'))
  return f'{cand["strategy"]}({knobs})'


def final_seeds(config) -> list[int]:
  """The seeds the chosen candidate and scratch are retrained with: after the trials' seed
  (`config.seed`), so the selected trial's own run is not among the test estimates."""
  return [config.seed + 1 + i for i in range(config.search.final_seeds)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  setup = ClassificationTask(config)
  if setup.source.params is None:
    raise ConfigError('strategy search needs a pretrained source (init.kind)')
  trials, seconds = search(setup, config, workdir)
  ranking = sorted(trials, key=lambda t: -t['dev'])
  best = ranking[0]['candidate']
  seeds = final_seeds(config)
  final = {'candidate': best, 'seeds': seeds, 'selection_seed': config.seed, 'test': [],
           'scratch_test': []}
  for seed in seeds:
    final['test'].append(run_trial(setup, config, best, seed,
                                   os.path.join(workdir, 'final', f'best-seed{seed}'))['test'])
    # scratch with the config's own settings (the search tuned the transfer, not scratch)
    final['scratch_test'].append(run_trial(
        setup, config, {'strategy': 'scratch'}, seed,
        os.path.join(workdir, 'final', f'scratch-seed{seed}'))['test'])
  final['test_mean'], final['test_ci95'] = mean_ci(final['test'])
  final['scratch_mean'], final['scratch_ci95'] = mean_ci(final['scratch_test'])
  gains = np.subtract(final['test'], final['scratch_test']).tolist()
  final['gain_mean'], final['gain_ci95'] = mean_ci(gains)
  summary = {'trials': trials, 'ranking': [describe(t['candidate']) for t in ranking],
             'search_seconds': seconds, 'budget': {'trials': config.search.trials,
                                                   'seconds': config.search.seconds},
             'final': final, 'metric': setup.metric}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'search.json'), summary)
    label = f'dev {classification.METRIC_LABEL[setup.metric]} %'
    print(f'rank  {label}  candidate')
    for i, t in enumerate(ranking):
      print(f'{i + 1:>4}  {100 * t["dev"]:>{len(label)}.2f}  {describe(t["candidate"])}')
    print(f'best {describe(best)} (trials: seed {config.seed}), retrained on seeds '
          f'{", ".join(map(str, seeds))}: test '
          f'{fmt(final["test_mean"], final["test_ci95"])} vs scratch '
          f'{fmt(final["scratch_mean"], final["scratch_ci95"])} (paired gain '
          f'{fmt(final["gain_mean"], final["gain_ci95"], sign=True)})')
  return summary
