"""Greedy and beam-search decoding for `Seq2Seq`, batched and jit-compiled.

Both encode the source once and run the decoder one token per step through
the KV cache (`decode=True` config): the first step projects the encoder output
into the cross-attention cache, every later step passes `encoded=None` and
reuses it. Outputs are `(B, max_len)` target ids
without the leading start token, EOS included, PAD after it. The ids are the
model config's: decoding starts from `decoder_start_id` (this project: BOS;
BART: `</s>`), ends at `eos_id`, fills with `pad_id`, and never produces
`suppress_ids` (this project: PAD and BOS; an imported checkpoint: what its
`bad_words_ids` bans, usually nothing).

Beam search keeps `beam` alive hypotheses and `beam` finished ones per
example; at each step the best `2·beam` extensions are split into finished
(ended with EOS among the best `beam`, scored `logp / ((5 + len) / 6) ** alpha`,
GNMT's length penalty, or `logp / len ** alpha` with `form='length'`, fairseq's and
transformers') and alive (the best `beam` that did not end). The result is the best
finished hypothesis, or an alive one that reached `max_len` with a better score (scored at
`max_len`, as transformers and fairseq finalise them). With `beam=1`
and `alpha=0` it returns exactly the greedy output.

`encode_sources` and `translate` decode a whole list of texts (the seq2seq
runner's evaluation and `serving.translate_file` share them, so a saved model
translates a file exactly as its run scored the test split).
"""

from __future__ import annotations

import functools

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from translearn_jax.data.hf_tokenizer import setting_name
from translearn_jax.errors import ConfigError
from translearn_jax.training.metrics import info

NEG = -1e9


def _cache(model, params, source, max_len):
  dummy = jnp.zeros((source.shape[0], max_len), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), source, dummy))['cache']
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _step(model, params, cache, encoded, src_mask, tok):
  """Log-probabilities of the next token (the first step is the one given `encoded`)."""
  logits, mut = model.apply({'params': params, 'cache': cache}, encoded, src_mask, tok[:, None],
                            method='decode', mutable=['cache'])
  logp = jax.nn.log_softmax(logits[:, 0])
  # banned ids are masked in the log-probabilities, not renormalised over the rest, as
  # transformers' processors mask generate()'s scores (beam scores sum these)
  if model.config.suppress_ids:                                 # never generated
    logp = logp.at[:, jnp.array(model.config.suppress_ids)].set(NEG)
  forced = getattr(model.config, 'forced_bos_id', -1)
  if encoded is not None and forced >= 0:     # mBART-50: the target language code first
    logp = jnp.full_like(logp, NEG).at[:, forced].set(0.0)
  return logp, mut['cache']


def constrain(logp, generated, cur_len, start_id: int, eos_id: int, min_len: int = 0,
              no_repeat_ngram: int = 0):
  """Bans what the search may not pick next, as transformers' `MinLengthLogitsProcessor`
  and `NoRepeatNGramLogitsProcessor` do: EOS while the sequence (the decoder start token
  included, as `generate` counts `min_length`) is shorter than `min_len`, and every token
  that would repeat an n-gram (`no_repeat_ngram` = n) of the sequence so far. `logp` (N, V);
  `generated` (N, T): the tokens generated so far in its first `cur_len - 1` columns."""
  n = no_repeat_ngram
  if min_len > 0:
    logp = jnp.where((cur_len < min_len) & (jnp.arange(logp.shape[-1]) == eos_id), NEG, logp)
  if n <= 0:
    return logp
  rows = generated.shape[0]
  full = jnp.concatenate([jnp.full((rows, 1), start_id, generated.dtype), generated], 1)
  starts = full.shape[1] - n + 1              # n-grams full[:, i:i + n], i < starts
  if starts <= 0:
    return logp
  match = jnp.arange(starts)[None, :] <= cur_len - n       # the n-gram lies in the sequence
  for j in range(n - 1):                                   # its first n - 1 are the last n - 1
    last = jnp.take(full, jnp.clip(cur_len - n + 1 + j, 0, full.shape[1] - 1), axis=1)
    match = match & (full[:, j:j + starts] == last[:, None])
  banned = jnp.zeros(logp.shape, bool).at[jnp.arange(rows)[:, None],
                                          full[:, n - 1:n - 1 + starts]].max(match)
  return jnp.where(banned, NEG, logp)


