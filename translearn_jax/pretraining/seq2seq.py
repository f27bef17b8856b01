"""Encoder-decoder pretraining (translation, summarisation): `train_and_evaluate(config, workdir)`.

Data: `translearn_jax.data.parallel` (aligned text files, TSV/JSONL pairs, TFDS).
One sentencepiece model is trained on both sides (saved as
`workdir/tokenizer.model`). Pairs are length-filtered to `max_source_len` /
`max_target_len` and batched by length (`length_buckets`, see
`data.bucketing`): each batch is padded only to its bucket's boundary; or,
with `packing=True`, several pairs share each of the `train.batch_size` rows
(`data.packing`; attention stays within a pair, so nothing is padded but the
end of a row).
Loss: label-smoothed cross-entropy over real target tokens; throughput is
counted in real (non-padding) target tokens. Evaluation: greedy or beam-search
decoding (sources sorted by length, decoding stops when every hypothesis is
finished), then BLEU and chrF (sacrebleu) on detokenised text, or ROUGE
(rouge-score, the `[summarize]` extra; checked before training) when
`eval.metric='rouge'`; `eval.every_steps` also scores the validation split
during training (the BLEU-vs-steps curve in metrics.jsonl).
A finished run writes its final valid/test outputs, one line per source in input
order, to `hypotheses.valid.txt` / `hypotheses.test.txt`, and saves its model as
`workdir/model/` (`serving.saved_model`; `serving.translate_file` decodes a file
with it exactly as the evaluation did).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import regex

from translearn_jax.data import noising, parallel
from translearn_jax.data import tokenizer as tokenizer_lib
from translearn_jax.data.bucketing import BucketStream, parse_boundaries
from translearn_jax.data.packing import PackStream
from translearn_jax.data.lm_data import LMState
from translearn_jax.data.tokenizer import MASK_PIECE, TRAIN_THREADS, Tokenizer
from translearn_jax.errors import ConfigError, DataError, MissingExtraError
from translearn_jax.generation import seq2seq_decode
from translearn_jax.models import seq2seq as s2s
from translearn_jax.pretraining import lm as lm_pretraining
from translearn_jax.serving import saved_model
from translearn_jax.serving import translate as serving_translate
from translearn_jax.training import memo
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import optimizers
from translearn_jax.training import workdir as workdir_lib
from translearn_jax.training.files import atomic_write
from translearn_jax.training.loop import Every, Run
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.state import TrainState, abstract_params, init_train_state
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import piece_counts, sources, strategies


def model_config(config, vocab_size, deterministic=True, decode=False) -> s2s.Seq2SeqConfig:
  return s2s.config_from(config, vocab_size, deterministic, decode)


def init_source(config):
  """The pretrained source of `config.init` (None: scratch), checked before any data is read:
  a seq2seq run (every leaf), a causal Transformer LM run (its decoder, or with
  `init.rules='encoder'` its encoder) or a masked-LM encoder run (the encoder), whose
  tokenizer this run then uses."""
  init = config.get('init')
  if not init or not init.get('path'):
    t = config.get('transfer')
    if uses_strategy(t):
      field = 'strategy' if t.get('strategy', 'finetune') != 'finetune' else 'freeze_bottom'
      raise ConfigError(f'config.transfer.{field}: {t.get(field)!r} fine-tunes a '
                        'pretrained initialisation, and config.init.path is empty (a run from '
                        'random weights trains every parameter; it would freeze random layers)')
    return None
  if init.kind not in graft_lib.SEQ2SEQ_RULES:
    raise ConfigError(f'config.init.kind: a seq2seq model is initialised from '
                      f'{sorted(graft_lib.SEQ2SEQ_RULES)} runs, got {init.kind!r}')
  graft_lib.seq2seq_rules(init.kind, init.get('rules', ''))   # a bad preset: before loading
  src = sources.load(init.kind, init.path, field='init.path')
  if init.kind == 'lm' and type(src.model_config).arch != 'transformer':
    raise ConfigError(f'config.init.path: {init.path} is a {type(src.model_config).arch!r} LM; '
                      "only a Transformer LM's layers fit the seq2seq model")
  if config.tokenizer.path:
    raise ConfigError('config.tokenizer.path: leave it empty with config.init.path (the run '
                      "uses its source's tokenizer, which the grafted embeddings index)")
  check_architecture(src, model_config(config, src.tokenizer.vocab_size), init.path)
  take_source_ids(config, src)
  take_language_codes(config, src.tokenizer, src)
  return src


def take_language_codes(config, tok, src=None) -> None:
  """Sets `model.decoder_start_id` or `model.forced_bos_id` for `tokenizer.target_lang`
  (`seq2seq_decode.language_start`). Codes the config leaves empty are the source run's
  when it is a seq2seq run that set them (a fine-tuned mBART continued). Without a target
  code, a frame that ends in a language code (mBART's `text </s> en_XX`) still starts
  decoding from that code, as transformers' `shift_tokens_right` of such labels does. A
  language code without an imported multilingual tokenizer is an error naming the field."""
  t = config.get('tokenizer')
  if t is None:
    return
  before = ((src.run_config.get('tokenizer') or {}) if src is not None and src.kind == 'seq2seq'
            and src.run_config is not None else {})
  with config.unlocked():
    for field in ('source_lang', 'target_lang'):
      if not t.get(field) and before.get(field):
        t[field] = before[field]
  if t.get('source_lang') and not hasattr(tok, 'lang_slot'):
    seq2seq_decode.framed(tok, [''], t.source_lang)       # the error naming the field
  lang = t.get('target_lang', '')
  if not lang and hasattr(tok, 'lang_slot'):
    try:
      where, i = tok.lang_slot('tokenizer.target_lang')
    except ConfigError:
      where = None                    # no language slot: BART, Marian
    if where == 'suffix':
      lang = tok.id_to_piece(tok.frame()[1][i])
  with config.unlocked():
    for k, v in seq2seq_decode.language_start(tok, lang).items():
      config.model[k] = v


SPECIAL_IDS = ('pad_id', 'eos_id', 'decoder_start_id', 'suppress_ids')


def take_source_ids(config, src) -> None:
  """Sets `config.model`'s special ids (`SPECIAL_IDS`) to those of the model and tokenizer
  the run starts from: a seq2seq source's own (an imported BART pads with 1, ends with 2,
  starts decoding from 2), else its tokenizer's pad/EOS/BOS. A config that states another
  value is an error naming the field (the grafted embeddings index the source's ids)."""
  if src.kind == 'seq2seq':
    ids = {f: getattr(src.model_config, f) for f in SPECIAL_IDS}
    if getattr(src.model_config, 'forced_bos_id', -1) >= 0:   # a fine-tuned mBART-50's
      with config.unlocked():
        if 'forced_bos_id' not in config.model:
          config.model.forced_bos_id = int(src.model_config.forced_bos_id)
  else:
    tok = src.tokenizer
    ids = {'pad_id': tok.pad_id, 'eos_id': tok.eos_id, 'decoder_start_id': tok.bos_id,
           'suppress_ids': (tok.pad_id, tok.bos_id)}
  ids['suppress_ids'] = [int(i) for i in ids['suppress_ids']]
  for f, v in ids.items():
    if f in config.model and (list(config.model[f]) if f == 'suppress_ids'
                              else config.model[f]) != v:
      raise ConfigError(f'config.model.{f}={config.model[f]!r}, but the source {src.path} '
                        f'uses {v!r} (its tokenizer\'s ids): leave it out')
  with config.unlocked():
    for f, v in ids.items():
      config.model[f] = v


# Fields that change what grafted weights compute without changing their shapes: a
# mismatch would be a silently different function, so it is an error.
_SAME_AS_SOURCE = ('d_model', 'num_heads', 'd_ff', 'norm', 'activation', 'layer_norm_eps',
                   'positions', 'position_offset', 'scale_embedding', 'embed_ln',
                   'final_logits_bias', 'share_embeddings', 'encoder_layers', 'decoder_layers')


def check_architecture(src, target: s2s.Seq2SeqConfig, path: str) -> None:
  """Raises a ConfigError naming each `model.*` field on which the seq2seq model would compute
  the grafted layers differently from `src` (the fix: set it as the source has it)."""
  m = src.model_config
  if src.kind == 'seq2seq':
    want = {f: getattr(m, f) for f in _SAME_AS_SOURCE}
  else:   # a Transformer LM (pre-LN, no embedding LayerNorm) or a masked-LM encoder
    norm = getattr(m, 'norm', 'pre')
    want = {'d_model': m.d_model, 'num_heads': m.num_heads, 'd_ff': m.d_ff, 'norm': norm,
            'activation': m.activation, 'layer_norm_eps': m.layer_norm_eps,
            'positions': m.positions, 'position_offset': getattr(m, 'position_offset', 0),
            'scale_embedding': False, 'embed_ln': src.kind == 'mlm' and norm == 'post'}
  bad = {f: (getattr(target, f), v) for f, v in want.items() if getattr(target, f) != v}
  if bad:
    fixes = ' '.join(f'--config.model.{f}={v}' for f, (_, v) in bad.items())
    raise ConfigError(
        f'config.model: the {src.kind} source {path} computes its layers with '
        + ', '.join(f'{f}={v!r}' for f, (_, v) in bad.items()) + '; this model has '
        + ', '.join(f'{f}={t!r}' for f, (t, _) in bad.items()) + f' (set {fixes})'
        + ('; a rotary-position source has no seq2seq form' if m.positions == 'rotary' else ''))


def source_leaves(src, target_rows: int):
  """`src.params` as the graft reads them: learned position tables (`*pos_embed`) cut to the
  model's `target_rows` (positions the model cannot reach are not used), and a masked-LM
  encoder's token-type row 0, which it adds at every position, folded into its positions."""
  flat = {k: np.asarray(v) for k, v in graft_lib.flatten(jax.device_get(src.params)).items()}
  if 'pos_embed' in flat and 'type_embed/embedding' in flat:
    flat['pos_embed'] = flat['pos_embed'] + flat['type_embed/embedding'][0][None]
  for k in [k for k in flat if k.endswith('pos_embed') and flat[k].ndim == 2]:
    if len(flat[k]) < target_rows:
      raise ConfigError(f'config.max_source_len/max_target_len: the source\'s {k} has '
                        f'{len(flat[k])} positions, this model needs {target_rows}')
    flat[k] = flat[k][:target_rows]
  return graft_lib.unflatten(flat)


def keep_unseen_rows_fresh(src, params, fresh: dict, report):
  """`params` with the rows of grafted embedding tables whose pieces the LM / masked-LM
  source never saw in training (its `piece_counts.npy`) put back to their fresh values:
  such rows only ever moved as softmax negatives and all point one way (see
  `transfer.piece_counts`), so a model that reads those pieces (the encoder of a
  translation model sharing the embedding) would get one vector for all of them. A source
  without counts (an imported checkpoint, an older run) is grafted whole."""
  if src.kind not in ('lm', 'mlm'):
    return params
  emb = [(s, t) for s, t, _ in report.grafted if s == 'embed/embedding']   # token embeddings
  if not emb:
    return params
  counts = piece_counts.read(src.path, len(src.params['embed']['embedding']))
  if counts is None:
    info('init: %s has no %s (an imported checkpoint, a run on pretokenized data or one '
         'continuing an import, or a run from before piece counts were kept): every '
         'embedding row is grafted', src.path, piece_counts.FILE)
    return params
  ids = piece_counts.unseen_rows(counts)
  if not len(ids):
    return params
  flat = graft_lib.flatten(params)
  for _, target in emb:
    table = np.array(flat[target])
    table[ids] = np.asarray(fresh[target])[ids]
    flat[target] = table
    report.unseen_rows[target] = {'rows': int(len(ids)), 'vocab': int(len(counts)),
                                  'counts': os.path.join(src.path, piece_counts.FILE)}
  return graft_lib.unflatten(flat)


def init_from_source(src, state: TrainState, config, workdir: str) -> TrainState:
  """`state` with `src`'s leaves grafted by `config.init.rules` (a part preset or rule text of
  `graft.seq2seq_rules`); the report is printed and saved as `workdir/graft_report.json`."""
  spec = graft_lib.seq2seq_rules(config.init.kind, config.init.get('rules', ''))
  params = jax.device_get(state.params)
  rows = graft_lib.flatten(params).get('encoder_pos_embed')
  leaves = source_leaves(src, 0 if rows is None else len(rows))
  fresh = graft_lib.flatten(params)
  params, report = graft_lib.graft(params, leaves, graft_lib.parse_rules(spec))
  params = keep_unseen_rows_fresh(src, params, fresh, report)
  if jax.process_index() == 0:
    info('%s', report.summary())
    report.save(os.path.join(workdir, 'graft_report.json'))
  return state.replace(params=jax.device_put(params, mesh_lib.shardings_of(state.params)))


def get_tokenizer(config, pairs, workdir, src=None) -> Tokenizer:
  saved = os.path.join(workdir, 'tokenizer.model')
  if src is not None:   # kept beside the run, so the run directory stands alone
    sources.keep_tokenizer(src.tokenizer, workdir)
    return src.tokenizer
  if config.tokenizer.path:
    tok = Tokenizer.load(config.tokenizer.path)
    sources.keep_tokenizer(tok, workdir)
    return tok
  # the run's own, when it resumes (its config was checked against this one); one left by a
  # run that stopped before its first checkpoint is trained again, as this config says
  if os.path.exists(saved) and workdir_lib.is_resume(workdir):
    return Tokenizer.load(saved)
  tok = Tokenizer.train([s for p in pairs for s in p], config.tokenizer.vocab_size,
                        config.tokenizer.model_type, seed=config.seed,
                        normalization=config.tokenizer.get('normalization', 'nmt_nfkc'),
                        threads=config.tokenizer.get('train_threads', TRAIN_THREADS))
  if jax.process_index() == 0:
    tok.save(saved)
  return tok


def encode_pairs(tok: Tokenizer, pairs, max_src: int, max_tgt: int, filter_long: bool,
                 truncate_source: bool = False, start_id=None, source_lang: str = '',
                 target_lang: str = ''):
  """(rows (N, S + 2T), kept indices); rows = [src | start tgt | tgt], padded with the
  tokenizer's pad id, where tgt is the target's pieces and EOS (this project's tokenizer;
  `start_id` its BOS) or the target as an imported checkpoint frames it (`seq2seq_decode.
  framed`: BART's `<s> text </s>`; `start_id` its decoder start). `filter_long` drops
  pairs beyond the limits, except, with `truncate_source`, a long source, which is cut to
  `max_src` pieces (summarisation: documents are cut, not dropped). `source_lang` /
  `target_lang`: language codes put in the frames of a multilingual checkpoint's sources
  and targets (mBART's `text </s> en_XX` / `text </s> ro_RO`, as transformers'
  `src_lang` / `tgt_lang`)."""
  src, is_framed = seq2seq_decode.framed(tok, [p[0] for p in pairs], source_lang)
  tgt, tgt_keep = seq2seq_decode.framed(tok, [p[1] for p in pairs], target_lang,
                                        'tokenizer.target_lang')
  if not is_framed:
    tgt = [t + [tok.eos_id] for t in tgt]
  start = tok.bos_id if start_id is None else start_id
  if filter_long:       # length_filter counts a target with the EOS it adds: tgt has it
    keep = parallel.length_filter(src, [t[:-1] for t in tgt],
                                  float('inf') if truncate_source else max_src, max_tgt)
  else:
    keep = list(range(len(pairs)))
  rows = np.full((len(keep), max_src + 2 * max_tgt), tok.pad_id, np.int32)
  for r, i in enumerate(keep):
    s = seq2seq_decode.cut(src[i], max_src, is_framed)
    t = seq2seq_decode.cut(tgt[i], max_tgt, tgt_keep or 1)
    rows[r, :len(s)] = s
    rows[r, max_src:max_src + len(t)] = [start] + t[:-1]
    rows[r, max_src + max_tgt:max_src + max_tgt + len(t)] = t
  return rows, keep


def split_rows(tokens, max_src, max_tgt):
  return tokens[..., :max_src], tokens[..., max_src:max_src + max_tgt], tokens[..., max_src + max_tgt:]


def pair_arrays(rows, max_src, max_tgt, pad_id: int = 0
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Rows from `encode_pairs` -> ({source, target_in, target_out}, length each row needs)."""
  src, tin, tout = split_rows(rows, max_src, max_tgt)
  lengths = np.maximum((src != pad_id).sum(1), (tout != pad_id).sum(1))
  return {'source': src, 'target_in': tin, 'target_out': tout}, lengths


def init_state(model, tx, seed: int, mesh, max_src: int, max_tgt: int, rules=None
               ) -> TrainState:
  """A fresh state placed over `mesh` by the logical-axis `rules` (see `training/mesh.py`)."""
  return init_train_state(model, tx, seed, mesh, jnp.zeros((1, max_src), jnp.int32),
                          jnp.zeros((1, max_tgt), jnp.int32), rules=rules)


def smoothed_cross_entropy(logits, labels, smoothing: float):
  """Cross-entropy against `(1 - s)·onehot(labels) + s/V`, without building the one-hot.

  = logsumexp(z) - (1 - s)·z[label] - s·mean(z): the same value as optax's
  `softmax_cross_entropy(z, smooth_labels(one_hot(labels), s))`, at the cost of
  plain cross-entropy (the (tokens, V) label array was ~15% of a step).
  """
  z = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(z, axis=-1)
  picked = jnp.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
  if smoothing == 0:
    return lse - picked
  return lse - (1.0 - smoothing) * picked - smoothing * jnp.mean(z, axis=-1)


PACKED_KEYS = ('source_segments', 'source_positions', 'target_segments', 'target_positions')


def seq2seq_groups(cfg: s2s.Seq2SeqConfig) -> list[tuple[str, str]]:
  """The default layer groups of `transfer.groups`, top (output) first: the decoder's
  output side, its blocks from the top, its positions, the encoder's blocks from the top
  (the top one with the encoder's final LayerNorm), and last the shared embedding with
  the encoder's positions."""
  groups = [('head', r'^(final_logits_bias|head/.*|dec_ln/.*)$')]
  groups += [(f'decoder_{i}', rf'^decoder_block_{i}/') for i in reversed(range(cfg.decoder_layers))]
  groups.append(('decoder_embed', r'^(decoder_pos_embed|decoder_embed_ln/.*|target_embed/.*)$'))
  top = cfg.encoder_layers - 1
  groups += [(f'encoder_{i}', rf'^(encoder_block_{i}/.*|enc_ln/.*)$' if i == top
              else rf'^encoder_block_{i}/') for i in reversed(range(cfg.encoder_layers))]
  groups.append(('embed', r'^(embed/.*|encoder_pos_embed|encoder_embed_ln/.*)$'))
  return groups


def uses_strategy(t) -> bool:
  """Whether the `transfer` group `t` asks for more than plain fine-tuning of every
  parameter: a strategy's group table, or frozen bottom groups."""
  return t is not None and (t.get('strategy', 'finetune') != 'finetune'
                            or bool(t.get('freeze_bottom', 0)))


def make_optimizer(config, model_cfg: s2s.Seq2SeqConfig, params, total_steps: int,
                   steps_per_epoch: int = 0):
  """(optimiser, base schedule, frozen mask or None): AdamW over every parameter, or, with
  `config.transfer.strategy` (fine-tuning a pretrained initialisation), the strategy's
  group table (`transfer.strategies`: feature extraction, discriminative LR, gradual
  unfreezing, `freeze_bottom`) over `transfer.groups` ('' : `seq2seq_groups`).
  `steps_per_epoch`: the interval `transfer.unfreeze_every=0` stands for."""
  t = config.get('transfer')
  if not uses_strategy(t):
    tx, schedule = optimizers.adamw(config, total_steps, params)
    return tx, schedule, None
  groups = (strategies.parse_groups(t.groups) if t.get('groups')
            else seq2seq_groups(model_cfg))
  cfg = strategies.StrategyConfig(strategy=t.strategy, factor=t.factor,
                                  unfreeze_every=strategies.unfreeze_interval(
                                      t.unfreeze_every, steps_per_epoch or total_steps),
                                  freeze_bottom=t.get('freeze_bottom', 0))
  table, plan = strategies.rules(cfg, params, groups, total_steps)
  tx, schedule = optimizers.make(config.optim, params, total_steps, table,
                                 field='transfer.groups')
  info('transfer.strategy=%s: %s', t.strategy, ', '.join(
      f'{name} ×{mult:g}' + (f' from step {start}' if start else '') if start is not None
      else f'{name} frozen' for name, (_, mult, start) in plan.items()))
  return tx, schedule, strategies.frozen_mask(params, groups, plan)


@memo.memoized()
def make_train_fn(model, tx, schedule, mesh, smoothing, shardings=None, frozen=None):
  """Jitted `(state, batch) -> (state, metric sums)`; the state placed as `shardings`
  (`mesh_lib.shardings_of(state)`; None: replicated); leaves True in `frozen` get no
  gradient (`strategies.value_and_grad`)."""
  repl = mesh_lib.replicated(mesh)
  state_sh = repl if shardings is None else shardings

  def train_fn(state, batch):
    # (A, B, L_bucket) each: A micro-batches whose summed gradient is one step's (an
    # accumulated step equals the step on their A·B rows), divided by all their tokens
    rng = jax.random.fold_in(state.rng, state.step)

    def micro_grads(params, mb, key):
      packed = {k: mb[k] for k in PACKED_KEYS if k in mb}   # packed rows (data.packing)
      tout = mb['target_out']

      def loss_fn(params):
        logits = model.apply({'params': params}, mb['source'], mb['target_in'], **packed,
                             rngs={'dropout': key})
        nll = smoothed_cross_entropy(logits, tout, smoothing)
        w = (tout != model.config.pad_id).astype(jnp.float32)
        return jnp.sum(nll * w), jnp.sum(w)
      return strategies.value_and_grad(loss_fn, frozen, has_aux=True)(params)

    accum = batch['source'].shape[0]
    if accum == 1:
      (loss, count), grads = micro_grads(state.params, {k: v[0] for k, v in batch.items()}, rng)
    else:
      def body(carry, xs):
        i, mb = xs
        (l, c), g = micro_grads(state.params, mb, jax.random.fold_in(rng, i))
        g_sum, l_sum, c_sum = carry
        return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, c_sum + c), None
      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, loss, count), _ = jax.lax.scan(
          body, (zeros, jnp.float32(0), jnp.float32(0)), (jnp.arange(accum), batch))
    grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads)
    if shardings is not None:
      grads = jax.lax.with_sharding_constraint(grads, shardings.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            {'loss_sum': loss, 'loss_count': count, 'learning_rate': schedule(state.step)})

  return jax.jit(train_fn, donate_argnums=0,
                 in_shardings=(state_sh, mesh_lib.batch_sharding(mesh, 1)),
                 out_shardings=(state_sh, repl))


