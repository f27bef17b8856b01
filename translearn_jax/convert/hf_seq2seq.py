"""Hugging Face BART, mBART and Marian checkpoints ⇄ seq2seq runs, by the name tables of
`convert.hf`.

All three are encoder-decoders with one embedding table shared by the encoder,
the decoder and the output layer, and a `final_logits_bias`; they map onto
`models.seq2seq.Seq2Seq` with these options (nothing is special-cased here;
the model computes every one of them):

| model_type | norm | positions | embeddings | activation |
|---|---|---|---|---|
| bart | post | learned, `position_offset = 2` | `embed_ln` (`layernorm_embedding`) | `activation_function` (gelu) |
| mbart | pre (+ final `layer_norm`s) | learned, `position_offset = 2` | `embed_ln` | `activation_function` (gelu) |
| marian | post | sinusoidal (sin \\| cos halves; not stored in the file) | — | `swish` → `silu` |

Token embeddings are × sqrt(d_model) when `scale_embedding` (Marian, mBART
checkpoints).

LayerNorm ε is 1e-5 (`torch.nn.LayerNorm`'s default; no config has a key for
it). Ids come from `config.json`: `pad_token_id` (source padding),
`eos_token_id`, `decoder_start_token_id` (BART: `</s>`; Marian: the pad id;
and when null `bos_token_id`, as `generate` does), and the single-token
`bad_words_ids` / `suppress_tokens` become the ids the decoder never generates (opus-mt
bans its pad id; BART bans nothing).
`forced_bos_token_id` (mBART-50's target language) becomes
`model.forced_bos_id`, the first generated token, and is exported back. Those four
(start, bos, banned, forced) come from `generation_config.json` alone when the checkpoint
has one, as `generate()` reads them (a key it leaves out is unset), else from
`config.json`. The search
`generate()` runs by default (`num_beams`, `length_penalty`, `min_length`,
`no_repeat_ngram_size`, `early_stopping`) becomes the run's `eval` group (beam,
length_penalty with form 'length', min_length, no_repeat_ngram_size, early_stopping:
False 'heuristic', True 'k_finished'), which `translate` of the run uses; the settings
`generation.seq2seq_decode` does not apply (`repetition_penalty`, `forced_eos_token_id`,
...) are listed in the import report's `generation.not_applied`.

Separate encoder/decoder head counts or FFN sizes, untied output layers and
Marian's separate source/target embeddings are errors naming the key.

Tokenizers: a BART or mBART directory's `tokenizer.json` is imported with the
checkpoint. Marian checkpoints (Helsinki-NLP opus-mt) ship two
sentencepiece models (`source.spm`, `target.spm`) numbered by `vocab.json`;
they have no `tokenizer.json` form and a run has one tokenizer, so such a
directory is an error (a Marian directory that does hold a `tokenizer.json`
imports).

Export: a seq2seq run with learned positions and `model.embed_ln=True` is
written as BART (`model.norm='post'`) or mBART (`'pre'`); `position_offset` 0
or 2: a run numbered from 0 gets the two leading rows as zeros, which it
never reads; no `final_logits_bias` is written as zeros. A post-LN run with
sinusoidal positions and no `embed_ln` is written as Marian. LayerNorm ε must
be 1e-5 and the embeddings shared. This project's default model (pre-LN, no
`embed_ln`, ε 1e-6) has no Hugging Face counterpart: the error names the
fields to set before training.
"""

from __future__ import annotations

import numpy as np

import translearn_jax.convert.hf as hf
from translearn_jax.convert.hf import Entry, HFArch
from translearn_jax.errors import DataError

BART_OFFSET = 2                  # BartLearnedPositionalEmbedding's fixed offset
LN_EPS = 1e-5                    # torch.nn.LayerNorm default (BART, Marian)
ACT_OUT = dict(hf.ACT_OUT, silu='swish')


