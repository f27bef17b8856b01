"""Encoder-decoder Transformer (pre-norm) built from `layers`.

Attention and the KV cache are the ones in `layers.MultiHeadAttention` (shared
with the LM). Parameters: `embed` (shared by encoder, decoder and output when
`share_embeddings`; otherwise `embed`, `target_embed` and `head`),
`encoder/block_{i}`, `decoder/block_{i}` (`self_attn`, `cross_attn`, `mlp`),
learned positions `encoder/pos_embed`, `decoder/pos_embed`.

`__call__(source, target_in)` -> logits (with `source_segments`,
`source_positions`, `target_segments`, `target_positions` for packed rows, see
`data.packing`); `encode(source)` and
`decode(encoded, source_mask, target_in)` for incremental decoding. With
`decode=True` the decoder's self-attention keys/values accumulate in the
`cache` collection, and the cross-attention keys/values of the encoder output
are stored there by the first step; later steps pass `encoded=None` and reuse
them.
Padding id is 0; padded source positions are never attended to.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from translearn_jax.models import layers


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
  vocab_size: int
  d_model: int = 256
  num_heads: int = 4
  encoder_layers: int = 3
  decoder_layers: int = 3
  d_ff: int = 1024
  max_len: int = 128
  dropout: float = 0.1
  share_embeddings: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  deterministic: bool = True
  decode: bool = False

  def replace(self, **kw) -> 'Seq2SeqConfig':
    return dataclasses.replace(self, **kw)


def config_from(config, vocab_size: int, deterministic: bool = True, decode: bool = False
                ) -> Seq2SeqConfig:
  """The model config of a seq2seq run's ConfigDict (`model.*`, `max_*_len`)."""
  m = config.model
  return Seq2SeqConfig(
      vocab_size=vocab_size, d_model=m.d_model, num_heads=m.num_heads,
      encoder_layers=m.encoder_layers, decoder_layers=m.decoder_layers, d_ff=m.d_ff,
      max_len=max(config.max_source_len, config.max_target_len), dropout=m.dropout,
      share_embeddings=m.share_embeddings, deterministic=deterministic, decode=decode)


class _Block(nn.Module):
  cfg: Seq2SeqConfig
  cross: bool

  @nn.compact
  def __call__(self, x, self_mask, encoded=None, cross_mask=None):
    cfg = self.cfg
    drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=cfg.deterministic)
    ln = lambda name: nn.LayerNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)
    attn = lambda name, cross: layers.MultiHeadAttention(
        cfg.num_heads, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        deterministic=cfg.deterministic, decode=cfg.decode and self.cross, cross=cross,
        name=name)
    x = x + drop(attn('self_attn', False)(ln('ln_self')(x), mask=self_mask))
    if self.cross:
      x = x + drop(attn('cross_attn', True)(ln('ln_cross')(x), context=encoded,
                                            mask=cross_mask))
    h = layers.MlpBlock(cfg.d_ff, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        name='mlp')(ln('ln_mlp')(x))
    return x + drop(h)


def _check_len(n, cfg, what):
  if n > cfg.max_len:
    raise ValueError(f'{what} length {n} exceeds model.max_len={cfg.max_len}')


def _positions(table, length, positions, cfg):
  """Learned position vectors: the first `length` rows, or rows `positions` (B, T)."""
  pos = table[:length] if positions is None else jnp.take(table, positions, axis=0)
  return pos.astype(cfg.dtype)


def _same_segment(query_segments, key_segments):
  """(B, 1, Tq, Tk) True where query and key belong to the same packed pair."""
  return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


