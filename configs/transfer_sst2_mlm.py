"""GLUE SST-2 with the masked-LM encoder classifier of configs/transfer_mr_mlm.py.

The data are read as in configs/transfer_sst2_skipgram.py (a predefined
train/dev/test split of `../shared/data/sst2`).

  python train.py --config configs/mlm_encoder.py --workdir /tmp/mlm
  python train.py --config configs/transfer_sst2_mlm.py --workdir /tmp/sst2_mlm \
    --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_mr_mlm, transfer_sst2_skipgram


def get_config():
  config = transfer_mr_mlm.get_config()
  config.data = transfer_sst2_skipgram.get_config().data
  config.transfer.strategies = 'finetune,feature_extraction,linear_probe_logistic'
  config.train.epochs = 2                # 60k short examples
  config.transfer.unfreeze_every = 0     # gradual unfreezing (not in this list): one epoch
  return config
