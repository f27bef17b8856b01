"""Multi-task learning: one shared LM backbone, one head per task, a task-mixing sampler.

Tasks (any subset, `multitask.tasks`):
* `mr`: sentence classification (`downstream.classification`, `lm_encoder` model);
* `ner`: CoNLL tagging (`downstream.tagging`);
* `lm`: next-token prediction on a text corpus (the backbone's own tied output).

Parameters: `{'backbone': shared LM body, 'heads': {'mr': ..., 'ner': ...}}`
(the LM task has no head of its own). The backbone is grafted from the
pretrained LM run (`pretrained.path`) or, with `multitask.init='scratch'`,
freshly initialised. At every step `fusion.mixing.TaskSampler` picks one task
(proportional / temperature / equal mixing over the tasks' training sizes);
that task's batch updates the backbone and its own head. The backbone has one
AdamW; each head has its own AdamW that only steps when its task is drawn
(so an idle head is not moved by stale momentum, as in PyTorch where a
parameter without a gradient is skipped). One jitted step per task.

Logged every `log_every_steps` (metrics.jsonl / TensorBoard): per-task mean
loss and how many steps each task got. At the end: MR test accuracy, NER test
span F1, LM held-out perplexity, written to `multitask.json`.

`compare_single=True` (with `seeds`): the measured question — does sharing
help? Each seed runs the multi-task model and then each task alone for the
number of steps it got in the multi-task run, on the same batches from the same
initialisation; `compare.json` and the printed table give per-task means ± 95%
CI and the seed-paired difference (`compare_single`).
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import readers
from translearn_jax.data.lm_data import pack, split_documents
from translearn_jax.data.tokenizer import EOS
from translearn_jax.downstream import classification, tagging
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation.stats import mean_ci
from translearn_jax.experiments import runs
from translearn_jax.fusion.mixing import TaskSampler
from translearn_jax.models import lm as lm_models
from translearn_jax.training.metrics import MetricWriter, info, write_json
from translearn_jax.training import optimizers
from translearn_jax.transfer import sources

TASKS = ('mr', 'ner', 'lm')


class LMTask:
  """Packed rows of a text corpus in the backbone's tokenizer, with held-out documents."""

  def __init__(self, config, tokenizer, seq_len: int):
    spec = readers.TextSpec.from_config(config)
    docs = list(readers.read_documents(spec))
    train, valid = split_documents(docs, config.valid_fraction, 0)
    enc = lambda ds: np.concatenate([np.asarray([EOS] + ids, np.int32)
                                     for ids in tokenizer.encode_batch(ds)])
    self.rows = np.asarray(pack(enc(train), seq_len))
    self.valid_rows = np.asarray(pack(enc(valid), seq_len, 'held-out')) if valid else None


