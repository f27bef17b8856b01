"""CoNLL-2003 NER with a token tagger over a pretrained masked-LM encoder.

`init.path` is an MLM run directory (configs/mlm_encoder.py). Each sentence is
framed `<bos> pieces… <eos>` and each word is tagged at its first piece with
the whole sentence in view (bidirectional). The MLM prediction head is left
out of the graft (`mlm/.*=>`). Entity-level span F1 on the test set at the
best dev epoch.

  python train.py --config configs/mlm_encoder.py --workdir /tmp/mlm
  python train.py --config configs/transfer_conll_mlm.py --workdir /tmp/conll_mlm \
    --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_conll_lm, transfer_mr_mlm


def get_config():
  config = transfer_conll_lm.get_config()
  mlm = transfer_mr_mlm.get_config()
  config.init.kind = 'mlm'
  config.init.path = mlm.init.path
  config.init.rules = mlm.init.rules
  config.transfer.groups = mlm.transfer.groups
  config.transfer.strategies = 'finetune,feature_extraction'
  config.optim.learning_rate = 5e-4
  return config
