"""Word2vec's communication and memory per device as devices double (issue #20).

  python benchmarks/word2vec_collectives.py [--vocab 100000] [--dim 100] [--rows_per_device 1]
      [--length 256] [--devices 2,4,8] [--modes skipgram,cbow] [--json out.json]

Compiles (no data, no training) one scanned step of the skip-gram / CBOW training
function at a fixed per-device batch (`rows_per_device` rows of `length` tokens) on 2, 4
and 8 CPU devices (`--xla_force_host_platform_device_count`, set here), with the tables
replicated (every device all-gathers every device's row updates) and row-sharded
(`model.table_sharding='rows'`: lookups and updates routed to each row's owner in
fixed-size buckets), and reads from the compiled HLO the bytes of every collective's
results per device (`training.hlo.collectives`; a collective in a loop body counts one
round, and routing takes one round unless a bucket overflows) and each device's table
bytes. The peer is the replicated layout of the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                           + ' --xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from translearn_jax.models import row_sharded  # noqa: E402
from translearn_jax.models import word2vec as w2v  # noqa: E402
from translearn_jax.pretraining import word2vec  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training.hlo import collectives  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

MIB = 2 ** 20


def measure(cfg: w2v.Word2VecConfig, n: int, rows: bool, rows_per_device: int, length: int):
  mesh = mesh_lib.make_mesh(n)
  state = jax.eval_shape(lambda: word2vec.init_state(cfg, 0, mesh, n if rows else 0))
  shapes = {'tokens': (), 'segment': (), 'window': (), 'negatives': (cfg.negatives_per_position,)}
  batch = {k: jax.ShapeDtypeStruct((1, rows_per_device * n, length) + extra, jnp.int32)
           for k, extra in shapes.items()}
  schedule = word2vec._linear_schedule(0.025, 2.5e-6, 100)
  hlo = word2vec.make_train_fn(cfg, schedule, mesh, rows).lower(state, batch).compile().as_text()
  table_rows = row_sharded.local_rows(cfg.vocab_size, n) if rows else cfg.vocab_size
  return {'devices': n, 'layout': 'rows' if rows else 'replicated',
          'collectives_bytes': collectives(hlo),
          'collective_mib': sum(collectives(hlo).values()) / MIB,
          'tables_mib_per_device': 2 * table_rows * cfg.dim * 4 / MIB}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--vocab', type=int, default=100_000)
  ap.add_argument('--dim', type=int, default=100)
  ap.add_argument('--rows_per_device', type=int, default=1)
  ap.add_argument('--length', type=int, default=256)
  ap.add_argument('--devices', default='2,4,8')
  ap.add_argument('--modes', default='skipgram,cbow')
  ap.add_argument('--json', default='')
  args = ap.parse_args(argv)
  results = []
  for mode in args.modes.split(','):
    cfg = w2v.Word2VecConfig(vocab_size=args.vocab, dim=args.dim, mode=mode)
    print(f'{mode}: V={args.vocab} D={args.dim}, {args.rows_per_device} x {args.length} '
          'tokens a device a step')
    print(f'  {"devices":>7} {"replicated MiB":>15} {"rows MiB":>9} {"ratio":>6} '
          f'{"tables MiB/dev repl":>20} {"rows":>8}')
    for n in [int(d) for d in args.devices.split(',')]:
      rep = measure(cfg, n, False, args.rows_per_device, args.length)
      sh = measure(cfg, n, True, args.rows_per_device, args.length)
      results += [dict(r, mode=mode) for r in (rep, sh)]
      print(f'  {n:>7} {rep["collective_mib"]:>15.2f} {sh["collective_mib"]:>9.2f} '
            f'{sh["collective_mib"] / rep["collective_mib"]:>6.2f} '
            f'{rep["tables_mib_per_device"]:>20.1f} {sh["tables_mib_per_device"]:>8.1f}')
  if args.json:
    metrics.write_json(args.json, {'args': vars(args), 'results': results})


if __name__ == '__main__':
  main()
