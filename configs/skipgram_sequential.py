"""Skip-gram with word2vec's update order: K negatives for every (center, context) pair,
and a step's pairs applied one context offset at a time (`model.pair_order='sequential'`),
so a center's input row moves after each of its pairs as in word2vec.c and gensim.

The shipped skip-gram config's shared draws are faster (1.85-2.00x gensim's words/s on one
CPU) and level with gensim after one epoch, but trail it after five (WordSim-353 -0.024,
SimLex-999 -0.020 on the novels). This order is level with gensim there (-0.003 +- 0.013 /
+0.001 +- 0.010, 5 seeds) at 1.12-1.19x gensim's words/s with the CPU kernel
(`model.step_kernel='auto'` on one CPU device; the XLA step on other devices takes ~2.8x
the shared-draw step's time). README results, "Skip-gram's sequential pair order".

  python train.py --config configs/skipgram_sequential.py --workdir /tmp/sg_seq
"""

from translearn_jax.configs import skipgram


def get_config():
  config = skipgram.get_config()
  config.model.pair_negatives = True           # K draws for every pair, as word2vec's
  config.model.negative_draws = 0              # (shared draws only)
  config.model.pair_order = 'sequential'       # one context offset at a time
  return config