@functools.partial(jax.jit, static_argnames=('model', 'max_len', 'early_stop', 'min_len',
                                             'no_repeat_ngram'))
def greedy(model, params, source, max_len: int, early_stop: bool = True, min_len: int = 0,
           no_repeat_ngram: int = 0):
  """`model` must have `decode=True`. `early_stop=False` runs all `max_len` steps.
  `min_len` / `no_repeat_ngram`: `constrain`."""
  cfg = model.config
  encoded, src_mask = model.apply({'params': params}, source, method='encode')
  b = source.shape[0]
  cache = _cache(model, params, source, max_len)

  def body(t, carry, enc=None):
    out, cache, tok, done = carry
    logp, cache = _step(model, params, cache, enc, src_mask, tok)
    logp = constrain(logp, out, t + 1, cfg.decoder_start_id, cfg.eos_id, min_len,
                     no_repeat_ngram)
    nxt = jnp.where(done, cfg.pad_id, jnp.argmax(logp, -1).astype(jnp.int32))
    done = done | (nxt == cfg.eos_id)
    return out.at[:, t].set(nxt), cache, nxt, done

  out = jnp.full((b, max_len), cfg.pad_id, jnp.int32)
  start = jnp.full((b,), cfg.decoder_start_id, jnp.int32)
  carry = body(0, (out, cache, start, jnp.zeros((b,), bool)), encoded)
  # stop as soon as every row has produced EOS
  _, (out, _, _, _) = jax.lax.while_loop(
      lambda c: (c[0] < max_len) & ~(early_stop & jnp.all(c[1][3])),
      lambda c: (c[0] + 1, body(c[0], c[1])), (1, carry))
  return out


PENALTY_FORMS = ('gnmt', 'length')


def check_penalty_form(form: str, field: str) -> None:
  """`form` is a length-penalty form (`PENALTY_FORMS`), else one error naming `field`."""
  if form not in PENALTY_FORMS:
    raise ConfigError(f'{field} must be one of {PENALTY_FORMS}, got {form!r}')


def check_constraints(min_len, no_repeat_ngram,
                      fields=('eval.min_length', 'eval.no_repeat_ngram_size')) -> None:
  """`constrain`'s settings are integers >= 0 (0: off), else one error naming the field."""
  for value, field in zip((min_len, no_repeat_ngram), fields):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(f'{field} must be an integer >= 0 (0: off), got {value!r}')


def check_length_penalty(alpha, field: str = 'eval.length_penalty') -> None:
  """The length penalty's alpha is a finite number >= 0 (NaN too is refused: it made
  every hypothesis score NaN, and the search returned empty outputs)."""
  if (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
      or not 0 <= alpha < float('inf')):
    raise ConfigError(f'{field} must be a finite number >= 0, got {alpha!r}')


def _length_penalty(length, alpha, form: str = 'gnmt'):
  """What a finished hypothesis's log-probability is divided by: GNMT's `((5 + L) / 6) **
  alpha`, or `L ** alpha` ('length': fairseq's `--lenpen` and transformers'
  `length_penalty`), L the generated tokens, EOS included."""
  if alpha < 0:
    raise ValueError(f'length penalty alpha must be >= 0, got {alpha}')
  if form not in PENALTY_FORMS:
    raise ValueError(f'length penalty form must be one of {PENALTY_FORMS}, got {form!r}')
  return (length if form == 'length' else (5.0 + length) / 6.0) ** alpha


STOPPING = ('never', 'heuristic', 'k_finished')


def check_stopping(stopping: str, field: str) -> None:
  if stopping not in STOPPING:
    raise ConfigError(f'{field} must be one of {STOPPING} (transformers\' early_stopping '
                      f"'never', False, True), got {stopping!r}")


@functools.partial(jax.jit, static_argnames=('model', 'max_len', 'beam', 'alpha', 'early_stop',
                                             'form', 'min_len', 'no_repeat_ngram', 'stopping'))
