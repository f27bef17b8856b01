"""The chunked cross-entropy's value-and-gradients time against the plain loss, same run.

  python benchmarks/chunked_loss.py [--rows 4096] [--dtype bfloat16|float32] [--chunk 1024]
      [--vocab 50257] [--dim 768] [--reps 5] [--other FILE.py] [--json out.json]

Times jitted `value_and_grad` with respect to the hidden states and the table of
`training.losses.chunked_softmax_xent` (hidden states in `--dtype`, an fp32 table as
GPT-2 small's, random targets) against the plain loss that materialises every logit
(`hidden @ table` in `--dtype`, fp32 log-softmax: the model's own path with
`train.loss_chunk=0`). `--other` also times the `chunked_softmax_xent` of another file
(e.g. an earlier commit's `git show REV:translearn_jax/training/losses.py > old.py`)
and reports how far its gradients are from ours. Median of `--reps` calls after one
warm-up each.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from translearn_jax.training import losses, metrics  # noqa: E402


def plain(hidden, kernel, targets):
  logits = jnp.dot(hidden, kernel.astype(hidden.dtype)).astype(jnp.float32)
  return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def timed(f, args, reps):
  g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
  out = jax.block_until_ready(g(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(g(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--rows', type=int, default=4096)
  ap.add_argument('--dim', type=int, default=768)
  ap.add_argument('--vocab', type=int, default=50257)
  ap.add_argument('--chunk', type=int, default=1024)
  ap.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float32'])
  ap.add_argument('--reps', type=int, default=5)
  ap.add_argument('--other', default='', help="a file whose chunked_softmax_xent is timed too")
  ap.add_argument('--json', default='')
  a = ap.parse_args(argv)
  k = jax.random.split(jax.random.key(0), 3)
  hidden = jax.random.normal(k[0], (a.rows, a.dim)).astype(a.dtype)
  kernel = jax.random.normal(k[1], (a.dim, a.vocab)) * 0.02
  targets = jax.random.randint(k[2], (a.rows,), 0, a.vocab)
  args = (hidden, kernel)
  ours_s, ours = timed(lambda h, w: losses.chunked_softmax_xent(h, w, targets, chunk=a.chunk),
                       args, a.reps)
  plain_s, ref = timed(lambda h, w: plain(h, w, targets), args, a.reps)
  out = {'device': jax.devices()[0].device_kind, 'rows': a.rows, 'dim': a.dim,
         'vocab': a.vocab, 'chunk': a.chunk, 'dtype': a.dtype, 'ours_s': ours_s,
         'plain_s': plain_s, 'loss': float(ours[0]), 'plain_loss': float(ref[0])}
  print(f"{out['device']}: {a.rows} rows x {a.dim}, vocabulary {a.vocab:,}, chunk {a.chunk}, "
        f'{a.dtype} hidden states, fp32 table; value and gradients, median of {a.reps}')
  print(f'  chunked (ours) {ours_s * 1e3:9.1f} ms   loss {out["loss"]:.6g}')
  print(f'  plain logits   {plain_s * 1e3:9.1f} ms   loss {out["plain_loss"]:.6g}   '
        f'ours / plain time {ours_s / plain_s:.3f}')
  if a.other:
    spec = importlib.util.spec_from_file_location('other_losses', a.other)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    other_s, other = timed(lambda h, w: mod.chunked_softmax_xent(h, w, targets, chunk=a.chunk),
                           args, a.reps)
    gap = float(jnp.max(jnp.abs(other[1][1] - ours[1][1])))
    out.update(other=a.other, other_s=other_s, other_loss=float(other[0]),
               other_table_grad_max_gap=gap,
               table_grad_max=float(jnp.max(jnp.abs(ours[1][1]))))
    print(f'  {a.other:<14} {other_s * 1e3:9.1f} ms   loss {out["other_loss"]:.6g}   '
          f'ours / it time {ours_s / other_s:.3f}; largest table-gradient gap {gap:.3g} '
          f'(largest entry {out["table_grad_max"]:.3g})')
  if a.json:
    metrics.write_json(a.json, out)
  return out


if __name__ == '__main__':
  main()
