"""Low-resource translation curves: scratch vs pretrained initialisations vs back-translation
at budgets of training pairs, over seeds (`family='seq2seq_curves'`, issue #16).

Every cell (budget, condition, seed) is one seq2seq run (`pretraining.seq2seq`) on the
first `budget` pairs of a permutation fixed by the seed (`data.max_train_pairs`,
`data.subset_seed = seed`): the conditions of one seed see the same pairs, and one
seed's budgets are nested. Conditions (`curve.conditions`):

* `scratch`: random initialisation;
* `denoise`: the denoising-pretrained seq2seq run `curve.denoise_path`, grafted whole;
* `lm_decoder`: the target-language Transformer LM run `curve.lm_path` in the decoder;
* `mlm_encoder`: the masked-LM encoder run `curve.mlm_path` in the encoder;
* `backtranslation`: scratch on the pairs plus the monolingual target-side sentences of
  `curve.bt_path` back-translated by a reverse model trained from scratch on the same
  pairs (the cell `reverse` of that budget and seed, run first); at the budgets of
  `curve.bt_budgets` ('' : all).

All cells share one tokenizer: `curve.tokenizer` ('' : the denoising run's), which the
pretrained runs must use too (a run initialised from one uses its tokenizer), so the
conditions differ only in what they start from. Training length per budget: `epochs`
passes over the pairs, at least `min_steps` and at most `max_steps` steps.

Each finished cell is appended to `workdir/cells.jsonl` and skipped on a restart; a cell
killed midway resumes from its own checkpoint (`workdir/cells/<budget>/<cell>/`). One
study can be split over processes or machines, each its own workdir: by condition
(`curve.conditions`), budget (`curve.budgets`) or seed (`curve.seed_list`); one workdir then
takes the others' finished cells (`curve.import_cells`) and writes the whole summary.
The imported workdirs are read again before every cell, so workdirs running side by side
(each importing the other) skip a cell the other has finished meanwhile, such as the
scratch cells every workdir's plan holds.
Every cell records the SHA-256 of the tokenizer it used (`tokenizer_sha256`), and a cell of
another tokenizer is refused, so a study's `config.json` and `cells.jsonl` kept apart from
their workdir (e.g. committed with its results) can be imported by a later study, on
another machine, whose pretrained runs were rebuilt, and only if their tokenizer is the
same file.
Outputs: `curves.json`, `curves.csv` (mean ± 95% CI of test BLEU and chrF per budget and
condition, and the paired gain over scratch) and `curves.png` (BLEU, and the paired gain
over scratch, against pairs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from typing import Any

import ml_collections
import numpy as np

from translearn_jax.errors import ConfigError
from translearn_jax.evaluation import plots
from translearn_jax.evaluation.stats import mean_ci
from translearn_jax.pretraining import seq2seq
from translearn_jax.training.files import atomic_write
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.workdir import ADDED_FIELDS, added_field, flatten

CONDITIONS = ('scratch', 'denoise', 'lm_decoder', 'mlm_encoder', 'backtranslation')
NEEDS = {'denoise': 'denoise_path', 'lm_decoder': 'lm_path', 'mlm_encoder': 'mlm_path',
         'backtranslation': 'bt_path'}


def parse_budgets(spec, field: str) -> list[int]:
  try:
    budgets = sorted({int(b) for b in str(spec).split(',') if b.strip()})
  except ValueError:
    raise ConfigError(f'config.{field} must be comma-separated integers, got {spec!r}') from None
  if budgets and budgets[0] < 1:
    raise ConfigError(f'config.{field} must be positive pair counts, got {spec!r}')
  return budgets


def parse(config) -> tuple[list[int], list[str]]:
  """(budgets, conditions) of `config.curve`, checked before any training."""
  c = config.curve
  budgets = parse_budgets(c.budgets, 'curve.budgets')
  if not budgets:
    raise ConfigError('config.curve.budgets: no budget given')
  conditions = [x.strip() for x in c.conditions.split(',') if x.strip()]
  bad = [x for x in conditions if x not in CONDITIONS]
  if bad or not conditions:
    raise ConfigError(f'config.curve.conditions: {bad or "none"}; known: {CONDITIONS}')
  bt_budgets = parse_budgets(c.bt_budgets, 'curve.bt_budgets')
  bad_bt = set(bt_budgets) - set(budgets)
  if bad_bt and 'backtranslation' in conditions:    # a run without that condition ignores them
    raise ConfigError(f'config.curve.bt_budgets: {sorted(bad_bt)} not in curve.budgets')
  if 'scratch' not in conditions:
    conditions = ['scratch'] + conditions        # every gain is measured against it
  for cond in conditions:
    need = NEEDS.get(cond)
    if need and not c.get(need):
      raise ConfigError(f'config.curve.{need}: condition {cond!r} needs it')
    if need and need != 'bt_path' and not os.path.isdir(c[need]):
      raise ConfigError(f'config.curve.{need}: no run directory {c[need]}')
  if config.seeds < 1:
    raise ConfigError(f'config.seeds must be >= 1, got {config.seeds}')
  return budgets, conditions


def seed_list(config) -> list[int]:
  """The seeds this process runs: `curve.seed_list` (comma-separated, e.g. one machine per
  seed), or all of 0 .. seeds-1 when it is empty."""
  spec = config.curve.get('seed_list', '')
  if not spec.strip():
    return list(range(config.seeds))
  try:
    seeds = [int(x) for x in spec.split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'config.curve.seed_list: {spec!r} is not a comma-separated list of '
                      'integers') from None
  bad = [s for s in seeds if not 0 <= s < config.seeds]
  if bad or len(set(seeds)) != len(seeds):
    raise ConfigError(f'config.curve.seed_list: {spec!r}; each seed once, from 0 to '
                      f'seeds-1 = {config.seeds - 1}')
  return seeds


def tokenizer_path(config) -> str:
  path = config.curve.tokenizer or (
      os.path.join(config.curve.denoise_path, 'tokenizer.model') if config.curve.denoise_path
      else '')
  if not path or not os.path.isfile(path):
    raise ConfigError(f'config.curve.tokenizer: no tokenizer file {path!r} (give one, or '
                      'curve.denoise_path, whose tokenizer.model every cell then shares)')
  return path


def steps_for(config, budget: int) -> int:
  c = config.curve
  per_epoch = -(-budget // config.train.batch_size)
  return int(min(max(c.epochs * per_epoch, c.min_steps), c.max_steps))


def cell_config(config, budget: int, condition: str, seed: int, tok: str, workdir: str
                ) -> ml_collections.ConfigDict:
  """The seq2seq run of one cell: the base config's model, data and optimiser."""
  c = ml_collections.ConfigDict(config.to_dict())
  del c['curve'], c['seeds']
  c.family = 'seq2seq'
  c.seed = seed
  c.data.max_train_pairs = budget
  c.data.subset_seed = seed
  c.train.steps = steps_for(config, budget)
  c.train.epochs = 1_000_000        # train.steps ends every cell
  c.progress = False
  c.tokenizer.path = tok
  c.init.path, c.init.rules = '', ''
  if condition not in ('denoise', 'lm_decoder', 'mlm_encoder') and 'transfer' in c:
    c.transfer.strategy, c.transfer.freeze_bottom = 'finetune', 0   # random weights: train all
  if condition == 'reverse':
    d = c.data
    for split in ('train', 'valid', 'test'):
      d[f'{split}_source'], d[f'{split}_target'] = d[f'{split}_target'], d[f'{split}_source']
    d.source_field, d.target_field = d.target_field, d.source_field
  elif condition in ('denoise', 'lm_decoder', 'mlm_encoder'):
    c.tokenizer.path = ''           # the source's (the shared one)
    c.init.kind = {'denoise': 'seq2seq', 'lm_decoder': 'lm', 'mlm_encoder': 'mlm'}[condition]
    c.init.path = config.curve[NEEDS[condition]]
  elif condition == 'backtranslation':
    c.backtranslation.model = os.path.join(cell_dir(workdir, budget, 'reverse', seed), 'model')
    c.backtranslation.path = config.curve.bt_path
    c.backtranslation.max_sentences = config.curve.bt_max_sentences
  return c