def beam_search(model, params, source, max_len: int, beam: int = 4, alpha: float = 0.6,
                early_stop: bool = True, form: str = 'gnmt', min_len: int = 0,
                no_repeat_ngram: int = 0, stopping: str = 'never'):
  """`min_len` / `no_repeat_ngram`: `constrain`, applied to every beam's next tokens.

  `stopping` says when an example's search ends, as transformers' `early_stopping` does:
  'never' (its 'never'): when no alive hypothesis can still beat the k-th finished one, its
  best possible score bounded with the length penalty of `max_len` (the exact search:
  stopping there changes no result); 'heuristic' (its False, generate()'s default): k
  hypotheses have finished and the best alive one, scored at its current length, is no
  better than the worst of them; 'k_finished' (its True): k hypotheses have finished. An
  example that has stopped takes no more finished hypotheses, and its alive ones do not
  compete at `max_len`. `early_stop=False` runs all `max_len` steps ('never' only)."""
  if stopping not in STOPPING:
    raise ValueError(f'stopping must be one of {STOPPING}, got {stopping!r}')
  cfg = model.config
  b = source.shape[0]
  k = beam
  encoded, src_mask = model.apply({'params': params}, source, method='encode')
  rep = lambda x: jnp.repeat(x, k, axis=0)
  encoded, src_mask = rep(encoded), rep(src_mask)
  cache = _cache(model, params, rep(source), max_len)
  seqs = jnp.full((b, k, max_len), cfg.pad_id, jnp.int32)
  # Only beam 0 is live at the start, so the first step does not pick duplicates.
  logp = jnp.tile(jnp.array([0.0] + [NEG] * (k - 1)), (b, 1))
  fin_seqs = jnp.full((b, k, max_len), cfg.pad_id, jnp.int32)
  fin_scores = jnp.full((b, k), NEG)
  last = jnp.full((b, k), cfg.decoder_start_id, jnp.int32)

  def reorder(tree, idx):  # idx: (b, k) beams to keep, per example
    def f(path, x):
      # cross-attention keys/values are the same for every beam of an example
      if x.ndim == 0 or x.shape[0] != b * k or 'cross_' in jax.tree_util.keystr(path):
        return x
      y = x.reshape((b, k) + x.shape[1:])
      return jnp.take_along_axis(y, idx.reshape((b, k) + (1,) * (y.ndim - 2)), axis=1
                                 ).reshape(x.shape)
    return jax.tree_util.tree_map_with_path(f, tree)

  def body(t, carry, enc=None):
    seqs, logp, fin_seqs, fin_scores, last, cache, done, _ = carry
    step_logp, cache = _step(model, params, cache, enc, src_mask, last.reshape(-1))
    step_logp = constrain(step_logp, seqs.reshape(b * k, max_len), t + 1, cfg.decoder_start_id,
                          cfg.eos_id, min_len, no_repeat_ngram)
    v = step_logp.shape[-1]
    cand = (logp[..., None] + step_logp.reshape(b, k, v)).reshape(b, k * v)
    top_logp, top_idx = jax.lax.top_k(cand, 2 * k)
    src_beam, tok = top_idx // v, (top_idx % v).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(seqs, src_beam[..., None], axis=1).at[:, :, t].set(tok)
    # An EOS extension finishes a hypothesis only when it ranks among the best k
    # (fairseq's rule); this makes beam 1 (alpha 0) exactly greedy.
    is_eos = tok == cfg.eos_id
    new_eos = is_eos & (jnp.arange(2 * k) < k)[None, :]
    # finished: merge new EOS hypotheses with the old finished set
    new_fin = jnp.where(new_eos & ~done[:, None],
                        top_logp / _length_penalty(t + 1.0, alpha, form), NEG)
    all_scores = jnp.concatenate([fin_scores, new_fin], 1)
    all_seqs = jnp.concatenate([fin_seqs, top_seqs], 1)
    fin_scores, keep = jax.lax.top_k(all_scores, k)
    fin_seqs = jnp.take_along_axis(all_seqs, keep[..., None], axis=1)
    # alive: the best k that did not end
    alive_logp = jnp.where(is_eos, NEG, top_logp)
    logp, keep = jax.lax.top_k(alive_logp, k)
    seqs = jnp.take_along_axis(top_seqs, keep[..., None], axis=1)
    beams = jnp.take_along_axis(src_beam, keep, axis=1)
    cache = reorder(cache, beams)
    last = jnp.take_along_axis(tok, keep, axis=1)
    was_done = done
    full = fin_scores[:, -1] > NEG / 2                    # k hypotheses have finished
    if stopping == 'k_finished':
      done = done | full
    elif stopping == 'heuristic':                         # the best alive at its length
      done = done | (full & (jnp.max(logp, 1) / _length_penalty(t + 1.0, alpha, form)
                             <= fin_scores[:, -1]))
    return seqs, logp, fin_seqs, fin_scores, last, cache, done, was_done

  def unfinished(carry):
    # Exact early stop: an alive hypothesis can only lose log-probability, and
    # its length penalty is at most that of max_len, so its best possible final
    # score is logp / lp(max_len). Once that is below the worst kept finished
    # score for every example, no later step can change the result.
    _, logp, _, fin_scores, _, _, done, _ = carry
    if stopping != 'never':
      return ~jnp.all(done)
    bound = jnp.max(logp, 1) / _length_penalty(float(max_len), alpha, form)
    return jnp.any(bound > fin_scores[:, -1]) | (not early_stop)

  done = jnp.zeros((b,), bool)
  carry = body(0, (seqs, logp, fin_seqs, fin_scores, last, cache, done, done), encoded)
  t_end, (seqs, logp, fin_seqs, fin_scores, _, _, done, was_done) = jax.lax.while_loop(
      lambda c: (c[0] < max_len) & unfinished(c[1]),
      lambda c: (c[0] + 1, body(c[0], c[1])), (1, carry))
  # hypotheses still alive at max_len compete with the finished ones (transformers and
  # fairseq finalise them there) unless their example had stopped before that last step;
  # after the exact ('never') early stop the bound says none can win
  alive_scores = logp / _length_penalty(float(max_len), alpha, form)
  best_alive = jnp.take_along_axis(seqs, jnp.argmax(alive_scores, 1)[:, None, None], 1)[:, 0]
  alive_wins = ((jnp.max(alive_scores, 1) > fin_scores[:, 0])
                & ~(was_done | ((t_end < max_len) & done)))
  best = jnp.where(alive_wins[:, None], best_alive, fin_seqs[:, 0])
  # PAD after the first EOS
  eos = best == cfg.eos_id
  return jnp.where(jnp.cumsum(eos, axis=1) - eos > 0, cfg.pad_id, best)


