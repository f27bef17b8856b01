"""The training loop shared by all families.

It owns what every run needs: resume, stepping through a (resumable) input
stream, metrics, throughput and progress bar, periodic/final checkpoints,
SIGTERM → checkpoint → exit 0, and stopping on a non-finite loss without
touching the last good checkpoint. On resume from step S, `metrics.jsonl`
records after S are dropped and the open logging window is restored from the
checkpoint, so the file ends up as an uninterrupted run's (wall-clock fields
aside). A family supplies the jitted step function
(`state, device_batch -> state, metric sums`), the stream and the sharding;
periodic work that needs the train state (held-out evaluation, model
selection) is a `Hook`, called with the state after every `every`-th step.
`Run` is what every runner wraps around the loop: a run directory's
checkpointer and metric writer, resume, closing, and the run's summary.

The host never waits for a step it does not log or checkpoint: metrics are
fetched at logging steps only, and batches are sent to the devices two steps
ahead. Runs too short to checkpoint (the seeds of a learning-curve cell,
stacked under `jax.vmap`) use the same loop without a checkpointer or writer.

(Over 300 lines: the loop is one function on purpose — resume, logging
windows, hooks, checkpoints, signals and the non-finite guard share its state
— and `Run` is the few lines every runner wraps around it.)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
import types
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from translearn_jax.errors import NonFiniteLossError
from translearn_jax.training import distributed, preemption
from translearn_jax.training.checkpoint import Checkpointer
from translearn_jax.training.metrics import MetricWriter, info
from translearn_jax.training.preemption import StopSignal


@dataclasses.dataclass
class LoopResult:
  state: Any
  data_state: dict
  steps: int
  stopped_by_signal: bool
  train_seconds: float
  units: float          # words/tokens processed, first (compiling) call excluded
  units_total: float    # words/tokens processed in this process lifetime
  last_metrics: dict
  units_name: str = 'words'
  # where the loop's wall time went: waiting for the next batch (the host's input pipeline
  # and the transfer call), the first (compiling) call with its fetch, and checkpoint saves
  # (their blocking part); the loop's whole wall time
  timing: dict = dataclasses.field(default_factory=dict)


class Hook:
  """Periodic work that sees the state: `hook(step, state) -> metrics` after each step that
  is a multiple of `every` (and after the last step if `at_end`). Its `state_dict()` is saved
  with each checkpoint and handed back through `load_state_dict` on resume, so a hook that
  keeps a record (the best epoch so far) resumes exactly."""
  every: int = 0
  at_end: bool = False

  def __call__(self, step: int, state) -> dict:
    return {}

  def state_dict(self) -> dict:
    return {}

  def load_state_dict(self, d: dict) -> None:
    del d


class Every(Hook):
  """`fn(step, state) -> metrics` every `every` steps (0: never), and at the end if `at_end`."""

  def __init__(self, every: int, fn: Callable[[int, Any], dict], at_end: bool = False):
    self.every, self.fn, self.at_end = every, fn, at_end

  def __call__(self, step: int, state) -> dict:
    return self.fn(step, state)


@jax.jit
def _all_finite(params):
  """Whether every parameter is finite (checked before each checkpoint save)."""
  return jax.tree.reduce(lambda a, b: a & b,
                         jax.tree.map(lambda x: jnp.isfinite(x).all(), params))


def _mean(total, count):
  """total / count (a float, or per-run values for a step over stacked runs)."""
  m = total / np.maximum(count, 1e-12)
  return float(m) if np.ndim(m) == 0 else m


def _finish(sums: Mapping[str, Any]) -> dict:
  """Metric sums -> means: `X_sum` / `X_count` pairs become `X`."""
  out = {}
  for k, v in sums.items():
    if k.endswith('_sum'):
      base = k[:-4]
      out[base] = _mean(v, sums.get(base + '_count', 1.0))
    elif not k.endswith('_count'):
      out[k] = v
  return out


def last_good(checkpointer: Optional[Checkpointer]) -> str:
  """'last good checkpoint (step N) left intact', naming only a verified step."""
  if checkpointer is None:
    return 'this run keeps no checkpoints'
  step = checkpointer.last_good_step()
  if step is None:
    return 'no checkpoint was saved yet'
  return f'last good checkpoint (step {step}) left intact'


def _host(sums: Mapping[str, Any]) -> dict:
  """Fetched metric sums as floats (numpy float64 vectors for a step over stacked runs)."""
  return {k: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64) for k, v in sums.items()}


def _loss(sums: Mapping[str, Any]):
  return _mean(sums.get('loss_sum', 0.0), sums.get('loss_count', 1.0))


def prefetched(stream, to_device: Callable, depth: int):
  """`(data_state, batch on the devices)` of `stream`, `depth` batches ahead: transfers
  are asynchronous, so the next batches travel while the current step computes."""
  ahead: collections.deque = collections.deque()
  for data_state, host_batch in stream:
    ahead.append((data_state, to_device(host_batch)))
    if len(ahead) > depth:
      yield ahead.popleft()
  while ahead:
    yield ahead.popleft()


# stands in for `StopSignal` in a run without checkpoints: a signal is not caught
_NO_STOP = types.SimpleNamespace(requested=False, signum=None)


def train_loop(*, state: Any, stream: Iterator[tuple[dict, Mapping[str, np.ndarray]]],
               step_fn: Callable, to_device: Callable, checkpointer: Optional[Checkpointer],
               writer: Optional[MetricWriter], total_steps: int, steps_per_call: int,
               checkpoint_every: int, log_every: int, units_per_step: float,
               units_name: str = 'words', data_state: Optional[dict] = None,
               progress: bool = True,
               postprocess: Optional[Callable[[dict], dict]] = None,
               units_key: Optional[str] = None, hooks: Sequence[Hook] = (),
               sync_every_step: bool = False, prefetch: int = 2) -> LoopResult:
  """Runs `step_fn` over `stream` until it ends or a signal arrives.

  Throughput counts `units_per_step` per step, or, with `units_key`, the value
  the step returns under that key (e.g. real, non-padding tokens). `hooks` run
  after the steps they ask for, before that step's metrics are written and its
  checkpoint is taken; their metrics join the step's record.

  Before every checkpoint the parameters are checked to be finite, so a
  diverged state is never saved over the last good one. A SIGTERM recorded
  before the loop (see `preemption`) returns at once, untrained and unsaved.

  With several processes (`training.distributed`), SIGTERM is JAX's preemption notice: a
  signal that reaches any one process stops all of them at the same step (JAX's
  preemption sync point, asked at every step), where they checkpoint together.

  `checkpointer=None`: nothing is resumed or saved, and a SIGTERM is not
  caught (it is left to `preemption`: nothing could be kept). `writer=None`:
  metrics are only returned (`last_metrics`).

  The host does not wait for each step (`sync_every_step=False`, the default): the
  steps' metrics stay on the device until the next logging step, checkpoint or the end
  (and the first, compiling, call), are fetched together (explicitly: the loop makes no
  implicit device-to-host transfer) and checked for a non-finite loss one by one; the
  next `prefetch` batches are already on their way to the devices while a step runs. A
  step over runs stacked by `jax.vmap` may return one value per run (vectors; then pass
  no writer and no progress bar): the error's `runs` lists the runs whose loss was not
  finite in any step fetched with it. `sync_every_step=True` fetches every step.
  """
  timing = {'input_seconds': 0.0, 'first_call_seconds': 0.0, 'save_seconds': 0.0}
  loop_start = time.perf_counter()

  def save(step, state, data_state):
    t0 = time.perf_counter()
    try:
      if not bool(jax.device_get(_all_finite(state.params))):
        raise NonFiniteLossError(
            f'parameters are not finite at step {step}; run stopped, {last_good(checkpointer)}')
      checkpointer.save(step, state, data_state, loop_state={
          'window_sums': window_sums,
          'hooks': {str(i): h.state_dict() for i, h in enumerate(hooks)}})
      if writer is not None:
        writer.flush()
    finally:
      timing['save_seconds'] += time.perf_counter() - t0

  step = int(jax.device_get(state.step))
  last_saved = step
  data_state = dict(data_state or {})
  if writer is not None:
    writer.drop_after(step)
  multi = jax.process_count() > 1
  if preemption.received() is not None:
    info('signal %s arrived before training: exiting without training', preemption.received())
    return LoopResult(state=state, data_state=data_state, steps=step, stopped_by_signal=True,
                      train_seconds=0.0, units=0.0, units_total=0.0, last_metrics={},
                      units_name=units_name)
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar = tqdm(total=total_steps, initial=min(step, total_steps), unit='step',
               dynamic_ncols=True, mininterval=1.0)
  window_sums: dict[str, Any] = {}
  resumed = checkpointer.loop_state(step) if checkpointer is not None else None
  if resumed:  # the logging window the checkpoint was taken in, and the hooks' records
    window_sums = dict(resumed.get('window_sums', {}))
    for i, h in enumerate(hooks):
      h.load_state_dict(resumed.get('hooks', {}).get(str(i), {}))
  window_start, window_steps, window_units = time.perf_counter(), 0, 0.0
  train_time, units, units_all, first_call = 0.0, 0.0, 0.0, True
  last_metrics: dict = {}
  stopped = False
  pending: list[tuple[int, Any]] = []  # (step count after it, its metric sums on the device)

  def fetch():
    """Waits for the pending steps' metrics; accounts them in order, or raises at the
    first non-finite loss."""
    nonlocal window_steps, window_units, units, units_all
    if not pending:
      return
    on_device = [x for _, x in pending]
    fetched = [(s, _host(x)) for (s, _), x in zip(pending, jax.device_get(on_device))]
    pending.clear()
    for s, sums in fetched:
      loss = _loss(sums)
      if not np.isfinite(loss).all():
        if bar:
          bar.close()
        runs = np.flatnonzero(~np.all([np.isfinite(_loss(x)) for _, x in fetched], axis=0))
        raise NonFiniteLossError(
            f'loss is {loss} in steps {s - steps_per_call + 1}..{s}; run stopped, '
            f'{last_good(checkpointer)}', runs=runs.tolist() if np.ndim(loss) else ())
      step_units = sums[units_key] if units_key else units_per_step * steps_per_call
      units_all += step_units
      if not first_call:  # compilation: not counted as training throughput
        units += step_units
        window_steps += steps_per_call
        window_units += step_units
      for k, v in sums.items():  # sums accumulate; other metrics keep the latest value
        additive = k.endswith(('_sum', '_count'))
        window_sums[k] = window_sums.get(k, 0.0) + v if additive else v

  # Several processes: JAX's preemption notifier owns SIGTERM (no handler of ours may
  # take it from one process alone); see `distributed.preemption_sync`.
  watch = checkpointer is not None and not multi
  with StopSignal() if watch else contextlib.nullcontext(_NO_STOP) as stop:
    for next_data_state, device_batch in _waited(prefetched(stream, to_device, prefetch),
                                                 timing):
      t0 = time.perf_counter()
      state, sums = step_fn(state, device_batch)
      step += steps_per_call
      data_state = next_data_state
      pending.append((step, sums))
      log_now = step // log_every != (step - steps_per_call) // log_every or step >= total_steps
      save_now = checkpointer is not None and step - last_saved >= checkpoint_every
      if sync_every_step or first_call or log_now or save_now:
        fetch()
      dt = time.perf_counter() - t0
      if first_call:
        first_call = False
        window_start = time.perf_counter()
        timing['first_call_seconds'] = window_start - t0
      else:
        train_time += dt
      if bar:
        bar.update(steps_per_call)
      hook_metrics = {}
      for h in hooks:
        if (h.every and step // h.every != (step - steps_per_call) // h.every) or (
            h.at_end and step >= total_steps):
          hook_metrics.update(h(step, state))
      if log_now:
        elapsed = time.perf_counter() - window_start
        last_metrics = _finish(window_sums)
        if window_steps and elapsed > 0:
          last_metrics[f'{units_name}_per_sec'] = window_units / elapsed
          last_metrics['steps_per_sec'] = window_steps / elapsed
        last_metrics.update(hook_metrics)
        hook_metrics = {}
        if postprocess:
          last_metrics = postprocess(last_metrics)
        if writer is not None:
          writer.write(step, last_metrics)
        if bar:
          bar.set_postfix({k: f'{v:.4g}' for k, v in last_metrics.items()
                           if k in ('loss', 'learning_rate', f'{units_name}_per_sec',
                                    'valid_perplexity', 'mfu')})
        window_sums, window_steps, window_start = {}, 0, time.perf_counter()
        window_units = 0.0
      if hook_metrics and writer is not None:  # a hook ran between two logging steps
        writer.write(step, hook_metrics)
      if multi and checkpointer is not None:
        # the same answer on every process; JAX stops at the largest id any process gave +1,
        # so the ids count calls (a step count moving by steps_per_call never reached it)
        stop_now = distributed.preemption_sync(step // steps_per_call)
      else:
        stop_now = stop.requested
      if stop_now:
        info('signal %s: checkpointing at step %d and exiting',
             stop.signum or 'SIGTERM (to one of the processes)', step)
        fetch()
        save(step, state, data_state)
        last_saved = step
        stopped = True
        break
      if save_now:
        save(step, state, data_state)
        last_saved = step
  if bar:
    bar.close()
  fetch()  # steps not fetched yet (sync_every_step=False)
  if checkpointer is not None and not stopped and (
      step != last_saved or checkpointer.latest_step() is None):
    save(step, state, data_state)
  timing['loop_seconds'] = time.perf_counter() - loop_start
  return LoopResult(state=state, data_state=data_state, steps=step, stopped_by_signal=stopped,
                    train_seconds=train_time, units=units, units_total=units_all,
                    last_metrics=last_metrics, units_name=units_name, timing=timing)


def _waited(batches, timing: dict):
  """`batches`, adding the time each `next` waits to `timing['input_seconds']`."""
  while True:
    t0 = time.perf_counter()
    try:
      item = next(batches)
    except StopIteration:
      return
    finally:
      timing['input_seconds'] += time.perf_counter() - t0
    yield item


class Run:
  """A run directory on the loop: `with Run(workdir, keep, label) as run:` opens its
  `Checkpointer` (keeping `keep` steps) and `MetricWriter`, and closes both on leaving.

  `run.restore(state)` resumes from the newest checkpoint, `run.train(...)` is
  `train_loop` with the two (a non-finite loss is re-raised with `label` in
  front, naming the run), and `run.summary(result)` the run's record.
  """

  def __init__(self, workdir: str, keep: int = 2, label: str = ''):
    self.label = label
    self.start = time.perf_counter()
    self.checkpointer = Checkpointer(workdir, max_to_keep=keep)
    try:
      self.writer = MetricWriter(workdir)
    except BaseException:
      self.checkpointer.close()
      raise

  def __enter__(self) -> 'Run':
    return self

  def __exit__(self, *exc) -> bool:
    try:
      self.writer.close()
    finally:
      self.checkpointer.close()
    return False

  @property
  def resuming(self) -> bool:
    """Whether the directory holds a checkpoint to resume from."""
    return self.checkpointer.latest_step() is not None

  def restore(self, state: Any) -> tuple[Any, dict]:
    """(state, data position) of the newest checkpoint, or (`state`, {}) in a fresh directory."""
    if not self.resuming:
      return state, {}
    state, position = self.checkpointer.restore(state)
    where = ', '.join(f'{k} {v}' for k, v in position.items())
    info('%sresumed at step %d%s', f'{self.label}: ' if self.label else '',
         int(jax.device_get(state.step)), f' ({where})' if where else '')
    return state, position

  def train(self, **loop_args) -> LoopResult:
    """`train_loop(checkpointer=..., writer=..., **loop_args)`."""
    try:
      return train_loop(checkpointer=self.checkpointer, writer=self.writer, **loop_args)
    except NonFiniteLossError as e:
      if not self.label:
        raise
      raise NonFiniteLossError(f'{self.label}: {e}', runs=e.runs) from None

  def summary(self, result: LoopResult) -> dict:
    """steps, whether a signal stopped the run, wall seconds since the run was opened,
    training seconds and units per second over them (compilation excluded; None before
    any timed step)."""
    return {'steps': result.steps, 'stopped_by_signal': result.stopped_by_signal,
            'wall_seconds': time.perf_counter() - self.start,
            'train_seconds': result.train_seconds,
            f'{result.units_name}_per_sec': (result.units / result.train_seconds
                                             if result.train_seconds > 0 else None),
            'timing': {k: round(v, 4) for k, v in result.timing.items()}}