class Seq2Seq(nn.Module):
  config: Seq2SeqConfig

  def setup(self):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype,
                          param_dtype=cfg.param_dtype, embedding_init=init)
    if not cfg.share_embeddings:
      self.target_embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype,
                                   param_dtype=cfg.param_dtype, embedding_init=init)
      self.head = layers.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                               param_dtype=cfg.param_dtype)
    self.enc_pos = self.param('encoder_pos_embed', init, (cfg.max_len, cfg.d_model),
                              cfg.param_dtype)
    self.dec_pos = self.param('decoder_pos_embed', init, (cfg.max_len, cfg.d_model),
                              cfg.param_dtype)
    self.encoder = [_Block(cfg, cross=False, name=f'encoder_block_{i}')
                    for i in range(cfg.encoder_layers)]
    self.decoder = [_Block(cfg, cross=True, name=f'decoder_block_{i}')
                    for i in range(cfg.decoder_layers)]
    self.enc_ln = nn.LayerNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.dec_ln = nn.LayerNorm(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.drop = nn.Dropout(cfg.dropout)
    # The decoder position lives in the cache beside the keys/values (not needed,
    # and not present, when only encoding).
    self.cache_ready = cfg.decode and self.has_variable('cache', 'position')
    if cfg.decode and (self.cache_ready or self.is_mutable_collection('cache')):
      self.position = self.variable('cache', 'position', lambda: jnp.zeros((), jnp.int32))

  def encode(self, source, segments=None, positions=None):
    """(encoded, source mask); `segments`/`positions` (B, S) for packed rows."""
    cfg = self.config
    _check_len(source.shape[1], cfg, 'source')
    src_mask = source > 0
    x = self.embed(source) + _positions(self.enc_pos, source.shape[1], positions, cfg)
    x = self.drop(x, deterministic=cfg.deterministic)
    attn_mask = src_mask[:, None, None, :]
    if segments is not None:
      attn_mask = attn_mask & _same_segment(segments, segments)
    for block in self.encoder:
      x = block(x, attn_mask)
    return self.enc_ln(x), src_mask

  def decode(self, encoded, src_mask, target_in, source_segments=None, target_segments=None,
             target_positions=None):
    cfg = self.config
    b, t = target_in.shape
    if encoded is None and not cfg.decode:
      raise ValueError('decode(encoded=None) reuses cached cross-attention: needs decode=True')
    emb = self.embed if cfg.share_embeddings else self.target_embed
    if cfg.decode:
      start = self.position.value if self.cache_ready else 0
      if self.cache_ready:
        self.position.value = start + t
      self_mask = None
    else:
      _check_len(t, cfg, 'target')
      start = 0
      self_mask = layers.causal_mask(t)
    if target_positions is None:
      pos = jax.lax.dynamic_slice_in_dim(self.dec_pos, start, t, axis=0).astype(cfg.dtype)
    else:
      pos = _positions(self.dec_pos, t, target_positions, cfg)
    x = emb(target_in) + pos
    x = self.drop(x, deterministic=cfg.deterministic)
    cross_mask = src_mask[:, None, None, :]
    if (source_segments is None) != (target_segments is None):
      raise ValueError('packed decoding needs both source_segments and target_segments')
    if target_segments is not None:
      if cfg.decode:
        raise ValueError('packed rows are for training; incremental decoding takes one pair a row')
      self_mask = self_mask & _same_segment(target_segments, target_segments)
      cross_mask = cross_mask & _same_segment(target_segments, source_segments)
    for block in self.decoder:
      x = block(x, self_mask, encoded, cross_mask)
    x = self.dec_ln(x).reshape(b * t, -1)
    logits = self.embed.attend(x) if cfg.share_embeddings else self.head(x)
    return logits.reshape(b, t, -1).astype(jnp.float32)

  def __call__(self, source, target_in, source_segments=None, source_positions=None,
               target_segments=None, target_positions=None):
    """Logits (B, T, V). The optional segment/position arrays describe packed rows
    (`data.packing`): attention stays within a segment, positions restart per pair."""
    encoded, src_mask = self.encode(source, source_segments, source_positions)
    return self.decode(encoded, src_mask, target_in, source_segments, target_segments,
                       target_positions)
