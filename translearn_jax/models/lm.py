"""Language-model architectures behind one interface (the backbone of every LM-based task).

`model.arch` names an entry of `ARCHS`; everything else — pretraining, the
sampler, downstream task models, zero-shot scoring, multi-task — builds, runs
and measures an LM only through these functions, so no caller tests which
architecture it holds:

* `config_from(model_cfg, vocab_size, ...)`: a `ConfigDict`'s `model` fields →
  the architecture's frozen config dataclass (bad values → `ConfigError`);
* `make(cfg, **kw)`: the linen module (`name='backbone'` inside task models);
* `logits(model, params, tokens)`: next-token logits (B, T, V) of a causal
  LM, masked-LM logits of an encoder;
* `hidden(module, tokens, mask)`: contextual states (B, T, D), for use inside
  a compact task model (the backbone interface: embed → contextual states;
  `mask` marks real positions, which a bidirectional body needs and a causal
  one ignores);
* `is_causal(cfg)`: left-to-right (next-token logits, sampling, last-piece
  tagging) or bidirectional (`encoder`: masked-LM logits, first-piece tagging);
* `flops_per_token(cfg, seq_len)`, `context_len(cfg)` (None: unbounded).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp

from translearn_jax.errors import ConfigError
from translearn_jax.models import encoder, lstm_lm, transformer_lm

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Arch:
  config_class: type
  module: Callable            # config -> linen module
  flops_per_token: Callable   # (config, seq_len) -> float
  fields: dict                # config dataclass field <- `model.<field>` of a ConfigDict
  bounded_context: bool       # positions limited by `max_len`
  causal: bool = True         # False: bidirectional (a masked-LM encoder)
  optional: tuple = ()        # fields a ConfigDict may leave out (the dataclass default)


ARCHS = {
    'transformer': Arch(
        transformer_lm.TransformerConfig, transformer_lm.TransformerLM,
        transformer_lm.flops_per_token,
        {f: f for f in ('d_model', 'num_heads', 'num_layers', 'd_ff', 'max_len', 'dropout',
                        'attention_dropout', 'positions', 'tie_embeddings', 'layer_norm_eps',
                        'activation', 'attention_impl', 'remat')},
        bounded_context=True,
        optional=('layer_norm_eps', 'activation', 'attention_impl', 'remat')),
    'lstm': Arch(
        lstm_lm.LSTMConfig, lstm_lm.LSTMLM, lstm_lm.flops_per_token,
        {f: f for f in ('embed_dim', 'hidden_dim', 'num_layers', 'dropout_embed',
                        'dropout_input', 'dropout_hidden', 'dropout_output', 'weight_drop',
                        'tie_embeddings')},
        bounded_context=False),
    'encoder': Arch(
        encoder.EncoderConfig, encoder.Encoder, encoder.flops_per_token,
        {f: f for f in ('d_model', 'num_heads', 'num_layers', 'd_ff', 'max_len', 'dropout',
                        'attention_dropout', 'positions', 'position_offset', 'norm',
                        'activation', 'layer_norm_eps', 'type_vocab_size', 'tie_embeddings',
                        'pad_id', 'pooler', 'attention_impl', 'remat')},
        bounded_context=True, causal=False,
        optional=('pad_id', 'pooler', 'attention_impl', 'remat')),
}
# Fields that never change the parameter tree (regularisation, numerics, mode).
NON_ARCHITECTURAL = ('dropout', 'attention_dropout', 'dropout_embed', 'dropout_input',
                     'dropout_hidden', 'dropout_output', 'weight_drop', 'deterministic',
                     'decode', 'dtype', 'param_dtype', 'pad_id', 'attention_impl', 'remat')


def arch_of(cfg) -> Arch:
  return ARCHS[type(cfg).arch]


def config_from(model_cfg, vocab_size: int, dtype: str = 'float32', deterministic: bool = True,
                decode: bool = False):
  """The architecture config of `model_cfg.arch` from a ConfigDict's `model` fields.

  `vocab_size` is the tokenizer's; a `model.vocab_size` field (an imported
  checkpoint whose embedding table has rows beyond its tokenizer's ids) overrides it."""
  arch = ARCHS.get(model_cfg.arch)
  if arch is None:
    raise ConfigError(f'config.model.arch: must be one of {sorted(ARCHS)}, '
                      f'got {model_cfg.arch!r}')
  if dtype not in DTYPES:
    raise ConfigError(f'config.dtype: must be one of {sorted(DTYPES)}, got {dtype!r}')
  missing = [src for src in arch.fields.values()
             if src not in model_cfg and src not in arch.optional]
  if missing:
    raise ConfigError(f'config.model: the {model_cfg.arch!r} architecture needs the fields '
                      f'{missing}')
  kw = {dst: model_cfg[src] for dst, src in arch.fields.items() if src in model_cfg}
  vocab_size = table_size(model_cfg, vocab_size)
  try:
    return arch.config_class(vocab_size=vocab_size, dtype=DTYPES[dtype],
                             deterministic=deterministic, decode=decode, **kw)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def table_size(model_cfg, vocab_size: int) -> int:
  """The embedding rows of a model: the tokenizer's `vocab_size`, or `model.vocab_size` when
  set (an imported checkpoint's table can have rows beyond its tokenizer's ids)."""
  if model_cfg.get('vocab_size'):
    if model_cfg.vocab_size < vocab_size:
      raise ConfigError(f'config.model.vocab_size={model_cfg.vocab_size} is smaller than the '
                        f"tokenizer's {vocab_size} ids")
    return model_cfg.vocab_size
  return vocab_size


