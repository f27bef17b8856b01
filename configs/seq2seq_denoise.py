"""Denoising seq2seq pretraining on monolingual text (BART text infilling or T5 span
corruption): `family='seq2seq'`, `objective='denoise'`.

Default: the English and the German sides of the Multi30k training set read as two
unpaired monolingual corpora (the usual semi-supervised setting; the pairing is never
used), 1% of the lines held out; one sentencepiece model with a `<mask>` piece (and the
sentinels, for span corruption) trained on both; the 3+3 × 256 model of
configs/seq2seq_multi30k.py. Reports held-out loss and next-piece accuracy of the clean
text given the noised one.

  python train.py --config configs/seq2seq_denoise.py --workdir runs/dn

More text is any source the data layer reads, e.g. English prose beside Multi30k:

  --config.data.path=../shared/data/multi30k/train.en,../shared/data/multi30k/train.de,../shared/data/pretrain_en/[a-z]*.txt

A translation run then starts from it (same `model.*`; it uses this run's tokenizer):

  python train.py --config configs/seq2seq_multi30k.py --workdir runs/mt_dn \
    --config.init.kind=seq2seq --config.init.path=runs/dn
"""

import ml_collections

from translearn_jax.configs import seq2seq_multi30k


def get_config() -> ml_collections.ConfigDict:
  # model, lengths, buckets, optimiser, mesh: as the translation config's
  config = seq2seq_multi30k.get_config()
  config.objective = 'denoise'           # 'supervised' (pairs) | 'denoise' (monolingual text)

  d = '../shared/data/multi30k/'
  config.data = ml_collections.ConfigDict()  # documents, as the LM families read them
  config.data.kind = 'text'              # 'text' | 'jsonl' | 'tsv' | 'tfds' | 'wiki'
  config.data.path = d + 'train.en,' + d + 'train.de'
  config.data.field = 'text'             # JSONL key / TSV column / TFDS feature
  config.data.unit = 'line'              # text: 'line' | 'paragraph' | 'file' per document
  config.data.encoding = 'utf-8'
  config.data.encoding_fallback = ''
  config.data.split = 'train'            # TFDS split
  config.data.data_dir = ''
  config.data.valid_fraction = 0.01      # documents held out for loss/accuracy
  config.data.valid_path = ''            # or a separate held-out corpus (same kind)
  config.tokenizer.normalization = 'nmt_nfkc'

  # Noise (data/noising.py). Documents longer than max_target_len - 1 pieces are cut into
  # chunks of that length; each chunk is noised afresh every epoch.
  config.noise = ml_collections.ConfigDict()
  config.noise.objective = 'infilling'   # 'infilling' (BART) | 'span_corruption' (T5)
  config.noise.mask_rate = 0.3           # infilling: share of pieces masked
  config.noise.poisson_lambda = 3.0      # infilling: span lengths ~ Poisson(λ), one <mask> each
  config.noise.permute_sentences = False  # infilling: shuffle the sentences first (BART)
  config.noise.noise_density = 0.15      # span corruption: share of pieces noised
  config.noise.mean_span = 3.0           # span corruption: mean span length
  config.noise.sentinels = 100           # span corruption: <extra_id_k> pieces in the tokenizer

  config.train.epochs = 5
  config.eval.max_examples = 2000        # held-out chunks scored (0: all)
  return config
