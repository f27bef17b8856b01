"""Masked-LM encoder pretraining (BERT/RoBERTa style): `family='mlm'`.

Offline default (gensim's Wikipedia excerpt, ~480k words, 5% of the articles
held out; a 4k-piece unigram tokenizer with a `<mask>` piece; a 2-layer × 128
post-LN encoder; a few minutes on 2 CPU cores; prints held-out masked-token
accuracy):

  python train.py --config configs/mlm_encoder.py --workdir /tmp/mlm

The README's encoder (pretrain_en + english_novels, ~16M words; 4 layers × 256;
the command and its figures are in the README's results section):

  python train.py --config configs/mlm_encoder.py --workdir runs/mlm_pe_novels \
    --config.data.kind=text \
    --config.data.path=../shared/data/pretrain_en/[a-z]*.txt,../shared/data/english_novels/*_*.txt \
    --config.data.valid_fraction=0.002 --config.tokenizer.vocab_size=8000 \
    --config.model.d_model=256 --config.model.num_layers=4 --config.model.d_ff=1024 \
    --config.train.batch_size=8 --config.train.grad_accum=4 --config.train.epochs=1 \
    --config.train.steps=3000 --config.optim.warmup_steps=300

(32 rows a step as 4 micro-batches of 8, the faster layout on XLA:CPU; the README's
first run used --config.train.batch_size=32 without accumulation.)

(The globs leave out the PROVENANCE.txt files of the two directories.)
Transfer from the run: configs/transfer_conll_mlm.py, configs/transfer_mr_mlm.py.
"""

import ml_collections

from translearn_jax.configs import lm_transformer


def get_config() -> ml_collections.ConfigDict:
  # data, tokenizer, train, dtype, devices: as the causal LM's (configs/lm_transformer.py)
  config = lm_transformer.get_config()
  config.family = 'mlm'                  # which pretraining family train.py runs
  config.data.valid_fraction = 0.05      # documents held out for MLM loss/accuracy
  config.tokenizer.path = ''             # an existing sentencepiece model with <mask> ('' = train)

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'encoder'
  config.model.vocab_size = 0             # embedding rows (0: the tokenizer's; an imported table may have more)
  config.model.d_model = 128
  config.model.num_heads = 4
  config.model.num_layers = 2
  config.model.d_ff = 512
  config.model.max_len = 512             # longest input the model accepts
  config.model.dropout = 0.1
  config.model.attention_dropout = 0.1
  config.model.positions = 'learned'     # 'learned' | 'rotary'
  config.model.position_offset = 0       # learned-table row of position p is p + this (RoBERTa: 2)
  config.model.norm = 'post'             # 'post' (BERT, RoBERTa) | 'pre'
  config.model.activation = 'gelu'       # 'gelu' (erf) | 'gelu_tanh' | 'relu'
  config.model.layer_norm_eps = 1e-12    # BERT 1e-12, RoBERTa 1e-5
  config.model.type_vocab_size = 0       # token-type embeddings (BERT 2; 0: none)
  config.model.tie_embeddings = True     # MLM decoder tied to the word embeddings (+ bias)
  config.model.pad_id = 0                # padding id (this project's tokenizers: 0; RoBERTa: 1)
  config.model.pooler = False            # BERT's pooler (dense + tanh on [CLS]; pooling='pooler')

  config.mlm = ml_collections.ConfigDict()
  config.mlm.mask_rate = 0.15            # share of real pieces predicted (80/10/10 mask/random/keep)
  config.mlm.whole_word = False          # mask whole words (all pieces of a chosen word)
  config.mlm.max_predictions = 0         # prediction slots per row (0: 2 × rate × seq_length)

  config.train.seq_length = 128          # positions per packed row
  config.train.eval_every_steps = 200    # held-out MLM loss/accuracy during training
  # Continued pretraining: start from another MLM run's parameters and tokenizer.
  config.init.kind = 'mlm'

  config.optim.learning_rate = 1e-3      # peak
  config.optim.schedule = 'linear'       # after warmup: 'cosine' | 'linear' | 'constant'
  config.optim.warmup_steps = 100
  config.optim.end_lr_ratio = 0.0        # final LR = peak × this
  config.optim.eps = 1e-6
  return config