def make(cfg, **kwargs):
  return arch_of(cfg).module(cfg, **kwargs)


def logits(model, params, tokens, rngs=None):
  out = model.apply({'params': params}, tokens, rngs=rngs)
  return out[0] if isinstance(out, tuple) else out   # recurrent models also return a carry


def hidden(module, tokens, mask=None, pooled: bool = False):
  """Contextual states (B, T, D) of `module` (made by `make`) inside a compact module.

  `mask` (B, T) marks real positions: a bidirectional body attends only to
  them; a causal body needs no mask (padding follows the real positions).
  `pooled`: (states, the body's own pooled output (B, D)) — BERT's pooler."""
  if not arch_of(module.config).causal:
    return module(tokens, mask=mask, return_hidden='pooled' if pooled else True)
  if pooled:
    raise ConfigError("pooling 'pooler' needs a masked-LM encoder with model.pooler=True")
  out = module(tokens, return_hidden=True)
  return out[0] if isinstance(out, tuple) else out


def hidden_states(model, params, tokens, rngs=None):
  """The final states (B, T, D) of a causal Transformer LM made by `make` (before the
  output projection; `output_projection` gives it)."""
  return model.apply({'params': params}, tokens, return_hidden=True, rngs=rngs)


def output_projection(cfg, params):
  """(kernel (D, V), bias or None) of a Transformer LM's vocabulary projection: the
  transposed embedding when tied, else `head`."""
  if type(cfg).arch != 'transformer':
    raise ConfigError(f'no separable output projection for model.arch={type(cfg).arch!r}')
  if cfg.tie_embeddings:
    return params['embed']['embedding'].T, None
  return params['head']['kernel'], None


def is_causal(cfg) -> bool:
  return arch_of(cfg).causal


def flops_per_token(cfg, seq_len: int) -> float:
  return arch_of(cfg).flops_per_token(cfg, seq_len)


def context_len(cfg) -> Optional[int]:
  """The longest sequence the architecture can take (None: no positional limit)."""
  return cfg.max_len if arch_of(cfg).bounded_context else None


def architecture_diff(a, b) -> dict[str, tuple[Any, Any]]:
  """{field: (a's value, b's value)} over the fields that shape the parameter tree."""
  if type(a).arch != type(b).arch:
    return {'arch': (type(a).arch, type(b).arch)}
  da, db = dataclasses.asdict(a), dataclasses.asdict(b)
  return {k: (da.get(k), db.get(k)) for k in sorted(set(da) | set(db))
          if k not in NON_ARCHITECTURAL and da.get(k) != db.get(k)}
