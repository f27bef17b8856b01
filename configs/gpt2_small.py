"""GPT-2 small (124M parameters) pretraining: 12 layers, d_model 768, 12 heads, seq 1024.

The architecture of OpenAI's GPT-2 small (learned positions, GELU-tanh,
LayerNorm ε 1e-5, tied embeddings, a 50,257-row table) in bfloat16 compute with
fp32 master weights, attention through `jax.nn.dot_product_attention` (cuDNN's
flash kernel on NVIDIA GPUs: `--config.model.attention_impl=cudnn`) and the
cross-entropy in chunks of 1,024 positions. Meant for accelerators; on a CPU
shrink it (`--config.model.num_layers=2 --config.model.d_model=128 ...`).

  python train.py --config configs/gpt2_small.py --workdir /tmp/gpt2_small \
    --config.data.kind=text --config.data.path=../shared/data/pretrain_en \
    --config.train.steps=20000 [--config.mesh.data=1 --config.mesh.fsdp=8]
"""

from translearn_jax.configs import lm_transformer


def get_config():
  config = lm_transformer.get_config()
  config.model.d_model = 768
  config.model.num_heads = 12
  config.model.num_layers = 12
  config.model.d_ff = 3072
  config.model.max_len = 1024
  config.model.positions = 'learned'
  config.model.layer_norm_eps = 1e-5
  config.model.activation = 'gelu_tanh'
  config.model.attention_impl = 'dot_product'
  config.model.remat = 'full'
  config.model.dropout = 0.1
  config.model.vocab_size = 50257        # GPT-2's table (rows beyond the tokenizer's stay unused)
  config.tokenizer.vocab_size = 50257
  config.dtype = 'bfloat16'
  config.train.seq_length = 1024
  config.train.batch_size = 32
  config.train.loss_chunk = 1024
  config.optim.learning_rate = 6e-4
  config.optim.warmup_steps = 2000
  return config
