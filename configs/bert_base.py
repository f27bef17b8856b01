"""BERT-base (Devlin et al. 2019) as an `mlm` config: 12 layers, d 768, 12 heads, d_ff 3072,
post-LN, exact GELU, LayerNorm eps 1e-12, 512 learned positions, 2 token types, the MLM
decoder tied to the 30,522 word embeddings plus a bias — 109.5M parameters (BERT-base's
110M; `tests/test_mlm.py` builds it abstractly and checks the count against Hugging Face's
BertForMaskedLM).

The shapes are BERT's; the tokenizer here is this project's sentencepiece model (trained
with `tokenizer.vocab_size`; BERT's own WordPiece vocabulary comes with an imported
checkpoint). Pretraining it needs an accelerator; on one:

  python train.py --config configs/bert_base.py --workdir runs/bert_base \
    --config.data.kind=text --config.data.path=CORPUS --config.dtype=bfloat16
"""

from translearn_jax.configs import mlm_encoder


def get_config():
  config = mlm_encoder.get_config()
  config.tokenizer.vocab_size = 30522
  config.model.d_model = 768
  config.model.num_heads = 12
  config.model.num_layers = 12
  config.model.d_ff = 3072
  config.model.max_len = 512
  config.model.dropout = 0.1
  config.model.attention_dropout = 0.1
  config.model.positions = 'learned'
  config.model.position_offset = 0
  config.model.norm = 'post'
  config.model.activation = 'gelu'
  config.model.layer_norm_eps = 1e-12
  config.model.type_vocab_size = 2
  config.model.tie_embeddings = True
  config.mlm.max_predictions = 20        # BERT's 20 slots a 128-piece row (a cap on the draw: ~14.3% masked, see data/masking.py)
  config.train.seq_length = 128
  config.train.batch_size = 256
  config.train.epochs = 40
  config.train.steps = 0
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 10000
  config.optim.b2 = 0.999
  config.optim.weight_decay = 0.01
  config.optim.no_decay = 'bias,scale'
  return config
