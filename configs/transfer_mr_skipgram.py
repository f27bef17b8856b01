"""MR sentence polarity with a bag-of-embeddings classifier initialised from skip-gram vectors.

Pretrained vectors: any word2vec file; by default the ones the README's first
command writes (`/tmp/skipgram/vectors.txt`). The README's results use vectors
trained on the 98 novels:

  python train.py --config configs/skipgram.py --workdir runs/sg_novels \
    --config.data.kind=text --config.data.path=../shared/data/english_novels \
    --config.data.unit=paragraph --config.train.epochs=1
  python train.py --config configs/transfer_mr_skipgram.py --workdir runs/mr_sg \
    --config.init.path=runs/sg_novels/vectors.txt --config.compare_scratch=True

MR has no official split: a stratified 80/10/10 split with `data.split_seed`.
"""

import ml_collections

from translearn_jax import config_fields


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'classify'
  config.seed = 0                        # the seed of a single run
  config.seeds = 5                       # seeds per strategy with compare_scratch
  config.compare_scratch = False         # scratch + every strategy in transfer.strategies
  config.with_scratch = True             # False: the strategies only (another workdir has scratch)
  config.save_models = 'best'            # best-dev model: workdir/model/ (single run), or per
                                         #   strategy models/<strategy>/; 'all': every run
                                         #   (models/<strategy>-seed<k>/); 'none'

  config.data = ml_collections.ConfigDict()
  config.data.kind = 'mr'                # 'mr' | 'tsv' | 'csv' | 'jsonl' | 'tfds' (e.g. 'glue/sst2')
  config.data.path = '../shared/data/rt_polarity'
  config.data.text_field = 'sentence'    # tsv/csv/jsonl; 'title,body': fields joined, in order
  config.data.label_field = 'label'      # tsv/csv/jsonl (headerless files: column numbers)
  config.data.encoding = 'utf-8'         # tsv/csv/jsonl (MR is read as Latin-1)
  config.data.encoding_fallback = ''     # e.g. 'latin-1' for files that are not valid UTF-8
  config.data.header = 'auto'            # tsv/csv by column number: 'yes' | 'no' | 'auto' (a
                                         #   first row that looks like a header: an error)
  config.data.split = '0.8,0.1,0.1'      # train/dev/test fractions (stratified)
  config.data.split_seed = 0
  config.data.dev_path = ''              # tsv/jsonl: with test_path, a predefined split
  config.data.test_path = ''             #   (data.path is then the training file; split unused)
                                         #   tfds: split names, e.g. 'validation'
  config.data.tfds_split = 'train'       # tfds: the training split
  config.data.data_dir = ''              # tfds: where the prepared dataset is (TFDS's default if '')

  config.model = ml_collections.ConfigDict()
  config.model.type = 'bag_of_embeddings'  # 'bag_of_embeddings' | 'lm_encoder'
  config.model.dim = 100                 # must equal the pretrained vectors' size
  config.model.dropout = 0.5
  config.model.pooling = 'mean'          # lm_encoder: 'mean' | 'max' | 'last'
  config.model.max_tokens = 64           # longer texts are truncated

  config.init = ml_collections.ConfigDict()   # the pretrained source (transfer.sources)
  config.init.kind = 'word2vec'          # 'word2vec' | 'lm' | 'none'
  config.init.path = '/tmp/skipgram/vectors.txt'
  config.init.binary = False             # word2vec binary; else text: word2vec, fastText, GloVe
  config.init.unicode_errors = 'strict'  # words not UTF-8: 'strict' (an error) | 'replace' | 'ignore'
  config.init.remap_init = 'mean'        # rows of words missing from the source: 'mean' |
                                         # 'random' | 'init' | 'subword' (a fastText .bin:
                                         # a vector from the word's character n-grams)
  config.init.rules = 'embedding=>backbone/embed/embedding'  # graft: 'src_regex=>target; ...'

  config.transfer = ml_collections.ConfigDict()
  config.transfer.strategy = 'finetune'  # single run: finetune | feature_extraction | discriminative | gradual_unfreezing | linear_probe_logistic | linear_probe_svm
  config.transfer.strategies = ('feature_extraction,finetune,discriminative,gradual_unfreezing,'
                                'linear_probe_logistic,linear_probe_svm')
  config.transfer.groups = 'head=^head/,embed=^backbone/'  # top (depth 0) first
  config.transfer.factor = 0.38          # discriminative LR per depth (ULMFiT: 1/2.6 = 0.385)
  config.transfer.unfreeze_every = 0     # gradual unfreezing: steps per group (0: one epoch)
  config.transfer.freeze_bottom = 0      # the lowest k groups stay frozen (any strategy)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 3e-3      # peak LR (depth 0)
  config.optim.schedule = 'slanted_triangular'  # | 'cosine' | 'linear' | 'constant'
  config.optim.warmup_steps = 0          # cosine/linear/constant only
  config.optim.weight_decay = 0.0
  config.optim.grad_clip = 1.0

  # Devices a fine-tuning run spans (0: all) and their mesh (as in pretraining; the
  # default, one device, is the plain single-device run): e.g. num_devices=8,
  # mesh.fsdp=4 shards a pretrained backbone's parameters and optimiser state by the
  # logical-axis rules, and every batch over data x fsdp.
  config.num_devices = 1
  config.mesh = config_fields.mesh_fields()
  config.train = ml_collections.ConfigDict()
  config.train.epochs = 10
  config.train.batch_size = 50
  config.eval = ml_collections.ConfigDict()
  config.eval.metric = 'accuracy'        # | 'macro_f1' (unbalanced classes): best epoch, probes
  return config
