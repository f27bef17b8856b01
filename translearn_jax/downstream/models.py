"""Downstream task models: `{'backbone': ..., 'head': ...}` parameter trees.

The split makes transfer a subtree graft: pretrained weights go under
`backbone/`, the task head is always created fresh.

* `BagOfEmbeddings`: embedding → masked average → dropout → dense (the
  baseline that skip-gram vectors initialise);
* `EncoderClassifier`: a pretrained LM body (Transformer or LSTM) → pooling
  over real tokens ('mean', 'max', or 'last') → dropout → dense.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from translearn_jax.models import layers, lstm_lm, transformer_lm


class _EmbeddingBackbone(nn.Module):
  vocab_size: int
  dim: int

  @nn.compact
  def __call__(self, tokens):
    return nn.Embed(self.vocab_size, self.dim, embedding_init=nn.initializers.normal(0.1),
                    name='embed')(tokens)


class BagOfEmbeddings(nn.Module):
  vocab_size: int
  dim: int
  num_classes: int
  dropout: float = 0.5

  @nn.compact
  def __call__(self, tokens, mask, deterministic: bool = True, return_features: bool = False,
               with_features: bool = False):
    """Logits; the pooled features instead (`return_features`) or as well (`with_features`)."""
    x = _EmbeddingBackbone(self.vocab_size, self.dim, name='backbone')(tokens)
    m = mask[..., None].astype(x.dtype)
    pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    if return_features:
      return pooled
    h = nn.Dropout(self.dropout)(pooled, deterministic=deterministic)
    logits = layers.Dense(self.num_classes, name='head')(h)
    return (logits, pooled) if with_features else logits


def pool(h, mask, how: str):
  m = mask[..., None].astype(h.dtype)
  if how == 'mean':
    return (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  if how == 'max':
    return jnp.where(m > 0, h, -1e9).max(1)
  if how == 'last':
    last = jnp.maximum(mask.sum(1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"pooling must be 'mean', 'max' or 'last', got {how!r}")


class EncoderClassifier(nn.Module):
  lm_config: Any              # TransformerConfig or LSTMConfig (deterministic set by caller)
  num_classes: int
  pooling: str = 'mean'
  dropout: float = 0.1

  @nn.compact
  def __call__(self, tokens, mask, deterministic: bool = True, return_features: bool = False):
    cfg = self.lm_config.replace(deterministic=deterministic)
    if isinstance(cfg, transformer_lm.TransformerConfig):
      h = transformer_lm.TransformerLM(cfg, name='backbone')(tokens, return_hidden=True)
    else:
      h, _ = lstm_lm.LSTMLM(cfg, name='backbone')(tokens, return_hidden=True)
    pooled = pool(h.astype(jnp.float32), mask, self.pooling)
    if return_features:
      return pooled
    pooled = nn.Dropout(self.dropout)(pooled, deterministic=deterministic)
    return layers.Dense(self.num_classes, name='head')(pooled)
