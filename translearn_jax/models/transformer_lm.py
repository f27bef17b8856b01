"""Decoder-only Transformer language model (pre-norm, causal).

Hyperparameters live in one frozen `TransformerConfig`; training, evaluation
and decoding use `.replace(deterministic=..., decode=...)` of it, as the Flax
lm1b example does. Parameters: `embed/embedding`, optional `pos_embed`,
`block_{i}/{ln_attn,attn,ln_mlp,mlp}`, `ln_final`, and `head` when the output
projection is not tied to the embedding. Every parameter carries logical axis
names (see `layers`); `init` returns them boxed, `training.state.init_params`
unboxes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from translearn_jax.models import layers


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  arch: ClassVar[str] = 'transformer'
  vocab_size: int
  d_model: int = 256
  num_heads: int = 4
  num_layers: int = 4
  d_ff: int = 1024
  max_len: int = 512
  dropout: float = 0.1
  attention_dropout: float = 0.0
  positions: str = 'rotary'        # 'rotary' | 'learned'
  tie_embeddings: bool = True
  layer_norm_eps: float = 1e-6     # GPT-2: 1e-5
  activation: str = 'gelu_tanh'    # MLP activation, a key of layers.ACTIVATIONS (GPT-2: gelu_tanh)
  dtype: Any = jnp.float32         # compute dtype (bfloat16 for mixed precision)
  param_dtype: Any = jnp.float32
  deterministic: bool = True
  decode: bool = False
  lora_rank: int = 0               # > 0: LoRA adapters on attention query/value
  lora_alpha: float = 16.0         # their scale: lora_alpha / lora_rank
  attention_impl: str = 'einsum'   # 'einsum' | 'dot_product' | 'xla' | 'cudnn' (layers.ATTENTION_IMPLEMENTATIONS)
  remat: str = 'none'              # 'none' | 'full' | 'dots' (layers.REMAT_POLICIES)

  def __post_init__(self):
    if self.positions not in ('rotary', 'learned'):
      raise ValueError(f"model.positions must be 'rotary' or 'learned', got {self.positions!r}")
    layers.check_options(self)

  def replace(self, **kw) -> 'TransformerConfig':
    return dataclasses.replace(self, **kw)


def layer_norm(cfg: TransformerConfig, name: str) -> nn.LayerNorm:
  return layers.layer_norm(name, cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype)


class DecoderBlock(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, mask, positions):
    cfg = self.config
    drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=cfg.deterministic)
    h = layer_norm(cfg, 'ln_attn')(x)
    h = layers.MultiHeadAttention(
        cfg.num_heads, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        dropout=cfg.attention_dropout, deterministic=cfg.deterministic,
        use_rotary=cfg.positions == 'rotary', decode=cfg.decode, lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        implementation=cfg.attention_impl, name='attn')(
            h, mask=mask, positions=positions)
    x = x + drop(h)
    h = layer_norm(cfg, 'ln_mlp')(x)
    h = layers.MlpBlock(cfg.d_ff, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        activation=cfg.activation, name='mlp')(h)
    return x + drop(h)


class TransformerLM(nn.Module):
  """`tokens (B, T) -> logits (B, T, V)` in float32."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, return_hidden: bool = False):
    cfg = self.config
    b, t = tokens.shape
    if t > cfg.max_len:
      raise ValueError(f'sequence length {t} exceeds the model maximum model.max_len='
                       f'{cfg.max_len}')
    embed = layers.embed(cfg.vocab_size, cfg.d_model, nn.initializers.normal(0.02), 'embed',
                         cfg.dtype, cfg.param_dtype)
    x = embed(tokens).astype(cfg.dtype)
    if cfg.decode:
      is_init = self.has_variable('cache', 'position')
      pos_var = self.variable('cache', 'position', lambda: jnp.zeros((), jnp.int32))
      start = pos_var.value if is_init else 0
      if is_init:
        pos_var.value = start + t
      mask = None
    else:
      start = 0
      mask = layers.causal_mask(t)
    positions = jnp.broadcast_to(start + jnp.arange(t), (b, t))
    if cfg.positions == 'learned':
      pos = self.param('pos_embed', layers.logical(nn.initializers.normal(0.02),
                                                   (None, 'embed')),
                       (cfg.max_len, cfg.d_model), cfg.param_dtype)
      x = x + jnp.take(pos, positions, axis=0).astype(cfg.dtype)
    x = nn.Dropout(cfg.dropout)(x, deterministic=cfg.deterministic)
    block = layers.remat(DecoderBlock, cfg.remat)
    for i in range(cfg.num_layers):
      x = block(cfg, name=f'block_{i}')(x, mask, positions)
    x = layer_norm(cfg, 'ln_final')(x)
    if return_hidden:
      return x
    if cfg.tie_embeddings:
      logits = embed.attend(x.reshape(b * t, -1)).reshape(b, t, -1)  # 2-D matmul
    else:
      logits = layers.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            param_dtype=cfg.param_dtype, name='head', axes=('embed', 'vocab'))(x)
    return logits.astype(jnp.float32)


def flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward): 6·N + 12·L·d·T (PaLM appendix B).

  N counts the matmul parameters (attention, MLP and the output projection);
  the embedding lookup is not a matmul.
  """
  d, l, f = cfg.d_model, cfg.num_layers, cfg.d_ff
  n = l * (4 * d * d + 2 * d * f) + d * cfg.vocab_size
  return 6.0 * n + 12.0 * l * d * seq_len