class MultiTask:
  def __init__(self, config):
    self.config = config
    names = [t.strip() for t in config.multitask.tasks.split(',') if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
      raise ConfigError(f'multitask.tasks: unknown {bad} (known: {TASKS})')
    self.names = names
    self.setups = {}
    if 'mr' in names:
      self.setups['mr'] = classification.Setup(config.mr)
    if 'ner' in names:
      self.setups['ner'] = tagging.Setup(config.ner)
    any_setup = next(iter(self.setups.values()), None)
    if any_setup:
      source = any_setup.source
    else:
      p = config.mr.pretrained
      source = sources.load(p.kind, p.path, field='mr.pretrained.path')
    self.source = source
    self.lm_config = source.model_config
    if self.lm_config is None:
      raise ConfigError("multi-task learning needs an LM backbone (mr.pretrained.kind='lm')")
    self.lm_model = lm_models.make(self.lm_config.replace(deterministic=False))
    if 'lm' in names:
      self.lm = LMTask(config.lm_data, source.tokenizer, config.multitask.lm_seq_len)
    self.sizes = [self._size(t) for t in names]

  def _size(self, task: str) -> int:
    if task == 'mr':
      return len(self.setups['mr'].inputs['train'][2])
    if task == 'ner':
      return len(self.setups['ner'].inputs['train'][0])
    return len(self.lm.rows)

  def init_params(self, seed: int, names: Optional[Sequence[str]] = None):
    """Backbone + the heads of `names` (default: all tasks). The backbone is the one
    the full task list starts from, whatever subset is asked for, so a single-task
    baseline starts where the multi-task run does."""
    strategy = 'scratch' if self.config.multitask.init == 'scratch' else 'finetune'
    names = self.names if names is None else names
    first = next((t for t in self.names if t != 'lm'), None)
    inits = {t: self.setups[t].init_params(seed, strategy)[0]
             for t in self.names if t != 'lm' and (t in names or t == first)}
    heads = {t: inits[t]['head'] for t in names if t != 'lm'}
    if first is not None:
      backbone = inits[first]['backbone']
    else:  # LM task only
      backbone = self.lm_model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params']
      if strategy != 'scratch':
        backbone = jax.tree.map(jnp.asarray, self.source.params)
    return {'backbone': backbone, 'heads': heads}

  def loss_fn(self, task: str):
    if task == 'mr':
      model = self.setups['mr'].model
      return lambda b, h, batch, rng: classification.classification_loss(
          model, {'backbone': b, 'head': h}, batch['tokens'], batch['mask'], batch['labels'], rng)
    if task == 'ner':
      model = self.setups['ner'].model
      return lambda b, h, batch, rng: tagging.tagging_loss(
          model, {'backbone': b, 'head': h}, batch['tokens'], batch['mask'], batch['positions'],
          batch['tags'], rng)

    def lm_loss(b, h, batch, rng):
      del h
      rows = batch['tokens']
      logits = lm_models.logits(self.lm_model, b, rows[:, :-1], rngs={'dropout': rng})
      return optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), rows[:, 1:]).mean()
    return lm_loss

  def batch(self, task: str, draw: int, bs: int, seed: int) -> dict:
    """The `draw`-th batch of `task` (epoch-wise reshuffled, deterministic)."""
    n = self._size(task)
    per_epoch = max(n // bs, 1)
    epoch, i = divmod(draw, per_epoch)
    idx = np.random.default_rng([seed, TASKS.index(task), epoch]).permutation(n)[i * bs:(i + 1) * bs]
    if task == 'mr':
      toks, mask, labels = self.setups['mr'].inputs['train']
      w = classification.trimmed_width(mask[idx])
      return {'tokens': toks[idx, :w], 'mask': mask[idx, :w], 'labels': labels[idx]}
    if task == 'ner':
      toks, mask, pos, tags = self.setups['ner'].inputs['train']
      return {'tokens': toks[idx], 'mask': mask[idx], 'positions': pos[idx], 'tags': tags[idx]}
    return {'tokens': self.lm.rows[idx]}

  def evaluate(self, params, names: Optional[Sequence[str]] = None) -> dict:
    names = self.names if names is None else names
    out = {}
    full = lambda t: {'backbone': params['backbone'], 'head': params['heads'][t]}
    if 'mr' in names:
      out['mr_test_accuracy'] = self.setups['mr'].accuracy(full('mr'), 'test')
    if 'ner' in names:
      out['ner_test_f1'] = self.setups['ner'].f1(full('ner'), 'test')
    if 'lm' in names and self.lm.valid_rows is not None:
      model = lm_models.make(self.lm_config.replace(deterministic=True))
      f = jax.jit(lambda b, r: optax.softmax_cross_entropy_with_integer_labels(
          lm_models.logits(model, b, r[:, :-1]).astype(jnp.float32), r[:, 1:]).sum())
      rows = self.lm.valid_rows[:self.config.multitask.lm_eval_rows or None]
      total = sum(float(f(params['backbone'], rows[i:i + 32])) for i in range(0, len(rows), 32))
      out['lm_valid_perplexity'] = math.exp(total / (len(rows) * (rows.shape[1] - 1)))
    return out


def train(mt: MultiTask, seed: int, steps: int, writer=None, only: Optional[str] = None
          ) -> tuple[dict, dict]:
  """(final params, per-task step counts) of `steps` multi-task steps.

  Step s trains the task `TaskSampler.task_at(s)` draws. The backbone's LR
  schedule spans all the steps it takes; each head's spans the steps its task
  gets (a head's optimiser only counts those, so a schedule sized to `steps`
  would leave a rarely drawn head near its peak LR).

  With `only=task`: the single-task baseline of `compare_single` — that task
  alone (its head and the backbone) trains on exactly the multi-task steps that
  drew it: the same batches, dropout keys and initialisation, with the
  backbone's schedule spanning those steps as a single-task run's would.
  """
  c = mt.config.multitask
  sampler = TaskSampler(mt.sizes, c.mixing, c.temperature, seed)
  order = [mt.names[sampler.task_at(s)] for s in range(steps)]
  if only is None:
    names, run_steps = mt.names, list(range(steps))
  else:
    names, run_steps = [only], [s for s, t in enumerate(order) if t == only]
  # own buffers (the init may share the pretrained arrays): the steps donate them
  params = jax.tree.map(jnp.copy, mt.init_params(seed, names))

  optim = {'learning_rate': c.learning_rate, 'schedule': c.schedule,
           'weight_decay': c.weight_decay, 'grad_clip': 1.0, 'no_decay': ''}

  def adamw(n):
    return optimizers.make(optim, None, max(n, 1))[0]
  tx_b = adamw(len(run_steps))
  tx_h = {t: adamw(order.count(t)) for t in params['heads']}
  opt_b = tx_b.init(params['backbone'])
  opt_h = {t: tx_h[t].init(h) for t, h in params['heads'].items()}

  def make_step(task):
    loss = mt.loss_fn(task)
    has_head = task in tx_h

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2, 3))  # updated in place
    def step(b, h, ob, oh, batch, rng):
      value, (gb, gh) = jax.value_and_grad(loss, argnums=(0, 1))(b, h, batch, rng)
      ub, ob = tx_b.update(gb, ob, b)
      b = optax.apply_updates(b, ub)
      if has_head:
        uh, oh = tx_h[task].update(gh, oh, h)
        h = optax.apply_updates(h, uh)
      return b, h, ob, oh, value
    return step

  steps_fn = {t: make_step(t) for t in names}
  draws = {t: 0 for t in names}
  window = {t: [] for t in names}
  key = jax.random.key(seed + 3000)
  for n, s in enumerate(run_steps):
    task = order[s]
    bs = mt.config.multitask.batch_size
    batch = mt.batch(task, draws[task], bs, seed)
    draws[task] += 1
    h, oh = params['heads'].get(task, {}), opt_h.get(task, ())
    b, h, opt_b, oh, value = steps_fn[task](params['backbone'], h, opt_b, oh, batch,
                                             jax.random.fold_in(key, s))
    params = {'backbone': b, 'heads': {**params['heads'], **({task: h} if task in tx_h else {})}}
    if task in opt_h:
      opt_h[task] = oh
    window[task].append(float(value))
    if writer is not None and ((n + 1) % mt.config.log_every_steps == 0
                               or n + 1 == len(run_steps)):
      metrics = {f'{t}_loss': float(np.mean(v)) for t, v in window.items() if v}
      metrics.update({f'{t}_steps': draws[t] for t in names})
      writer.write(n + 1, metrics)
      window = {t: [] for t in names}
  return params, draws


