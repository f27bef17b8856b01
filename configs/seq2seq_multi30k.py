"""English→German translation on Multi30k with an encoder-decoder Transformer.

  python train.py --config configs/seq2seq_multi30k.py --workdir /tmp/mt

Reads ../shared/data/multi30k (or the files given on the command line);
reports BLEU and chrF (sacrebleu, detokenised) on val and test_2016_flickr.
"""

import ml_collections

from translearn_jax import config_fields


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'seq2seq'
  config.objective = 'supervised'        # 'supervised' (pairs) | 'denoise' (configs/seq2seq_denoise.py)
  config.seed = 0

  d = '../shared/data/multi30k/'
  config.data = ml_collections.ConfigDict()
  config.data.kind = 'text'              # 'text' (aligned files) | 'tsv' | 'csv' | 'jsonl' | 'tfds'
  config.data.train_source = d + 'train.en'
  config.data.train_target = d + 'train.de'
  config.data.valid_source = d + 'val.en'
  config.data.valid_target = d + 'val.de'
  config.data.test_source = d + 'test_2016_flickr.en'
  config.data.test_target = d + 'test_2016_flickr.de'
  config.data.train_path = ''            # tsv/jsonl files of pairs
  config.data.valid_path = ''
  config.data.test_path = ''
  config.data.source_field = 'source'    # tsv/jsonl field (TFDS: language code, e.g. 'en')
  config.data.target_field = 'target'
  config.data.header = 'auto'            # tsv/csv fields by column number: 'yes' skips a header row
  config.data.path = ''                  # TFDS dataset name
  config.data.train_split = 'train'
  config.data.valid_split = 'validation'
  config.data.test_split = 'test'
  config.data.data_dir = ''
  config.data.encoding = 'utf-8'         # text/tsv/jsonl files' encoding
  config.data.encoding_fallback = ''     # e.g. 'latin-1' for files that are not valid UTF-8
  config.data.truncate_source = False    # True: cut sources beyond max_source_len (else dropped)
  config.data.max_train_pairs = 0        # > 0: train on this many pairs (low-resource budgets)
  config.data.subset_seed = 0            # which ones: nested across budgets for one seed

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.path = ''             # shared sentencepiece model ('' = train on both sides)
  config.tokenizer.vocab_size = 8000
  config.tokenizer.model_type = 'unigram'
  config.tokenizer.normalization = 'nmt_nfkc'  # sentencepiece's; 'identity' keeps every character
  # sentencepiece trainer threads: they decide the pieces, so fixed, not the machine's cores
  config.tokenizer.train_threads = 16
  config.tokenizer.source_lang = ''      # an imported mBART's language codes (en_XX, ro_RO):
  config.tokenizer.target_lang = ''      #   framing and where decoding starts, as transformers'
                                         #   (full-width CJK punctuation, no-break spaces)

  config.model = ml_collections.ConfigDict()
  config.model.d_model = 256
  config.model.num_heads = 4
  config.model.encoder_layers = 3
  config.model.decoder_layers = 3
  config.model.d_ff = 1024
  config.model.dropout = 0.1
  config.model.share_embeddings = True
  config.model.norm = 'pre'              # 'pre' (+ final LayerNorms) | 'post' (BART, Marian)
  config.model.positions = 'learned'     # 'learned' | 'sinusoidal' (Marian)
  config.model.position_offset = 0       # learned-table row of position p is p + this (BART: 2)
  config.model.scale_embedding = False   # token embeddings x sqrt(d_model) (Marian)
  config.model.embed_ln = False          # LayerNorm after embeddings + positions (BART)
  config.model.final_logits_bias = False  # a bias on the output logits (BART, Marian)
  config.model.activation = 'gelu_tanh'  # MLP: 'gelu_tanh' | 'gelu' (erf, BART) | 'relu' | 'silu'
  config.model.layer_norm_eps = 1e-6     # BART, Marian: 1e-5

  config.max_source_len = 48             # pieces; longer training pairs are dropped
  config.max_target_len = 48
  config.length_buckets = '12,16,20,24,32'  # batch boundaries in pieces ('' = pad all to the max)
  config.packing = False                 # True: pack several pairs into each of batch_size
                                         # rows of max_*_len pieces (replaces length_buckets)
  config.label_smoothing = 0.1
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64           # pairs (packed rows with packing) a micro-batch
  config.train.grad_accum = 1            # micro-batches per optimiser step
  config.train.epochs = 10
  config.train.steps = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 400
  config.optim.end_lr_ratio = 0.05
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-9
  config.optim.weight_decay = 0.01
  config.optim.grad_clip = 1.0
  config.optim.no_decay = 'bias,scale,embed,pos_embed'

  config.eval = ml_collections.ConfigDict()
  config.eval.metric = 'bleu'            # 'bleu' (+ chrF) | 'rouge'
  config.eval.bleu_tokenize = '13a'      # sacrebleu's: 'zh' (Chinese), 'ja-mecab', 'intl', ...
  config.eval.rouge_tokenize = 'default'  # rouge-score's English words + stemming | 'unicode'
  config.eval.beam = 4                   # 1 = greedy
  config.eval.length_penalty = 0.6       # GNMT alpha
  # 'gnmt': divide by ((5 + len) / 6) ** alpha | 'length': by len ** alpha (fairseq's
  # --lenpen, transformers' length_penalty: an imported checkpoint's generation settings)
  config.eval.length_penalty_form = 'gnmt'
  # as transformers' generate(): no EOS before min_length tokens (the decoder start one
  # included); no n-gram of this size twice in a hypothesis (0: off)
  config.eval.min_length = 0
  config.eval.no_repeat_ngram_size = 0
  # when a beam search ends: 'never' (exact: when no alive hypothesis can still win) |
  # 'heuristic' | 'k_finished' (transformers' early_stopping 'never' / False / True)
  config.eval.early_stopping = 'never'
  config.eval.max_examples = 0
  config.eval.every_steps = 0            # >0: score the valid split during training
  config.eval.during_beam = 1            # decoding used for those scores (1 = greedy)
  config.eval.during_max_examples = 0    # 0: the whole valid split

  # A pretrained initialisation (issue #16; '' = scratch): init.kind 'seq2seq' grafts a
  # seq2seq run (e.g. denoising-pretrained) entirely, 'lm' a Transformer LM run into the
  # decoder (cross-attention and encoder created). The run then uses the source's
  # tokenizer. init.rules: 'src_regex=>target; ...' ('' = the defaults of
  # translearn_jax.transfer.graft.SEQ2SEQ_RULES); the report is workdir/graft_report.json.
  config.init = ml_collections.ConfigDict()
  config.init.kind = 'seq2seq'
  config.init.path = ''
  config.init.rules = ''

  # Back-translation (Sennrich et al. 2016; '' = off): the monolingual target-side sentences
  # of backtranslation.path translated into the source language by the reverse model
  # (a saved seq2seq model or run directory) and added to the training pairs.
  config.backtranslation = ml_collections.ConfigDict()
  config.backtranslation.model = ''
  config.backtranslation.path = ''
  config.backtranslation.max_sentences = 0   # 0: every line
  config.backtranslation.beam = 1            # 1: greedy
  config.backtranslation.batch_size = 128

  config.dtype = 'float32'               # compute dtype: 'float32' | 'bfloat16' (params fp32)
  # Fine-tuning strategies (translearn_jax/transfer/strategies.py) for a pretrained init:
  # 'finetune' (every parameter, one LR) | 'feature_extraction' | 'discriminative' |
  # 'gradual_unfreezing'; groups top first ('' = encoder/decoder blocks, see
  # pretraining/seq2seq.py seq2seq_groups); freeze_bottom keeps the k lowest groups frozen.
  config.transfer = ml_collections.ConfigDict()
  config.transfer.strategy = 'finetune'
  config.transfer.groups = ''
  config.transfer.factor = 1 / 2.6       # discriminative: LR × factor per group down
  config.transfer.unfreeze_every = 500   # gradual unfreezing: steps between groups (0: one epoch)
  config.transfer.freeze_bottom = 0

  config.num_devices = 0                 # devices in the mesh (0: all)
  # The device mesh (issue #18): data × fsdp × tensor, one of them -1 (the rest of the
  # devices); parameters are placed by logical-axis rules, mesh.rules overrides them
  # (see translearn_jax/training/mesh.py).
  config.mesh = config_fields.mesh_fields()
  config.train.checkpoint_every_steps = 1000
  config.train.keep_checkpoints = 3
  config.train.log_every_steps = 50
  config.progress = True
  return config