def step_rows(config) -> int:
  """Rows (pairs, or packed rows) of one optimiser step: batch_size × grad_accum."""
  return config.train.batch_size * config.train.get('grad_accum', 1)


def micro_batches(batch: dict, accum: int) -> dict:
  """A stream's batch (1, A·b, L) as A micro-batches (A, b, L) (b: this process's rows)."""
  if accum == 1:
    return batch
  return {k: v.reshape(accum, v.shape[1] // accum, *v.shape[2:]) for k, v in batch.items()}


def encode_sources(tok: Tokenizer, pairs, config, split: str = '') -> np.ndarray:
  """(N, max_source_len) padded source ids of evaluation pairs (none dropped; a source
  beyond max_source_len is cut, and `split` names how many were in the log)."""
  rows, n_cut = seq2seq_decode.encode_sources(tok, [p[0] for p in pairs],
                                              config.max_source_len,
                                              config.tokenizer.get('source_lang', ''))
  if n_cut and split:
    info('%s: %d of %d sources are longer than max_source_len=%d pieces and are decoded '
         'from their first %d', split, n_cut, len(pairs), config.max_source_len,
         config.max_source_len)
  if split:     # the hypotheses stop at max_target_len: a longer reference is out of reach
    n_long = sum(len(t) + 1 > config.max_target_len for t in tok.encode_batch(
        [p[1] for p in pairs]))
    if n_long:
      info('%s: %d of %d references are longer than max_target_len=%d pieces (their end '
           'included): no hypothesis can reach them whole, which bounds the scores',
           split, n_long, len(pairs), config.max_target_len)
  return rows


def evaluate_split(decode_model, params, tok, pairs, sources, config, beam: int
                   ) -> tuple[dict, list]:
  hyps = seq2seq_decode.translate(decode_model, params, tok, sources, config.max_target_len,
                                  beam, config.eval.length_penalty,
                                  form=config.eval.get('length_penalty_form', 'gnmt'),
                                  min_len=config.eval.get('min_length', 0),
                                  no_repeat_ngram=config.eval.get('no_repeat_ngram_size', 0),
                                  stopping=config.eval.get('early_stopping', 'never'))
  return dict(score(hyps, [p[1] for p in pairs], config.eval.metric,
                    **metric_options(config.eval)), examples=len(pairs)), hyps


def metric_options(ev) -> dict:
  """`score`'s tokenisation options from a config's `eval` group (absent: the defaults)."""
  return {'bleu_tokenize': ev.get('bleu_tokenize', '13a'),
          'rouge_tokenize': ev.get('rouge_tokenize', 'default')}


ROUGE_TOKENIZERS = ('default', 'unicode')


# scripts written without spaces between words: each character is a token (as ROUGE is
# usually computed for Chinese and Japanese without a segmenter)
_UNSPACED = r'\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}'
_UNICODE_TOKEN = regex.compile(rf'[{_UNSPACED}]|[^\W_{_UNSPACED}]+')


ROUGE_KEYS = ('rouge1', 'rouge2', 'rougeL', 'rougeLsum')
_SENTENCE_END = regex.compile(r'(?<=[.!?。！？])\s+|(?<=[。！？])')
# words whose period does not end a sentence ("Mr. Smith", "Washington Inc. said")
_ABBREVIATIONS = frozenset(
    'mr mrs ms dr prof sr jr st mt vs etc inc ltd co corp nos gen gov sen rep lt col capt '
    'sgt maj adm jan feb mar apr jun jul aug sep sept oct nov dec approx dept est fig al e.g '
    'i.e cf'.split())


def _ends_sentence(before: str, after: str) -> bool:
  """Whether the boundary candidate between `before` (ending in . ! ? or a full-width
  stop) and `after` ends a sentence: a period does unless the next word starts with a
  lowercase letter or the word it ends is an abbreviation (a title, a month, 'U.S.', a
  single initial); scripts without case (Korean, Arabic) break at every period."""
  if not before.endswith('.'):
    return True
  word = before.rsplit(None, 1)[-1].rstrip('.').lstrip('"\'(“‘[')
  if (word.lower() in _ABBREVIATIONS or regex.fullmatch(r'\p{L}', word)
      or regex.fullmatch(r'(?:\p{L}\.)+\p{L}', word)):
    return False
  return not after or regex.match(r'\p{Ll}', after) is None


def sentence_lines(text: str) -> str:
  """`text` with one sentence a line, as rougeLsum reads a summary (the summary-level LCS
  over its sentences; ROUGE-1/2/L ignore line breaks). Text that already has line breaks
  (CNN/DailyMail's highlights) keeps them; otherwise sentences end at . ! ? and their
  full-width forms, followed by space (or not, for 。！？), except after an abbreviation
  or before a lowercase word (`_ends_sentence`; transformers' examples use nltk's punkt,
  which is not installed here)."""
  text = text.strip()
  if '\n' in text:
    return '\n'.join(line.strip() for line in text.splitlines() if line.strip())
  out, start = [], 0
  for m in _SENTENCE_END.finditer(text):
    if _ends_sentence(text[start:m.start()], text[m.end():]):
      out.append(text[start:m.start()])
      start = m.end()
  out.append(text[start:])
  return '\n'.join(p for p in out if p)


class _UnicodeWords:
  """ROUGE tokens for any script: lowercased runs of letters, marks and digits; a character
  each in scripts written without spaces (Han, kana, Thai, ...); no stemming. rouge-score's
  own tokenizer keeps only a-z and 0-9, so German umlauts split words and Chinese, Russian
  or Arabic text has no tokens at all."""

  def tokenize(self, text: str) -> list[str]:
    return _UNICODE_TOKEN.findall(text.lower())


def score(hyps, refs, metric: str, bleu_tokenize: str = '13a',
          rouge_tokenize: str = 'default') -> dict:
  """Corpus BLEU + chrF (sacrebleu; `bleu_tokenize`: its tokenizer, '13a' by default, 'zh'
  for Chinese, 'ja-mecab', 'ko-mecab', 'intl', 'flores200', ...) or mean ROUGE-1/2/L/Lsum F1
  (rouge-score; `rouge_tokenize`: 'default', its English tokenizer with Porter stemming, or
  'unicode', `_UnicodeWords`)."""
  if metric == 'bleu':
    import sacrebleu
    return {'bleu': sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenize).score,
            'chrf': sacrebleu.corpus_chrf(hyps, [refs]).score}
  if metric == 'rouge':
    sc = rouge_scorer(rouge_tokenize)
    agg = {k: 0.0 for k in ROUGE_KEYS}
    for h, r in zip(hyps, refs):
      s = sc.score(sentence_lines(r), sentence_lines(h))
      for k in agg:
        agg[k] += s[k].fmeasure
    return {k: 100 * v / max(len(hyps), 1) for k, v in agg.items()}
  raise ConfigError(f"eval.metric must be 'bleu' or 'rouge', got {metric!r}")


def save_model(directory: str, config, model_cfg: s2s.Seq2SeqConfig, params, tok, summary: dict
               ) -> str:
  """The finished run's model as a saved model (`serving.saved_model`): final parameters,
  tokenizer, config, decoding defaults and evaluation scores."""
  inputs = {'max_source_len': config.max_source_len, 'max_target_len': config.max_target_len,
            'beam': config.eval.beam, 'length_penalty': config.eval.length_penalty,
            'length_penalty_form': config.eval.get('length_penalty_form', 'gnmt'),
            'min_length': config.eval.get('min_length', 0),
            'no_repeat_ngram_size': config.eval.get('no_repeat_ngram_size', 0),
            'early_stopping': config.eval.get('early_stopping', 'never'),
            'source_lang': config.tokenizer.get('source_lang', '')}
  scores = {'steps': summary.get('steps'),
            **{split: summary[split] for split in ('valid', 'test') if split in summary}}
  return saved_model.save(directory, s2s.Seq2Seq(model_cfg.replace(deterministic=True)), params,
                          task='seq2seq', inputs=inputs, tokenizer=tok,
                          provenance=saved_model.provenance(config, scores=scores))


def rouge_scorer(tokenize: str = 'default'):
  """ROUGE-1/2/L/Lsum (rouge-score, the `[summarize]` extra): its English tokenizer with
  stemming, or `_UnicodeWords` ('unicode')."""
  if tokenize not in ROUGE_TOKENIZERS:
    raise ConfigError(f'eval.rouge_tokenize must be one of {ROUGE_TOKENIZERS}, got {tokenize!r}')
  try:
    from rouge_score import rouge_scorer as rs
  except ImportError:
    raise MissingExtraError('rouge-score', 'summarize', "eval.metric='rouge'") from None
  if tokenize == 'unicode':
    return rs.RougeScorer(list(ROUGE_KEYS), tokenizer=_UnicodeWords())
  return rs.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


def check_metric(metric: str, ev=None) -> None:
  """Raises before any training if `eval.metric` is unknown, its package is missing or its
  tokenisation option (`ev`: the config's `eval` group) is not one the package has."""
  opts = metric_options(ev if ev is not None else {})
  seq2seq_decode.check_penalty_form((ev or {}).get('length_penalty_form', 'gnmt'),
                                    'eval.length_penalty_form')
  seq2seq_decode.check_constraints((ev or {}).get('min_length', 0),
                                   (ev or {}).get('no_repeat_ngram_size', 0))
  seq2seq_decode.check_stopping((ev or {}).get('early_stopping', 'never'), 'eval.early_stopping')
  seq2seq_decode.check_length_penalty((ev or {}).get('length_penalty', 0.0))
  if metric == 'rouge':
    rouge_scorer(opts['rouge_tokenize'])
  elif metric == 'bleu':
    import sacrebleu
    try:                  # unknown names, and mecab tokenizers without their package
      sacrebleu.BLEU(tokenize=opts['bleu_tokenize'])
    except Exception as e:  # noqa: BLE001 -- sacrebleu raises several kinds here
      raise ConfigError(f'eval.bleu_tokenize={opts["bleu_tokenize"]!r}: sacrebleu cannot '
                        f'use it ({type(e).__name__}: {e})') from None
  else:
    raise ConfigError(f"eval.metric must be 'bleu' or 'rouge', got {metric!r}")


def check_rouge_references(refs, tokenize: str, path: str) -> None:
  """Raises when rouge-score's default tokenizer finds no token in most references: the
  scores would be ~0 whatever the model wrote (text in a non-Latin script)."""
  if tokenize != 'default' or not refs:
    return
  empty = sum(not re.search('[a-z0-9]', r.lower()) for r in refs)
  if empty > len(refs) / 2:
    raise ConfigError(f"{path}: {empty} of {len(refs)} references have no a-z/0-9 character, "
                      "so rouge-score's default tokenizer scores them 0 whatever the model "
                      "writes; set eval.rouge_tokenize='unicode'")
  text = ''.join(refs[:2000])
  letters = len(regex.findall(r'\p{L}', text))
  other = letters - len(re.findall('[A-Za-z]', text))
  if letters and other > 0.08 * letters:   # Vietnamese, Czech (German: 2%, French: ~4%)
    raise ConfigError(f"{path}: {100 * other / letters:.0f}% of the references' letters are "
                      "not a-z, which rouge-score's default tokenizer drops (it splits 'Việt' "
                      "into 'vi' and 't'); set eval.rouge_tokenize='unicode'")


def check_bleu_references(refs, tokenize: str, path: str) -> None:
  """Raises when the references are mostly unsegmented Chinese, Japanese, Thai (...) text
  and BLEU would split words at spaces only ('13a', 'intl', 'none'): a whole sentence
  would be one 'word', and BLEU ~0 whatever the model wrote."""
  if tokenize not in ('13a', 'intl', 'none') or not refs:
    return
  text, char = ''.join(refs[:2000]), f'[{_UNSPACED}]'
  if len(regex.findall(char, text)) < 0.3 * len(''.join(text.split())):
    return
  words = [w for r in refs[:2000] for w in r.split() if regex.search(char, w)]
  if sum(len(regex.findall(char, w)) for w in words) / max(len(words), 1) >= 4:
    raise ConfigError(f"{path}: the references are unsegmented text (Chinese, Japanese, Thai, "
                      f"...), which eval.bleu_tokenize={tokenize!r} splits at spaces only; set "
                      "eval.bleu_tokenize to 'zh' (Chinese), 'ja-mecab' (Japanese, needs "
                      "sacrebleu[ja]), 'char' or 'flores200'")


OBJECTIVES = ('supervised', 'denoise')


def noise_config(config) -> noising.NoiseConfig:
  """`config.noise` as a `NoiseConfig`, checked before any data is read."""
  n = config.get('noise')
  if n is None:
    raise ConfigError("config.noise: objective='denoise' needs the noise block "
                      '(see configs/seq2seq_denoise.py)')
  kw = {f.name: n[f.name] for f in dataclasses.fields(noising.NoiseConfig) if f.name in n}
  cfg = noising.NoiseConfig(**kw)
  if cfg.objective not in ('infilling', 'span_corruption'):
    raise ConfigError(f"config.noise.objective must be 'infilling' or 'span_corruption', "
                      f'got {cfg.objective!r}')
  checks = [('mask_rate', 0 <= cfg.mask_rate < 1, '[0, 1)'),
            ('noise_density', 0 <= cfg.noise_density < 1, '[0, 1)'),
            ('poisson_lambda', cfg.poisson_lambda > 0, '(0, inf)'),
            ('mean_span', cfg.mean_span >= 1, '[1, inf)')]
  for name, ok, rng in checks:
    if not ok:
      raise ConfigError(f'config.noise.{name} must be in {rng}, got {getattr(cfg, name)}')
  if cfg.objective == 'span_corruption' and n.get('sentinels', 0) < 1:
    raise ConfigError('config.noise.sentinels must be >= 1 for span corruption (the most '
                      f'spans a row can have), got {n.get("sentinels", 0)}')
  return cfg


def denoise_pieces(config, cfg: noising.NoiseConfig) -> tuple[str, ...]:
  """Special pieces a denoising run's new tokenizer is trained with."""
  sentinels = config.noise.get('sentinels', 0) if cfg.objective == 'span_corruption' else 0
  return (MASK_PIECE,) + noising.sentinel_pieces(sentinels)


def load_denoise(config, workdir: str, cfg: noising.NoiseConfig, row_start: int,
                 row_stop: int):
  """(tokenizer, training stream, held-out rows, stats) of a denoising run: documents of
  `config.data` (any text source `data.readers` reads) cut into chunks of at most
  `max_target_len - 1` pieces, noised afresh each epoch; the held-out documents are noised
  once, with the seed (generators `[seed, 1, k]`, apart from the training noise's
  `[seed, 0, epoch, k]`), so every evaluation scores the same rows."""
  train_docs, valid_docs = lm_pretraining.read_documents(config)
  tok = lm_pretraining.get_tokenizer(config, train_docs, workdir,
                                     special_pieces=denoise_pieces(config, cfg))
  ids = noising.noise_ids(tok, cfg, config.noise.get('sentinels', 0))
  ms, mt = config.max_source_len, config.max_target_len
  train = noising.chunk_documents(tok.encode_batch(train_docs), mt - 1)
  valid = noising.chunk_documents(tok.encode_batch(valid_docs), mt - 1) if valid_docs else []
  if config.eval.max_examples:
    valid = valid[:config.eval.max_examples]
  boundaries = parse_boundaries(config.length_buckets, max(ms, mt))
  stream = noising.DenoiseStream(train, cfg, ids, ms, mt, boundaries, step_rows(config),
                                 config.train.epochs, config.seed, row_start, row_stop)
  heldout = (noising.noised_rows(valid, [(config.seed, 1, k) for k in range(len(valid))], cfg,
                                 ids, ms, mt) if valid else None)
  stats = {'train_documents': len(train_docs), 'valid_documents': len(valid_docs),
           'train_chunks': len(train), 'valid_chunks': len(valid),
           'train_tokens': int(sum(len(d) for d in train)),
           'train_words': sum(len(d.split()) for d in train_docs)}
  info('denoise (%s): %d documents -> %d chunks of <= %d pieces (%d pieces), %d held out; '
       'length buckets %s: %s', cfg.objective, len(train_docs), len(train), mt - 1,
       stats['train_tokens'], len(valid), boundaries, stream.bucket_sizes)
  return tok, stream, heldout, stats


@memo.memoized()
def make_eval_fn(model):
  """Jitted `(params, source, target_in, target_out) -> (nll sum, correct, tokens)` over
  real target tokens, teacher-forced (no smoothing, no dropout)."""
  pad = model.config.pad_id

  def eval_fn(params, src, tin, tout):
    logits = model.apply({'params': params}, src, tin)
    w = (tout != pad).astype(jnp.float32)
    nll = smoothed_cross_entropy(logits, tout, 0.0)
    correct = (jnp.argmax(logits, -1) == tout).astype(jnp.float32) * w
    return jnp.sum(nll * w), jnp.sum(correct), jnp.sum(w)

  return jax.jit(eval_fn)


def evaluate_rows(eval_fn, params, rows: dict, batch: int) -> dict:
  """Loss, perplexity and next-piece accuracy of the target given the (noised) source."""
  total, correct, count = 0.0, 0.0, 0.0
  n = len(rows['source'])
  for lo in range(0, n, batch):
    chunk = {k: v[lo:lo + batch] for k, v in rows.items()}
    if len(chunk['source']) < batch:   # one shape: pad rows weigh nothing
      chunk = {k: np.concatenate([v, np.zeros((batch - len(v), v.shape[1]), v.dtype)])
               for k, v in chunk.items()}
    s, c, m = eval_fn(params, chunk['source'], chunk['target_in'], chunk['target_out'])
    total, correct, count = total + float(s), correct + float(c), count + float(m)
  loss = total / max(count, 1.0)
  return {'loss': loss, 'perplexity': float(np.exp(min(loss, 50.0))),
          'accuracy': correct / max(count, 1.0), 'tokens': int(count)}


def subset(n: int, budget: int, seed: int) -> np.ndarray:
  """The sorted indices of `budget` of `n` pairs: the first `budget` of a permutation fixed
  by `seed`, so the subsets of one seed are nested (1,000 pairs within 5,000)."""
  if budget < 0:
    raise ConfigError(f'config.data.max_train_pairs must be >= 0 (0: all), got {budget}')
  if budget > n:
    raise ConfigError(f'config.data.max_train_pairs={budget}: only {n} training pairs fit '
                      'max_source_len/max_target_len')
  return np.sort(np.random.default_rng([seed, 7]).permutation(n)[:budget])


def back_translate(bt, workdir: str, source_lang: str = '', target_lang: str = ''
                   ) -> list[tuple[str, str]]:
  """Synthetic (source, target) pairs for monolingual target-side text (Sennrich et al.
  2016): the sentences of `bt.path` (one a line; the first `bt.max_sentences`, 0: all)
  translated into the source language by the reverse saved model `bt.model` (a saved
  seq2seq model or run directory, through `serving.translate_file`, beam `bt.beam`).
  Written to `workdir/backtranslation/` and reused by a resumed run, or by a rerun with the
  same model, text and settings; blank lines and blank translations are dropped. With a
  multilingual checkpoint's codes (the run's `source_lang`/`target_lang`), the reverse
  model reads the target language and writes the source one."""
  from translearn_jax.serving.predict import read_lines
  d = os.path.join(workdir, 'backtranslation')
  settings = {'model': os.path.abspath(bt.model), 'path': os.path.abspath(bt.path),
              'max_sentences': bt.get('max_sentences', 0), 'beam': bt.get('beam', 1)}
  if source_lang or target_lang:
    settings['languages'] = [target_lang, source_lang]     # reverse: target -> source
  meta_path = os.path.join(d, 'settings.json')
  tgt_path, src_path = os.path.join(d, 'target.txt'), os.path.join(d, 'source.txt')
  if not bt.get('path'):
    raise ConfigError('config.backtranslation.path: the monolingual target-side text to '
                      'back-translate (one sentence a line) is missing')
  done = os.path.isfile(meta_path) and os.path.isfile(src_path) and \
      json.load(open(meta_path)) == settings
  if not done:
    lines = [x for x in read_lines(bt.path) if x.strip()]
    if settings['max_sentences']:
      lines = lines[:settings['max_sentences']]
    if not lines:
      raise DataError(f'config.backtranslation.path: {bt.path} has no sentences')
    os.makedirs(d, exist_ok=True)
    if jax.process_index() == 0:
      serving_translate.write_lines(tgt_path, lines)
      r = serving_translate.translate_file(bt.model, tgt_path, src_path, beam=settings['beam'],
                                           batch_size=bt.get('batch_size', 128), progress=True,
                                           source_lang=target_lang or None,
                                           target_lang=source_lang or None)
      info('back-translated %d sentences with %s in %.0fs', len(lines), bt.model, r['seconds'])
      atomic_write(meta_path, json.dumps(settings, indent=2))
  targets, srcs = read_lines(tgt_path), read_lines(src_path)
  if len(targets) != len(srcs):
    raise DataError(f'{src_path}: {len(srcs)} lines for the {len(targets)} of {tgt_path}')
  return [(s, t) for s, t in zip(srcs, targets) if s.strip() and t.strip()]


def load_supervised(config, workdir: str, src, row_start: int, row_stop: int):
  """(tokenizer, training stream, evaluation splits, stats) of parallel data."""
  named = parallel.configured_splits(config.data)
  if 'train' not in named:
    raise ConfigError(f'config.data names no training pairs (data.kind={config.data.kind!r} '
                      f'reads them from data.{" and data.".join(parallel.split_fields(config.data.kind, "train"))})')
  for note in parallel.check_held_out_location(config.data, named):
    info('data: %s', note)
  splits = {s: parallel.read_split(config.data, s) for s in named}
  scored = {f'the {s} split ({parallel.split_name(config.data, s)})': [p[1] for p in splits[s]]
            for s in ('valid', 'test') if s in splits}       # {where: references}
  opts = metric_options(config.eval)       # before any training: scores that mean something
  for where, refs in scored.items():
    if config.eval.metric == 'rouge':
      check_rouge_references(refs, opts['rouge_tokenize'], where)
    else:
      check_bleu_references(refs, opts['bleu_tokenize'], where)
  tok = get_tokenizer(config, splits['train'], workdir, src)
  for where, refs in scored.items():
    tokenizer_lib.check_round_trip(tok, refs, where)
  ms, mt = config.max_source_len, config.max_target_len
  cut = config.data.get('truncate_source', False)
  start = config.model.get('decoder_start_id', None)
  langs = {'source_lang': config.tokenizer.get('source_lang', ''),
           'target_lang': config.tokenizer.get('target_lang', '')}
  train_rows, kept = encode_pairs(tok, splits['train'], ms, mt, filter_long=True,
                                  truncate_source=cut, start_id=start, **langs)
  info('seq2seq: %d training pairs (%d dropped by length: beyond %s), vocab %d', len(kept),
       len(splits['train']) - len(kept),
       'max_target_len; long sources cut' if cut else 'max_source_len or max_target_len',
       tok.vocab_size)
  if not kept:
    raise DataError(f'every training pair is longer than max_source_len={ms} / '
                    f'max_target_len={mt} pieces (raise them, or data.truncate_source=True to '
                    'cut long sources)')
  budget = config.data.get('max_train_pairs', 0)
  if budget:
    pick = subset(len(kept), budget, config.data.get('subset_seed', 0))
    train_rows, kept = train_rows[pick], [kept[i] for i in pick]
    info('data.max_train_pairs: training on %d of them (data.subset_seed=%d)', len(kept),
         config.data.get('subset_seed', 0))
  stats = {'train_pairs': len(kept)}
  bt = config.get('backtranslation')
  if bt and bt.get('model'):
    synthetic = back_translate(bt, workdir, **langs)
    rows, kept_bt = encode_pairs(tok, synthetic, ms, mt, filter_long=True, truncate_source=cut,
                                 start_id=start, **langs)
    train_rows = np.concatenate([train_rows, rows])
    stats['synthetic_pairs'] = len(kept_bt)
    info('back-translation: + %d synthetic pairs (%d dropped by length)', len(kept_bt),
         len(synthetic) - len(kept_bt))
  arrays, lengths = pair_arrays(train_rows, ms, mt, tok.pad_id)
  if config.get('packing', False):
    stream = PackStream(arrays['source'], arrays['target_in'], arrays['target_out'],
                        step_rows(config), config.train.epochs, config.seed, row_start,
                        row_stop, pad_id=tok.pad_id)
    fill = stream.fill()
    info('packing: %d rows of %d/%d pieces a batch, %.1f pairs a row on average; '
         'fill %.0f%% source, %.0f%% target', step_rows(config), ms, mt,
         len(train_rows) * config.train.epochs / (stream.total_steps * step_rows(config)),
         100 * fill['source'], 100 * fill['target'])
  else:
    boundaries = parse_boundaries(config.length_buckets, max(ms, mt))
    stream = BucketStream(arrays, lengths, boundaries, step_rows(config), config.train.epochs,
                          config.seed, row_start, row_stop)
    info('length buckets %s: %s pairs', boundaries, stream.bucket_sizes)
  return tok, stream, splits, stats


def validate(config) -> None:
  """The checks that need no data: the objective, the tokenizer and optimiser fields,
  label smoothing (`train.run` calls it before the workdir is taken)."""
  objective = config.get('objective', 'supervised')
  if objective not in OBJECTIVES:
    raise ConfigError(f'config.objective must be one of {OBJECTIVES}, got {objective!r}')
  tokenizer_lib.check_fields(config.get('tokenizer'))
  optimizers.check(config.optim)
  smoothing = config.get('label_smoothing', 0.0)
  if not 0 <= smoothing < 1:
    raise ConfigError(f'config.label_smoothing: must be in [0, 1) (the mass moved off the '
                      f'reference token), got {smoothing}')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains on pairs (`objective='supervised'`) or on noised monolingual text
  (`objective='denoise'`), then evaluates and saves the model (see the module doc)."""
  validate(config)
  objective = config.get('objective', 'supervised')
  denoise = objective == 'denoise'
  if denoise:
    noise_cfg = noise_config(config)
    if config.get('packing', False):
      raise ConfigError("config.packing: objective='denoise' batches by length buckets "
                        '(its rows change length every epoch); set packing=False')
    if config.get('backtranslation', {}).get('model'):
      raise ConfigError("config.backtranslation.model: back-translation makes translation "
                        "pairs; objective='denoise' reads monolingual text only")
  else:
    check_metric(config.eval.metric, config.eval)
  rules = mesh_lib.rules_from_config(config)
  mesh = mesh_lib.mesh_from_config(config)     # bad mesh.* fields: before any data
  accum = config.train.get('grad_accum', 1)
  if accum < 1:
    raise ConfigError(f'config.train.grad_accum must be >= 1, got {accum}')
  mesh_lib.process_rows(config.train.batch_size, mesh)
  # a step's rows: batch_size × grad_accum, this process's share split into grad_accum
  # micro-batches (`micro_batches`)
  row_start, row_stop = mesh_lib.process_rows(config.train.batch_size * accum, mesh)
  src = init_source(config)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    atomic_write(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  ms, mt = config.max_source_len, config.max_target_len
  if denoise:
    tok, stream, heldout, stats = load_denoise(config, workdir, noise_cfg, row_start, row_stop)
    splits = {}
  else:
    tok, stream, splits, stats = load_supervised(config, workdir, src, row_start, row_stop)
  total_steps = min(stream.total_steps, config.train.steps) if config.train.steps else \
      stream.total_steps
  train_cfg = model_config(config, tok.vocab_size, deterministic=False)
  model = s2s.Seq2Seq(train_cfg)
  dummy_s, dummy_t = jnp.zeros((1, ms), jnp.int32), jnp.zeros((1, mt), jnp.int32)
  abstract = abstract_params(model, dummy_s, dummy_t)
  tx, schedule, frozen = make_optimizer(config, train_cfg, abstract, total_steps,
                                        stream.total_steps // max(1, config.train.epochs))

  state = init_state(model, tx, config.seed, mesh, ms, mt, rules)
  shardings = mesh_lib.shardings_of(state)
  decode_model = s2s.Seq2Seq(train_cfg.replace(deterministic=True, decode=True))
  eval_fn = make_eval_fn(s2s.Seq2Seq(train_cfg.replace(deterministic=True))) if denoise else None
  eval_sources: dict[str, np.ndarray] = {}

  def during(step: int, state) -> dict:
    if denoise:
      r = evaluate_rows(eval_fn, state.params, heldout, config.train.batch_size)
      return {'valid_loss': r['loss'], 'valid_accuracy': r['accuracy']}
    pairs = splits['valid'][:config.eval.during_max_examples or None]
    if 'during' not in eval_sources:  # encoded once, not at every evaluation
      eval_sources['during'] = encode_sources(tok, pairs, config)
    scores, _ = evaluate_split(decode_model, state.params, tok, pairs, eval_sources['during'],
                               config, config.eval.during_beam)
    return {f'valid_{k}': v for k, v in scores.items() if k != 'examples'}

  can_score = heldout is not None if denoise else 'valid' in splits
  hooks = [Every(config.eval.every_steps, during)] if can_score else []

  with Run(workdir, config.train.keep_checkpoints) as run:
    state, saved = run.restore(state)
    if src is not None and not run.resuming:
      state = init_from_source(src, state, config, workdir)
      info('initialised from %s (%s run); fresh optimiser', config.init.path, config.init.kind)
    data_state = LMState(**saved)
    result = run.train(
        state=state,
        stream=itertools.islice(((s.to_dict(), micro_batches(b, accum))
                                 for s, b in stream.iterate(data_state)),
                                max(total_steps - int(state.step), 0)),
        step_fn=make_train_fn(model, tx, schedule, mesh, config.label_smoothing, shardings,
                              frozen),
        to_device=functools.partial(mesh_lib.shard_batch, mesh=mesh, batch_axis=1),
        total_steps=total_steps, steps_per_call=1,
        checkpoint_every=config.train.checkpoint_every_steps,
        log_every=config.train.log_every_steps,
        units_per_step=0, units_key='loss_count', units_name='target_tokens',
        data_state=data_state.to_dict(), progress=config.progress, hooks=hooks)
  summary: dict[str, Any] = dict(run.summary(result), **stats)
  if result.stopped_by_signal:
    return summary
  if denoise:
    if heldout is not None:
      summary['valid'] = evaluate_rows(eval_fn, result.state.params, heldout,
                                       config.train.batch_size)
      summary['valid_samples'] = denoise_samples(decode_model, result.state.params, tok,
                                                 heldout, config)
  for split in ('valid', 'test'):
    if split not in splits:
      continue
    pairs = splits[split][:config.eval.max_examples or None]
    summary[split], hyps = evaluate_split(decode_model, result.state.params, tok, pairs,
                                          encode_sources(tok, pairs, config, split), config,
                                          config.eval.beam)
    summary[f'{split}_samples'] = [{'source': p[0], 'reference': p[1], 'output': h}
                                   for p, h in list(zip(pairs, hyps))[:5]]
    if jax.process_index() == 0:
      serving_translate.write_lines(os.path.join(workdir, f'hypotheses.{split}.txt'), hyps)
  save_model(os.path.join(workdir, 'model'), config, train_cfg, result.state.params, tok,
             summary)
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'eval.json'), summary)
    print(json.dumps({k: v for k, v in summary.items() if k in ('steps', 'valid', 'test')}))
  return summary


def denoise_samples(decode_model, params, tok, heldout: dict, config, count: int = 5) -> list:
  """The first held-out rows: noised source, original, and the model's greedy output."""
  src = heldout['source'][:count]
  hyps = seq2seq_decode.translate(decode_model, params, tok, src, config.max_target_len, 1,
                                  config.eval.length_penalty)
  out = []
  for k, h in enumerate(hyps):
    s = [int(i) for i in src[k] if i != tok.pad_id]
    t = [int(i) for i in heldout['target_out'][k] if i not in (tok.pad_id, tok.eos_id)]
    out.append({'source': tok.decode(s),
                'reference': tok.decode(t), 'output': h})
  return out
