"""The seeds × strategies runs of a transfer comparison, resumable.

`run_list` orders the runs seed-major (scratch and every strategy for seed 0,
then seed 1, ...), so a comparison stopped early still holds complete,
paired seeds. `run_all` appends each finished run to `workdir/runs.jsonl`
and, when restarted in the same workdir, skips the runs recorded there — a
long comparison killed by a time limit loses at most the run in progress.
Records carry a fingerprint of the config (without the run list fields); a
workdir holding runs of a different config is an error, never a silent mix.
Records also carry `VERSION`; a frozen-group run recorded before version 2
(which changed how frozen parameters train) is run again.

Saved models (`config.save_models`): a finished run's best model
(`run_dir/best_model`, see `experiments.finetune`) is kept before the run is
recorded — a single run's as `workdir/model/`; in a comparison, with 'best'
(the default), `workdir/models/<strategy>/` holds the strategy's best seed by
dev score (the earlier seed on ties), with 'all' every run is kept as
`workdir/models/<strategy>-seed<k>/`; 'none' saves nothing. Runs recorded
before `save_models` was set or changed are not saved again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Callable

import jax

from translearn_jax.errors import ConfigError, DataError
from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.experiments import finetune
from translearn_jax.serving import saved_model
from translearn_jax.training import metrics as metrics_lib
from translearn_jax.training import workdir as workdir_lib
from translearn_jax.training.metrics import info

LIST_FIELDS = ('seeds', 'compare_scratch', 'seed', 'with_scratch', 'save_models')
SAVE_MODELS = ('best', 'all', 'none')
# Version 2: frozen parameters get no gradient and no share in gradient clipping
# (`strategies.value_and_grad`). Runs recorded before it by a strategy with frozen
# groups trained differently and are run again rather than mixed in.
VERSION = 2


def recorded_before_frozen_change(rec: dict, config) -> bool:
  frozen = rec['strategy'] in ('feature_extraction', 'lora') or (
      'transfer' in config and config.transfer.get('freeze_bottom', 0) > 0)
  return frozen and rec.get('version', 1) < 2


def run_list(config) -> list[tuple[str, int]]:
  if not config.compare_scratch:
    return [(config.transfer.strategy, config.seed)]
  names = [s.strip() for s in config.transfer.strategies.split(',')
           if s.strip() and s.strip() != 'scratch']
  if config.get('with_scratch', True):
    names = ['scratch'] + names
  elif not names:
    raise ConfigError('config.with_scratch=False and no strategy in config.transfer.strategies: '
                      'nothing to run')
  return [(n, s) for s in range(config.seeds) for n in names]


def fingerprint(config, added: int | None = None) -> str:
  """A hash of what every run of a comparison shares. A field added to the configs after
  runs were recorded counts only when it differs from the value those runs computed
  with (`workdir.ADDED_FIELDS`), so recorded runs stay valid. `added`: how many of
  `ADDED_FIELDS`' entries (the first ones, in the order they were added) to apply; all
  by default, which is what new records carry."""
  d = json.loads(config.to_json_best_effort())
  for k in LIST_FIELDS:
    d.pop(k, None)
  d.get('transfer', {}).pop('strategies', None)
  d.get('transfer', {}).pop('strategy', None)
  entries = list(workdir_lib.ADDED_FIELDS.items())
  for path, default in entries[:len(entries) if added is None else added]:
    *parents, leaf = path.split('.')
    node = d
    for p in parents:
      node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node and node[leaf] == default:
      del node[leaf]
      if parents and not node:   # a group added whole (e.g. `mesh`) at its defaults
        parent = d
        for p in parents[:-1]:
          parent = parent[p]
        del parent[parents[-1]]
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def fingerprints(config) -> set[str]:
  """Every fingerprint a run of this config may have been recorded under: one per length of
  `ADDED_FIELDS` in its history. A field one family gains may already exist in another
  family (`data.encoding` of the classification configs was there before the tagging
  configs gained it); records made before the entry was added hashed it, and stay valid."""
  return {fingerprint(config, k) for k in range(len(workdir_lib.ADDED_FIELDS) + 1)}


def load_done(path: str, fps: str | set[str]) -> dict[tuple[str, int], dict]:
  """The runs recorded in `path`, by (strategy, seed). `fps`: the fingerprint(s) a record
  of this config may carry (`fingerprints`); any other is an error."""
  fps = {fps} if isinstance(fps, str) else set(fps)
  done = {}
  if not os.path.exists(path):
    return done
  with open(path) as f:
    for n, line in enumerate(f, 1):
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        info('%s:%d: unreadable line (a run cut off while writing) ignored', path, n)
        continue
      if rec.get('config') not in fps:
        raise ConfigError(f'{path}:{n}: recorded by a different config; use a new --workdir '
                          'or delete the file to start the comparison over')
      done[(rec['strategy'], rec['seed'])] = rec
  return done


def append_record(path: str, rec: dict) -> None:
  """Appends one finished run to `runs.jsonl`, synced, so a kill loses at most a partial line
  (which `load_done` skips). Only process 0 writes."""
  if jax.process_index() != 0:
    return
  with open(path, 'a') as f:
    f.write(metrics_lib.dumps(rec) + '\n')
    f.flush()
    os.fsync(f.fileno())


def run_dir(workdir: str, strategy: str, seed: int) -> str:
  """Where one run of a comparison keeps its checkpoints and metrics while it trains."""
  return os.path.join(workdir, 'runs', f'{strategy}-seed{seed}')


def save_policy(config) -> str:
  """`config.save_models` ('best' when the config has none), checked."""
  policy = config.get('save_models', 'best')
  if policy not in SAVE_MODELS:
    raise ConfigError(f'config.save_models: must be one of {SAVE_MODELS}, got {policy!r}')
  return policy


def keep_model(config, workdir: str, rdir: str, strategy: str, seed: int, dev: float,
               higher_is_better: bool = True) -> str:
  """Moves a finished run's `best_model` to where `config.save_models` keeps it (see the
  module docstring), or removes it; returns where it went ('' if dropped)."""
  staged = os.path.join(rdir, finetune.BEST_MODEL)
  policy = save_policy(config)
  if not os.path.isdir(staged) or jax.process_index() != 0:
    return ''
  if policy == 'none':
    shutil.rmtree(staged, ignore_errors=True)
    return ''
  if not config.compare_scratch:
    dst = os.path.join(workdir, 'model')
  elif policy == 'all':
    dst = os.path.join(workdir, 'models', f'{strategy}-seed{seed}')
  else:
    dst = os.path.join(workdir, 'models', strategy)
    try:
      kept = saved_model.read_meta(dst)['provenance']['dev']
    except (DataError, KeyError, TypeError):
      kept = None
    if kept is not None and not (dev > kept if higher_is_better else dev < kept):
      shutil.rmtree(staged, ignore_errors=True)
      return ''
  saved_model.swap_in(staged, dst)
  return dst


def discard_checkpoints(run_dir: str) -> None:
  """A finished, recorded run's checkpoints are not needed to resume the comparison."""
  shutil.rmtree(os.path.join(run_dir, 'checkpoints'), ignore_errors=True)