def framed(tok, texts: Sequence[str], lang: str = '', field: str = 'tokenizer.source_lang'
           ) -> tuple[list[list[int]], int]:
  """(ids of each text as a seq2seq model reads a source or writes a target, how many ids
  close the frame): this project's tokenizer gives the pieces alone (0); a Hugging Face
  tokenizer (an imported checkpoint) frames them as its model was trained
  (`encode_batch_framed`: BART's `<s> text </s>`, Marian's `text </s>`, mBART's
  `text </s> en_XX`, with `lang` in the language slot when given)."""
  if hasattr(tok, 'encode_batch_framed'):
    return tok.encode_batch_framed(list(texts), lang, field), max(1, len(tok.frame()[1]))
  if lang:
    raise ConfigError(f'{setting_name(field)}={lang!r}: language codes frame the texts of an '
                      "imported multilingual checkpoint's tokenizer (mBART); this run's "
                      'tokenizer has none')
  return tok.encode_batch(list(texts)), 0


def language_start(tok, lang: str, field: str = 'tokenizer.target_lang') -> dict:
  """The model-config changes that make decoding write `lang` (a multilingual checkpoint's
  target language code), as transformers' mBART does: a frame ending in the code (mBART's
  `text </s> ro_RO`) starts the decoder from the code (its `shift_tokens_right` wraps the
  last token round): {'decoder_start_id': code}; a frame starting with it (mBART-50's
  `ro_RO text </s>`) keeps the checkpoint's start and forces the code as the first
  token (`forced_bos_token_id`): {'forced_bos_id': code}. {} without `lang`."""
  if not lang:
    return {}
  if not hasattr(tok, 'lang_slot'):
    raise ConfigError(f"{setting_name(field)}={lang!r}: language codes frame the texts of an "
                      "imported multilingual checkpoint's tokenizer (mBART); this "
                      "tokenizer has none")
  where, _ = tok.lang_slot(field)
  tok.encode_batch_framed([''], lang, field)              # a known code, or an error
  code = int(tok.piece_id(lang))
  return {'decoder_start_id': code} if where == 'suffix' else {'forced_bos_id': code}


