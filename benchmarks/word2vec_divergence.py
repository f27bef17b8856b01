"""Where a large word2vec batch diverges: the XLA step stepped by hand, one step a call.

  python benchmarks/word2vec_divergence.py [--corpus ../shared/data/pretrain_en]
      [--mode cbow] [--batch 64] [--row_cap 1] [--row_cap_mode curvature]
      [--row_cap_cross 0] [--lr 0.05]
      [--steps 30] [--json out.json]

Trains from the shipped skip-gram config's initialisation (with `--mode`, `--batch` and
the cap as given; one step a call, the XLA step, a constant α0) and prints, after every
step, the mean loss per pair and the largest input- and output-row norms with their
vocabulary ids, until the loss is not finite or `--steps` have run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import cbow, skipgram_shared  # noqa: E402
from translearn_jax.data import readers  # noqa: E402
from translearn_jax.data.vocab import encode_corpus  # noqa: E402
from translearn_jax.data.word2vec_stream import StreamState  # noqa: E402
from translearn_jax.models import word2vec as w2v  # noqa: E402
from translearn_jax.pretraining import word2vec  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, '..', '..', 'shared', 'data'))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--corpus', default=os.path.join(SHARED, 'pretrain_en'))
  ap.add_argument('--unit', default='paragraph')
  ap.add_argument('--mode', default='cbow', choices=['cbow', 'skipgram'])
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--row_cap', type=float, default=1.0)
  ap.add_argument('--row_cap_mode', default='curvature')
  ap.add_argument('--row_cap_cross', type=float, default=0.0)
  ap.add_argument('--lr', type=float, default=0.05)
  ap.add_argument('--steps', type=int, default=30)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--json', default='')
  a = ap.parse_args(argv)
  docs = readers.read_documents(readers.TextSpec(kind='text', path=a.corpus, unit=a.unit))
  corpus = encode_corpus(docs, min_count=5)
  c = (cbow if a.mode == 'cbow' else skipgram_shared).get_config()   # count/norm caps: summed order
  c.train.batch_size, c.train.steps_per_call = a.batch, 1
  c.train.epochs, c.seed = 1, a.seed
  c.optim.row_cap, c.optim.row_cap_mode, c.model.step_kernel = a.row_cap, a.row_cap_mode, 'xla'
  c.optim.row_cap_cross = a.row_cap_cross
  cfg = word2vec.model_config(c, len(corpus.vocab))
  stream = word2vec.block_stream(c, cfg, corpus, 0, a.batch)
  params = word2vec.init_state(cfg, a.seed, mesh_lib.make_mesh(1)).params
  step = jax.jit(lambda p, b: w2v.sparse_sgd_step(p, b, jnp.float32(a.lr), cfg))
  rows = []
  for i, (_, block) in enumerate(stream.iterate(StreamState(), 0)):
    if i >= a.steps:
      break
    params, loss, pairs = step(params, {k: jnp.asarray(v[0]) for k, v in block.items()})
    with np.errstate(over='ignore', invalid='ignore'):    # a diverged table's norms: inf
      norms = {k: np.linalg.norm(np.asarray(v), axis=1) for k, v in params.items()}
    row = {'step': i + 1, 'loss_per_pair': float(loss) / max(float(pairs), 1.0)}
    for k, n in norms.items():
      row[f'max_{k}'], row[f'max_{k}_id'] = float(n.max()), int(n.argmax())
    rows.append(row)
    print(f"step {row['step']:3d}  loss/pair {row['loss_per_pair']:.4g}  max|in| "
          f"{row['max_in_embed']:.3g} ({corpus.vocab.words[row['max_in_embed_id']]!r})  max|out| "
          f"{row['max_out_embed']:.3g} ({corpus.vocab.words[row['max_out_embed_id']]!r})")
    if not np.isfinite(row['loss_per_pair']):
      break
  out = {'mode': a.mode, 'batch': a.batch, 'row_cap': a.row_cap, 'row_cap_mode': a.row_cap_mode,
         'row_cap_cross': a.row_cap_cross,
         'lr': a.lr, 'steps': rows,
         'diverged_at': next((r['step'] for r in rows if not np.isfinite(r['loss_per_pair'])),
                             None)}
  print('diverged at step', out['diverged_at'])
  if a.json:
    metrics.write_json(a.json, out)
  return out


if __name__ == '__main__':
  main()