def run_all(config, workdir: str, run_fn: Callable[[str, int, str], dict],
            on_result: Callable[[dict], None] = lambda r: None,
            higher_is_better: bool = True) -> list[dict]:
  """Results of `run_fn(strategy, seed, run_dir)` for every run of `run_list(config)`.

  A run stopped by a signal (its result has `stopped=True`) has checkpointed in
  its `run_dir`; the comparison stops there and resumes that run when the command
  is given again. A finished run's saved best model is kept or dropped
  (`keep_model`; `higher_is_better`: how dev scores compare), the run is
  appended to `runs.jsonl`, then its checkpoints are removed. The graft
  report of each strategy's first seed is saved as `graft_report_<strategy>.json`.
  The returned list holds the finished runs; `stopped_by_signal(results)` tells
  whether the comparison was cut short.
  """
  path = os.path.join(workdir, 'runs.jsonl')
  fp = fingerprint(config)
  done = load_done(path, fingerprints(config))
  runs = run_list(config)
  results = []
  for strategy, seed in runs:
    if (strategy, seed) in done and recorded_before_frozen_change(done[(strategy, seed)], config):
      info('%-20s seed %d: recorded before frozen parameters stopped counting in gradient '
           'clipping; run again', strategy, seed)
      del done[(strategy, seed)]
    if (strategy, seed) in done:
      rec = done[(strategy, seed)]
      info('%-20s seed %d: dev %.4f test %.4f (recorded in runs.jsonl)', strategy, seed,
           rec['dev'], rec['test'])
      results.append({**rec, 'params': None, 'report': None, 'plan': {}})
      continue
    rdir = run_dir(workdir, strategy, seed)
    r = run_fn(strategy, seed, rdir)
    if r.get('stopped'):
      info('%-20s seed %d: stopped by a signal; checkpoint kept in %s', strategy, seed, rdir)
      results.append(r)
      break
    info('%-20s seed %d: dev %.4f test %.4f (epoch %d)', strategy, seed, r['dev'], r['test'],
         r['epoch'])
    if r['report'] is not None and seed == runs[0][1] and jax.process_index() == 0:
      r['report'].save(os.path.join(workdir, f'graft_report_{strategy}.json'))
    on_result(r)
    r['model'] = keep_model(config, workdir, rdir, strategy, seed, float(r['dev']),
                            higher_is_better)
    if r['model']:
      info('%-20s seed %d: model saved in %s', strategy, seed, r['model'])
    append_record(path, {'strategy': strategy, 'seed': seed, 'dev': float(r['dev']),
                         'test': float(r['test']), 'epoch': int(r['epoch']), 'config': fp,
                         'version': VERSION,
                         **({'details': r['details']} if r.get('details') else {})})
    discard_checkpoints(rdir)
    results.append(r)
  return results


