"""AWD-LSTM-style LM (the ULMFiT backbone), on the same data as lm_transformer.py.

  python train.py --config configs/lm_lstm.py --workdir /tmp/lm_lstm
"""

import ml_collections

from translearn_jax.configs import lm_transformer


def get_config() -> ml_collections.ConfigDict:
  config = lm_transformer.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.arch = 'lstm'
  config.model.vocab_size = 0             # embedding rows (0: the tokenizer's)
  config.model.embed_dim = 128
  config.model.hidden_dim = 384
  config.model.num_layers = 2
  config.model.dropout_embed = 0.05      # embedding rows dropped
  config.model.dropout_input = 0.2       # locked dropout on embeddings
  config.model.dropout_hidden = 0.15     # locked dropout between layers
  config.model.dropout_output = 0.2      # locked dropout before the softmax
  config.model.weight_drop = 0.2         # DropConnect on W_hh
  config.model.tie_embeddings = True
  config.model.max_len = 100000          # unused by the LSTM (no positional limit)
  config.train.seq_length = 64
  config.optim.learning_rate = 3e-3
  config.optim.b2 = 0.99
  config.optim.no_decay = 'bias,embed'
  return config
