"""MR sentence polarity fine-tuned from a Hugging Face BERT (or RoBERTa) checkpoint.

Any BERT/RoBERTa directory with `config.json`, `model.safetensors` and
`tokenizer.json` (e.g. one saved by `transformers`' `save_pretrained`) is first
converted into a run directory; the classifier then uses the checkpoint's own
tokenizer ([CLS] text [SEP] / <s> text </s>), its architecture and weights.
`model.pooling='pooler'` uses BERT's pretrained pooler (kept on import unless
`--drop_pooler`); 'cls' or 'mean' pool the last layer's states instead
(RoBERTa's MLM checkpoints have no pooler). Layer groups (top first) fit a
12-layer base model; adjust them to the checkpoint's depth.

  python -m translearn_jax.convert import-hf /path/to/bert-base-uncased /tmp/bert_run
  python train.py --config configs/transfer_mr_hf_bert.py --workdir /tmp/mr_bert \
    --config.init.path=/tmp/bert_run --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_mr_mlm


def get_config():
  config = transfer_mr_mlm.get_config()
  config.init.path = '/tmp/bert_run'
  config.model.pooling = 'pooler'        # 'pooler' (BERT's) | 'cls' | 'mean' | 'max'
  config.model.max_tokens = 128
  config.transfer.groups = (r'head=^head/,top=^backbone/(block_(9|10|11)|pooler)/,'
                            r'upper=^backbone/block_[678]/,lower=^backbone/block_[345]/,'
                            r'bottom=^backbone/block_[012]/,'
                            r'embed=^backbone/(embed|pos_embed|type_embed|embed_ln)')
  config.transfer.strategies = 'finetune,feature_extraction,linear_probe_logistic'
  config.optim.learning_rate = 2e-5      # BERT's fine-tuning range (2e-5 .. 5e-5)
  config.train.epochs = 3
  return config
