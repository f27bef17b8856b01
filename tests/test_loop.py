"""training.loop without checkpoints or a writer, not waiting for each step (the
learning-curve seeds under vmap): one fetch per logging window, the same metrics as a
loop that waits for every step, and a non-finite loss names the stacked run."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import StopAfter
from translearn_jax.errors import NonFiniteLossError
from translearn_jax.training import loop
from translearn_jax.training.state import TrainState


def stacked_run(monkeypatch, sync_every_step, diverge_at=None, steps=10):
  """Three runs stacked on a leading axis; run 1's loss is NaN from step `diverge_at` on.
  Returns (loop result, how often the loop fetched from the device)."""
  fetches = []
  real_get = jax.device_get
  monkeypatch.setattr(jax, 'device_get', lambda x: fetches.append(1) or real_get(x))
  bad = -1 if diverge_at is None else diverge_at

  @jax.jit
  def step_fn(state, batch):
    w = state.params['w'] + batch['x']
    loss = jnp.where((jnp.arange(3) == 1) & (state.step + 1 >= bad) & (bad > 0), jnp.nan, w)
    return state.replace(step=state.step + 1, params={'w': w}), {
        'loss_sum': loss, 'loss_count': jnp.ones(3)}

  state = TrainState(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros(3)}, opt_state={},
                     rng=jax.random.key(0))
  stream = (({}, {'x': np.float32(i + 1) * np.ones(3, np.float32)}) for i in range(steps))
  result = loop.train_loop(
      state=state, stream=stream, step_fn=step_fn, to_device=lambda b: b, checkpointer=None,
      writer=None, total_steps=steps, steps_per_call=1, checkpoint_every=steps,
      log_every=steps, units_per_step=1, progress=False, sync_every_step=sync_every_step)
  return result, len(fetches)


def test_unsynced_loop_fetches_once_per_window_with_the_same_metrics(monkeypatch):
  # no checkpointer: a signal is left to `preemption`, the loop does not stop on it
  monkeypatch.setattr(loop, 'StopSignal', StopAfter(0))
  lazy, lazy_fetches = stacked_run(monkeypatch, sync_every_step=False)
  eager, eager_fetches = stacked_run(monkeypatch, sync_every_step=True)
  # the step count, the first (compiling) call and the logging step at the end
  assert lazy_fetches == 3 and eager_fetches == 1 + 10
  assert lazy.steps == eager.steps == 10 and not lazy.stopped_by_signal
  np.testing.assert_array_equal(lazy.state.params['w'], np.full(3, 55.0))
  # per-run mean losses over steps 1..10 (w after step k is k(k+1)/2); equal in both modes
  want = np.mean([k * (k + 1) / 2 for k in range(1, 11)])
  np.testing.assert_array_equal(lazy.last_metrics['loss'], np.full(3, want))
  np.testing.assert_array_equal(lazy.last_metrics['loss'], eager.last_metrics['loss'])


@pytest.mark.parametrize('sync_every_step', [False, True])
def test_nonfinite_loss_of_one_stacked_run_names_it_and_the_step(monkeypatch, sync_every_step):
  with pytest.raises(NonFiniteLossError,
                     match=r'^loss is \[21\. +nan +21\.\] in steps 6\.\.6; run stopped, '
                           r'this run keeps no checkpoints$') as e:
    stacked_run(monkeypatch, sync_every_step, diverge_at=6)
  assert e.value.runs == [1]


def test_run_resumes_names_the_run_in_errors_and_closes_its_files(tmp_path, capsys):
  @jax.jit
  def step_fn(state, batch):
    w = state.params['w'] + batch['x']
    return state.replace(step=state.step + 1, params={'w': w}), {
        'loss_sum': w.sum(), 'loss_count': jnp.ones(())}

  def train(run, state, xs, start):
    return run.train(
        state=state,
        stream=(({'i': start + i + 1}, {'x': np.float32(x)}) for i, x in enumerate(xs)),
        step_fn=step_fn, to_device=lambda b: b, total_steps=start + len(xs), steps_per_call=1,
        checkpoint_every=2, log_every=2, units_per_step=8, units_name='examples', progress=False)

  fresh = TrainState(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros(2)}, opt_state={},
                     rng=jax.random.key(0))
  with loop.Run(str(tmp_path), keep=2, label='toy seed 0') as run:
    assert not run.resuming
    state, position = run.restore(fresh)
    assert position == {}
    result = train(run, state, [1, 2, 3, 4], 0)
    summary = run.summary(result)
  assert summary['steps'] == 4 and summary['stopped_by_signal'] is False
  assert summary['examples_per_sec'] > 0 and summary['wall_seconds'] >= summary['train_seconds']
  assert run.writer._jsonl.closed
  with loop.Run(str(tmp_path), keep=2, label='toy seed 0') as run:
    assert run.resuming
    state, position = run.restore(fresh)
    assert int(state.step) == 4 and position == {'i': 4}
    np.testing.assert_array_equal(state.params['w'], [10.0, 10.0])
    with pytest.raises(NonFiniteLossError, match=r'^toy seed 0: loss is nan in steps 6\.\.6; run '
                                                 r'stopped, last good checkpoint \(step 4\)'):
      train(run, state, [1, np.nan], 4)
  assert 'toy seed 0: resumed at step 4 (i 4)' in capsys.readouterr().err
  assert run.writer._jsonl.closed


def test_timing_splits_the_wall_into_input_waits_the_first_call_and_saves(tmp_path):
  """A stream that sleeps 30 ms before each of 6 batches, a first call that sleeps 100 ms,
  saves every 3 steps: the loop's timing shows each where it happened."""
  import time

  def slow_stream():
    for i in range(6):
      time.sleep(0.03)
      yield {'i': i + 1}, {'x': np.float32(1.0)}

  @jax.jit
  def step(state, batch):
    w = state.params['w'] + batch['x']
    return state.replace(step=state.step + 1, params={'w': w}), {
        'loss_sum': w.sum(), 'loss_count': jnp.ones(())}

  calls = []

  def step_fn(state, batch):
    if not calls:
      time.sleep(0.1)              # the first call compiles
    calls.append(1)
    return step(state, batch)

  state = TrainState(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros(2)}, opt_state={},
                     rng=jax.random.key(0))
  with loop.Run(str(tmp_path / 'run'), keep=2) as run:
    result = run.train(state=state, stream=slow_stream(), step_fn=step_fn,
                       to_device=lambda b: b, total_steps=6, steps_per_call=1,
                       checkpoint_every=3, log_every=3, units_per_step=1, progress=False)
    summary = run.summary(result)
  t = result.timing
  assert t['input_seconds'] >= 6 * 0.03 and t['first_call_seconds'] >= 0.1
  assert t['save_seconds'] > 0 and sorted(os.listdir(tmp_path / 'run' / 'checkpoints'))
  assert t['loop_seconds'] >= t['input_seconds'] + t['first_call_seconds'] + t['save_seconds']
  assert summary['wall_seconds'] >= t['loop_seconds']
  assert set(summary['timing']) == {'input_seconds', 'first_call_seconds', 'save_seconds',
                                    'loop_seconds'}


