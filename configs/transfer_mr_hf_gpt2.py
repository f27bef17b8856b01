"""MR sentence polarity with a classifier over a Hugging Face GPT-2 checkpoint.

The GPT-2 directory (`config.json`, `model.safetensors`, `tokenizer.json`) is
converted into an LM run; texts are framed `<|endoftext|> text` (a document
start, as GPT-2 was trained) and the states are mean-pooled ('last' takes the
final piece). Layer groups (top first) fit the 12-layer GPT-2 small.

  python -m translearn_jax.convert import-hf /path/to/gpt2 /tmp/gpt2_run
  python train.py --config configs/transfer_mr_hf_gpt2.py --workdir /tmp/mr_gpt2 \
    --config.init.path=/tmp/gpt2_run --config.compare_scratch=True
  python -m translearn_jax.generation.sample --workdir /tmp/gpt2_run --prompt "The film"
"""

from translearn_jax.configs import transfer_mr_lm


def get_config():
  config = transfer_mr_lm.get_config()
  config.init.path = '/tmp/gpt2_run'
  config.model.max_tokens = 128
  config.transfer.groups = (r'head=^head/,top=^backbone/(block_(9|10|11)|ln_final)/,'
                            r'upper=^backbone/block_[678]/,lower=^backbone/block_[345]/,'
                            r'bottom=^backbone/block_[012]/,embed=^backbone/(embed|pos_embed)')
  config.transfer.strategies = 'finetune,feature_extraction,linear_probe_logistic'
  config.optim.learning_rate = 5e-5
  config.train.epochs = 3
  return config
