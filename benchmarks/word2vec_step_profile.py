"""Where word2vec's training time goes on this machine (issue #20): host blocks, the step, row traffic.

  python benchmarks/word2vec_step_profile.py [--mode cbow|skipgram|skipgram_shared] \
      [--corpus ../shared/data/english_novels] [--batch 2] [--blocks 60] \
      [--override model.negative_draws=15] [--json out.json]

Reads the corpus as `benchmarks/skipgram_vs_gensim.py --mode MODE` does (paragraphs;
`configs/cbow.py` or `configs/skipgram.py`, with `--override FIELD=VALUE`), then times,
in one process:

* the host: `BlockStream` preparing `--blocks` blocks of 64 steps × `--batch` rows × 256
  tokens (subsampling, windows, negatives; in training this runs in a prefetch thread);
* the device: the jitted, scanned CBOW training function on those blocks (3 passes, the
  best reported), with the CPU time over wall time of the process while it runs (how many
  of the cores the step uses);
* in isolation, a gather of one step's output-table rows (center + negatives a position)
  and their scatter-add into a table of the corpus's vocabulary (donated, in place, as
  in the step);
* skip-gram only: the two layouts of its step on the same blocks, scanned as in training
  on one device: `_skipgram_step` (context output rows gathered once per token, used when
  there is no row cap) and `_pair_step` (every context and negative row gathered and
  scattered per score, used with a row cap);
* with `--ops N`: the step's N costliest compiled operations (XLA fusions, scatters,
  dots), µs a step, from a `jax.profiler` trace of the scanned step on one device.

The peer for the end-to-end words/s is gensim in `skipgram_vs_gensim.py`; this script
explains ours.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from translearn_jax.data.word2vec_stream import StreamState  # noqa: E402
from translearn_jax.models import word2vec as w2v  # noqa: E402
from translearn_jax.pretraining import word2vec  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def timed(fn, reps: int) -> float:
  """Best of three runs of `reps` calls, in seconds per call."""
  jax.block_until_ready(fn())
  best = float('inf')
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(reps):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t) / reps)
  return best


def best_pass(fn, carry, dev):
  """`fn(carry, block) -> (carry, _)` warmed up on `dev[0]`, then three timed passes over
  `dev[1:]`: (best wall seconds per block, cores busy in that pass, the last carry)."""
  carry, _ = fn(carry, dev[0])
  jax.block_until_ready(carry)
  best, cores = float('inf'), 0.0
  for _ in range(3):
    c0, t = cpu_seconds(), time.perf_counter()
    for d in dev[1:]:
      carry, _ = fn(carry, d)
    jax.block_until_ready(carry)
    wall = time.perf_counter() - t
    if wall < best:
      best, cores = wall, (cpu_seconds() - c0) / wall
  return best / (len(dev) - 1), cores, carry


def scanned(cfg, step):
  """`step` (a `word2vec` table-step layout) jitted and scanned over a block on one device
  with the tables donated, as the training function runs it: (params, block) -> (params,
  losses)."""
  def run(params, block):
    def body(p, b):
      new, loss, _ = step(w2v.ReplicatedTables(p, cfg), b, jnp.float32(1e-3), cfg)
      return new, loss
    return jax.lax.scan(body, params, block)
  return jax.jit(run, donate_argnums=0)


def layout_step_us(cfg, state, blocks, step) -> float:
  """Best-of-3 µs per step of `step` (a `word2vec` table-step layout), `scanned`."""
  params = jax.tree.map(jnp.copy, dict(state.params))
  dev = [jax.tree.map(jnp.asarray, b) for b in blocks]
  per_block, _, _ = best_pass(scanned(cfg, step), params, dev)
  return per_block / blocks[0]['tokens'].shape[0] * 1e6


def op_profile(cfg, state, blocks, top: int) -> list[tuple[str, float]]:
  """The `top` costliest operations of the step (`word2vec.table_step`, scanned over a
  block on one device as in training): (XLA operation name, µs a step), from the
  Perfetto trace of `jax.profiler` over all but the first (compiling) block."""
  import collections
  import glob
  import gzip
  import tempfile

  fn = scanned(cfg, w2v.table_step)
  params = jax.tree.map(jnp.copy, dict(state.params))
  dev = [jax.tree.map(jnp.asarray, b) for b in blocks]
  params, _ = fn(params, dev[0])
  jax.block_until_ready(params)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    for b in dev[1:]:
      params, _ = fn(params, b)
    jax.block_until_ready(params)
    jax.profiler.stop_trace()
    trace = json.load(gzip.open(glob.glob(os.path.join(d, '**', '*.trace.json.gz'),
                                          recursive=True)[0]))
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  total = collections.Counter()
  for e in events:
    # the compiled program's operations (runtime, Python and profiler spans left out)
    if e.get('ph') == 'X' and not e['name'].startswith(('$', 'ThunkExecutor', 'Pjit',
                                                        'SlinkyThreadPool')):
      total[e['name']] += e.get('dur', 0)
  steps = sum(b['tokens'].shape[0] for b in blocks[1:])
  return [(name, us / steps) for name, us in total.most_common(top)]


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--corpus', default=os.path.join(ROOT, '..', 'shared', 'data', 'english_novels'))
  ap.add_argument('--batch', type=int, default=2)
  ap.add_argument('--blocks', type=int, default=60)
  ap.add_argument('--mode', default='cbow', choices=common.WORD2VEC_CONFIGS,
                  help="the shipped config: configs/cbow.py, configs/skipgram.py (word2vec's "
                       "order), configs/skipgram_shared.py (shared draws: 'skipgram' before "
                       "2026-12-04)")
  ap.add_argument('--override', action='append', default=[],
                  help='config override FIELD=VALUE (e.g. model.negative_draws=15)')
  ap.add_argument('--ops', type=int, default=0,
                  help="print the step's N costliest compiled operations (a profiler trace)")
  ap.add_argument('--json', default='')
  args = ap.parse_args()
  c = common.shipped_config(args.mode)
  common.override(c, args.override)
  c.data.kind, c.data.path, c.data.unit = 'text', args.corpus, 'paragraph'
  c.train.epochs, c.num_devices, c.seed = 1, 1, 0
  c.train.batch_size, c.train.seq_length, c.train.steps_per_call = args.batch, 256, 64
  steps, length = c.train.steps_per_call, c.train.seq_length
  corpus = word2vec.load_corpus(c)
  cfg = word2vec.model_config(c, len(corpus.vocab))
  stream = word2vec.block_stream(c, cfg, corpus, 0, args.batch)
  t = time.perf_counter()
  blocks = []
  for _, b in stream.iterate(StreamState(), prefetch=0):
    blocks.append(b)
    if len(blocks) == args.blocks:
      break
  host_ms = (time.perf_counter() - t) / len(blocks) * 1e3
  words_per_token = corpus.raw_words / (stream.estimated_total_steps() * args.batch * length)

  mesh = mesh_lib.make_mesh(1)
  state = word2vec.init_state(cfg, 0, mesh)
  fn = word2vec.make_train_fn(cfg, word2vec.lr_schedule(c, 100_000), mesh)
  dev = [mesh_lib.shard_batch(b, mesh, batch_axis=1) for b in blocks]
  per_block, cores, state = best_pass(fn, state, dev)
  step_us = per_block / steps * 1e6
  tokens_per_s = args.batch * length / step_us * 1e6

  b0 = blocks[0]
  ids = jnp.asarray(np.concatenate([b0['tokens'][0].reshape(-1), b0['negatives'][0].reshape(-1)]))
  table = state.params['out_embed']
  upd = jnp.ones((ids.shape[0], cfg.dim), jnp.float32) * 1e-6
  gather = jax.jit(lambda t, i: t[i])
  # the table donated and updated in place, as in the training step (no copy of it)
  scatter = jax.jit(lambda t, i, u: t.at[i].add(u), donate_argnums=0)
  box = [jnp.copy(table)]

  def scatter_once():
    box[0] = scatter(box[0], ids, upd)
    return box[0]
  gather_us = timed(lambda: gather(table, ids), 200) * 1e6
  scatter_us = timed(scatter_once, 200) * 1e6

  layouts = {}
  if cfg.mode == w2v.SKIPGRAM:
    # the pair-by-pair layout has no curvature cap (`table_step` never runs it with one)
    candidates = (('slices', w2v._skipgram_step),) + (
        () if w2v._curvature_capped(cfg) else (('pairs', w2v._pair_step),))
    layouts = {name: layout_step_us(cfg, state, blocks, step) for name, step in candidates}
  ops = op_profile(cfg, state, blocks, args.ops) if args.ops else []
  out = {'mode': args.mode, 'overrides': args.override, 'host_ms_per_block': host_ms,
         'step_us': step_us, 'cores_used': cores,
         'subsampled_tokens_per_s': tokens_per_s,
         'corpus_words_per_s_step_only': tokens_per_s * words_per_token,
         'output_rows_per_step': int(ids.shape[0]), 'gather_us': gather_us,
         'scatter_add_us': scatter_us, 'batch': args.batch,
         'layout_step_us': layouts, 'ops_us_per_step': ops}
  print(f'host: {host_ms:.2f} ms per block of {steps} steps x {args.batch} x {length} tokens')
  print(f'device: {step_us:.0f} us per step ({tokens_per_s:,.0f} subsampled tokens/s, '
        f'~{out["corpus_words_per_s_step_only"]:,.0f} corpus words/s), {cores:.2f} cores busy')
  print(f'output table, {ids.shape[0]} rows a step: gather {gather_us:.0f} us, '
        f'scatter-add {scatter_us:.0f} us (in isolation)')
  for name, us in layouts.items():
    print(f'skip-gram step, {name} layout: {us:.0f} us per step')
  if ops:
    print(f"the step's {len(ops)} costliest operations (us a step, profiler trace):")
    for name, us in ops:
      print(f'  {us:7.1f}  {name}')
  if args.json:
    metrics.write_json(args.json, out)


if __name__ == '__main__':
  main()
