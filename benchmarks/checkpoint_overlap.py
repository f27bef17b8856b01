"""Step time around a checkpoint save: asynchronous (ours) vs a save that waits.

  python benchmarks/checkpoint_overlap.py [--params_m 25] [--steps 60] [--every 10]
      [--json out.json]

A jitted AdamW step on an MLP of `--params_m` million fp32 parameters (the state is 3× that:
parameters and two moments) runs `--steps` steps, saving with `training.checkpoint`'s
`Checkpointer` every `--every` steps. Two runs from the same start, same process:

* `async`: `Checkpointer.save` as the training loop uses it (orbax copies the arrays to
  host memory, writes them in the background; the manifest follows at the next save);
* `blocking` (the peer, as before issue #19): the same save followed by `finish()`.

Reported per run: the median time of ordinary steps, of the step that includes a save
(from the step's start to the next step's start), and their ratio. Target: the save step
within ~10% of the others (issue #19) — on accelerators, where the device computes while
the host writes; on a 2-core CPU the background write competes with the step for the same
cores, so the figure here is a lower bound on the overlap.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from translearn_jax.training.checkpoint import Checkpointer  # noqa: E402
from translearn_jax.training.state import TrainState  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402


def make(params_m: float):
  width = int((params_m * 1e6 / 4) ** 0.5)
  key = jax.random.key(0)
  params = {f'w{i}': jax.random.normal(jax.random.fold_in(key, i), (width, width)) * 0.02
            for i in range(4)}
  tx = optax.adamw(1e-4)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=key)

  @jax.jit
  def step(state, x):
    def loss(p):
      h = x
      for i in range(4):
        h = jnp.tanh(h @ p[f'w{i}'])
      return jnp.mean(h ** 2)
    g = jax.grad(loss)(state.params)
    upd, opt = tx.update(g, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                         opt_state=opt)
  x = jax.random.normal(key, (256, width))
  return state, step, x, sum(p.size for p in params.values())


def run(blocking: bool, steps: int, every: int, params_m: float) -> dict:
  state, step, x, n = make(params_m)
  d = tempfile.mkdtemp(prefix='ckpt_bench_')
  ck = Checkpointer(d, max_to_keep=2)
  state = step(state, x)
  jax.block_until_ready(state)                     # compiled
  starts, saved_at = [], set()
  try:
    for i in range(1, steps + 1):
      starts.append(time.perf_counter())
      state = step(state, x)
      jax.block_until_ready(state)
      if i % every == 0:
        ck.save(i, state, {'step': i})
        if blocking:
          ck.finish()
        saved_at.add(i - 1)                          # index of the step that paid for it
    starts.append(time.perf_counter())
    ck.close()
  finally:
    shutil.rmtree(d, ignore_errors=True)
  dts = np.diff(starts)
  save_steps = [dts[i] for i in sorted(saved_at)]
  plain = [dts[i] for i in range(len(dts)) if i not in saved_at and i - 1 not in saved_at]
  return {'params': int(n), 'state_mb': 3 * 4 * n / 2 ** 20,
          'plain_step_ms': 1e3 * float(np.median(plain)),
          'save_step_ms': 1e3 * float(np.median(save_steps)),
          'save_over_plain': float(np.median(save_steps) / np.median(plain))}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--params_m', type=float, default=25)
  ap.add_argument('--steps', type=int, default=60)
  ap.add_argument('--every', type=int, default=10)
  ap.add_argument('--json', default='')
  a = ap.parse_args()
  out = {'device': jax.devices()[0].device_kind}
  for name, blocking in (('async', False), ('blocking', True), ('async_again', False)):
    out[name] = run(blocking, a.steps, a.every, a.params_m)
    r = out[name]
    print(f'{name:12s} state {r["state_mb"]:.0f} MB: plain step {r["plain_step_ms"]:.1f} ms, '
          f'step with a save {r["save_step_ms"]:.1f} ms ({r["save_over_plain"]:.2f}×)')
  if a.json:
    metrics.write_json(a.json, out)


if __name__ == '__main__':
  main()
