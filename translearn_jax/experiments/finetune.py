"""One fine-tuning run of any `downstream.task.Task` with a transfer strategy, on the shared loop.

`finetune(task, strategy, seed, config, run_dir)` builds the strategy's
optimiser (`transfer.strategies` → `training.optimizers.make`), then trains
through `training.loop.train_loop`, so every fine-tuning run has what
pretraining runs have: orbax checkpoints in `run_dir/checkpoints` (each epoch
by default) with exact resume (state, data position and the best epoch so
far), TensorBoard + `metrics.jsonl`, a progress bar, SIGTERM → checkpoint →
stop, and the non-finite guard (exit 3, naming the strategy and seed).

Model selection: after each epoch `BestEpoch` evaluates the dev split; the
epoch with the best dev metric is kept and its test metric reported. With
`save=True` the model of each new best epoch is saved (`serving.saved_model`)
as `run_dir/best_model/`, so a run killed and resumed still has it; the
comparison (`experiments.runs`) then keeps or drops it. Batches
are the task's `epoch_batches(seed, epoch)`; dropout keys are
`fold_in(key(seed + task.dropout_seed_offset), step)`.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from translearn_jax.errors import DataError
from translearn_jax.serving import saved_model
from translearn_jax.training import memo
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training.loop import Hook, Run
from translearn_jax.training.metrics import info
from translearn_jax.training.state import TrainState
from translearn_jax.transfer import strategies


def strategy_config(config, strategy: str, steps_per_epoch: int) -> strategies.StrategyConfig:
  """The strategy's optimiser settings; `transfer.unfreeze_every=0` unfreezes one group per
  epoch of this run's training data (`steps_per_epoch`), as ULMFiT does."""
  t, o = config.transfer, config.optim
  return strategies.StrategyConfig(
      strategy='finetune' if strategy == 'scratch' else strategy,
      learning_rate=o.learning_rate, schedule=o.schedule, warmup_steps=o.warmup_steps,
      factor=t.factor,
      unfreeze_every=strategies.unfreeze_interval(t.unfreeze_every, steps_per_epoch),
      # scratch is the baseline every gain is paired with: it trains all of its (random)
      # parameters; freezing its bottom groups would freeze random weights
      freeze_bottom=0 if strategy == 'scratch' else t.get('freeze_bottom', 0),
      weight_decay=o.weight_decay,
      grad_clip=o.grad_clip)


BEST_MODEL = 'best_model'     # run_dir/best_model: the saved model of the best dev epoch


def save_best(run_dir: str, task, params, config, strategy: str, seed: int, best: dict,
              report=None) -> str:
  """Saves `params` as the run's best model, `run_dir/best_model` (atomically)."""
  scores = {'metric': task.metric, 'dev': best['dev'], 'test': best['test'],
            'epoch': best['epoch'], **({'l2': best['l2']} if 'l2' in best else {})}
  return saved_model.save_task_model(
      os.path.join(run_dir, BEST_MODEL), task, params,
      saved_model.provenance(config, strategy=strategy, seed=seed, scores=scores,
                             report=report))


class BestEpoch(Hook):
  """After each epoch: the dev metric; the test metric of the best dev epoch so far, and
  `on_best(params, best)` when an epoch is the best so far."""

  def __init__(self, task, steps_per_epoch: int, label: str,
               on_best: Optional[Callable[[object, dict], None]] = None):
    self.task, self.every, self.label, self.on_best = task, steps_per_epoch, label, on_best
    self.best = {'dev': None, 'test': None, 'epoch': 0}

  def better(self, dev: float) -> bool:
    best = self.best['dev']
    return best is None or (dev > best if self.task.higher_is_better else dev < best)

  def __call__(self, step: int, state) -> dict:
    epoch = step // self.every
    dev = self.task.evaluate(state.params, 'dev')
    info('%s epoch %d: dev %s %.4f', self.label, epoch, self.task.metric, dev)
    if self.better(dev):
      if hasattr(self.task, 'evaluate_with_details'):   # e.g. NER scores per entity type
        test, details = self.task.evaluate_with_details(state.params, 'test')
        self.best = {'dev': dev, 'test': test, 'epoch': epoch, 'details': details}
      else:
        self.best = {'dev': dev, 'test': self.task.evaluate(state.params, 'test'),
                     'epoch': epoch}
      if self.on_best is not None:
        self.on_best(state.params, self.best)
    return {f'dev_{self.task.metric}': dev}

  def state_dict(self) -> dict:
    return dict(self.best)

  def load_state_dict(self, d: dict) -> None:
    if d:
      self.best = dict(d)


def epoch_stream(task, seed: int, batch_size: int, epochs: int, position: dict):
  """(data position after the batch, batch) from `position` on; deterministic per epoch."""
  for epoch in range(position.get('epoch', 0), epochs):
    batches = task.epoch_batches(seed, epoch, batch_size)
    start = position.get('batch', 0) if epoch == position.get('epoch', 0) else 0
    for i in range(start, len(batches)):
      after = {'epoch': epoch, 'batch': i + 1} if i + 1 < len(batches) else \
          {'epoch': epoch + 1, 'batch': 0}
      yield after, task.batch(batches[i])


