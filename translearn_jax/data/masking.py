"""Dynamic masking for the masked-LM objective (BERT), as pure `jnp` functions run inside the step.

Every step draws its own mask from the step's key (`fold_in(rng, step)`), so
each pass over a row masks other positions (RoBERTa's dynamic masking) and a
resumed run draws exactly what the uninterrupted one drew.

* `select`: each eligible position (a real, non-special piece) is chosen with
  probability `rate` (15%); with `word_starts` whole words are chosen instead
  (the draw at a word's first piece decides all its pieces: whole-word masking);
* `corrupt`: of the chosen positions 80% become `<mask>`, 10% a random
  non-special piece, 10% stay as they are (`split`);
* `prediction_slots`: the (B, K) positions the loss is computed at — the
  chosen ones, padded with weight 0 — so the vocabulary projection runs on K
  positions instead of T. A row with more chosen positions than K keeps a
  random K of them and leaves the rest unchosen (not corrupted either, so
  no input position is altered without a loss on it; with whole words, whole
  words are kept or left out, never part of one): with the default
  K = 2 × rate × T that is about 1 row in 10⁶ at 15% of 128. BERT's
  `max_predictions` = 20 of 128 (`configs/bert_base.py`) is a cap here on a per-piece draw,
  not BERT's fixed count: BERT predicts round(0.15 × n) = 19 a row, never capped, where the
  draw passes 20 in about half the rows at 128, so that config masks about 14.3% of the
  eligible pieces, not 15% (measured by a review, stop 52).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import regex


def special_table(vocab_size: int, special_ids) -> np.ndarray:
  table = np.zeros(vocab_size, bool)
  table[np.asarray(list(special_ids), np.int64)] = True
  return table


# scripts written without spaces between words: each character is a word of its own for
# whole-word masking (as Google's Chinese BERT masks characters), or a whole sentence would
# be one "word"
UNSPACED = regex.compile(r'[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}'
                         r'\p{Myanmar}\p{Tibetan}]')


def starts_unspaced(text: str) -> bool:
  """Whether `text` (a piece without its word-boundary mark) begins with a character of a
  script written without spaces."""
  return bool(text) and UNSPACED.match(text) is not None


# a byte-fallback piece (sentencepiece, Llama-style tokenizer.json) that leads the UTF-8 bytes
# of a character in U+3000-U+9FFF: kana, CJK symbols and ideographs (extension A included);
# a character rare enough to be spelled in bytes is one of those in Chinese/Japanese text
UNSPACED_LEAD_BYTE = regex.compile(r'<0x(E[3-9])>', regex.IGNORECASE)


def word_start_table(pieces, special_ids) -> np.ndarray:
  """True for pieces that begin a word (sentencepiece '▁' prefix, a character of a script
  written without spaces, or the lead byte of one spelled in byte-fallback pieces) and for
  special pieces."""
  table = np.array([p.startswith('\u2581') or starts_unspaced(p)
                    or UNSPACED_LEAD_BYTE.fullmatch(p) is not None for p in pieces], bool)
  table[np.asarray(list(special_ids), np.int64)] = True
  return table


def num_slots(seq_len: int, rate: float) -> int:
  """K prediction slots per row: twice the expected count, at least 4 (and at most T)."""
  return int(min(seq_len, max(4, math.ceil(2 * rate * seq_len))))


def select(rng, tokens, eligible, rate: float, word_starts=None):
  """(B, T) bool: the positions to predict."""
  u = jax.random.uniform(rng, tokens.shape)
  if word_starts is not None:
    u = jnp.take_along_axis(u, word_of(tokens, word_starts), axis=1)
  return (u < rate) & eligible


def word_of(tokens, word_starts):
  """(B, T) int: the position of the first piece of each position's word."""
  starts = jnp.where(word_starts[tokens], jnp.arange(tokens.shape[1]), 0)
  return jax.lax.cummax(starts, axis=1)


def corrupt(rng, tokens, selected, mask_id: int, normal_ids, split=(0.8, 0.1, 0.1)):
  """Inputs with the selected positions replaced: `<mask>` / random piece / kept."""
  k_kind, k_tok = jax.random.split(rng)
  u = jax.random.uniform(k_kind, tokens.shape)
  random_tok = normal_ids[jax.random.randint(k_tok, tokens.shape, 0, normal_ids.shape[0])]
  out = jnp.where(selected & (u < split[0]), mask_id, tokens)
  return jnp.where(selected & (u >= split[0]) & (u < split[0] + split[1]), random_tok, out)


