"""Downstream task models: `{'backbone': ..., 'head': ...}` parameter trees.

The split makes transfer a subtree graft: pretrained weights go under
`backbone/`, the task head is always created fresh.

* `BagOfEmbeddings`: embedding → masked average → dropout → dense (the
  baseline that skip-gram vectors initialise);
* `EncoderClassifier`: a pretrained body (any `models.lm` architecture: a
  causal LM or a masked-LM encoder) → pooling over real tokens ('mean', 'max',
  'last', 'cls': the first position, BERT's [CLS], or 'pooler': BERT's pooled
  [CLS], `tanh(dense(·))`, from a backbone with `model.pooler`) → dropout → dense;
* `TokenTagger`: the body's state at every position → dropout → dense.

LM-bodied models see their backbone only through `models.lm` (`make`,
`hidden`): embed → contextual states, whatever the architecture.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from translearn_jax.errors import ConfigError
from translearn_jax.models import layers
from translearn_jax.models import lm as lm_models


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
  if how == 'cls':
    return h[:, 0]
  if how == 'last':
    last = jnp.maximum(mask.sum(1).astype(jnp.int32) - 1, 0)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
  raise ValueError(f"pooling must be 'mean', 'max', 'last', 'cls' or 'pooler', got {how!r}")


class EncoderClassifier(nn.Module):
  lm_config: Any              # a `models.lm` architecture config
  num_classes: int
  pooling: str = 'mean'
  dropout: float = 0.1

  @nn.compact
  def __call__(self, tokens, mask, deterministic: bool = True, return_features: bool = False):
    cfg = self.lm_config.replace(deterministic=deterministic)
    body = lm_models.make(cfg, name='backbone')
    if self.pooling == 'pooler':
      _, pooled = lm_models.hidden(body, tokens, mask, pooled=True)
      pooled = pooled.astype(jnp.float32)
    else:
      pooled = pool(lm_models.hidden(body, tokens, mask).astype(jnp.float32), mask, self.pooling)
    if return_features:
      return pooled
    pooled = nn.Dropout(self.dropout)(pooled, deterministic=deterministic)
    return layers.Dense(self.num_classes, name='head')(pooled)


class TokenTagger(nn.Module):
  lm_config: Any              # a `models.lm` architecture config
  num_tags: int
  dropout: float = 0.1

  @nn.compact
  def __call__(self, tokens, mask, deterministic: bool = True):
    cfg = self.lm_config.replace(deterministic=deterministic)
    h = lm_models.hidden(lm_models.make(cfg, name='backbone'), tokens, mask)
    h = nn.Dropout(self.dropout)(h.astype(jnp.float32), deterministic=deterministic)
    return layers.Dense(self.num_tags, name='head')(h)


def lm_backbone_config(source, model_cfg):
  """The architecture of an LM-bodied task model: the source's (a causal LM or a
  masked-LM encoder run), with the task's `model.max_tokens` checked against its
  context and `model.lora_rank` applied."""
  if source.model_config is None or not source.is_backbone:
    raise ConfigError("an LM-bodied task model needs init.kind='lm' or 'mlm' (the run gives "
                      'the architecture and tokenizer; scratch runs use the same)')
  cfg = source.model_config
  context = lm_models.context_len(cfg)
  if context is not None and model_cfg.max_tokens > context:
    raise ConfigError(f'config.model.max_tokens={model_cfg.max_tokens} exceeds the pretrained '
                      f'LM context (its model.max_len={context})')
  if model_cfg.get('pooling') == 'pooler' and not getattr(cfg, 'pooler', False):
    raise ConfigError(
        "config.model.pooling='pooler': the pretrained model at init.path has no pooler (a "
        'causal LM, a RoBERTa-style MLM checkpoint, a BERT imported with --drop_pooler or '
        "without pooler tensors); use model.pooling='cls' or 'mean'")
  rank, alpha = model_cfg.get('lora_rank', 0), model_cfg.get('lora_alpha', 16.0)
  if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
    raise ConfigError(f'config.model.lora_rank: must be an integer >= 0 (0: no adapters), '
                      f'got {rank!r}')
  if not alpha > 0:                    # NaN fails too
    raise ConfigError(f'config.model.lora_alpha: must be > 0 (the adapters\' scale is '
                      f'lora_alpha / lora_rank), got {alpha!r}')
  if rank:
    if not hasattr(cfg, 'lora_rank'):
      raise ConfigError('config.model.lora_rank: LoRA adapters exist for Transformer '
                        'backbones only')
    cfg = cfg.replace(lora_rank=rank, lora_alpha=float(alpha))
  return cfg
