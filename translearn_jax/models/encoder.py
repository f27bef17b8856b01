"""Bidirectional Transformer encoder with a masked-LM head (BERT / RoBERTa style).

Every architectural constant BERT or RoBERTa fix is a field of
`EncoderConfig` (checked against a NumPy BERT/RoBERTa forward pass with
Hugging Face's semantics in `tests/test_mlm.py`), so their weights compute the
same function once renamed into this tree (the converter is issue #15's):

* `norm`: 'post' (BERT/RoBERTa: `LN(x + sublayer(x))`, with a LayerNorm on the
  summed embeddings) or 'pre' (`x + sublayer(LN(x))`, with a final LayerNorm);
* `positions`: 'learned' (a table of `max_len + position_offset` rows; RoBERTa
  numbers positions from `position_offset = 2`) or 'rotary';
* `activation`: 'gelu' (exact, erf: BERT), 'gelu_tanh', 'relu';
* `layer_norm_eps` (BERT 1e-12, RoBERTa 1e-5), LayerNorm variance computed in
  two passes as PyTorch does (E[x²]−E[x]² loses precision at eps 1e-12);
* `pad_id`: the padding id a row without `mask`/`segments` is read with
  (RoBERTa: 1);
* `type_vocab_size`: token-type (segment A/B) embeddings (BERT 2, RoBERTa 1, 0: none);
* the MLM head: `dense → activation → LayerNorm → decoder`, the decoder tied to
  the word embeddings (`tie_embeddings`) plus a per-token bias, as in both.

Parameters: `embed/embedding`, `pos_embed`, `type_embed/embedding`,
`embed_ln` (post-norm), `block_{i}/{attn,ln_attn,mlp,ln_mlp}`, `ln_final`
(pre-norm), `pooler` (with `pooler=True`), and the MLM head under `mlm/` (`dense`, `ln`, `bias`, and `decoder`
when not tied) — the head is not part of the backbone a downstream task
grafts (graft rule `mlm/.*=>`).

`__call__(tokens, mask=None, segments=None, positions=None, token_types=None,
return_hidden=False, predict_at=None)`:
* attention is restricted to positions of the same `segments` id (packed rows:
  one id per document, 0 = padding); without `segments` the segment is the
  row's real positions (`mask`, default `tokens != pad_id`);
* `positions` restart at 0 in each packed document (default `0..T-1`);
* `return_hidden`: the contextual states (B, T, D), the backbone interface;
  `return_hidden='pooled'`: (states, BERT's pooled output (B, D)) — the
  `pooler` (`tanh(dense(state at position 0))`, `pooler=True`) is part of the
  backbone, so an imported BERT keeps it;
* `predict_at` (B, K) positions: MLM logits only there (B, K, V), so the
  vocabulary projection runs on the ~15% masked positions, not on all T.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from translearn_jax.models import layers

NORMS = ('post', 'pre')
POSITIONS = ('learned', 'rotary')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  arch: ClassVar[str] = 'encoder'
  vocab_size: int
  d_model: int = 256
  num_heads: int = 4
  num_layers: int = 4
  d_ff: int = 1024
  max_len: int = 512               # longest input (positions 0..max_len-1)
  dropout: float = 0.1
  attention_dropout: float = 0.1
  positions: str = 'learned'       # 'learned' | 'rotary'
  position_offset: int = 0         # learned row of position p: p + offset (RoBERTa: 2)
  norm: str = 'post'               # 'post' (BERT) | 'pre'
  activation: str = 'gelu'         # 'gelu' (erf) | 'gelu_tanh' | 'relu'
  layer_norm_eps: float = 1e-12
  type_vocab_size: int = 0         # token-type embeddings (BERT 2, RoBERTa 1; 0: none)
  tie_embeddings: bool = True      # MLM decoder = word embeddings (+ bias)
  pad_id: int = 0
  pooler: bool = False             # BERT's pooler: tanh(dense(state at position 0))
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  deterministic: bool = True
  decode: bool = False             # unused (no incremental decoding); kept for the LM interface
  lora_rank: int = 0               # > 0: LoRA adapters on attention query/value
  lora_alpha: float = 16.0         # their scale: lora_alpha / lora_rank
  attention_impl: str = 'einsum'   # 'einsum' | 'dot_product' | 'xla' | 'cudnn'
  remat: str = 'none'              # 'none' | 'full' | 'dots' (layers.REMAT_POLICIES)

  def __post_init__(self):
    if self.norm not in NORMS:
      raise ValueError(f'model.norm must be one of {NORMS}, got {self.norm!r}')
    if self.positions not in POSITIONS:
      raise ValueError(f'model.positions must be one of {POSITIONS}, got {self.positions!r}')
    layers.check_options(self)
    if self.position_offset < 0 or self.type_vocab_size < 0:
      raise ValueError('model.position_offset and model.type_vocab_size must be >= 0')

  def replace(self, **kw) -> 'EncoderConfig':
    return dataclasses.replace(self, **kw)


def layer_norm(cfg: EncoderConfig, name: str) -> nn.LayerNorm:
  """LayerNorm with the config's eps and the two-pass variance PyTorch computes."""
  return layers.layer_norm(name, cfg.layer_norm_eps, cfg.dtype, cfg.param_dtype)


def segment_mask(segments: jax.Array) -> jax.Array:
  """(B, 1, T, T) True where query and key share a non-zero segment id."""
  same = segments[:, :, None] == segments[:, None, :]
  return (same & (segments[:, None, :] > 0))[:, None]


