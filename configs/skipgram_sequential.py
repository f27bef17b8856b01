"""Skip-gram with word2vec's update order, pinned: K negatives for every (center, context)
pair, a step's pairs applied one context offset at a time. configs/skipgram.py's default
since 2026-12-04; this file keeps the README's earlier commands (`--config
configs/skipgram_sequential.py`) running the same settings whatever the default becomes.

  python train.py --config configs/skipgram_sequential.py --workdir /tmp/sg_seq
"""

from translearn_jax.configs import skipgram


def get_config():
  config = skipgram.get_config()
  config.model.pair_negatives = True           # K draws for every pair, as word2vec's
  config.model.negative_draws = 0              # (shared draws only)
  config.model.pair_order = 'sequential'       # one context offset at a time
  return config
