"""Decoder-only Transformer LM.

Offline default (gensim's Wikipedia excerpt, ~480k words, 5% of the articles
held out; a 4k-piece unigram tokenizer; 2 layers × 128; a few minutes on 2 CPU
cores; prints held-out perplexity):

  python train.py --config configs/lm_transformer.py --workdir /tmp/lm_tf

The larger run reported in the README (98 novels, whole novels held out):

  python train.py --config configs/lm_transformer.py --workdir /tmp/lm_novels \
    --config.data.kind=text --config.data.path=../shared/data/english_novels \
    --config.data.unit=file --config.tokenizer.vocab_size=8000 \
    --config.model.d_model=256 --config.model.num_layers=4 --config.model.d_ff=1024 \
    --config.train.epochs=1 --config.train.steps=1200 --config.train.eval_max_rows=512

Sample from it:  python -m translearn_jax.generation.sample --workdir /tmp/lm_tf --prompt "The"
"""

import ml_collections

from translearn_jax import config_fields


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'lm'                   # which pretraining family train.py runs
  config.seed = 0                        # init, dropout, shuffling, held-out split

  config.data = ml_collections.ConfigDict()
  config.data.kind = 'wiki'              # 'text' | 'jsonl' | 'tsv' | 'tfds' | 'wiki' | 'pretokenized' (data.path: a directory of python -m translearn_jax.data.pretokenized)
  config.data.path = 'gensim:enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
  config.data.field = 'text'             # JSONL key / TSV column / TFDS feature
  config.data.unit = 'line'              # text: 'line' | 'paragraph' | 'file' per document
  config.data.encoding = 'utf-8'
  config.data.encoding_fallback = ''
  config.data.split = 'train'            # TFDS split
  config.data.data_dir = ''              # TFDS data_dir
  config.data.valid_fraction = 0.05      # documents held out for perplexity
  config.data.valid_path = ''            # or a separate held-out corpus (same kind)

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.path = ''             # an existing sentencepiece model ('' = train one)
  config.tokenizer.vocab_size = 4000
  config.tokenizer.model_type = 'unigram'  # 'unigram' | 'bpe'
  config.tokenizer.normalization = 'nmt_nfkc'  # sentencepiece rule; 'identity' keeps all chars
  # sentencepiece trainer threads: they decide the pieces, so fixed, not the machine's cores
  config.tokenizer.train_threads = 16

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'transformer'
  config.model.vocab_size = 0             # embedding rows (0: the tokenizer's; an imported table may have more)
  config.model.d_model = 128
  config.model.num_heads = 4
  config.model.num_layers = 2
  config.model.d_ff = 512
  config.model.max_len = 512             # longest sequence the model accepts
  config.model.dropout = 0.1
  config.model.attention_dropout = 0.0
  config.model.positions = 'rotary'      # 'rotary' | 'learned'
  config.model.tie_embeddings = True
  config.model.layer_norm_eps = 1e-6     # GPT-2: 1e-5
  config.model.activation = 'gelu_tanh'  # MLP: 'gelu_tanh' (GPT-2) | 'gelu' (erf) | 'relu'
  config.model.attention_impl = 'einsum'  # 'einsum' | 'dot_product' (jax.nn.dot_product_attention) | 'xla' | 'cudnn' (GPU flash)
  config.model.remat = 'none'            # activation checkpointing per block: 'none' | 'full' | 'dots'

  config.train = ml_collections.ConfigDict()
  config.train.seq_length = 128          # tokens per training sequence
  config.train.batch_size = 16           # sequences per micro-batch (global)
  config.train.grad_accum = 1            # micro-batches per optimiser step
  config.train.loss_chunk = 0            # > 0: cross-entropy this many positions at a time (large vocabularies)
  config.train.epochs = 2
  config.train.steps = 0             # stop after this many steps (0: all epochs)
  # Continued pretraining (e.g. on target-domain text, ULMFiT's middle stage):
  # start from another LM run's parameters and tokenizer (same config.model).
  config.init = ml_collections.ConfigDict()
  config.init.kind = 'lm'                # init.path: an LM run to continue ('' = scratch)
  config.init.path = ''
  config.dtype = 'float32'               # compute dtype: 'float32' | 'bfloat16' (params fp32)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 2e-3      # peak
  config.optim.schedule = 'cosine'       # after warmup: 'cosine' | 'linear' | 'constant'
  config.optim.warmup_steps = 50
  config.optim.end_lr_ratio = 0.1        # final LR = peak × this
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-9
  config.optim.weight_decay = 0.01
  config.optim.grad_clip = 1.0           # global-norm clipping (0: off)
  config.optim.no_decay = 'bias,scale,embed,pos_embed'  # path patterns without weight decay

  config.num_devices = 0                 # devices in the mesh (0: all)
  # Mesh axes (their product = the devices used; one may be -1: the rest). The batch is
  # split over data × fsdp; fsdp shards parameters and optimiser state (FSDP); tensor
  # shards heads, MLP and vocabulary. mesh.rules overrides the logical-axis rules, e.g.
  # 'vocab=,embed=fsdp' (see translearn_jax/training/mesh.py).
  config.mesh = config_fields.mesh_fields()
  config.peak_flops_per_device = 0.0     # for MFU where the device is not in the table
  config.train.checkpoint_every_steps = 500
  config.train.keep_checkpoints = 3
  config.train.log_every_steps = 25
  config.train.eval_every_steps = 200    # held-out perplexity during training
  config.train.eval_max_rows = 256       # rows used by in-training evaluation (0: all)
  config.progress = True
  return config
