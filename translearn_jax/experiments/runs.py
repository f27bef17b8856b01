"""The seeds × strategies runs of a transfer comparison, resumable.

`run_list` orders the runs seed-major (scratch and every strategy for seed 0,
then seed 1, ...), so a comparison stopped early still holds complete,
paired seeds. `run_all` appends each finished run to `workdir/runs.jsonl`
and, when restarted in the same workdir, skips the runs recorded there — a
long comparison killed by a time limit loses at most the run in progress.
Records carry the config they ran (without the run list fields: `fields`) and its
hash; a workdir holding runs of a different config is an error naming the fields that
differ, never a silent mix.
Records also carry `VERSION`; a run recorded before a version that changed how its
strategy trains (2: frozen parameters; 3: scratch under freeze_bottom; 4: gradual
unfreezing's schedule and LoRA's initialisation) is run again.

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
# Version 3: scratch ignores `transfer.freeze_bottom` (it trains every parameter); a scratch
# run recorded before it with freeze_bottom > 0 kept random groups frozen and is run again.
# Version 4 (stop 52): gradual unfreezing follows the run's one schedule (a group unfrozen
# late began a triangle of its own) and LoRA's A is drawn as peft draws it: such runs
# recorded before it trained otherwise and are run again.
VERSION = 4


def recorded_before_frozen_change(rec: dict, config) -> bool:
  bottom = 'transfer' in config and config.transfer.get('freeze_bottom', 0) > 0
  lora = 'model' in config and config.model.get('lora_rank', 0) > 0
  if (rec['strategy'] == 'gradual_unfreezing' or lora) and rec.get('version', 1) < 4:
    return True
  if rec['strategy'] == 'scratch':
    return bottom and rec.get('version', 1) < 3
  frozen = rec['strategy'] in ('feature_extraction', 'lora') or bottom
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


def _shared(config) -> dict:
  d = json.loads(config.to_json_best_effort())
  for k in LIST_FIELDS:
    d.pop(k, None)
  d.get('transfer', {}).pop('strategies', None)
  d.get('transfer', {}).pop('strategy', None)
  return d


def shared_config(config) -> dict:
  """What every run of a comparison shares: the config without the run-list fields, flat
  ('group.field': value)."""
  return workdir_lib.flatten(_shared(config))


def _at_default(flat: dict) -> list[str]:
  """The `ADDED_FIELDS` entries `flat` holds at their listed value, in the list's order."""
  return [p for p, v in workdir_lib.ADDED_FIELDS.items() if p in flat and flat[p] == v]


def _hash(config, drop=()) -> str:
  """The hash of `_shared(config)` without the fields `drop` (a group left empty goes too)."""
  d = _shared(config)
  for path in drop:
    *parents, leaf = path.split('.')
    node = d
    for p in parents:
      node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
      del node[leaf]
      if parents and not node:   # a group added whole (e.g. `mesh`) at its defaults
        parent = d
        for p in parents[:-1]:
          parent = parent[p]
        del parent[parents[-1]]
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(config) -> str:
  """A hash of what every run of a comparison shares; a field of `workdir.ADDED_FIELDS`
  (added to the configs after runs were recorded) counts only when it differs from the
  value those runs computed with. Records carry it, and `shared_config` (`fields`)."""
  return _hash(config, _at_default(shared_config(config)))


# The last `ADDED_FIELDS` entry listed when comparison records began to carry their `fields`
# (commit 4c55622): a hash-only record was made with a prefix of the entries up to it.
HASH_ONLY_LAST = 'eval.metric'


def fingerprints(config) -> set[str]:
  """The hashes a record of this config made before records carried `fields` may hold.
  Such a record hashed the `ADDED_FIELDS` entries of its day (a prefix of those up to
  `HASH_ONLY_LAST`) dropped at their defaults, and kept a later entry that its config
  already had (a field one family had before another gained it: `data.encoding`) or lacked
  it (a field added since: `eval.metric`); every prefix is tried with the later entries
  kept or dropped all together, or all but one either way. An entry listed after records
  carried `fields` (`optim.warmup_steps`, which the transfer configs always had) was a plain
  field to every hash-only record: each such entry is tried kept and dropped on its own."""
  flat = shared_config(config)
  listed = _at_default(flat)
  order = list(workdir_lib.ADDED_FIELDS)
  early = [p for p in listed if order.index(p) <= order.index(HASH_ONLY_LAST)]
  post = [p for p in listed if p not in early]
  out = set()
  for mask in range(1 << min(len(post), 8)):   # each post entry kept or dropped
    dropped = [p for i, p in enumerate(post) if i >= 8 or mask >> i & 1]
    for k in range(len(early) + 1):
      base, later = early[:k], early[k:]
      variants = [[], later] + [[p] for p in later] + [[q for q in later if q != p]
                                                       for p in later]
      out.update(_hash(config, base + v + dropped) for v in variants)
  return out


