"""Multi-task learning: one shared LM backbone, one head per task, a task-mixing sampler.

(Over 300 lines: the multi-task run and its single-task comparison share the
step, batch and evaluation code that a split would have to pass between files.)

Tasks (`multitask.tasks`: names of sub-configs, each with a `family`):
`classify` → `downstream.classification.ClassificationTask` (`lm_encoder`
model), `tag` → `downstream.tagging.TaggingTask`, `language_model` →
`downstream.language_model.LanguageModelTask` (next-token prediction through
the backbone's own tied output), `masked_lm` → `downstream.masked_lm.MaskedLMTask`
(the MLM objective of an encoder backbone, `init.kind='mlm'`; its MLM head is the
task's head). The shipped config names them `mr`, `ner`
and `lm`; nothing here depends on the names.

Parameters: `{'backbone': shared LM body, 'heads': {'mr': ..., 'ner': ...}}`
(the LM task has no head of its own). The backbone is grafted from the
pretrained LM run (`init.path`) or, with `multitask.init='scratch'`,
freshly initialised. At every step `fusion.mixing.TaskSampler` picks one task
(proportional / temperature / equal mixing over the tasks' training sizes);
that task's batch updates the backbone and its own head. The backbone has one
AdamW; each head has its own AdamW that only steps when its task is drawn
(so an idle head is not moved by stale momentum, as in PyTorch where a
parameter without a gradient is skipped). One jitted step per task, on the
shared loop (`training.loop`): checkpoints, exact resume, metrics, SIGTERM
and the non-finite guard, in `workdir` (or `workdir/runs/<name>-seed<k>` for
the runs of `compare_single`).

Logged every `train.log_every_steps` (metrics.jsonl / TensorBoard): per-task mean
loss and how many steps each task got. At the end: MR test accuracy, NER test
span F1, LM held-out perplexity, written to `multitask.json`.

`compare_single=True` (with `seeds`): the measured question — does sharing
help? Each seed runs the multi-task model and then each task alone for the
number of steps it got in the multi-task run, on the same batches from the same
initialisation; `compare.json` and the printed table give per-task means ± 95%
CI and the seed-paired difference (`compare_single`).
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.downstream.classification import ClassificationTask
from translearn_jax.downstream.language_model import LanguageModelTask
from translearn_jax.downstream.masked_lm import MaskedLMTask
from translearn_jax.downstream.tagging import TaggingTask
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.experiments import runs
from translearn_jax.fusion.mixing import TaskSampler, task_probabilities
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import optimizers
from translearn_jax.training.loop import Run
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.state import TrainState
from translearn_jax.transfer import sources

# sub-config `family` -> the task it builds (the backbone's LM source is given to all)
TASK_FAMILIES = {
    'classify': lambda c, src: ClassificationTask(c),
    'tag': lambda c, src: TaggingTask(c),
    'language_model': lambda c, src: LanguageModelTask(c.data, src, c.seq_len, c.eval_rows),
    'masked_lm': lambda c, src: MaskedLMTask(c.data, src, c.seq_len, c.eval_rows,
                                             c.get('mask_rate')),
}


class MultiTask:
  def __init__(self, config):
    self.config = config
    names = [t.strip() for t in config.multitask.tasks.split(',') if t.strip()]
    if not names:
      raise ConfigError('config.multitask.tasks is empty')
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:     # a task named twice would be drawn twice as often, whatever the mixing
      raise ConfigError(f'config.multitask.tasks: {repeated} named more than once in '
                        f'{config.multitask.tasks!r}')
    for n in names:
      if n not in config or not hasattr(config[n], 'keys') or 'family' not in config[n]:
        raise ConfigError(f'config.multitask.tasks: {n!r} is not a sub-config with a family '
                          f'({sorted(TASK_FAMILIES)})')
      if config[n].family not in TASK_FAMILIES:
        raise ConfigError(f'config.{n}.family: must be one of {sorted(TASK_FAMILIES)}, got '
                          f'{config[n].family!r}')
    self.names = names
    kind = config.init.get('kind', 'lm')
    if kind not in sources.BACKBONE_KINDS:
      raise ConfigError(f'config.init.kind: the shared backbone is an LM or masked-LM run '
                        f'({sources.BACKBONE_KINDS}), got {kind!r}')
    self.source = sources.load(kind, config.init.path, field='init.path')
    self.tasks = {n: TASK_FAMILIES[config[n].family](config[n], self.source) for n in names}
    self.sizes = [self.tasks[n].num_examples('train') for n in names]
    for n, task in self.tasks.items():   # before training: a task it could not score
      if not task.num_examples(task.eval_split):
        raise ConfigError(f'config.{n}: the task has no {task.eval_split} examples to score '
                          '(an LM task: data.valid_fraction > 0 or data.valid_path)')

  def init_params(self, seed: int, names: Optional[Sequence[str]] = None):
    """Backbone + the heads of `names` (default: all tasks). The backbone is the one
    the full task list starts from (the first task's initialisation), whatever subset
    is asked for, so a single-task baseline starts where the multi-task run does."""
    strategy = 'scratch' if self.config.multitask.init == 'scratch' else 'finetune'
    names = self.names if names is None else names
    first = self.names[0]
    inits = {t: self.tasks[t].init_params(seed, strategy)[0]
             for t in self.names if t in names or t == first}
    heads = {t: inits[t]['head'] for t in names if 'head' in inits[t]}
    return {'backbone': inits[first]['backbone'], 'heads': heads}

  def batch(self, task: str, draw: int, bs: int, seed: int) -> dict:
    """The `draw`-th batch of `task` (epoch-wise reshuffled, deterministic)."""
    n = self.tasks[task].num_examples('train')
    per_epoch = max(n // bs, 1)
    epoch, i = divmod(draw, per_epoch)
    order = np.random.default_rng([seed, self.names.index(task), epoch]).permutation(n)
    return self.tasks[task].batch(order[i * bs:(i + 1) * bs])

  def evaluate(self, params, names: Optional[Sequence[str]] = None) -> dict:
    out = {}
    for t in self.names if names is None else names:
      task = self.tasks[t]     # a task without evaluation examples says so (its own error)
      full = {'backbone': params['backbone'], 'head': params['heads'].get(t)}
      out[f'{t}_{task.eval_split}_{task.metric}'] = task.evaluate(full, task.eval_split)
    return out


def train(mt: MultiTask, seed: int, steps: int, run_dir: str, only: Optional[str] = None,
          log_every: int = 50, progress: bool = False) -> tuple[dict, dict]:
  """(final params, per-task step counts) of `steps` multi-task steps, on the shared loop.

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
  o = mt.config.optim
  optim = {'learning_rate': o.learning_rate, 'schedule': o.schedule,
           'weight_decay': o.weight_decay, 'grad_clip': 1.0, 'no_decay': ''}

  def adamw(n):
    return optimizers.make(optim, None, max(n, 1))[0]
  tx_b = adamw(len(run_steps))
  tx_h = {t: adamw(order.count(t)) for t in params['heads']}
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state={'backbone': tx_b.init(params['backbone']),
                                'heads': {t: tx_h[t].init(h) for t, h in params['heads'].items()}},
                     rng=jax.random.key(seed + 3000))
  mesh = mesh_lib.mesh_from_config(mt.config)
  state, shardings = place_state(mt, state, mesh, mesh_lib.rules_from_config(mt.config))
  if shardings is not None:
    mesh_lib.require_batch_split(mt.config.train.batch_size, mesh, 'config.train.batch_size')

  def make_step(task):
    loss_fn = mt.tasks[task].loss
    has_head = task in tx_h

    def loss(b, h, batch, rng):
      return loss_fn({'backbone': b, 'head': h}, batch, rng)

    def step(state, batch, s):
      rng = jax.random.fold_in(state.rng, s)   # the multi-task step's key, also when `only`
      b, ob = state.params['backbone'], state.opt_state['backbone']
      h = state.params['heads'].get(task, {})
      value, (gb, gh) = jax.value_and_grad(loss, argnums=(0, 1))(b, h, batch, rng)
      ub, ob = tx_b.update(gb, ob, b)
      params = {'backbone': optax.apply_updates(b, ub), 'heads': dict(state.params['heads'])}
      opt_state = {'backbone': ob, 'heads': dict(state.opt_state['heads'])}
      if has_head:
        uh, oh = tx_h[task].update(gh, state.opt_state['heads'][task], h)
        params['heads'][task] = optax.apply_updates(h, uh)
        opt_state['heads'][task] = oh
      return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
              {f'{task}_loss_sum': value, 'loss_sum': value})
    return mesh_lib.jit_step(step, mesh, shardings, replicated_args=1)   # updated in place

  steps_fn = {t: make_step(t) for t in names}

  def step_fn(state, item):
    task, s, batch, draws = item
    if shardings is not None:
      batch = mesh_lib.shard_global_batch(batch, mesh)
    state, sums = steps_fn[task](state, batch, np.int32(s))
    return state, {**sums, f'{task}_loss_count': 1.0, 'loss_count': 1.0,
                   **{f'{t}_steps': float(d) for t, d in draws.items()}}

  def stream(position):
    draws = dict(position.get('draws', {t: 0 for t in names}))
    bs = mt.config.train.batch_size
    for n in range(position.get('n', 0), len(run_steps)):
      s = run_steps[n]
      task = order[s]
      batch = mt.batch(task, draws[task], bs, seed)
      draws[task] += 1
      yield {'n': n + 1, 'draws': dict(draws)}, (task, s, batch, dict(draws))

  with Run(run_dir, keep=2,
           label=f'multi-task{f" ({only} alone)" if only else ""} seed {seed}') as run:
    state, position = run.restore(state)
    result = run.train(
        state=state, stream=stream(position), step_fn=step_fn, to_device=lambda b: b,
        total_steps=len(run_steps), steps_per_call=1,
        checkpoint_every=max(len(run_steps) // 4, 1), log_every=log_every,
        units_per_step=mt.config.train.batch_size, units_name='examples', data_state=position,
        progress=progress)
  draws = dict(result.data_state.get('draws', position.get('draws', {t: 0 for t in names})))
  if result.stopped_by_signal:
    raise StoppedBySignal()
  return result.state.params, draws


def place_state(mt: MultiTask, state: TrainState, mesh, rules):
  """(state placed over `mesh`, its shardings), or (state, None) on a one-device mesh.

  The shared backbone is placed by its logical axis names and the mesh rules (the first
  task whose `abstract_params` names them; as in fine-tuning), its Adam moments mirror
  it, and the heads, their optimiser states, the counts, step and key are replicated."""
  if mesh.devices.size == 1:
    return state, None
  repl = mesh_lib.replicated(mesh)
  boxed = next((b['backbone'] for b in (mt.tasks[t].abstract_params() for t in mt.names)
                if b is not None), None)
  backbone = (jax.tree.map(lambda _: repl, state.params['backbone']) if boxed is None
              else mesh_lib.param_shardings(boxed, mesh, rules))
  params = {'backbone': backbone, 'heads': jax.tree.map(lambda _: repl, state.params['heads'])}
  opt_state = {'backbone': mesh_lib.mirror_shardings(
      state.opt_state['backbone'], state.params['backbone'], backbone, mesh),
      'heads': jax.tree.map(lambda _: repl, state.opt_state['heads'])}
  shardings = TrainState(step=repl, params=params, opt_state=opt_state, rng=repl)
  return jax.device_put(state, shardings), shardings


class StoppedBySignal(Exception):
  """SIGTERM arrived during a multi-task run; it checkpointed and the command can be rerun."""


def compare_single(mt: MultiTask, config, workdir: str) -> dict:
  """Multi-task vs each task alone at equal per-task steps, over `config.seeds` seeds.

  Per seed: the multi-task run, then every task alone on exactly the steps that
  drew it in that run (same batches, dropout keys, initialisation and head
  schedule; see `train(only=...)`). Runs are
  appended to `runs.jsonl` as they finish and skipped when the command is
  rerun in the same workdir (`experiments.runs`' resume rules). Reports, per
  task, both means ± 95% CI and the seed-paired difference multi − single.
  """
  path = os.path.join(workdir, 'runs.jsonl')
  signed = runs.stamp(config)
  done = runs.load_done(path, config)
  records: dict[tuple[str, int], dict] = {}

  def run(name: str, seed: int, fn) -> dict:
    if (name, seed) in done:
      info('%-12s seed %d: recorded in runs.jsonl', name, seed)
      return done[(name, seed)]
    t0 = time.perf_counter()
    results, draws = fn(runs.run_dir(workdir, name, seed))
    rec = {'strategy': name, 'seed': seed, 'results': results, 'steps_per_task': draws,
           'seconds': time.perf_counter() - t0, **signed}
    info('%-12s seed %d: %s (steps %s, %.0f s)', name, seed,
         ' '.join(f'{k}={v:.4f}' for k, v in results.items()), draws, rec['seconds'])
    runs.append_record(path, rec)
    runs.discard_checkpoints(runs.run_dir(workdir, name, seed))
    return rec

  steps = config.train.steps

  def trained(seed, only=None):
    def fn(run_dir):
      params, draws = train(mt, seed, steps, run_dir, only=only,
                            log_every=config.train.log_every_steps)
      return mt.evaluate(params, None if only is None else [only]), draws
    return fn

  for seed in range(config.seeds):
    sampler = TaskSampler(mt.sizes, config.multitask.mixing, config.multitask.temperature, seed)
    drawn = set(sampler.tasks(0, steps).tolist())
    if len(drawn) < len(mt.names):
      missing = [t for i, t in enumerate(mt.names) if i not in drawn]
      raise ConfigError(f'train.steps={steps}: seed {seed} never draws {missing}; '
                        'raise the steps')
    records[('multitask', seed)] = run('multitask', seed, trained(seed))
    for t in mt.names:
      records[(f'single_{t}', seed)] = run(f'single_{t}', seed, trained(seed, only=t))

  seeds = list(range(config.seeds))
  rows = []
  for t in mt.names:
    task = mt.tasks[t]
    key = f'{t}_{task.eval_split}_{task.metric}'
    scale, higher = task.scale, task.higher_is_better
    label = (f'{t} {task.eval_split} {task.metric}{" %" if scale == 100 else ""}'
             f'{"" if higher else " (lower=better)"}')
    if key not in records[('multitask', 0)]['results']:
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
    f = lambda mc: fmt(mc[0], mc[1], scale=1.0)
    lines.append(f'{r["metric"]:<26} {f(r["multitask_mean_ci"]):>16} '
                 f'{f(r["single_mean_ci"]):>16} {f(r["diff_mean_ci"]):>24}')
  table = '\n'.join(lines)
  summary = {'tasks': mt.names, 'seeds': len(seeds), 'mixing': config.multitask.mixing,
             'steps': config.train.steps, 'rows': rows, 'table': table}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'compare.json'), summary)
    print(f'multi-task vs single task at equal per-task steps, {len(seeds)} seeds '
          f'(mean ± 95% CI):\n{table}')
  return summary


