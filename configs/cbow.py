"""CBOW with negative sampling (the skip-gram config with word2vec's CBOW defaults).

  python train.py --config configs/cbow.py --workdir /tmp/cbow
"""

from translearn_jax.configs import skipgram


def get_config():
  config = skipgram.get_config()
  config.model.mode = 'cbow'
  config.model.negative_draws = 0              # K draws a position, as word2vec's CBOW
  config.model.pair_negatives = False          # (skip-gram's options: one pair a position)
  config.model.pair_order = 'summed'
  config.optim.learning_rate = 0.05            # word2vec's CBOW default
  return config