def _same(c: dict, enc: str, dec: str) -> int:
  a, b = hf._get(c, enc), hf._get(c, dec)
  if a != b:
    raise DataError(f'config.json: {enc}={a} and {dec}={b} differ; the seq2seq model here has '
                    f'one value for both')
  return int(a)


def _id(c: dict, key: str) -> int:
  v = hf._get(c, key)
  if not isinstance(v, int):
    raise DataError(f'config.json: {key}={v!r} is not supported (one token id)')
  return v


def _suppressed(c: dict) -> list[int]:
  """Ids generation never produces: single-token `bad_words_ids` and `suppress_tokens`."""
  out = set(c.get('suppress_tokens') or [])
  for seq in c.get('bad_words_ids') or []:
    if len(seq) != 1:
      raise DataError(f'config.json: bad_words_ids entry {seq} is not supported (single '
                      'tokens only)')
    out.add(seq[0])
  return sorted(int(i) for i in out)


def _fields(c: dict, model_type: str) -> dict:
  marian = model_type == 'marian'
  vocab = int(hf._get(c, 'vocab_size'))
  start = c.get('decoder_start_token_id')
  enc = int(hf._get(c, 'encoder_layers'))
  if c.get('num_hidden_layers', enc) != enc:    # transformers' alias of encoder_layers
    raise DataError(f"config.json: num_hidden_layers={c['num_hidden_layers']} and "
                    f'encoder_layers={enc} differ (transformers takes num_hidden_layers, an alias '
                    'of encoder_layers, as the encoder depth)')
  if marian and int(c.get('decoder_vocab_size') or vocab) != vocab:
    raise DataError(f"config.json: decoder_vocab_size={c['decoder_vocab_size']} differs from "
                    f'vocab_size={vocab} (separate target vocabularies are not supported)')
  return dict(
      vocab_size=vocab, d_model=int(hf._get(c, 'd_model')),
      num_heads=_same(c, 'encoder_attention_heads', 'decoder_attention_heads'),
      d_ff=_same(c, 'encoder_ffn_dim', 'decoder_ffn_dim'),
      encoder_layers=enc,
      decoder_layers=int(hf._get(c, 'decoder_layers')),
      dropout=hf._dropout(c, 'dropout'), share_embeddings=True,
      norm='pre' if model_type == 'mbart' else 'post',
      positions='sinusoidal' if marian else 'learned',
      position_offset=0 if marian else BART_OFFSET,
      scale_embedding=bool(c.get('scale_embedding', False)), embed_ln=not marian,
      final_logits_bias=True, activation=hf._activation(c, 'activation_function'),
      layer_norm_eps=LN_EPS, pad_id=_id(c, 'pad_token_id'), eos_id=_id(c, 'eos_token_id'),
      decoder_start_id=_id(c, 'bos_token_id' if start is None else 'decoder_start_token_id'),
      suppress_ids=_suppressed(c),
      **({'forced_bos_id': _id(c, 'forced_bos_token_id')}
         if c.get('forced_bos_token_id') is not None else {}))


def max_len(conf: dict) -> int:
  """The longest source/target (the run's `max_source_len` = `max_target_len`)."""
  return int(hf._get(conf, 'max_position_embeddings'))


def _attention(hf_name: str, ours: str) -> list[Entry]:
  out = []
  for a, b in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value'),
               ('out_proj', 'out')):
    out += hf._linear(f'{hf_name}.{a}', f'{ours}/{b}')
  return out


