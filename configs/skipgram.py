"""Skip-gram with negative sampling, in word2vec's update order.

K negatives for every (center, context) pair, and a step's pairs applied one context
offset at a time (`model.pair_order='sequential'`), so a center's input row moves after
each of its pairs as in word2vec.c and gensim. After 5 epochs of the novels it is level
with gensim (WordSim-353 -0.003 +- 0.013, SimLex-999 +0.001 +- 0.010, 5 seeds) at
1.12-1.19x gensim's words/s on one CPU device, where the step runs as a C++ kernel
(`model.step_kernel='auto'`). On other devices (GPUs, several CPU devices) the XLA step
takes ~2.8x the time of configs/skipgram_shared.py's, whose shared draws are faster but
trail gensim after 5 epochs (README results, "Skip-gram's sequential pair order"). Large
batches (many devices): configs/skipgram_large_batch.py, this order under the curvature cap.

Offline default (the Wikipedia excerpt gensim ships, ~480k words, 5 epochs;
under a minute on 2 CPU cores; prints WordSim-353 / SimLex-999 ρ and analogy
accuracy, low as expected from so little text: README, first command):

  python train.py --config configs/skipgram.py --workdir /tmp/skipgram

The 98 novels (~13.9M words), one epoch, paragraphs as segments:

  python train.py --config configs/skipgram.py --workdir /tmp/sg_novels \
    --config.data.path=../shared/data/english_novels --config.data.unit=paragraph \
    --config.train.epochs=1 --config.eval.similarity=wordsim353=../shared/data/word_eval/EN-WS-353-ALL.txt,simlex999=../shared/data/word_eval/EN-SIMLEX-999.txt
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'word2vec'             # which pretraining family train.py runs
  config.seed = 0                        # init, subsampling, windows, negatives

  config.data = ml_collections.ConfigDict()
  config.data.kind = 'wiki'              # 'text' | 'jsonl' | 'tsv' | 'tfds' | 'wiki'
  config.data.path = 'gensim:enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'  # file, dir, glob, a,b or gensim:NAME; TFDS name
  config.data.field = 'text'             # JSONL key / TSV column / TFDS feature
  config.data.unit = 'line'              # text: 'line' | 'paragraph' | 'file' per document
  config.data.encoding = 'utf-8'         # text encoding of the files
  config.data.encoding_fallback = ''     # e.g. 'latin-1' for files that are not UTF-8
  config.data.split = 'train'            # TFDS split
  config.data.data_dir = ''              # TFDS data_dir
  config.data.lowercase = True           # lowercase before tokenising

  config.vocab = ml_collections.ConfigDict()
  config.vocab.min_count = 5             # drop words seen fewer times
  config.vocab.max_size = 0              # keep at most this many words (0: no limit)
  # Continued (e.g. target-domain) pretraining: start from another word2vec run's
  # tables. The vocabulary is this corpus's plus every word of that run's.
  config.init = ml_collections.ConfigDict()
  config.init.kind = 'word2vec_run'      # init.path: a word2vec run to continue ('' = scratch)
  config.init.path = ''                 # a word2vec run directory ('' = random init)

  config.model = ml_collections.ConfigDict()
  config.model.mode = 'skipgram'         # 'skipgram' | 'cbow'
  config.model.dim = 100                 # vector size
  config.model.window = 5                # max window; the used one is uniform in 1..window
  config.model.negatives = 5             # negatives per center word
  config.model.pair_negatives = True     # skip-gram: K negatives per (center, context) pair
  # skip-gram, shared negatives (pair_negatives=False): draws per center, each weighted by
  # c_i·K/draws (0: K); configs/skipgram_shared.py
  config.model.negative_draws = 0
  # positions of a row (consecutive groups) sharing one draw of negatives (1: each its own;
  # must divide train.seq_length): fewer rows gathered and scattered a step
  config.model.negative_share = 1
  # skip a drawn negative that is the pair's own target word, as word2vec.c and gensim do
  config.model.skip_target_negatives = False
  # > 0: scores with |s| >= this give no gradient (gensim skips them at 6; 0: all train)
  config.model.max_score = 0.0
  # skip-gram with pair_negatives: 'sequential' (one context offset at a time, word2vec's
  # order: level with gensim after 5 epochs of the novels; with the CPU kernel 1.12-1.19x
  # gensim's words/s, the XLA step 2.8x the shared draws' time) or 'summed' (a step's pairs
  # from the same tables: what the row caps of large batches need)
  config.model.pair_order = 'sequential'
  # 'xla' (any devices), 'cpu' (the step as one C++ XLA:CPU custom call, built at first use
  # with the machine's compiler: one CPU device, the same update up to float order; 1.9-2.0x
  # the XLA step's words/s, README) or 'auto': 'cpu' where the run allows it, else 'xla'
  config.model.step_kernel = 'auto'

  config.sample = 1e-3                   # frequent-word subsampling threshold (0: off)
  config.train = ml_collections.ConfigDict()
  config.train.epochs = 5                # passes over the corpus
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.025     # α0 (word2vec: 0.025 skip-gram, 0.05 CBOW)
  config.optim.end_lr_ratio = 1e-4       # linear decay to α0 · this
  config.optim.warmup_steps = 0          # >0: linear rise from 0 to α0 first (large batches)
  # >0: a row's step at most this many updates' worth (large batches)
  config.optim.row_cap = 0.0
  # 'count' | 'norm' | 'curvature': cap the contributions' count, the sum's norm, or α × the
  # row's summed curvature (curvature with row_cap=1: batch 16 at batch 2's quality, README;
  # the sequential pair order takes 'curvature' only, bounding each sub-step's rows)
  config.optim.row_cap_mode = 'count'
  # with the curvature cap: weight of α·|σ(s) - label| per contribution in a row's total (the
  # bilinear cross term between a row and its partners, which large batches' first steps
  # grow along; 0: off)
  config.optim.row_cap_cross = 0.0
  config.train.batch_size = 2            # rows per step (global; divisible by #devices)
  config.train.seq_length = 256          # subsampled tokens per row
  config.train.steps_per_call = 64       # steps scanned in one jitted call
  # 'block': a step's rows are consecutive stretches of the subsampled text; 'spread': row r
  # reads the r-th of batch_size equal parts of each epoch, as word2vec's thread r does
  config.train.batch_rows = 'block'
  config.num_devices = 0                 # devices in the data mesh (0: all)
  config.model.table_sharding = 'replicated'  # 'rows': each device holds 1/n of the rows
  config.train.prefetch = 2              # blocks prepared ahead in a host thread
  # threads drawing the blocks' windows and negatives (0: 1 when the step runs on CPU devices,
  # whose cores it uses, else up to 4 of the host's cores: an accelerator's step outruns one)
  config.train.input_workers = 0

  config.train.checkpoint_every_steps = 2000  # save every N steps (and at the end)
  config.train.keep_checkpoints = 3      # keep the newest N
  config.train.log_every_steps = 200     # metrics to TensorBoard + metrics.jsonl
  config.progress = True                 # tqdm progress bar

  config.eval = ml_collections.ConfigDict()
  config.eval.similarity = ('wordsim353=gensim:wordsim353.tsv,'
                            'simlex999=gensim:simlex999.txt')  # name=path,...
  config.eval.analogy = 'gensim:questions-words.txt'  # '' to skip
  config.eval.analogy_restrict = 30000   # most frequent words searched (word2vec: 30k; 0: all)

  config.export = ml_collections.ConfigDict()
  config.export.format = 'text'          # word2vec format: 'text' | 'binary' | ''
  return config
