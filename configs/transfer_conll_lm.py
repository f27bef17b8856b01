"""CoNLL-2003 NER with a token-classification head over a pretrained LM body.

`init.path` is an LM run directory (tokenizer + architecture reused).
Entity-level span F1 on the test set at the best dev epoch.

  python train.py --config configs/lm_transformer.py --workdir /tmp/lm_tf
  python train.py --config configs/transfer_conll_lm.py --workdir /tmp/conll_lm \
    --config.compare_scratch=True

The README's CoNLL table: the 4-layer pretrain_en LM of configs/lm_adapt_movies.py
(stage 1, `runs/lm_pe`), five seeds, layer groups for its depth:

  python train.py --config configs/transfer_conll_lm.py --workdir runs/conll_from_lm_pe \
    --config.init.path=runs/lm_pe --config.compare_scratch=True --config.seeds=5 \
    --config.transfer.strategies=finetune,feature_extraction \
    "--config.transfer.groups=head=^head/,top=^backbone/(block_3|ln_final)/,block_2=^backbone/block_2/,block_1=^backbone/block_1/,block_0=^backbone/block_0/,embed=^backbone/(embed|pos_embed)"
"""

import ml_collections

from translearn_jax.configs import transfer_mr_lm


def get_config() -> ml_collections.ConfigDict:
  config = transfer_mr_lm.get_config()
  config.family = 'tag'
  del config['eval']                     # a tagger is scored by entity span F1
  config.data = ml_collections.ConfigDict()
  config.data.kind = 'conll'             # 'conll' (files) | 'tfds' (path: the dataset, e.g. 'conll2003')
  config.data.path = ''                  # tfds: the dataset name
  config.data.train_path = '../shared/data/conll2003/train.txt'   # tfds: split names
  config.data.dev_path = '../shared/data/conll2003/valid.txt'
  config.data.test_path = '../shared/data/conll2003/test.txt'
  config.data.tokens_field = 'tokens'    # tfds: the token and tag sequence features
  config.data.tags_field = 'ner_tags'
  config.data.data_dir = ''              # tfds: where the prepared dataset is
  config.data.encoding = 'utf-8'         # CoNLL files' encoding (CoNLL-2002's are latin-1)
  config.data.encoding_fallback = ''     # e.g. 'latin-1' for files that are not valid UTF-8
  config.data.token_column = 0           # CoNLL columns (0-based, negative from the end)
  config.data.tag_column = -1
  config.data.tag_scheme = ''            # '' prefixed tags (IOB/IOBES/BILOU); 'io': the type alone (Few-NERD)
  config.model.max_tokens = 128
  config.transfer.strategies = 'finetune,discriminative'
  config.optim.learning_rate = 2e-3
  config.train.epochs = 3
  config.train.batch_size = 32
  config.seeds = 3
  return config