INITS = ('pretrained', 'scratch')


def validate(config: ml_collections.ConfigDict) -> None:
  """The mixing and the backbone's start, refused by name before any data is read (a
  misspelt `init` ran from the pretrained backbone; a NaN temperature drew the first task
  only)."""
  c = config.multitask
  if c.get('init', 'pretrained') not in INITS:
    raise ConfigError(f"config.multitask.init: must be 'pretrained' (graft the LM run) or "
                      f"'scratch', got {c.get('init')!r}")
  try:
    task_probabilities([1, 2], c.mixing, c.get('temperature', 1.0))
  except ConfigError as e:
    field = 'temperature' if str(e).startswith('mixing temperature') else 'mixing'
    raise ConfigError(f'config.multitask.{field}: {e}') from None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
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
  try:
    params, draws = train(mt, config.seed, config.train.steps, workdir,
                          log_every=config.train.log_every_steps,
                          progress=config.get('progress', False))
  except StoppedBySignal:
    return {'stopped_by_signal': True, 'tasks': mt.names}
  results = mt.evaluate(params)
  summary = {'tasks': mt.names, 'sizes': mt.sizes, 'mixing': c.mixing,
             'probabilities': probs.tolist(), 'steps_per_task': draws, 'results': results,
             'seconds': time.perf_counter() - t0}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'multitask.json'), summary)
    print(' '.join(f'{k}={v:.4f}' for k, v in results.items()),
          '| steps per task:', draws)
  return summary