def cut(ids: list, n: int, keep_last: int) -> list:
  """`ids` cut to `n`, keeping its last `keep_last` ids (a frame's closing `</s>`, or
  mBART's `</s> en_XX`)."""
  if len(ids) <= n:
    return ids
  k = int(keep_last)
  return ids[:n - k] + ids[len(ids) - k:] if 0 < k < n else ids[:n]


def encode_sources(tok, texts: Sequence[str], max_src: int, lang: str = '',
                   field: str = 'tokenizer.source_lang') -> tuple[np.ndarray, int]:
  """((N, max_src) source ids of `texts`, how many were cut): each `framed`, with the
  source language code `lang`, cut to `max_src` pieces (a frame's closing ids kept), and
  padded with the tokenizer's pad id; none is dropped."""
  rows = np.full((len(texts), max_src), tok.pad_id, np.int32)
  ids_list, keep = framed(tok, texts, lang, field) if len(texts) else ([], 0)
  n_cut = 0
  for r, ids in enumerate(ids_list):
    n_cut += len(ids) > max_src
    ids = cut(ids, max_src, keep)
    rows[r, :len(ids)] = ids
  return rows, n_cut


def translate(decode_model, params, tok, sources: np.ndarray, max_len: int, beam: int,
              alpha: float, batch: int = 64, progress: bool = False,
              form: str = 'gnmt', min_len: int = 0, no_repeat_ngram: int = 0,
              stopping: str = 'never') -> list[str]:
  """Decodes (N, max_src) padded source ids (`encode_sources`) to text, in input order.

  Sources are sorted by length (longest first) and decoded `batch` at a time,
  each batch cut to its longest source rounded up to 8 and padded to `batch`
  rows (few shapes to compile); `beam <= 1` is greedy, else beam search with
  length penalty `alpha` of `form` (`_length_penalty`) and `stopping` (`beam_search`);
  `min_len`, `no_repeat_ngram`: `constrain`. `progress`: a tqdm bar over the batches."""
  cfg = decode_model.config
  lengths = (sources != cfg.pad_id).sum(1)
  # a source of no piece (a line of zero-width or control characters only) translates to
  # an empty line, as a blank one does (decoded, an all-padding row made up a sentence)
  order = np.argsort(-lengths, kind='stable')
  order = order[lengths[order] > 0]
  if len(order) < len(sources):
    info('%d source(s) encode to no piece (zero-width or control characters only): their '
         'translations are empty lines', len(sources) - len(order))
  out: list[str] = [''] * len(sources)
  starts = range(0, len(sources), batch)
  if progress:
    from tqdm import tqdm
    starts = tqdm(starts, unit='batch', desc='translating')
  for lo in starts:
    idx = order[lo:lo + batch]
    width = min(sources.shape[1], -(-max(int(lengths[idx].max()), 1) // 8) * 8)
    src = np.full((batch, width), cfg.pad_id, np.int32)  # fixed batch: one compilation a width
    src[:len(idx)] = sources[idx, :width]
    src[len(idx):, 0] = cfg.eos_id  # keep padding rows non-empty
    if beam <= 1:
      ids = greedy(decode_model, params, jnp.asarray(src), max_len, min_len=min_len,
                   no_repeat_ngram=no_repeat_ngram)
    else:
      ids = beam_search(decode_model, params, jnp.asarray(src), max_len, beam=beam, alpha=alpha,
                        form=form, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
                        stopping=stopping)
    for i, r in zip(idx, np.asarray(ids)[:len(idx)]):
      out[i] = tok.decode(r.tolist())
  return out