def cell_dir(workdir: str, budget: int, condition: str, seed: int) -> str:
  return os.path.join(workdir, 'cells', str(budget), f'{condition}-seed{seed}')


def source_of(config, condition: str) -> dict:
  """What a cell of `condition` starts from beyond the shared config (recorded per cell)."""
  c = config.curve
  if condition == 'backtranslation':
    return {'bt_path': c.bt_path, 'bt_max_sentences': c.bt_max_sentences}
  need = NEEDS.get(condition)
  return {need: os.path.abspath(c[need])} if need and c.get(need) else {}


def tokenizer_digest(tok: str) -> str:
  """The SHA-256 of the shared tokenizer file: what each cell records of its tokenizer, so a
  cell is never mixed with cells of another one (a retrained tokenizer at the same path, or
  cells kept apart from their workdir, e.g. committed with a study's results)."""
  with open(tok, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def check_tokenizer_digest(cells: list[dict], digest: str, where: str) -> None:
  for cell in cells:
    if cell.get('tokenizer_sha256', digest) != digest:
      raise ConfigError(f'{where}: the cell ({cell["budget"]} pairs, {cell["condition"]}, seed '
                        f'{cell["seed"]}) was trained with another tokenizer (SHA-256 '
                        f'{cell["tokenizer_sha256"][:12]}…, this study\'s is {digest[:12]}…); '
                        'its scores do not compare with this study\'s: use a new --workdir, '
                        'or the tokenizer those cells used')


def check_recorded(cells: list[dict], config) -> None:
  """A recorded cell that started from another source than the config names now would be
  mixed into the same row: refused, naming the field."""
  for cell in cells:
    now = source_of(config, cell['condition'])
    before = cell.get('source', {})
    for k, v in now.items():
      if k in before and before[k] != v:
        raise ConfigError(f'config.curve.{k}: cells of {cell["condition"]!r} in this workdir '
                          f'started from {before[k]!r}, not {v!r}; use a new --workdir')


# fields two workdirs may differ in and still share cells: which conditions, budgets and
# seeds each ran, and where their sources are (each cell records its source, checked)
_IMPORT_FREE = ('curve.conditions', 'curve.denoise_path', 'curve.lm_path', 'curve.mlm_path',
                'curve.tokenizer', 'curve.title', 'curve.import_cells', 'curve.bt_budgets',
                'curve.budgets', 'curve.seed_list', 'seeds', 'progress')


def import_cells(config, cells: list[dict], tok: str) -> list[dict]:
  """The finished cells of the workdirs `curve.import_cells` names (comma-separated; e.g.
  the same study split over machines by condition) that `cells` lacks. A workdir whose
  config differs in anything a cell computes with (model, data, steps, seeds' pairs), or
  whose cells shared another tokenizer, is an error naming the field."""
  spec = config.curve.get('import_cells', '')
  out, have = [], {(c['budget'], c['condition'], c['seed']) for c in cells}
  mine = flatten(json.loads(config.to_json_best_effort()))
  for d in [x.strip() for x in spec.split(',') if x.strip()]:
    path = os.path.join(d, 'config.json')
    if not os.path.isfile(path):
      raise ConfigError(f'config.curve.import_cells: {d} is not a curves workdir (no config.json)')
    with open(path, encoding='utf-8') as f:
      theirs_cfg = json.load(f)
    theirs = flatten(theirs_cfg)
    for k in sorted(set(mine) | set(theirs)):
      if k.startswith(_IMPORT_FREE) or _value(mine, k) == _value(theirs, k):
        continue
      raise ConfigError(f'config.curve.import_cells: {d} ran its cells with {k}='
                        f'{theirs.get(k)!r}, this study with {mine.get(k)!r}')
    theirs_cells = read_cells(os.path.join(d, 'cells.jsonl'))
    if all('tokenizer_sha256' in c for c in theirs_cells):   # each cell names its tokenizer
      check_tokenizer_digest(theirs_cells, tokenizer_digest(tok),
                             f'config.curve.import_cells: {d}')
    else:                     # cells written before they recorded it: the workdir's file
      other_tok = tokenizer_path(ml_collections.ConfigDict(theirs_cfg))
      with open(other_tok, 'rb') as f1, open(tok, 'rb') as f2:
        if f1.read() != f2.read():
          raise ConfigError(f'config.curve.import_cells: the cells of {d} used the tokenizer '
                            f'{other_tok}, not {tok}')
    for cell in theirs_cells:
      key = (cell['budget'], cell['condition'], cell['seed'])
      if key not in have:
        out.append(cell)
        have.add(key)
  return out


def _value(flat: dict, k: str):
  """Field `k` of a flattened config; a field added since that config was written
  (`workdir.ADDED_FIELDS`) counts as its listed value, as when a run resumes."""
  if k in flat:
    return flat[k]
  added = added_field(k)
  return ADDED_FIELDS[added] if added else None


def read_cells(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def check_tokenizer(src_path: str, tok: str, field: str) -> None:
  """A pretrained run must index the shared pieces, or its cell would compare tokenizers."""
  from translearn_jax.transfer import sources
  theirs = sources.run_tokenizer(src_path, sources.run_config(src_path, field))
  with open(tok, 'rb') as f:
    ours = f.read()
  if getattr(theirs, 'proto', None) != ours:
    raise ConfigError(f'config.{field}: {src_path} uses another tokenizer than {tok}; '
                      'pretrain it with --config.tokenizer.path=' + tok)


def summarise(cells: list[dict], budgets, conditions) -> list[dict]:
  rows = []
  for b in budgets:
    scratch = {c['seed']: c for c in cells if c['budget'] == b and c['condition'] == 'scratch'}
    for cond in [c for c in dict.fromkeys(conditions) if c != 'reverse'] + ['reverse']:
      mine = sorted((c for c in cells if c['budget'] == b and c['condition'] == cond),
                    key=lambda c: c['seed'])
      if not mine:
        continue
      row: dict[str, Any] = {'budget': b, 'condition': cond, 'seeds': len(mine),
                             'train_pairs': mine[0]['train_pairs'],
                             'synthetic_pairs': mine[0].get('synthetic_pairs', 0),
                             'steps': mine[0]['steps']}
      for metric in ('bleu', 'chrf'):
        row[metric], row[f'{metric}_ci95'] = mean_ci([c['test'][metric] for c in mine])
        if cond not in ('scratch', 'reverse'):
          gains = [c['test'][metric] - scratch[c['seed']]['test'][metric]
                   for c in mine if c['seed'] in scratch]
          row[f'{metric}_gain'], row[f'{metric}_gain_ci95'] = mean_ci(gains)
          row['paired_seeds'] = len(gains)
      rows.append(row)
  return rows


CSV_KEYS = ['budget', 'condition', 'seeds', 'train_pairs', 'synthetic_pairs', 'steps', 'bleu',
            'bleu_ci95', 'bleu_gain', 'bleu_gain_ci95', 'chrf', 'chrf_ci95', 'chrf_gain',
            'chrf_gain_ci95', 'paired_seeds']


def save_outputs(rows: list[dict], workdir: str, title: str) -> None:
  with open(os.path.join(workdir, 'curves.csv.tmp'), 'w', newline='') as f:
    w = csv.DictWriter(f, CSV_KEYS, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)
  os.replace(os.path.join(workdir, 'curves.csv.tmp'), os.path.join(workdir, 'curves.csv'))
  plt = plots.pyplot()
  if plt is None:
    return
  fig, (ax, gx) = plt.subplots(1, 2, figsize=(11.5, 4.4))
  budgets = {r['budget'] for r in rows}
  for i, cond in enumerate(dict.fromkeys(r['condition'] for r in rows
                                         if r['condition'] != 'reverse')):
    rs = sorted((r for r in rows if r['condition'] == cond), key=lambda r: r['budget'])
    color = f'C{i}'
    x = [r['budget'] for r in rs]
    m = np.array([r['bleu'] for r in rs])
    h = np.array([r['bleu_ci95'] or 0.0 for r in rs])
    # whiskers at every point (a condition run at one budget has no band to show)
    ax.errorbar(x, m, yerr=h, marker='o', capsize=3, color=color, label=cond)
    ax.fill_between(x, np.clip(m - h, 0, 100), np.clip(m + h, 0, 100), alpha=0.15,
                    color=color)
    gs = [r for r in rs if r.get('bleu_gain') is not None]
    if gs:          # the paired gain over scratch: where it crosses zero, transfer stops helping
      gx.errorbar([r['budget'] for r in gs], [r['bleu_gain'] for r in gs],
                  yerr=[r.get('bleu_gain_ci95') or 0.0 for r in gs], marker='o', capsize=3,
                  color=color, label=cond)
  plots.budget_curve_axes(ax, budgets, 'parallel training pairs',
                          'test BLEU (mean ± 95% CI over seeds)', title)
  gx.axhline(0.0, color='black', lw=0.8)
  plots.budget_curve_axes(gx, budgets, 'parallel training pairs',
                          'BLEU gain over scratch (paired, 95% CI)', 'gain over scratch')
  plots.save_png(plt, fig, os.path.join(workdir, 'curves.png'))


def format_rows(rows: list[dict]) -> str:
  def f(m, ci, sign=False):
    if m is None:
      return '–'
    s = f'{m:+.2f}' if sign else f'{m:.2f}'
    return s if ci is None else f'{s} ± {ci:.2f}'
  lines = ['| pairs | condition | seeds | test BLEU | gain | test chrF | gain |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['budget']:,} | {r['condition']} | {r['seeds']} | "
                 f"{f(r['bleu'], r['bleu_ci95'])} | "
                 f"{f(r.get('bleu_gain'), r.get('bleu_gain_ci95'), True)} | "
                 f"{f(r['chrf'], r['chrf_ci95'])} | "
                 f"{f(r.get('chrf_gain'), r.get('chrf_gain_ci95'), True)} |")
  return '\n'.join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  budgets, conditions = parse(config)
  seeds = seed_list(config)
  bt_budgets = parse_budgets(config.curve.bt_budgets, 'curve.bt_budgets') or budgets
  tok = tokenizer_path(config)
  for cond in conditions:
    if cond in ('denoise', 'lm_decoder', 'mlm_encoder'):
      check_tokenizer(config.curve[NEEDS[cond]], tok, f'curve.{NEEDS[cond]}')
  os.makedirs(workdir, exist_ok=True)
  atomic_write(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  log = os.path.join(workdir, 'cells.jsonl')
  cells = read_cells(log)
  digest = tokenizer_digest(tok)
  check_tokenizer_digest(cells, digest, f'{log}')
  imported = import_cells(config, cells, tok)
  check_recorded(cells + imported, config)
  if imported:
    info('curve.import_cells: %d finished cells taken from %s', len(imported),
         config.curve.import_cells)
    cells += imported
    atomic_write(log, ''.join(json.dumps(c) + '\n' for c in cells))
  done = {(c['budget'], c['condition'], c['seed']) for c in cells}
  plan = []
  for b in budgets:                 # small budgets first, then seed-major: paired seeds
    for seed in seeds:
      for cond in conditions:
        if cond == 'backtranslation':
          if b not in bt_budgets:
            continue
          plan.append((b, 'reverse', seed))
        plan.append((b, cond, seed))
  for i, (b, cond, seed) in enumerate(plan):
    if (b, cond, seed) in done:
      continue
    if config.curve.get('import_cells', ''):   # another workdir may have finished it since
      late = import_cells(config, cells, tok)
      if late:
        check_recorded(late, config)
        info('curve.import_cells: %d more finished cells taken', len(late))
        cells += late
        atomic_write(log, ''.join(json.dumps(c) + '\n' for c in cells))
        done |= {(c['budget'], c['condition'], c['seed']) for c in late}
        if (b, cond, seed) in done:
          continue
    d = cell_dir(workdir, b, cond, seed)
    info('cell %d/%d: %d pairs, %s, seed %d -> %s', i + 1, len(plan), b, cond, seed, d)
    out = seq2seq.train_and_evaluate(cell_config(config, b, cond, seed, tok, workdir), d)
    if 'test' not in out:
      if out.get('stopped_by_signal'):
        return {'stopped': True}
      raise ConfigError('config.data: a curve cell needs a test split (test_source/test_target)')
    rec = {'budget': b, 'condition': cond, 'seed': seed, 'source': source_of(config, cond),
           'tokenizer_sha256': digest,
           'train_pairs': out['train_pairs'],
           'synthetic_pairs': out.get('synthetic_pairs', 0), 'steps': out['steps'],
           'test': {k: out['test'][k] for k in ('bleu', 'chrf')},
           'valid': {k: out['valid'][k] for k in ('bleu', 'chrf')} if 'valid' in out else None}
    cells.append(rec)
    atomic_write(log, ''.join(json.dumps(c) + '\n' for c in cells))
    done.add((b, cond, seed))
  rows = summarise(cells, budgets, conditions)
  title = config.curve.title or 'Multi30k en→de: pretrained initialisations vs scratch'
  save_outputs(rows, workdir, title)
  summary = {'rows': rows, 'cells': len(cells)}
  write_json(os.path.join(workdir, 'curves.json'), summary)
  print(format_rows(rows))
  return summary
