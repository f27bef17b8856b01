"""Learning curves on MR: scratch vs transfer from skip-gram vectors at label budgets.

  python train.py --config configs/curves_mr_skipgram.py --workdir /tmp/curves \
    --config.init.path=runs/sg_novels/vectors.txt

Same model, data split and strategies as configs/transfer_mr_skipgram.py; the
seeds of each (strategy, budget) cell train together under jax.vmap. Writes
curves.json / curves.csv / curves.png.
"""

from translearn_jax.configs import transfer_mr_skipgram


def get_config():
  config = transfer_mr_skipgram.get_config()
  config.family = 'curves'
  config.seeds = 5
  config.curve = dict(
      budgets='50,100,200,500,1000,2000,4000,all',
      strategies='finetune,feature_extraction',
      epochs=10,             # passes over the labelled subset ...
      min_steps=150,         # ... but at least this many steps (small budgets)
      time_sequential=True,  # also run one cell seed by seed: vmap speed-up
      title='')                          # '' : '<data>: scratch vs <init.kind> transfer'
  # fields of the classification config the curves do not read, so that an override of one
  # is an error, not ignored: curve.strategies and curve.epochs stand for the first two
  del config.transfer.strategies, config.transfer.strategy, config.train.epochs
  del config.seed, config.with_scratch, config.compare_scratch, config.save_models
  return config