def make_step(task, tx, frozen, stacked: bool = False, shardings=None, mesh=None):
  """Jitted `(state, batch) -> (state, metric sums)`; donates the state.

  `stacked`: the params, optimiser states, keys, batches and metrics carry a
  leading axis of runs (the seeds of a learning curve) trained together under
  `jax.vmap`; the step count is shared. `shardings` (a TrainState of shardings over
  `mesh`, see `place_state`): the state keeps that placement and batches are split over
  the mesh's batch axes. A task that names its loss (`Task.loss_fn`) gets one step per
  (loss, optimiser, frozen mask, placement) in a process: the seeds and strategies of a
  comparison that share them trace and compile it once (`training.memo`).
  """
  key, loss = task.loss_fn()
  if key is None:
    return _build_step(loss, tx, frozen, stacked, shardings, mesh)
  return _shared_step(key, loss, tx, frozen, stacked, shardings, mesh)


@memo.memoized(key=lambda key, loss, *rest: memo.key_of(key, *rest))
def _shared_step(key, loss, tx, frozen, stacked, shardings, mesh):
  return _build_step(loss, tx, frozen, stacked, shardings, mesh)


def _build_step(loss, tx, frozen, stacked, shardings, mesh):
  inner = strategies.make_train_step(loss, tx, frozen)

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    params, opt_state, loss = inner(state.params, state.opt_state, batch, rng)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            {'loss_sum': loss, 'loss_count': jnp.ones((), jnp.float32)})
  if stacked:
    axes = TrainState(step=None, params=0, opt_state=0, rng=0)
    step = jax.vmap(step, in_axes=(axes, 0), out_axes=(axes, 0))
  return mesh_lib.jit_step(step, mesh, shardings)


def place_state(task, state: TrainState, mesh, rules):
  """(state placed over `mesh`, its shardings), or (state, None) on a one-device mesh.

  Parameters are placed by their logical axis names and the mesh rules (the task's
  `abstract_params`; FSDP/tensor parallelism of a pretrained backbone, as in
  pretraining), the optimiser state mirrors them, and whatever the model leaves unnamed
  (heads, LoRA adapters, word-vector tables) is replicated. The grafted parameters are
  written into that placement."""
  if mesh.devices.size == 1:
    return state, None
  boxed = task.abstract_params()
  repl = mesh_lib.replicated(mesh)
  p_sh = (jax.tree.map(lambda _: repl, state.params) if boxed is None
          else mesh_lib.param_shardings(boxed, mesh, rules))
  shardings = TrainState(step=repl, params=p_sh, rng=repl, opt_state=mesh_lib.mirror_shardings(
      state.opt_state, state.params, p_sh, mesh))
  return jax.device_put(state, shardings), shardings


def finetune(task, strategy: str, seed: int, config, run_dir: str, save: bool = False) -> dict:
  """Trains one model; returns the best dev epoch's {'dev', 'test', 'epoch'} and the run's
  (final) params, graft report, strategy plan and whether a signal stopped it. `save`: the
  best dev epoch's model is saved as `run_dir/best_model`."""
  label = f'{strategy} seed {seed}'
  params, report = task.init_params(seed, strategy)
  train = config.train
  bs = train.batch_size
  steps_per_epoch = task.num_examples('train') // bs
  if steps_per_epoch < 1:
    raise DataError(f'{task.num_examples("train")} training examples cannot fill one batch '
                    f'of train.batch_size={bs}')
  total = steps_per_epoch * train.epochs
  tx, plan = strategies.build(strategy_config(config, strategy, steps_per_epoch), params,
                              task.groups, total)
  if report is not None:
    report.frozen = strategies.frozen_paths(params, task.groups, plan)
    report.refuse_frozen_random(params, strategy)
  frozen = strategies.frozen_mask(params, task.groups, plan)
  params = jax.tree.map(jnp.copy, params)  # own buffers: the step donates (updates in place)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.key(seed + task.dropout_seed_offset))
  mesh = mesh_lib.mesh_from_config(config)
  state, shardings = place_state(task, state, mesh, mesh_lib.rules_from_config(config))
  if shardings is not None:
    mesh_lib.require_batch_split(bs, mesh, 'train.batch_size', DataError)
  on_best = None
  if save:
    on_best = lambda p, b: save_best(run_dir, task, p, config, strategy, seed, b, report)
  best = BestEpoch(task, steps_per_epoch, label, on_best)
  with Run(run_dir, keep=config.get('keep_checkpoints', 2), label=label) as run:
    state, position = run.restore(state)
    result = run.train(
        state=state, stream=epoch_stream(task, seed, bs, train.epochs, position),
        step_fn=make_step(task, tx, frozen, shardings=shardings, mesh=mesh),
        to_device=(lambda b: b) if shardings is None else functools.partial(
            mesh_lib.shard_global_batch, mesh=mesh),
        total_steps=total,
        steps_per_call=1,
        checkpoint_every=train.get('checkpoint_every_steps', 0) or steps_per_epoch,
        log_every=train.get('log_every_steps', 0) or steps_per_epoch, units_per_step=bs,
        units_name='examples', data_state=position, progress=config.get('progress', False),
        hooks=[best])
  out = dict(best.best)
  out.update(strategy=strategy, seed=seed, params=result.state.params, report=report, plan=plan,
             stopped=result.stopped_by_signal)
  return out