def stamp(config) -> dict:
  """What a record carries of its config: `config` (the hash) and `fields` (the shared
  config, compared field by field when the comparison resumes)."""
  return {'config': fingerprint(config), 'fields': shared_config(config)}


def load_done(path: str, config) -> dict[tuple[str, int], dict]:
  """The runs recorded in `path` by this config, by (strategy, seed). A record carries the
  shared config (`fields`, compared field by field) or, if older, only its hash (one of
  `fingerprints`); a record of another config is an error naming what differs."""
  done = {}
  if not os.path.exists(path):
    return done
  fields, fps = metrics_lib.finite(shared_config(config)), None   # as records store them
  with open(path) as f:
    for n, line in enumerate(f, 1):
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        info('%s:%d: unreadable line (a run cut off while writing) ignored', path, n)
        continue
      if 'fields' in rec:   # every difference counts here, the resumable ones too
        diff = sorted(sum(workdir_lib.config_changes(rec['fields'], fields), []))
        ok = not diff
      else:
        fps = fingerprints(config) if fps is None else fps
        diff, ok = [], rec.get('config') in fps
      if not ok:
        shown = f' ({"; ".join(diff[:3])}{"; ..." if len(diff) > 3 else ""})' if diff else ''
        raise ConfigError(f'{path}:{n}: recorded by a different config{shown}; use a new '
                          '--workdir or delete the file to start the comparison over')
      done[(rec['strategy'], rec['seed'])] = rec
  return done


def test_digest(examples, labels) -> str:
  """A short hash of a test split (its examples and their labels, in order): what two
  results files must share to be compared seed by seed (`evaluation.compare`)."""
  labels = [list(map(str, x)) if isinstance(x, (list, tuple)) else str(x) for x in labels]
  blob = json.dumps([list(examples), labels], ensure_ascii=False, default=str)
  return hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]


def append_record(path: str, rec: dict) -> None:
  """Appends one finished run to `runs.jsonl`, synced, so a kill loses at most a partial line
  (which `load_done` skips). Only process 0 writes."""
  if jax.process_index() != 0:
    return
  with open(path, 'a+b') as f:
    cut = False
    if f.seek(0, os.SEEK_END) > 0:
      f.seek(-1, os.SEEK_END)
      cut = f.read(1) != b'\n'
    # a kill's partial last line ends here, so this record stays a line of its own (glued
    # to it, it was unreadable, and its run trained again)
    f.write((('\n' if cut else '') + metrics_lib.dumps(rec) + '\n').encode('utf-8'))
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
  signed = stamp(config)
  done = load_done(path, config)
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
                         'test': float(r['test']), 'epoch': int(r['epoch']), **signed,
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
    # scores per NER entity type / per class, over the seeds that recorded them
    for key in ('entity_types', 'classes'):
      types = [r['details'][key] for r in rs if key in (r.get('details') or {})]
      if not types:
        continue
      row[key] = {}
      names = {t for d in types for t in d}
      for t in (sorted(names) if key == 'entity_types' else sorted(names, key=_type_order(types))):
        per_seed = [d[t] for d in types if t in d]
        m_t, h_t = mean_ci([x['f1'] for x in per_seed])
        row[key][t] = {
            'f1_mean': m_t, 'f1_ci95': h_t, 'seeds': len(per_seed), 'gold': per_seed[0]['gold'],
            'precision_mean': mean_ci([x['precision'] for x in per_seed])[0],
            'recall_mean': mean_ci([x['recall'] for x in per_seed])[0]}
    other = [r['details'] for r in rs if 'macro_f1' in (r.get('details') or {})]
    if other:   # classification: both scores, whichever picked the best epoch
      for k in ('accuracy', 'macro_f1'):
        row[f'{k}_mean'], row[f'{k}_ci95'] = mean_ci([d[k] for d in other])
    if scratch and strategy != 'scratch':
      paired = {r['seed']: r['test'] for r in scratch}
      gains = [r['test'] - paired[r['seed']] for r in rs if r['seed'] in paired]
      row['gain_mean'], row['gain_ci95'] = mean_ci(gains)
    rows.append(row)
  return rows


def _type_order(types: list[dict]):
  """Entity types / classes in the order the first record lists them (a classifier's
  class order), then any others by name."""
  first = {t: i for i, t in enumerate(types[0])}
  return lambda t: (first.get(t, len(first)), t)


def format_types(rows: list[dict], key: str = 'entity_types', most: int = 12) -> str:
  """Per-entity-type (or, `key='classes'`, per-class) test F1 (mean ± 95% CI over seeds) of
  each strategy ('' if none, or more than `most` columns)."""
  types = []
  for r in rows:
    types += [t for t in r.get(key, {}) if t not in types]
  if not types or len(types) > most:
    return ''
  out = [f'{"strategy":<20} ' + ' '.join(f'{t[:13] + " F1":>16}' for t in types)]
  for r in rows:
    e = r.get(key, {})
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
