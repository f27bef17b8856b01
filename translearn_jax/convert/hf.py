"""Hugging Face checkpoints ⇄ this project's run directories, by explicit name tables.

Each supported `model_type` is an `HFArch`: how its `config.json` maps onto a
`models.lm` (or `models.seq2seq`) architecture config (every field read or
known to leave the forward pass unchanged; any other key, or a value the model
cannot compute, is an error naming it) and a table of `Entry`s, one per tensor:
the Hugging Face name, the parameter path here, whether it is a `torch.nn.Linear` weight
(stored (out, in), transposed into a (in, out) kernel) and, for fused tensors
(GPT-2's `c_attn`), which slice of the last axis it is. Import and export read
the same table in opposite directions, so a round trip is bit-identical.

| model_type | here | notes |
|---|---|---|
| gpt2 | `transformer` LM (learned positions, pre-LN) | `c_attn` split into q/k/v; Conv1D weights are (in, out) |
| gpt_neox | `transformer` LM (rotary, pre-LN, sequential residual) | `query_key_value` interleaved per head; full rotary, base 10000 |
| bert | `encoder` (post-LN), `pooler` kept unless dropped | NSP head unused |
| roberta | `encoder`, `position_offset = pad_token_id + 1` | |
| bart, mbart, marian | `seq2seq` | tables in `convert.hf_seq2seq`, registered in `ARCHS` there |
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional

import numpy as np

from translearn_jax.errors import DataError

ACT_IN = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
          'gelu_fast': 'gelu_tanh', 'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}
ACT_OUT = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new', 'relu': 'relu', 'silu': 'silu'}

# Keys of any `PretrainedConfig` (this and older transformers versions) that do not
# change the forward pass: bookkeeping, generation defaults, label maps.
GENERIC_KEYS = {
    '_name_or_path', 'architectures', 'model_type', 'transformers_version', 'dtype',
    'torch_dtype', 'use_bfloat16', 'id2label', 'label2id', 'num_labels', 'problem_type',
    'return_dict', 'output_attentions', 'output_hidden_states', 'torchscript', 'use_cache',
    'chunk_size_feed_forward', 'pruned_heads', 'tie_encoder_decoder', 'is_encoder_decoder',
    'finetuning_task', 'task_specific_params', 'tokenizer_class', 'prefix',
    'bos_token_id', 'eos_token_id', 'pad_token_id', 'sep_token_id', 'decoder_start_token_id',
    'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups',
    'diversity_penalty', 'temperature', 'top_k', 'top_p', 'typical_p', 'repetition_penalty',
    'length_penalty', 'no_repeat_ngram_size', 'encoder_no_repeat_ngram_size', 'bad_words_ids',
    'num_return_sequences', 'output_scores', 'return_dict_in_generate', 'forced_bos_token_id',
    'forced_eos_token_id', 'remove_invalid_values', 'exponential_decay_length_penalty',
    'suppress_tokens', 'begin_suppress_tokens', 'cross_attention_hidden_size',
    'initializer_range', 'gradient_checkpointing', 'classifier_dropout', 'use_return_dict',
    '_num_labels', 'output_past', '_attn_implementation_autoset', '_attn_implementation',
}


@dataclasses.dataclass(frozen=True)
class Entry:
  hf: str                         # name without the base-model prefix when `body`
  ours: str                       # parameter path, '/'-separated
  linear: bool = False            # torch Linear weight (out, in) ⇄ kernel (in, out)
  part: Optional[tuple[int, int]] = None   # (i, n): the i-th of n slices of the last axis
  heads: int = 0                  # with `part`: the last axis is (heads, n, head size) (GPT-NeoX)
  body: bool = True               # under the base-model prefix ('transformer.', 'bert.')
  group: str = ''                 # optional group ('mlm', 'pooler'): absent → not imported
  aliases: tuple = ()             # other names the tensor has had (read on import)
  copies: tuple = ()              # other names written with the same tensor on export


@dataclasses.dataclass(frozen=True)
class HFArch:
  model_type: str
  family: str                     # this project's run family
  prefix: str                     # base-model prefix of body tensors in *LMHead/*ForMaskedLM files
  known_keys: frozenset           # config keys read or known not to change the function
  required: dict                  # {config key: value the model computes with}
  model_fields: Callable          # hf config dict -> `model` fields (ConfigDict-able)
  entries: Callable               # architecture config -> list[Entry]
  hf_config: Callable             # (architecture config, tokenizer) -> config.json dict
  unused: tuple = ()              # regexes of tensors that are no weights of their own:
                                  # buffers, and aliases of tied ones (listed as ignored)
  defaults: dict = dataclasses.field(default_factory=dict)
                                  # {config key: transformers' value when config.json lacks it}
                                  # (checked against `required` like a present key)
  computed: Callable = lambda cfg: ()
                                  # architecture config -> (((name, body), array), ...):
                                  # tensors some files store that our model computes instead
                                  # (Marian's sinusoid); a stored one that differs is refused
  ties: Callable = lambda cfg: ()
                                  # architecture config -> ((alias, canonical), ...), each a
                                  # (name, body) as in `Entry`: a tensor transformers ties to
                                  # one this table reads. transformers 5 unties them when a
                                  # file holds both with different values, so that is refused


def _get(conf: dict, key: str, default=None):
  v = conf.get(key, default)
  if v is None:
    raise DataError(f'config.json: missing {key!r}')
  if isinstance(default, int) or key in _INT_KEYS:
    if isinstance(v, bool) or not isinstance(v, int):
      raise DataError(f'config.json: {key!r} must be an integer, got {v!r}')
  elif isinstance(default, float) and (isinstance(v, bool) or not isinstance(v, (int, float))):
    raise DataError(f'config.json: {key!r} must be a number, got {v!r}')
  return v


# sizes and counts: an integer however config.json spells the others
_INT_KEYS = {'hidden_size', 'num_attention_heads', 'num_hidden_layers', 'intermediate_size',
             'vocab_size', 'max_position_embeddings', 'type_vocab_size', 'n_embd', 'n_head',
             'n_layer', 'n_positions', 'n_inner', 'd_model', 'encoder_layers', 'decoder_layers',
             'encoder_attention_heads', 'decoder_attention_heads', 'encoder_ffn_dim',
             'decoder_ffn_dim', 'pad_token_id', 'bos_token_id', 'eos_token_id',
             'decoder_start_token_id'}


def _activation(conf: dict, key: str, default: str = 'gelu') -> str:
  """Our activation for config key `key`; `default`: transformers' value when absent."""
  act = conf.get(key, default)
  if not isinstance(act, str) or act not in ACT_IN:
    raise DataError(f'config.json: {key}={act!r} is not supported (supported: '
                    f'{sorted(ACT_IN)})')
  return ACT_IN[act]


