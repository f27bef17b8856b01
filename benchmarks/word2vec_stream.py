"""The word2vec host stream alone: blocks a second with 1..N drawing threads, same run.

  python benchmarks/word2vec_stream.py [--corpus ../shared/data/pretrain_en]
      [--config skipgram|skipgram_shared|cbow] [--workers 1,2] [--blocks 200]
      [--batch 2] [--json out.json]

Builds the run's `BlockStream` (`pretraining.word2vec.block_stream`: the config's batch,
row length, steps per call, window, negatives per position, subsampling and seed) and
reads `--blocks` blocks with each worker count in turn, nothing else running in the
process: what the host can feed a step that takes no time. Prints kept tokens/s and the
corpus words/s they stand for (the unit of the end-to-end figures), and each count's rate
against one thread's, measured in the same run. On an accelerator the step at batch 2
outruns one thread (README, "On an accelerator"); on CPU devices the step uses the cores
these threads would.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from translearn_jax.data.word2vec_stream import StreamState  # noqa: E402
from translearn_jax.pretraining import word2vec  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..',
                      'shared', 'data')


def read_blocks(stream, blocks: int, workers: int) -> float:
  """Seconds to read `blocks` blocks from the stream's start (its thread started here)."""
  t0 = time.perf_counter()
  it = stream.iterate(StreamState(), prefetch=2, workers=workers)
  try:
    for i, _ in enumerate(it, 1):
      if i == blocks:
        break
  finally:
    it.close()
  return time.perf_counter() - t0


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--corpus', default=os.path.join(SHARED, 'pretrain_en'))
  ap.add_argument('--unit', default='paragraph')
  ap.add_argument('--config', default='skipgram', choices=common.WORD2VEC_CONFIGS)
  ap.add_argument('--workers', default='1,2')
  ap.add_argument('--blocks', type=int, default=200)
  ap.add_argument('--batch', type=int, default=2)
  ap.add_argument('--override', action='append', default=[])
  ap.add_argument('--json', default='')
  a = ap.parse_args(argv)
  c = common.shipped_config(a.config)
  c.data.kind, c.data.path, c.data.unit = 'text', a.corpus, a.unit
  c.train.batch_size, c.train.epochs = a.batch, 100     # never runs out within --blocks
  common.override(c, a.override)
  corpus = word2vec.load_corpus(c)
  cfg = word2vec.model_config(c, len(corpus.vocab))
  stream = word2vec.block_stream(c, cfg, corpus, 0, a.batch)
  # corpus words a kept token stands for (subsampling drops the frequent words' tokens)
  words_per_token = corpus.raw_words / stream.expected_kept_per_epoch()
  read_blocks(stream, 3, 1)                            # numpy's first calls, warm caches
  rows = []
  for workers in [int(w) for w in a.workers.split(',')]:
    # a new stream each time: each subsamples its epoch as it goes, as a run's does
    seconds = read_blocks(word2vec.block_stream(c, cfg, corpus, 0, a.batch), a.blocks, workers)
    tokens = a.blocks * stream.block_tokens / seconds
    rows.append({'workers': workers, 'seconds': seconds, 'kept_tokens_per_s': tokens,
                 'words_per_s': tokens * words_per_token})
  base = rows[0]['kept_tokens_per_s']
  print(f'{a.config}: {cfg.negatives_per_position} negatives a position, blocks of '
        f'{stream.block_tokens:,} tokens, {a.blocks} blocks, {os.cpu_count()} cores')
  print(f'{"workers":>8} {"kept tokens/s":>15} {"words/s":>13} {"vs " + str(rows[0]["workers"]):>8}')
  for r in rows:
    r['ratio'] = r['kept_tokens_per_s'] / base
    print(f'{r["workers"]:>8} {r["kept_tokens_per_s"]:>15,.0f} {r["words_per_s"]:>13,.0f} '
          f'{r["ratio"]:>7.2f}x')
  if a.json:
    metrics.write_json(a.json, {'args': vars(a), 'rows': rows})


if __name__ == '__main__':
  main()