def stopped_by_signal(results: list[dict]) -> bool:
  return bool(results) and bool(results[-1].get('stopped'))


def summarise(results: list[dict]) -> list[dict]:
  by = {}
  for r in results:
    if r.get('stopped'):
      continue
    by.setdefault(r['strategy'], []).append(r)
  scratch = by.get('scratch')
  rows = []
  for strategy, rs in by.items():
    test = [r['test'] for r in rs]
    m, h = mean_ci(test)
    row = {'strategy': strategy, 'seeds': len(rs), 'test_mean': m, 'test_ci95': h,
           'dev_mean': mean_ci([r['dev'] for r in rs])[0], 'test': test}
    types = [r['details']['entity_types'] for r in rs
             if 'entity_types' in (r.get('details') or {})]
    if types:   # NER: scores per entity type over the seeds that recorded them
      row['entity_types'] = {}
      for t in sorted({t for d in types for t in d}):
        per_seed = [d[t] for d in types if t in d]
        m_t, h_t = mean_ci([x['f1'] for x in per_seed])
        row['entity_types'][t] = {
            'f1_mean': m_t, 'f1_ci95': h_t, 'seeds': len(per_seed), 'gold': per_seed[0]['gold'],
            'precision_mean': mean_ci([x['precision'] for x in per_seed])[0],
            'recall_mean': mean_ci([x['recall'] for x in per_seed])[0]}
    if scratch and strategy != 'scratch':
      paired = {r['seed']: r['test'] for r in scratch}
      gains = [r['test'] - paired[r['seed']] for r in rs if r['seed'] in paired]
      row['gain_mean'], row['gain_ci95'] = mean_ci(gains)
    rows.append(row)
  return rows


def format_types(rows: list[dict]) -> str:
  """Per-entity-type test F1 (mean ± 95% CI over seeds) of each strategy ('' if none)."""
  types = sorted({t for r in rows for t in r.get('entity_types', {})})
  if not types:
    return ''
  out = [f'{"strategy":<20} ' + ' '.join(f'{t + " F1":>16}' for t in types)]
  for r in rows:
    e = r.get('entity_types', {})
    out.append(f'{r["strategy"]:<20} ' + ' '.join(
        f'{fmt(e[t]["f1_mean"], e[t]["f1_ci95"]) if t in e else "–":>16}' for t in types))
  return '\n'.join(out)


def format_table(rows: list[dict], metric: str = 'test acc') -> str:
  out = [f'{"strategy":<20} {"seeds":>5} {metric + " (mean ± 95% CI)":>26} '
         f'{"gain vs scratch (paired)":>26}']
  for r in rows:
    gain = fmt(r['gain_mean'], r['gain_ci95'], sign=True) if 'gain_mean' in r else ''
    out.append(f'{r["strategy"]:<20} {r["seeds"]:>5} '
               f'{fmt(r["test_mean"], r["test_ci95"]):>26} {gain:>26}')
  return '\n'.join(out)