def _ln(hf: str, ours: str, **kw) -> list[Entry]:
  """A LayerNorm's scale and bias (TF-converted BERT files name them gamma and beta)."""
  return [Entry(f'{hf}.weight', f'{ours}/scale', aliases=(f'{hf}.gamma',), **kw),
          Entry(f'{hf}.bias', f'{ours}/bias', aliases=(f'{hf}.beta',), **kw)]


def _linear(hf: str, ours: str, **kw) -> list[Entry]:
  return [Entry(f'{hf}.weight', f'{ours}/kernel', linear=True, **kw),
          Entry(f'{hf}.bias', f'{ours}/bias', **kw)]


def _dropout(conf: dict, key: str) -> float:
  return float(conf.get(key, 0.1) or 0.0)


# -- GPT-2 --------------------------------------------------------------------------

def _gpt2_fields(c: dict) -> dict:
  d = _get(c, 'n_embd')
  return dict(arch='transformer', vocab_size=_get(c, 'vocab_size'), d_model=d,
              num_heads=_get(c, 'n_head'), num_layers=_get(c, 'n_layer'),
              d_ff=c.get('n_inner') or 4 * d, max_len=_get(c, 'n_positions'),
              dropout=_dropout(c, 'resid_pdrop'), attention_dropout=_dropout(c, 'attn_pdrop'),
              positions='learned', tie_embeddings=bool(c.get('tie_word_embeddings', True)),
              layer_norm_eps=float(_get(c, 'layer_norm_epsilon', 1e-5)),
              activation=_activation(c, 'activation_function', 'gelu_new'))


