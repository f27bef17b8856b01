"""MR sentence polarity with a classifier whose body is a pretrained masked-LM encoder.

`init.path` is an MLM run directory (configs/mlm_encoder.py); its tokenizer and
architecture are reused. Texts are framed `<bos> text <eos>` ([CLS] … [SEP]) as
in pretraining; the classifier pools the encoder states (`model.pooling`:
'cls' = the first position, or 'mean'). Every backbone leaf is grafted
(`(.*)=>backbone/\\1`) except the MLM prediction head, which a classifier has no
use for (`mlm/.*=>` drops it, listed in the graft report); the head is created.
Layer groups (top first) fit the 2-layer offline default; adjust them to the
encoder's depth.

  python train.py --config configs/mlm_encoder.py --workdir /tmp/mlm
  python train.py --config configs/transfer_mr_mlm.py --workdir /tmp/mr_mlm \
    --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_mr_lm


def get_config():
  config = transfer_mr_lm.get_config()
  config.model.pooling = 'cls'           # 'cls' | 'mean' | 'max' | 'pooler' (BERT's, model.pooler)
  config.init.kind = 'mlm'
  config.init.path = '/tmp/mlm'
  config.init.rules = r'mlm/.*=>;(.*)=>backbone/\1'
  config.transfer.groups = (r'head=^head/,block_1=^backbone/(block_1|ln_final)/,'
                            r'block_0=^backbone/block_0/,'
                            r'embed=^backbone/(embed|pos_embed|type_embed|embed_ln)')
  config.transfer.strategies = ('finetune,feature_extraction,discriminative,gradual_unfreezing,'
                                'linear_probe_logistic,linear_probe_svm')
  config.optim.learning_rate = 5e-4
  return config
