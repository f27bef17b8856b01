"""Strategy search on MR from skip-gram vectors: the strategy and its knobs chosen on dev.

  python train.py --config configs/search_mr_skipgram.py --workdir /tmp/search \
    --config.init.path=runs/sg_novels/vectors.txt [--config.search.trials=12] \
    [--config.search.seconds=600]

Writes search.json (every trial, the ranking, the retrained best vs scratch).
"""

from translearn_jax.configs import transfer_mr_skipgram


def get_config():
  config = transfer_mr_skipgram.get_config()
  config.family = 'search'
  config.search = dict(
      strategies=('finetune,discriminative,gradual_unfreezing,feature_extraction,'
                  'linear_probe_logistic,linear_probe_svm'),
      lr_multipliers='1,0.3,3',     # × optim.learning_rate
      freeze_bottom='0,1',          # frozen depth (lowest groups kept frozen)
      factors='0.38,0.6',           # discriminative: LR factor per depth
      unfreeze_every='85,170',      # gradual unfreezing: steps per group
      trials=12,                    # budget: at most this many trials (0: all candidates) ...
      seconds=0.0,                  # ... and, if > 0, about this many seconds
      final_seeds=5)                # the best candidate is retrained on this many seeds
  return config
