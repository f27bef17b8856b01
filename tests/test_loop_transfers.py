"""The training loop's host<->device traffic (issue #19): metrics come to the host only at
logging steps (explicitly, never by an implicit transfer), and batches are sent ahead."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.training import loop as loop_lib
from translearn_jax.training.state import TrainState


def tiny_state():
  params = {'w': jnp.zeros((4,))}
  tx = optax.sgd(0.1)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key(0)), tx


def test_metrics_reach_the_host_only_at_logging_steps(monkeypatch):
  state, tx = tiny_state()

  @jax.jit
  def step_fn(state, batch):
    loss_fn = lambda p: jnp.mean((batch['x'] @ p['w'] - 1.0) ** 2)   # noqa: E731
    loss, g = jax.value_and_grad(loss_fn)(state.params)
    upd, opt = tx.update(g, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                          opt_state=opt), {'loss_sum': loss, 'loss_count': jnp.float32(1)})

  fetched_at, real_get = [], jax.device_get
  steps_done = []

  def spy_get(x):
    fetched_at.append(len(steps_done))
    return real_get(x)

  def counting(state, batch):
    out = step_fn(state, batch)
    steps_done.append(1)
    return out

  sent = []

  def to_device(b):
    sent.append(len(steps_done))       # how many steps had run when this batch was sent
    return jax.device_put(b)
  monkeypatch.setattr(jax, 'device_get', spy_get)
  stream = (({'batch': i + 1}, {'x': np.full((2, 4), 0.1 * i, np.float32)}) for i in range(20))
  with jax.transfer_guard_device_to_host('disallow'):   # an implicit transfer would raise
    result = loop_lib.train_loop(state=state, stream=stream, step_fn=counting,
                                 to_device=to_device, checkpointer=None, writer=None,
                                 total_steps=20, steps_per_call=1, checkpoint_every=1000,
                                 log_every=5, units_per_step=1, progress=False)
  assert result.steps == 20 and np.isfinite(result.last_metrics['loss'])
  # the initial step count, the first (compiling) step, then logging steps 5, 10, 15, 20
  # (the end's final fetch finds nothing left)
  assert fetched_at == [0, 1, 5, 10, 15, 20]
  # batch k (0-based) is on its way before step k - 2 finishes: two ahead
  assert sent[:5] == [0, 0, 0, 1, 2]