class _Sync:
  """JAX's preemption sync protocol (`multihost_utils.reached_preemption_sync_point`): once
  a notice arrives, the sync point is the largest id any process gave + 1, and a process
  stops when it asks with exactly that id."""

  def __init__(self, notice_after):
    self.ids, self.point, self.notice_after = [], None, notice_after

  def __call__(self, step_id):
    self.ids.append(step_id)
    if self.point is None and len(self.ids) == self.notice_after:
      self.point = max(self.ids) + 1
    return step_id == self.point


class _Checkpoints:
  def __init__(self):
    self.saved = []

  def save(self, step, *a, **k):
    self.saved.append(step)

  def loop_state(self, step):
    return None

  def latest_step(self):
    return self.saved[-1] if self.saved else None

  last_good_step = latest_step


@pytest.mark.parametrize('steps_per_call', [1, 4])
def test_a_multi_process_run_stops_at_the_sync_point_whatever_its_steps_per_call(
    monkeypatch, steps_per_call):
  """SIGTERM to a 2-process word2vec run with steps_per_call=4 never stopped it (a review ran
  it to step 1520): the loop gave JAX its step count, which moves by 4, and JAX's sync
  point (the largest id + 1) is never a multiple of 4. The ids are the calls now."""
  from translearn_jax.training import distributed
  sync = _Sync(notice_after=3)
  monkeypatch.setattr(distributed, 'preemption_sync', sync)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  state = TrainState(step=jnp.full((), 8, jnp.int32), params={'w': jnp.zeros(3)},
                     opt_state={}, rng=jax.random.key(0))     # a resumed run: at step 8

  def step_fn(state, batch):
    return state.replace(step=state.step + steps_per_call), {
        'loss_sum': jnp.zeros(()), 'loss_count': jnp.ones(())}
  ckpt = _Checkpoints()
  stream = (({}, {}) for _ in range(50))
  result = loop.train_loop(
      state=state, stream=stream, step_fn=step_fn, to_device=lambda b: b, checkpointer=ckpt,
      writer=None, total_steps=10_000, steps_per_call=steps_per_call, checkpoint_every=10_000,
      log_every=10_000, units_per_step=1, progress=False)
  assert result.stopped_by_signal and len(sync.ids) == 4
  assert sync.ids == list(range(sync.ids[0], sync.ids[0] + 4))     # consecutive, as JAX needs
  assert result.steps == 8 + 4 * steps_per_call and ckpt.saved == [result.steps]


def test_the_metric_writer_is_flushed_at_each_checkpoint(monkeypatch, tmp_path):
  """TensorBoard's writer flushes every 2 minutes by itself: a run killed after a checkpoint
  lost the steps before it from TensorBoard (metrics.jsonl had them)."""
  from translearn_jax.training.metrics import MetricWriter
  writer = MetricWriter(str(tmp_path))
  flushed, real = [], writer.flush
  monkeypatch.setattr(writer, 'flush', lambda: flushed.append(1) or real())
  state = TrainState(step=jnp.zeros((), jnp.int32), params={'w': jnp.zeros(3)}, opt_state={},
                     rng=jax.random.key(0))

  def step_fn(state, batch):
    return state.replace(step=state.step + 1), {'loss_sum': jnp.ones(()),
                                                'loss_count': jnp.ones(())}
  ckpt = _Checkpoints()
  monkeypatch.setattr(loop, 'StopSignal', StopAfter(10 ** 6))
  loop.train_loop(state=state, stream=(({}, {}) for _ in range(6)), step_fn=step_fn,
                  to_device=lambda b: b, checkpointer=ckpt, writer=writer, total_steps=6,
                  steps_per_call=1, checkpoint_every=2, log_every=1, units_per_step=1,
                  progress=False)
  assert len(flushed) == len(ckpt.saved) >= 3
  events = [p for p in (tmp_path / 'tb').iterdir() if 'tfevents' in p.name]
  assert events and b'loss' in events[0].read_bytes()     # on disk before close
  writer.close()
