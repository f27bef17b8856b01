"""Skip-gram with shared negatives: 15 draws a center, scored against every one of its
context words, and a step's pairs summed from the same tables (`model.pair_order='summed'`).

The fast variant. Its summed order takes every row cap (`optim.row_cap` in 'count', 'norm'
or 'curvature' mode); word2vec's order takes the curvature cap only
(configs/skipgram_large_batch.py).
Against configs/skipgram.py (word2vec's order, the default): 1.85-2.00x gensim's words/s on
one CPU with the C++ kernel, and its XLA step ~2.8x faster on other devices; level with
gensim after one epoch of the novels, but behind it after five (WordSim-353 -0.024 +- 0.017,
SimLex-999 -0.020 +- 0.013, 5 seeds). Until 2026-12-04 these were configs/skipgram.py's
settings: the README results measured before then with configs/skipgram.py or
benchmarks/skipgram_vs_gensim.py (skip-gram) reproduce with this config
(`--config configs/skipgram_shared.py`, the benchmark's `--config skipgram_shared`).

  python train.py --config configs/skipgram_shared.py --workdir /tmp/sg_shared
"""

from translearn_jax.configs import skipgram


def get_config():
  config = skipgram.get_config()
  config.model.pair_negatives = False          # draws shared by a center's pairs
  config.model.negative_draws = 15             # each weighted by c_i·K/draws
  config.model.pair_order = 'summed'           # every row cap (count, norm, curvature)
  return config