def _entries(cfg) -> list[Entry]:
  out = [Entry('shared.weight', 'embed/embedding')]
  for side, n in (('encoder', cfg.encoder_layers), ('decoder', cfg.decoder_layers)):
    if cfg.positions == 'learned':
      out.append(Entry(f'{side}.embed_positions.weight', f'{side}_pos_embed'))
    if cfg.embed_ln:
      out += hf._ln(f'{side}.layernorm_embedding', f'{side}_embed_ln')
    for i in range(n):
      h, b = f'{side}.layers.{i}', f'{side}_block_{i}'
      out += _attention(f'{h}.self_attn', f'{b}/self_attn')
      out += hf._ln(f'{h}.self_attn_layer_norm', f'{b}/ln_self')
      if side == 'decoder':
        out += _attention(f'{h}.encoder_attn', f'{b}/cross_attn')
        out += hf._ln(f'{h}.encoder_attn_layer_norm', f'{b}/ln_cross')
      out += hf._linear(f'{h}.fc1', f'{b}/mlp/wi') + hf._linear(f'{h}.fc2', f'{b}/mlp/wo')
      out += hf._ln(f'{h}.final_layer_norm', f'{b}/ln_mlp')
    if cfg.norm == 'pre':                                   # mBART
      out += hf._ln(f'{side}.layer_norm', f'{side[:3]}_ln')
  if cfg.final_logits_bias:
    out.append(Entry('final_logits_bias', 'final_logits_bias', body=False,
                     group='final_logits_bias'))
  return out


def _hf_config(model_type: str):
  def config(cfg, tok) -> dict:
    marian = model_type == 'marian'
    want = dict(norm='pre' if model_type == 'mbart' else 'post',
                positions='sinusoidal' if marian else 'learned', embed_ln=not marian,
                share_embeddings=True, layer_norm_eps=LN_EPS)
    bad = [f'model.{k}={getattr(cfg, k)!r}' for k, v in want.items() if getattr(cfg, k) != v]
    if cfg.position_offset not in ((0,) if marian else (0, BART_OFFSET)):
      bad.append(f'model.position_offset={cfg.position_offset}')
    if bad:
      need = ', '.join(f'model.{k}={v!r}' for k, v in want.items())
      raise DataError(f'{model_type} needs {need}; this run has {", ".join(bad)} (no '
                      'Hugging Face class matches it: set these fields before training)')
    arch = {'bart': 'BartForConditionalGeneration', 'marian': 'MarianMTModel',
            'mbart': 'MBartForConditionalGeneration'}[model_type]
    out = {
        'model_type': model_type, 'architectures': [arch], 'vocab_size': cfg.vocab_size,
        'd_model': cfg.d_model, 'encoder_layers': cfg.encoder_layers,
        'decoder_layers': cfg.decoder_layers, 'encoder_attention_heads': cfg.num_heads,
        'decoder_attention_heads': cfg.num_heads, 'encoder_ffn_dim': cfg.d_ff,
        'decoder_ffn_dim': cfg.d_ff, 'max_position_embeddings': cfg.max_len,
        'activation_function': ACT_OUT[cfg.activation], 'dropout': cfg.dropout,
        'attention_dropout': 0.0, 'activation_dropout': 0.0, 'scale_embedding':
        cfg.scale_embedding, 'tie_word_embeddings': True, 'pad_token_id': cfg.pad_id,
        'bos_token_id': tok.bos_id, 'eos_token_id': cfg.eos_id,
        'decoder_start_token_id': cfg.decoder_start_id, 'forced_eos_token_id': None,
        'is_encoder_decoder': True, 'init_std': 0.02, 'use_cache': True, 'dtype': 'float32'}
    if cfg.suppress_ids:
      out['bad_words_ids'] = [[int(i)] for i in cfg.suppress_ids]
    if getattr(cfg, 'forced_bos_id', -1) >= 0:      # mBART-50's target language code
      out['forced_bos_token_id'] = int(cfg.forced_bos_id)
    if marian:
      out.update(decoder_vocab_size=cfg.vocab_size, share_encoder_decoder_embeddings=True)
    return out
  return config


def export_flat(cfg, flat: dict) -> tuple:
  """(cfg, flat) completed with what BART/Marian always have and the run may lack:
  zero `final_logits_bias`, BART's two leading position rows (never read)."""
  flat = dict(flat)
  if not cfg.final_logits_bias:
    flat['final_logits_bias'] = np.zeros((1, cfg.vocab_size), np.float32)
    cfg = cfg.replace(final_logits_bias=True)
  if cfg.positions == 'learned' and cfg.position_offset == 0:
    for side in ('encoder', 'decoder'):
      k = f'{side}_pos_embed'
      flat[k] = np.concatenate([np.zeros((BART_OFFSET, cfg.d_model), np.float32), flat[k]])
    cfg = cfg.replace(position_offset=BART_OFFSET)
  return cfg, flat