METRICS = {'mr': ('mr_test_accuracy', 'MR test accuracy %', 100.0, True),
           'ner': ('ner_test_f1', 'NER test span F1', 100.0, True),
           'lm': ('lm_valid_perplexity', 'LM perplexity (lower=better)', 1.0, False)}


def compare_single(mt: MultiTask, config, workdir: str) -> dict:
  """Multi-task vs each task alone at equal per-task steps, over `config.seeds` seeds.

  Per seed: the multi-task run, then every task alone on exactly the steps that
  drew it in that run (same batches, dropout keys, initialisation and head
  schedule; see `train(only=...)`). Runs are
  appended to `runs.jsonl` as they finish and skipped when the command is
  rerun in the same workdir (`downstream.runs`' resume rules). Reports, per
  task, both means ± 95% CI and the seed-paired difference multi − single.
  """
  path = os.path.join(workdir, 'runs.jsonl')
  fp = runs.fingerprint(config)
  done = runs.load_done(path, fp)
  records: dict[tuple[str, int], dict] = {}

  def run(name: str, seed: int, fn) -> dict:
    if (name, seed) in done:
      info('%-12s seed %d: recorded in runs.jsonl', name, seed)
      return done[(name, seed)]
    t0 = time.perf_counter()
    results, draws = fn()
    rec = {'strategy': name, 'seed': seed, 'results': results, 'steps_per_task': draws,
           'seconds': time.perf_counter() - t0, 'config': fp}
    info('%-12s seed %d: %s (steps %s, %.0f s)', name, seed,
         ' '.join(f'{k}={v:.4f}' for k, v in results.items()), draws, rec['seconds'])
    runs.append_record(path, rec)
    return rec

  steps = config.multitask.steps

  def trained(seed, only=None):
    def fn():
      params, draws = train(mt, seed, steps, only=only)
      return mt.evaluate(params, None if only is None else [only]), draws
    return fn

  for seed in range(config.seeds):
    sampler = TaskSampler(mt.sizes, config.multitask.mixing, config.multitask.temperature, seed)
    drawn = set(sampler.tasks(0, steps).tolist())
    if len(drawn) < len(mt.names):
      missing = [t for i, t in enumerate(mt.names) if i not in drawn]
      raise ConfigError(f'multitask.steps={steps}: seed {seed} never draws {missing}; '
                        'raise the steps')
    records[('multitask', seed)] = run('multitask', seed, trained(seed))
    for t in mt.names:
      records[(f'single_{t}', seed)] = run(f'single_{t}', seed, trained(seed, only=t))

  seeds = list(range(config.seeds))
  rows = []
  for t in mt.names:
    key, label, scale, higher = METRICS[t]
    if t == 'lm' and key not in records[('multitask', 0)]['results']:
      continue
    m = [records[('multitask', s)]['results'][key] * scale for s in seeds]
    o = [records[(f'single_{t}', s)]['results'][key] * scale for s in seeds]
    diff = [a - b for a, b in zip(m, o)]
    rows.append({'task': t, 'metric': label, 'higher_is_better': higher,
                 'steps': [records[('multitask', s)]['steps_per_task'][t] for s in seeds],
                 'multitask': m, 'single': o, 'multitask_mean_ci': mean_ci(m),
                 'single_mean_ci': mean_ci(o), 'diff': diff, 'diff_mean_ci': mean_ci(diff)})
  lines = [f'{"metric":<26} {"multi-task":>16} {"single task":>16} {"multi − single (paired)":>24}']
  for r in rows:
    f = lambda mc: f'{mc[0]:.2f} ± {mc[1]:.2f}'
    lines.append(f'{r["metric"]:<26} {f(r["multitask_mean_ci"]):>16} '
                 f'{f(r["single_mean_ci"]):>16} {f(r["diff_mean_ci"]):>24}')
  table = '\n'.join(lines)
  summary = {'tasks': mt.names, 'seeds': len(seeds), 'mixing': config.multitask.mixing,
             'steps': config.multitask.steps, 'rows': rows, 'table': table}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'compare.json'), summary)
    print(f'multi-task vs single task at equal per-task steps, {len(seeds)} seeds '
          f'(mean ± 95% CI):\n{table}')
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  mt = MultiTask(config)
  c = config.multitask
  probs = TaskSampler(mt.sizes, c.mixing, c.temperature).probs
  info('multi-task: %s', ', '.join(f'{t} ({n} examples, p={p:.3f})'
                                   for t, n, p in zip(mt.names, mt.sizes, probs)))
  if config.get('compare_single', False):
    if config.seeds < 1:
      raise ConfigError(f'seeds must be >= 1, got {config.seeds}')
    return compare_single(mt, config, workdir)
  writer = MetricWriter(workdir)
  try:
    params, draws = train(mt, config.seed, c.steps, writer)
  finally:
    writer.close()
  results = mt.evaluate(params)
  summary = {'tasks': mt.names, 'sizes': mt.sizes, 'mixing': c.mixing,
             'probabilities': probs.tolist(), 'steps_per_task': draws, 'results': results,
             'seconds': time.perf_counter() - t0}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'multitask.json'), summary)
    print(' '.join(f'{k}={v:.4f}' for k, v in results.items()),
          '| steps per task:', draws)
  return summary