def _gpt2_entries(cfg) -> list[Entry]:
  out = [Entry('wte.weight', 'embed/embedding'), Entry('wpe.weight', 'pos_embed')]
  for i in range(cfg.num_layers):
    h, b = f'h.{i}', f'block_{i}'
    out += _ln(f'{h}.ln_1', f'{b}/ln_attn') + _ln(f'{h}.ln_2', f'{b}/ln_mlp')
    for j, name in enumerate(('query', 'key', 'value')):
      out += [Entry(f'{h}.attn.c_attn.weight', f'{b}/attn/{name}/kernel', part=(j, 3)),
              Entry(f'{h}.attn.c_attn.bias', f'{b}/attn/{name}/bias', part=(j, 3))]
    for hf, ours in (('attn.c_proj', 'attn/out'), ('mlp.c_fc', 'mlp/wi'),
                     ('mlp.c_proj', 'mlp/wo')):   # Conv1D: weights are already (in, out)
      out += [Entry(f'{h}.{hf}.weight', f'{b}/{ours}/kernel'),
              Entry(f'{h}.{hf}.bias', f'{b}/{ours}/bias')]
  out += _ln('ln_f', 'ln_final')
  if not cfg.tie_embeddings:
    out.append(Entry('lm_head.weight', 'head/kernel', linear=True, body=False))
  return out


def _gpt2_config(cfg, tok) -> dict:
  if cfg.positions != 'learned':
    raise DataError(f"GPT-2 has learned absolute positions; this run has "
                    f"model.positions={cfg.positions!r}, which GPT-2 cannot compute")
  return {
      'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'],
      'vocab_size': cfg.vocab_size, 'n_positions': cfg.max_len, 'n_embd': cfg.d_model,
      'n_layer': cfg.num_layers, 'n_head': cfg.num_heads, 'n_inner': cfg.d_ff,
      'activation_function': ACT_OUT[cfg.activation], 'resid_pdrop': cfg.dropout,
      'embd_pdrop': cfg.dropout, 'attn_pdrop': cfg.attention_dropout,
      'layer_norm_epsilon': cfg.layer_norm_eps, 'initializer_range': 0.02,
      'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False,
      'reorder_and_upcast_attn': False, 'add_cross_attention': False,
      'tie_word_embeddings': cfg.tie_embeddings, 'use_cache': True,
      'bos_token_id': tok.eos_id, 'eos_token_id': tok.eos_id, 'dtype': 'float32'}


GPT2 = HFArch(
    'gpt2', 'lm', 'transformer.',
    frozenset({'vocab_size', 'n_positions', 'n_ctx', 'n_embd', 'n_layer', 'n_head', 'n_inner',
               'activation_function', 'resid_pdrop', 'embd_pdrop', 'attn_pdrop',
               'layer_norm_epsilon', 'scale_attn_weights', 'scale_attn_by_inverse_layer_idx',
               'reorder_and_upcast_attn', 'add_cross_attention', 'tie_word_embeddings',
               'summary_type', 'summary_use_proj', 'summary_activation',
               'summary_proj_to_labels', 'summary_first_dropout',
               'n_special', 'predict_special_tokens'}),   # old GPT-2 configs: unread
    {'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False,
     'add_cross_attention': False},
    _gpt2_fields, _gpt2_entries, _gpt2_config,
    unused=(r'(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$',),
    ties=lambda cfg: ((('lm_head.weight', False), ('wte.weight', True)),)
    if cfg.tie_embeddings else ())


# -- GPT-NeoX (rotary Transformer LMs) ----------------------------------------------

def _rope(c: dict) -> dict:
  """GPT-NeoX's rotary settings as transformers 5 reads them: `rope_parameters` (`type`, the
  old name of `rope_type`, too), then `rotary_emb_base` and `rotary_pct`."""
  rope = c.get('rope_parameters') or {}
  if not isinstance(rope, dict):
    raise DataError(f'config.json: rope_parameters={rope!r} is not an object of rotary settings')
  rope = dict(rope)
  rope.setdefault('rope_type', rope.get('type', 'default'))
  rope.setdefault('rope_theta', c.get('rotary_emb_base', 10000.0))
  rope.setdefault('partial_rotary_factor', c.get('rotary_pct', 0.25))   # transformers' default
  return rope