def prediction_slots(rng, selected, k: int, words=None):
  """(positions (B, K), weights (B, K)): the selected positions first (a random K of them
  when more are selected), then unselected ones with weight 0.

  `words` (B, T): each position's word (its first piece's position, `word_of`), for
  whole-word masking: when more than K pieces are selected, whole words are kept in a
  random order while their pieces fit in K, and a word that does not fit is left out
  whole (BERT's create_pretraining_data never splits a word at max_predictions_per_seq),
  so no word is scored in part with its other pieces visible."""
  u = jax.random.uniform(rng, selected.shape)
  if words is not None:
    selected = selected & _whole_words_within(selected, jnp.take_along_axis(u, words, axis=1), k)
  score = selected.astype(jnp.float32) * 2.0 + u
  _, pos = jax.lax.top_k(score, k)
  return pos, jnp.take_along_axis(selected, pos, axis=1).astype(jnp.float32)


def _whole_words_within(selected, priority, k: int):
  """(B, T) bool: the selected positions of the words, taken in decreasing `priority` (one
  value per word), before the first word whose pieces would take the count past `k`."""
  key = jnp.where(selected, priority, -1.0)
  order = jnp.argsort(-key, axis=1, stable=True)
  s_key = jnp.take_along_axis(key, order, axis=1)
  s_sel = jnp.take_along_axis(selected, order, axis=1)
  count = jnp.cumsum(s_sel, axis=1)
  word_end = jnp.concatenate([s_key[:, :-1] != s_key[:, 1:],
                              jnp.ones_like(s_key[:, :1], bool)], axis=1)
  big = jnp.iinfo(count.dtype).max
  through_word = jax.lax.cummin(jnp.where(word_end, count, big), axis=1, reverse=True)
  keep = s_sel & (through_word <= k)
  rows = jnp.arange(selected.shape[0])[:, None]
  return jnp.zeros_like(selected).at[rows, order].set(keep)


class Masker:
  """A tokenizer's masking: `(rng, tokens, segments) -> (inputs, slots, targets, weights)`."""

  def __init__(self, vocab_size: int, special_ids, mask_id: int, rate: float, k: int,
               word_starts=None):
    self.is_special = jnp.asarray(special_table(vocab_size, special_ids))
    self.normal_ids = jnp.asarray(np.setdiff1d(np.arange(vocab_size),
                                               list(special_ids)).astype(np.int32))
    self.word_starts = None if word_starts is None else jnp.asarray(word_starts)
    self.rate, self.mask_id, self.k = float(rate), int(mask_id), int(k)
    # compared by value (equal maskers mask alike), so the steps built on one are reused
    # by the runs of a process (`training.memo`)
    self._value = (self.rate, self.mask_id, self.k) + tuple(
        None if a is None else (a.shape, str(a.dtype), np.asarray(a).tobytes())
        for a in (self.is_special, self.normal_ids, self.word_starts))

  def __eq__(self, other):
    return isinstance(other, Masker) and self._value == other._value

  def __hash__(self):
    return hash(self._value)

  @classmethod
  def for_tokenizer(cls, tokenizer, seq_len: int, rate: float = 0.15, whole_word: bool = False,
                    max_predictions: int = 0) -> 'Masker':
    """Specials, `<mask>` and word starts from the tokenizer (sentencepiece or HF); K slots
    per row `max_predictions` (0: `num_slots(seq_len, rate)`)."""
    special, v = tokenizer.special_ids(), tokenizer.vocab_size
    starts = tokenizer.word_start_flags() if whole_word else None
    return cls(v, special, tokenizer.mask_id, rate,
               max_predictions or num_slots(seq_len, rate), starts)

  def __call__(self, rng, tokens, segments):
    return mask_batch(rng, tokens, segments, rate=self.rate, mask_id=self.mask_id,
                      is_special=self.is_special, normal_ids=self.normal_ids, k=self.k,
                      word_starts=self.word_starts)


def mask_batch(rng, tokens, segments, *, rate: float, mask_id: int, is_special, normal_ids,
               k: int, word_starts=None):
  """One row batch's MLM example: (inputs, slot positions, slot targets, slot weights)."""
  k_sel, k_cor, k_slot = jax.random.split(rng, 3)
  eligible = (segments > 0) & ~is_special[tokens]
  selected = select(k_sel, tokens, eligible, rate, word_starts)
  words = None if word_starts is None else word_of(tokens, word_starts)
  pos, weights = prediction_slots(k_slot, selected, k, words)
  rows = jnp.arange(tokens.shape[0])[:, None]
  slotted = jnp.zeros_like(selected).at[rows, pos].set(weights > 0)
  inputs = corrupt(k_cor, tokens, selected & slotted, mask_id, normal_ids)
  return inputs, pos, jnp.take_along_axis(tokens, pos, axis=1), weights
