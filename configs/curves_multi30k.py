"""Low-resource Multi30k en→de (issue #16): scratch vs denoising-pretrained vs LM-initialised
decoder vs back-translation, at 1,000 / 5,000 / all 28,945 usable training pairs, 3 seeds each.

Every cell is a run of configs/seq2seq_multi30k.py (here its 2+2 × 128 variant) on the
seed's first `budget` pairs; see translearn_jax/experiments/seq2seq_curves.py. The
pretrained runs come first, all with one tokenizer (the denoising run trains it):

  M='--config.model.d_model=128 --config.model.d_ff=512 --config.model.encoder_layers=2
     --config.model.decoder_layers=2'
  D=../shared/data
  python train.py --config configs/seq2seq_denoise.py --workdir runs/dn_m30k $M \
    --config.data.path=$D/multi30k/train.en,$D/multi30k/train.de,$D/pretrain_en/brown.txt \
    --config.train.epochs=3 --config.optim.warmup_steps=300 --config.eval.every_steps=1000 \
    --config.tokenizer.train_threads=2
  python train.py --config configs/lm_transformer.py --workdir runs/lm_m30k_de \
    --config.data.kind=text --config.data.path=../shared/data/multi30k/train.de \
    --config.data.unit=line --config.data.valid_fraction=0.01 \
    --config.tokenizer.path=runs/dn_m30k/tokenizer.model --config.model.num_heads=4 \
    --config.model.positions=learned --config.model.d_model=128 --config.model.num_layers=2 \
    --config.model.d_ff=512 --config.train.seq_length=64 --config.train.batch_size=32 \
    --config.train.epochs=10 --config.optim.learning_rate=1e-3 --config.optim.warmup_steps=200
  python train.py --config configs/curves_multi30k.py --workdir runs/curves_m30k \
    --config.curve.denoise_path=runs/dn_m30k --config.curve.lm_path=runs/lm_m30k_de

Writes cells.jsonl (one line per finished run), curves.json, curves.csv and curves.png.
"""

import ml_collections

from translearn_jax.configs import seq2seq_multi30k


def get_config() -> ml_collections.ConfigDict:
  config = seq2seq_multi30k.get_config()
  config.family = 'seq2seq_curves'
  config.seeds = 3
  config.model.d_model = 128
  config.model.d_ff = 512
  config.model.encoder_layers = 2
  config.model.decoder_layers = 2
  config.optim.warmup_steps = 300

  d = '../shared/data/multi30k/'
  config.curve = ml_collections.ConfigDict()
  # training pairs; 28,945 is every one of Multi30k's 29,000 that fits max_source_len /
  # max_target_len under the shared tokenizer (another tokenizer: the error names its count)
  config.curve.budgets = '1000,5000,28945'
  config.curve.conditions = 'scratch,denoise,lm_decoder,backtranslation'
  config.curve.epochs = 15               # passes over a budget's pairs ...
  config.curve.min_steps = 1200          # ... at least this many steps (small budgets)
  config.curve.max_steps = 4500          # ... at most this many
  config.curve.tokenizer = ''            # shared by every cell ('' = denoise_path's)
  config.curve.denoise_path = ''         # a seq2seq run (objective='denoise'), same model.*
  config.curve.lm_path = ''              # a target-language Transformer LM run (learned positions)
  config.curve.mlm_path = ''             # a source-language masked-LM encoder run
  config.curve.bt_path = d + 'train.de'  # monolingual target-side sentences to back-translate
  config.curve.bt_max_sentences = 0      # 0: every line
  config.curve.bt_budgets = '1000,5000'  # budgets with a back-translation cell ('' = all)
  config.curve.import_cells = ''         # other workdirs of this study whose finished cells count
  config.curve.seed_list = ''            # seeds run here, e.g. '2' ('' = 0 .. seeds-1)
  config.curve.title = ''
  return config