# keys that state the rotary settings: transformers versions read different ones (4.x wrote
# rope_theta and partial_rotary_factor beside rotary_emb_base and rotary_pct), so each must
# state this project's layout
_ROPE_WANT = {'rope_theta': 10000.0, 'partial_rotary_factor': 1.0, 'rope_type': 'default'}
_ROPE_KEYS = {'rope_theta': 'rope_theta', 'rotary_emb_base': 'rope_theta',
              'partial_rotary_factor': 'partial_rotary_factor',
              'rotary_pct': 'partial_rotary_factor'}


def _neox_fields(c: dict) -> dict:
  rope = _rope(c)
  stated = [(k, c[k], _ROPE_WANT[of]) for k, of in _ROPE_KEYS.items() if k in c]
  if 'type' in rope:
    stated.append(('rope_parameters.type', rope['type'], 'default'))
  stated += [(k, rope[k], want) for k, want in _ROPE_WANT.items()]
  for key, value, want in stated:
    if value != want:
      raise DataError(f'config.json: {key}={value!r} is not supported (only {want!r}: '
                      'rotary over whole heads, base 10000)')
  if not c.get('attention_bias', True):
    raise DataError('config.json: attention_bias=False is not supported (only True)')
  d, heads = _get(c, 'hidden_size'), _get(c, 'num_attention_heads')
  if isinstance(d, int) and isinstance(heads, int) and heads > 0 and (d // heads) % 2:
    raise DataError(f'config.json: hidden_size={d} / num_attention_heads={heads} is a head '
                    f'size of {d // heads}: rotary positions over whole heads need an even '
                    "one (transformers' GPT-NeoX cannot run it either)")
  return dict(arch='transformer', vocab_size=_get(c, 'vocab_size'), d_model=_get(c, 'hidden_size'),
              num_heads=_get(c, 'num_attention_heads'), num_layers=_get(c, 'num_hidden_layers'),
              d_ff=_get(c, 'intermediate_size'), max_len=_get(c, 'max_position_embeddings'),
              dropout=float(c.get('hidden_dropout', 0.0) or 0.0),
              attention_dropout=float(c.get('attention_dropout', 0.0) or 0.0),
              positions='rotary', tie_embeddings=bool(c.get('tie_word_embeddings', False)),
              layer_norm_eps=float(_get(c, 'layer_norm_eps', 1e-5)),
              activation=_activation(c, 'hidden_act'))


def _neox_entries(cfg) -> list[Entry]:
  out = [Entry('embed_in.weight', 'embed/embedding')]
  for i in range(cfg.num_layers):
    h, b = f'layers.{i}', f'block_{i}'
    out += _ln(f'{h}.input_layernorm', f'{b}/ln_attn')
    out += _ln(f'{h}.post_attention_layernorm', f'{b}/ln_mlp')
    for j, name in enumerate(('query', 'key', 'value')):
      out += [Entry(f'{h}.attention.query_key_value.weight', f'{b}/attn/{name}/kernel',
                    linear=True, part=(j, 3), heads=cfg.num_heads),
              Entry(f'{h}.attention.query_key_value.bias', f'{b}/attn/{name}/bias',
                    part=(j, 3), heads=cfg.num_heads)]
    out += _linear(f'{h}.attention.dense', f'{b}/attn/out')
    out += _linear(f'{h}.mlp.dense_h_to_4h', f'{b}/mlp/wi')
    out += _linear(f'{h}.mlp.dense_4h_to_h', f'{b}/mlp/wo')
  out += _ln('final_layer_norm', 'ln_final')
  if not cfg.tie_embeddings:
    out.append(Entry('embed_out.weight', 'head/kernel', linear=True, body=False,
                     aliases=('lm_head.weight',)))
  return out


def _neox_config(cfg, tok) -> dict:
  if cfg.positions != 'rotary':
    raise DataError(f'GPT-NeoX has rotary positions; this run has '
                    f'model.positions={cfg.positions!r} (export it as GPT-2)')
  if (cfg.d_model // cfg.num_heads) % 2:
    raise DataError(f'model.d_model={cfg.d_model} / model.num_heads={cfg.num_heads} is a head '
                    f"size of {cfg.d_model // cfg.num_heads}: transformers' GPT-NeoX rotates "
                    'whole heads, which needs an even head size')
  return {
      'model_type': 'gpt_neox', 'architectures': ['GPTNeoXForCausalLM'],
      'vocab_size': cfg.vocab_size, 'hidden_size': cfg.d_model,
      'num_hidden_layers': cfg.num_layers, 'num_attention_heads': cfg.num_heads,
      'intermediate_size': cfg.d_ff, 'hidden_act': ACT_OUT[cfg.activation],
      'max_position_embeddings': cfg.max_len, 'layer_norm_eps': cfg.layer_norm_eps,
      'hidden_dropout': cfg.dropout, 'attention_dropout': cfg.attention_dropout,
      'use_parallel_residual': False, 'attention_bias': True,
      'rope_parameters': {'rope_theta': 10000.0, 'partial_rotary_factor': 1.0,
                          'rope_type': 'default'},
      'rotary_pct': 1.0, 'rotary_emb_base': 10000,
      'tie_word_embeddings': cfg.tie_embeddings, 'initializer_range': 0.02, 'use_cache': True,
      'bos_token_id': tok.eos_id, 'eos_token_id': tok.eos_id, 'dtype': 'float32'}


GPT_NEOX = HFArch(
    'gpt_neox', 'lm', 'gpt_neox.',
    frozenset({'vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
               'intermediate_size', 'hidden_act', 'max_position_embeddings', 'layer_norm_eps',
               'hidden_dropout', 'attention_dropout', 'use_parallel_residual', 'attention_bias',
               'rope_parameters', 'rope_theta', 'rotary_pct', 'rotary_emb_base', 'rope_scaling',
               'partial_rotary_factor', 'tie_word_embeddings', 'is_decoder'}),
    {'use_parallel_residual': False, 'rope_scaling': None, 'is_decoder': False},
    _neox_fields, _neox_entries, _neox_config,
    unused=(r'(gpt_neox\.)?layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)$',),
    defaults={'use_parallel_residual': True},
    ties=lambda cfg: tuple(((n, False), ('embed_in.weight', True))
                           for n in ('embed_out.weight', 'lm_head.weight'))
    if cfg.tie_embeddings else ())


# -- BERT / RoBERTa -----------------------------------------------------------------

def _encoder_fields(c: dict, offset: int, pad_id: int) -> dict:
  types = c.get('type_vocab_size', 2)
  if not isinstance(types, int) or isinstance(types, bool) or types < 1:
    raise DataError(f'config.json: type_vocab_size={types!r} is not supported (an integer >= 1: '
                    'BERT-family models look every position up in the token-type table)')
  return dict(arch='encoder', vocab_size=_get(c, 'vocab_size'), d_model=_get(c, 'hidden_size'),
              num_heads=_get(c, 'num_attention_heads'), num_layers=_get(c, 'num_hidden_layers'),
              d_ff=_get(c, 'intermediate_size'),
              max_len=_get(c, 'max_position_embeddings') - offset,
              dropout=_dropout(c, 'hidden_dropout_prob'),
              attention_dropout=_dropout(c, 'attention_probs_dropout_prob'),
              positions='learned', position_offset=offset, norm='post',
              activation=_activation(c, 'hidden_act'),
              layer_norm_eps=float(_get(c, 'layer_norm_eps', 1e-12)),
              type_vocab_size=types,
              tie_embeddings=bool(c.get('tie_word_embeddings', True)),
              pad_id=pad_id, pooler=True)


def _roberta_fields(c: dict) -> dict:
  if c.get('hidden_act', 'gelu') != 'gelu':
    raise DataError(f"config.json: hidden_act={c['hidden_act']!r} is not supported for RoBERTa "
                    "(its LM head always applies exact GELU, the encoder would use hidden_act; "
                    "only 'gelu')")
  pad = int(_get(c, 'pad_token_id', 1))     # RobertaConfig's default when absent
  return _encoder_fields(c, pad + 1, pad)


def _encoder_entries(head: str) -> Callable:
  """BERT's (`head='bert'`: `cls.predictions.*`) or RoBERTa's (`lm_head.*`) table."""
  def entries(cfg) -> list[Entry]:
    out = [Entry('embeddings.word_embeddings.weight', 'embed/embedding'),
           Entry('embeddings.position_embeddings.weight', 'pos_embed')]
    if cfg.type_vocab_size:
      out.append(Entry('embeddings.token_type_embeddings.weight', 'type_embed/embedding'))
    out += _ln('embeddings.LayerNorm', 'embed_ln')
    for i in range(cfg.num_layers):
      h, b = f'encoder.layer.{i}', f'block_{i}'
      for name in ('query', 'key', 'value'):
        out += _linear(f'{h}.attention.self.{name}', f'{b}/attn/{name}')
      out += _linear(f'{h}.attention.output.dense', f'{b}/attn/out')
      out += _ln(f'{h}.attention.output.LayerNorm', f'{b}/ln_attn')
      out += _linear(f'{h}.intermediate.dense', f'{b}/mlp/wi')
      out += _linear(f'{h}.output.dense', f'{b}/mlp/wo')
      out += _ln(f'{h}.output.LayerNorm', f'{b}/ln_mlp')
    if cfg.pooler:
      out += _linear('pooler.dense', 'pooler', group='pooler')
    kw = dict(body=False, group='mlm')
    if head == 'bert':
      out += _linear('cls.predictions.transform.dense', 'mlm/dense', **kw)
      out += _ln('cls.predictions.transform.LayerNorm', 'mlm/ln', **kw)
      bias, decoder = 'cls.predictions.bias', 'cls.predictions.decoder'
    else:
      out += _linear('lm_head.dense', 'mlm/dense', **kw)
      out += _ln('lm_head.layer_norm', 'mlm/ln', **kw)
      bias, decoder = 'lm_head.bias', 'lm_head.decoder'
    if cfg.tie_embeddings:
      out.append(Entry(bias, 'mlm/bias', **kw))
    else:
      # untied, transformers 5 computes with the decoder's own bias (4 kept the two equal):
      # read it first, write both
      out.append(Entry(f'{decoder}.bias', 'mlm/bias', aliases=(bias,), copies=(bias,), **kw))
      out.append(Entry(f'{decoder}.weight', 'mlm/decoder/kernel', linear=True, **kw))
    return out
  return entries


def _encoder_config(model_type: str) -> Callable:
  def config(cfg, tok) -> dict:
    if cfg.norm != 'post' or cfg.positions != 'learned':
      raise DataError(f'{model_type} is a post-LN encoder with learned positions; this run has '
                      f'model.norm={cfg.norm!r}, model.positions={cfg.positions!r}')
    if model_type == 'roberta' and cfg.activation != 'gelu':
      raise DataError(f"RoBERTa's LM head always applies exact GELU; this run has "
                      f"model.activation={cfg.activation!r} (export it as BERT)")
    offset = 0 if model_type == 'bert' else cfg.pad_id + 1
    if cfg.position_offset != offset:
      raise DataError(f'{model_type} numbers positions from {offset} (pad_token_id + 1 for '
                      f'RoBERTa); this run has model.position_offset={cfg.position_offset}')
    arch = {'bert': 'BertForMaskedLM', 'roberta': 'RobertaForMaskedLM'}[model_type]
    return {
        'model_type': model_type, 'architectures': [arch], 'vocab_size': cfg.vocab_size,
        'hidden_size': cfg.d_model, 'num_attention_heads': cfg.num_heads,
        'num_hidden_layers': cfg.num_layers, 'intermediate_size': cfg.d_ff,
        'max_position_embeddings': cfg.max_len + offset, 'hidden_act': ACT_OUT[cfg.activation],
        'hidden_dropout_prob': cfg.dropout, 'attention_probs_dropout_prob':
        cfg.attention_dropout, 'layer_norm_eps': cfg.layer_norm_eps,
        'type_vocab_size': max(cfg.type_vocab_size, 1), 'initializer_range': 0.02,
        'tie_word_embeddings': cfg.tie_embeddings, 'pad_token_id': cfg.pad_id,
        'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id,
        'position_embedding_type': 'absolute', 'is_decoder': False,
        'add_cross_attention': False, 'use_cache': True, 'dtype': 'float32'}
  return config


_ENCODER_KEYS = frozenset({
    'vocab_size', 'hidden_size', 'num_attention_heads', 'num_hidden_layers',
    'intermediate_size', 'max_position_embeddings', 'hidden_act', 'hidden_dropout_prob',
    'attention_probs_dropout_prob', 'layer_norm_eps', 'type_vocab_size', 'tie_word_embeddings',
    'position_embedding_type', 'is_decoder', 'add_cross_attention',
    # Google's original BERT configs (bert-base-chinese, multilingual): unread by transformers
    'directionality', 'pooler_fc_size', 'pooler_num_attention_heads', 'pooler_num_fc_layers',
    'pooler_size_per_head', 'pooler_type'})
_ENCODER_REQUIRED = {'position_embedding_type': 'absolute', 'is_decoder': False,
                     'add_cross_attention': False}
def _encoder_ties(head: str) -> Callable:
  """Tied, the MLM decoder's weight is the word embeddings and its bias the head's."""
  def ties(cfg) -> tuple:
    if not cfg.tie_embeddings:
      return ()
    return (((f'{head}.decoder.weight', False), ('embeddings.word_embeddings.weight', True)),
            ((f'{head}.decoder.bias', False), (f'{head}.bias', False)))
  return ties


_ENCODER_UNUSED = (r'(bert\.|roberta\.)?embeddings\.position_ids$',
                   r'cls\.predictions\.(decoder\.)?bias$', r'lm_head\.(decoder\.)?bias$')

BERT = HFArch('bert', 'mlm', 'bert.', _ENCODER_KEYS, _ENCODER_REQUIRED,
              lambda c: _encoder_fields(c, 0, int(c.get('pad_token_id', 0) or 0)),
              _encoder_entries('bert'), _encoder_config('bert'),
              unused=_ENCODER_UNUSED, ties=_encoder_ties('cls.predictions'))
ROBERTA = HFArch('roberta', 'mlm', 'roberta.', _ENCODER_KEYS, _ENCODER_REQUIRED,
                 _roberta_fields, _encoder_entries('roberta'), _encoder_config('roberta'),
                 unused=_ENCODER_UNUSED, ties=_encoder_ties('lm_head'))

ARCHS = {a.model_type: a for a in (GPT2, GPT_NEOX, BERT, ROBERTA)}


def arch_for(conf: dict, path: str) -> HFArch:
  """The `HFArch` of a config.json dict, after checking every key it holds."""
  mt = conf.get('model_type')
  if mt not in ARCHS:
    raise DataError(f'{path}: model_type={mt!r} is not supported (supported: {sorted(ARCHS)})')
  arch = ARCHS[mt]
  for key, value in conf.items():
    if key not in arch.known_keys and key not in GENERIC_KEYS:
      raise DataError(f'{path}: config key {key!r} is unknown to the {mt} converter; it may '
                      'change the model, so nothing was converted')
  for key, want in arch.required.items():
    if key in conf and conf[key] != want:
      raise DataError(f'{path}: {key}={conf[key]!r} is not supported (only {want!r})')
    if key not in conf and key in arch.defaults and arch.defaults[key] != want:
      raise DataError(f'{path}: no {key!r}, which transformers then takes as '
                      f'{arch.defaults[key]!r}: not supported (only {want!r})')
  return arch


# -- tensors ------------------------------------------------------------------------

def hf_name(arch: HFArch, e: Entry) -> str:
  return arch.prefix + e.hf if e.body else e.hf


def import_tensors(arch: HFArch, cfg, tensors: dict[str, np.ndarray], expected: dict,
                   path: str, drop: tuple = ()) -> tuple[dict, dict]:
  """({our path: array}, report) from the Hugging Face `tensors`.

  `expected`: {our path: shape} of the target tree. Body tensors are found with
  or without the base-model prefix. Groups in `drop`, and optional groups
  whose tensors are all absent, are left out (listed in the report).
  """
  names = set(tensors)
  with_prefix = any(n.startswith(arch.prefix) for n in names)
  def lookup(e: Entry) -> str:
    full = lambda n: arch.prefix + n if e.body and with_prefix else n
    if full(e.hf) in names:
      return full(e.hf)
    return next((full(a) for a in e.aliases if full(a) in names), full(e.hf))
  entries = arch.entries(cfg)
  groups = {e.group for e in entries if e.group}
  absent_groups = sorted(g for g in groups if g in drop or not any(
      lookup(e) in names for e in entries if e.group == g))
  out: dict[str, np.ndarray] = {}
  missing, used = [], set()
  for e in entries:
    if e.group in absent_groups:
      continue
    key = lookup(e)
    if key not in tensors:
      missing.append(key)
      continue
    used.add(key)
    x = np.asarray(tensors[key])
    if not np.issubdtype(x.dtype, np.floating) and x.dtype.name != 'bfloat16':   # ml_dtypes
      raise DataError(f'{path}: tensor {key} has dtype {x.dtype}, not floating point')
    x = x.astype(np.float32)
    if e.linear:
      x = x.T
    if e.part is not None:
      i, n = e.part
      if x.shape[-1] % (n * max(e.heads, 1)):
        raise DataError(f'{path}: tensor {key} of shape {tensors[key].shape} cannot be split '
                        f'into {n} along its last axis')
      if e.heads:
        lead = x.shape[:-1]
        x = x.reshape(lead + (e.heads, n, -1))[..., i, :].reshape(lead + (-1,))
      else:
        x = np.split(x, n, axis=-1)[i]
    want = expected.get(e.ours)
    if want is not None and tuple(x.shape) != tuple(want):
      shape = tuple(tensors[key].shape)
      raise DataError(f'{path}: tensor {key} has shape {shape}, the config implies '
                      f'{_hf_shape(e, want)} (parameter {e.ours})')
    out[e.ours] = x
  if missing:
    raise DataError(f'{path}: missing tensors {missing[:5]}'
                    f'{f" and {len(missing) - 5} more" if len(missing) > 5 else ""}')
  for alias, canonical in arch.ties(cfg):
    a, c = (lookup(Entry(n, '', body=b)) for n, b in (alias, canonical))
    if a in tensors and c in tensors and not np.array_equal(
        np.asarray(tensors[a]).astype(np.float32), np.asarray(tensors[c]).astype(np.float32)):
      raise DataError(
          f'{path}: tensor {a} differs from {c}, which the config ties it to '
          "(tie_word_embeddings true, transformers' default when config.json lacks it); "
          f'transformers 5 then computes with {a} itself (untied), transformers 4 with {c}, '
          'so nothing was converted: set "tie_word_embeddings": false in config.json to '
          f'import it untied, or remove {a} from the weights to tie it')
  for (name, body), table in arch.computed(cfg):
    key = lookup(Entry(name, '', body=body))
    x = np.asarray(tensors[key], np.float32) if key in tensors else None
    if x is not None and (x.ndim != 2 or x.shape[1] != table.shape[1]
                          or not np.allclose(x[:len(table)], table[:len(x)], atol=2e-3)):
      raise DataError(f'{path}: tensor {key} differs from the table this architecture '
                      'computes (transformers computes with the stored one), so nothing was '
                      f'converted: remove {key} from the weights to use the computed table')
  leftover = sorted(names - used)
  unused = [n for n in leftover if not any(re.search(p, n) for p in arch.unused)]
  buffers = [n for n in leftover if n not in unused]
  report = {'imported': len(out), 'absent_groups': absent_groups,
            'unused_tensors': unused, 'ignored_buffers': buffers}
  return out, report


def _hf_shape(e: Entry, ours: tuple) -> tuple:
  shape = tuple(ours)
  if e.part is not None:
    shape = shape[:-1] + (shape[-1] * e.part[1],)
  return shape[::-1] if e.linear else shape


def export_tensors(arch: HFArch, cfg, flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{Hugging Face name: array} of our flat parameters; every parameter must be mapped."""
  entries = [e for e in arch.entries(cfg) if e.ours in flat or not e.group]
  unmapped = sorted(set(flat) - {e.ours for e in entries})
  if unmapped:
    raise DataError(f'parameters {unmapped[:5]} have no {arch.model_type} counterpart '
                    '(e.g. LoRA adapters: merge them first)')
  parts: dict[str, list] = {}
  for e in entries:
    if e.ours not in flat:
      raise DataError(f'the run has no parameter {e.ours} ({hf_name(arch, e)} needs it)')
    parts.setdefault(hf_name(arch, e), []).append(e)
  out = {}
  for name, es in parts.items():
    es = sorted(es, key=lambda e: e.part[0] if e.part else 0)
    xs = [np.asarray(flat[e.ours]) for e in es]
    if es[0].heads:    # interleave per head: (..., heads, n, head size)
      h, lead = es[0].heads, xs[0].shape[:-1]
      x = np.stack([a.reshape(lead + (h, -1)) for a in xs], axis=-2).reshape(lead + (-1,))
    else:
      x = np.concatenate(xs, axis=-1) if es[0].part else xs[0]
    out[name] = np.ascontiguousarray(x.T if es[0].linear else x)
    for copy in es[0].copies:
      out[copy] = out[name].copy()
  return out

