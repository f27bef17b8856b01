"""CoNLL-2003 NER fine-tuned from a Hugging Face BERT (or RoBERTa) checkpoint.

Each word is tagged at its first piece of the checkpoint's own tokenizer
(WordPiece: the word's first piece; byte-level BPE: the word encoded after a
space, RoBERTa's `add_prefix_space` convention), rows framed [CLS] … [SEP].

  python -m translearn_jax.convert import-hf /path/to/bert-base-cased /tmp/bert_run
  python train.py --config configs/transfer_conll_hf_bert.py --workdir /tmp/conll_bert \
    --config.init.path=/tmp/bert_run --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_conll_mlm, transfer_mr_hf_bert


def get_config():
  config = transfer_conll_mlm.get_config()
  bert = transfer_mr_hf_bert.get_config()
  config.init.path = bert.init.path
  config.transfer.groups = bert.transfer.groups
  config.transfer.strategies = 'finetune'
  config.optim.learning_rate = 5e-5
  return config
