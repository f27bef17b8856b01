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
    --config.train.batch_size=32 --config.train.epochs=1 --config.train.steps=3000 \
    --config.optim.warmup_steps=300

(The globs leave out the PROVENANCE.txt files of the two directories.)
Transfer from the run: configs/transfer_conll_mlm.py, configs/transfer_mr_mlm.py.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'mlm'                  # which pretraining family train.py runs
  config.seed = 0                        # init, masking, dropout, shuffling, held-out split

  config.data = ml_collections.ConfigDict()
  config.data.kind = 'wiki'              # 'text' | 'jsonl' | 'tsv' | 'tfds' | 'wiki'
  config.data.path = 'gensim:enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
  config.data.field = 'text'             # JSONL key / TSV column / TFDS feature
  config.data.unit = 'line'              # text: 'line' | 'paragraph' | 'file' per document
  config.data.encoding = 'utf-8'
  config.data.encoding_fallback = ''
  config.data.split = 'train'            # TFDS split
  config.data.data_dir = ''              # TFDS data_dir
  config.data.valid_fraction = 0.05      # documents held out for MLM loss/accuracy
  config.data.valid_path = ''            # or a separate held-out corpus (same kind)

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.path = ''             # an existing sentencepiece model with <mask> ('' = train)
  config.tokenizer.vocab_size = 4000
  config.tokenizer.model_type = 'unigram'  # 'unigram' | 'bpe'
  config.tokenizer.normalization = 'nmt_nfkc'

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'encoder'
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

  config.mlm = ml_collections.ConfigDict()
  config.mlm.mask_rate = 0.15            # share of real pieces predicted (80/10/10 mask/random/keep)
  config.mlm.whole_word = False          # mask whole words (all pieces of a chosen word)
  config.mlm.max_predictions = 0         # prediction slots per row (0: 2 × rate × seq_length)

  config.train = ml_collections.ConfigDict()
  config.train.seq_length = 128          # positions per packed row
  config.train.batch_size = 16           # rows per micro-batch (global)
  config.train.grad_accum = 1            # micro-batches per optimiser step
  config.train.epochs = 2
  config.train.steps = 0                 # stop after this many steps (0: all epochs)
  config.train.checkpoint_every_steps = 500
  config.train.keep_checkpoints = 3
  config.train.log_every_steps = 25
  config.train.eval_every_steps = 200    # held-out MLM loss/accuracy during training
  config.train.eval_max_rows = 256       # rows used by in-training evaluation (0: all)

  # Continued pretraining: start from another MLM run's parameters and tokenizer.
  config.init = ml_collections.ConfigDict()
  config.init.kind = 'mlm'
  config.init.path = ''
  config.dtype = 'float32'               # compute dtype: 'float32' | 'bfloat16' (params fp32)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3      # peak
  config.optim.schedule = 'linear'       # after warmup: 'cosine' | 'linear' | 'constant'
  config.optim.warmup_steps = 100
  config.optim.end_lr_ratio = 0.0        # final LR = peak × this
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-6
  config.optim.weight_decay = 0.01
  config.optim.grad_clip = 1.0           # global-norm clipping (0: off)
  config.optim.no_decay = 'bias,scale,embed,pos_embed'  # path patterns without weight decay

  config.num_devices = 0                 # devices in the data mesh (0: all)
  config.peak_flops_per_device = 0.0     # for MFU where the device is not in the table
  config.progress = True
  return config
