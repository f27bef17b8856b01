"""MR sentence polarity with a classifier whose body is a pretrained LM (ULMFiT-style).

`init.path` is an LM run directory (configs/lm_transformer.py or
lm_lstm.py); its tokenizer and architecture are reused, every backbone leaf is
grafted (`(.*)=>backbone/\\1`) and the head is created. Layer groups are listed
top first for discriminative LRs and gradual unfreezing; adjust them to the
LM's depth (here: the 2-layer offline default).

  python train.py --config configs/lm_transformer.py --workdir /tmp/lm_tf
  python train.py --config configs/transfer_mr_lm.py --workdir /tmp/mr_lm \
    --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_mr_skipgram


def get_config():
  config = transfer_mr_skipgram.get_config()
  config.model.type = 'lm_encoder'
  config.model.pooling = 'mean'
  config.model.dropout = 0.1
  config.model.max_tokens = 80
  config.model.lora_rank = 0             # > 0 adds LoRA adapters (strategy 'lora' trains only them + head)
  config.model.lora_alpha = 16.0         # the adapters' scale is lora_alpha / lora_rank (peft's alpha)
  config.init.kind = 'lm'
  config.init.path = '/tmp/lm_tf'
  config.init.rules = r'(.*)=>backbone/\1'
  config.transfer.groups = (r'head=^head/,block_1=^backbone/(block_1|ln_final)/,'
                            r'block_0=^backbone/block_0/,embed=^backbone/(embed|pos_embed)')
  config.optim.learning_rate = 1e-3
  config.train.epochs = 4
  config.train.batch_size = 32
  return config