class EncoderBlock(nn.Module):
  config: EncoderConfig

  @nn.compact
  def __call__(self, x, mask, positions):
    cfg = self.config
    drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=cfg.deterministic)
    ln = lambda name: layer_norm(cfg, name)
    attn = layers.MultiHeadAttention(
        cfg.num_heads, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        dropout=cfg.attention_dropout, deterministic=cfg.deterministic,
        use_rotary=cfg.positions == 'rotary', lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        implementation=cfg.attention_impl, name='attn')
    mlp = layers.MlpBlock(cfg.d_ff, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                          activation=cfg.activation, name='mlp')
    if cfg.norm == 'pre':
      x = x + drop(attn(ln('ln_attn')(x), mask=mask, positions=positions))
      return x + drop(mlp(ln('ln_mlp')(x)))
    x = ln('ln_attn')(x + drop(attn(x, mask=mask, positions=positions)))
    return ln('ln_mlp')(x + drop(mlp(x)))


class MLMHead(nn.Module):
  """dense → activation → LayerNorm → vocabulary logits (tied decoder + bias)."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, h, embedding: Optional[jax.Array]):
    cfg = self.config
    h = layers.Dense(cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                     name='dense', axes=('embed', 'mlp'))(h)
    h = layers.ACTIVATIONS[cfg.activation](h)
    h = layer_norm(cfg, 'ln')(h)
    flat = h.reshape(-1, h.shape[-1])
    if embedding is not None:
      logits = jnp.dot(flat, embedding.astype(cfg.dtype).T)
    else:
      logits = layers.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                            param_dtype=cfg.param_dtype, name='decoder',
                            axes=('embed', 'vocab'))(flat)
    bias = self.param('bias', layers.logical(nn.initializers.zeros, ('vocab',)),
                      (cfg.vocab_size,), cfg.param_dtype)
    logits = logits + bias.astype(cfg.dtype)
    return logits.reshape(h.shape[:-1] + (cfg.vocab_size,)).astype(jnp.float32)


class Encoder(nn.Module):
  """`tokens (B, T) -> MLM logits (B, T, V)` (or states, or logits at `predict_at`)."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: Optional[jax.Array] = None,
               segments: Optional[jax.Array] = None, positions: Optional[jax.Array] = None,
               token_types: Optional[jax.Array] = None, return_hidden: bool = False,
               predict_at: Optional[jax.Array] = None):
    cfg = self.config
    b, t = tokens.shape
    if t > cfg.max_len:
      raise ValueError(f'sequence length {t} exceeds the model maximum model.max_len='
                       f'{cfg.max_len}')
    if segments is None:
      segments = (tokens != cfg.pad_id) if mask is None else mask
      segments = segments.astype(jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    embed = layers.embed(cfg.vocab_size, cfg.d_model, nn.initializers.normal(0.02), 'embed',
                         cfg.dtype, cfg.param_dtype)
    x = embed(tokens).astype(cfg.dtype)
    if cfg.positions == 'learned':
      table = self.param('pos_embed', layers.logical(nn.initializers.normal(0.02),
                                                     (None, 'embed')),
                         (cfg.max_len + cfg.position_offset, cfg.d_model), cfg.param_dtype)
      x = x + jnp.take(table, positions + cfg.position_offset, axis=0).astype(cfg.dtype)
    if cfg.type_vocab_size:
      types = jnp.zeros_like(tokens) if token_types is None else token_types
      x = x + layers.embed(cfg.type_vocab_size, cfg.d_model, nn.initializers.normal(0.02),
                           'type_embed', cfg.dtype, cfg.param_dtype,
                           axes=(None, 'embed'))(types).astype(cfg.dtype)
    if cfg.norm == 'post':
      x = layer_norm(cfg, 'embed_ln')(x)
    x = nn.Dropout(cfg.dropout)(x, deterministic=cfg.deterministic)
    attn_mask = segment_mask(segments)
    block = layers.remat(EncoderBlock, cfg.remat)
    for i in range(cfg.num_layers):
      x = block(cfg, name=f'block_{i}')(x, attn_mask, positions)
    if cfg.norm == 'pre':
      x = layer_norm(cfg, 'ln_final')(x)
    pooled = None
    if cfg.pooler:  # always built, so every tree of a pooler model has its parameters
      pooled = jnp.tanh(layers.Dense(cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                     name='pooler', axes=('embed', 'mlp'))(x[:, 0]))
    if return_hidden == 'pooled':
      if pooled is None:
        raise ValueError("pooling 'pooler' needs an encoder with model.pooler=True (BERT's)")
      return x, pooled
    if return_hidden:
      return x
    if predict_at is not None:
      x = jnp.take_along_axis(x, predict_at[..., None], axis=1)
    return MLMHead(cfg, name='mlm')(x, embed.embedding if cfg.tie_embeddings else None)


def flops_per_token(cfg: EncoderConfig, seq_len: int, predicted_fraction: float = 1.0
                    ) -> float:
  """Training FLOPs per token (forward + backward): 6·N + 12·L·d·T (PaLM appendix B).

  N counts the matmul parameters of the layers, plus the MLM head's
  (`d² + d·V`) scaled by the fraction of positions it runs on.
  """
  d, l, f = cfg.d_model, cfg.num_layers, cfg.d_ff
  n = l * (4 * d * d + 2 * d * f) + predicted_fraction * (d * d + d * cfg.vocab_size)
  return 6.0 * n + 12.0 * l * d * seq_len