def arch_of(cfg) -> HFArch:
  """The architecture a seq2seq run is exported as (its checks are in `hf_config`)."""
  if cfg.positions == 'sinusoidal':
    return MARIAN
  return MBART if cfg.norm == 'pre' else BART


_KEYS = frozenset({
    'vocab_size', 'd_model', 'encoder_layers', 'decoder_layers', 'encoder_attention_heads',
    'decoder_attention_heads', 'encoder_ffn_dim', 'decoder_ffn_dim', 'max_position_embeddings',
    'activation_function', 'dropout', 'attention_dropout', 'activation_dropout',
    'encoder_layerdrop', 'decoder_layerdrop', 'init_std', 'scale_embedding',
    'tie_word_embeddings', 'is_decoder', 'num_hidden_layers', 'classif_dropout', '_num_labels',
    'output_past', 'force_bos_token_to_be_generated',
    # keys of fairseq-converted configs that `transformers` ignores; checked by `required`
    'add_bias_logits', 'add_final_layer_norm', 'normalize_before', 'normalize_embedding',
    'static_position_embeddings', 'extra_pos_embeddings'})
_REQUIRED = {'is_decoder': False, 'add_bias_logits': False, 'tie_word_embeddings': True}
# aliases of the shared table (tied), and positions some writers store though they are fixed
_UNUSED = (r'^(model\.)?(encoder|decoder)\.embed_tokens\.weight$', r'^lm_head\.weight$')

def _ties(cfg) -> tuple:
  """The encoder's and decoder's token tables and the output layer are the shared table."""
  return tuple(((n, body), ('shared.weight', True)) for n, body in (
      ('encoder.embed_tokens.weight', True), ('decoder.embed_tokens.weight', True),
      ('lm_head.weight', False)))


def _marian_positions(cfg) -> tuple:
  """Marian's position tables: the sinusoid, which some files store (fp16-rounded ones
  agree within 2e-3)."""
  from translearn_jax.models.seq2seq import sinusoidal_table
  table = sinusoidal_table(cfg.max_len, cfg.d_model)
  return tuple(((f'{side}.embed_positions.weight', True), table)
               for side in ('encoder', 'decoder'))


_LEARNED = dict(normalize_embedding=True, static_position_embeddings=False,
                extra_pos_embeddings=BART_OFFSET)
BART = HFArch('bart', 'seq2seq', 'model.', _KEYS,
              dict(_REQUIRED, normalize_before=False, add_final_layer_norm=False, **_LEARNED),
              lambda c: _fields(c, 'bart'), _entries, _hf_config('bart'), unused=_UNUSED, ties=_ties)
MBART = HFArch('mbart', 'seq2seq', 'model.', _KEYS,
               dict(_REQUIRED, normalize_before=True, add_final_layer_norm=True, **_LEARNED),
               lambda c: _fields(c, 'mbart'), _entries, _hf_config('mbart'), unused=_UNUSED, ties=_ties)
MARIAN = HFArch('marian', 'seq2seq', 'model.',
                _KEYS | {'decoder_vocab_size', 'share_encoder_decoder_embeddings'},
                dict(_REQUIRED, normalize_before=False, add_final_layer_norm=False,
                     normalize_embedding=False, static_position_embeddings=True,
                     share_encoder_decoder_embeddings=True),
                lambda c: _fields(c, 'marian'), _entries, _hf_config('marian'),
                unused=_UNUSED + (r'^(model\.)?(encoder|decoder)\.embed_positions\.weight$',),
                ties=_ties, computed=_marian_positions)

hf.ARCHS.update({a.model_type: a for a in (BART, MBART, MARIAN)})
