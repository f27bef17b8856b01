"""Zero-shot classification: no labelled training example is used.

Two ways, both reading only a pretrained source:

* `embedding`: a text's vector (mean of its words' pretrained vectors) is
  compared by cosine with each label's vector (mean of the vectors of the
  words describing the label, e.g. `positive=good great excellent`); the most
  similar label wins. Texts with no known word get the majority fallback
  class (`fallback`), and their count is reported.
* `lm`: each label has a verbalisation appended to the text (e.g. ` It was
  great.`); the pretrained LM scores `log p(verbalisation | EOS text)` and the
  highest wins. `calibrate=True` subtracts the content-free score
  `log p(verbalisation | EOS)` (the label's prior under the LM, as in
  domain-conditional PMI, Holtzman et al. 2021), which removes the LM's
  preference for one verbalisation regardless of the text.

`experiments.zero_shot` runs the configured methods on the configured split
and reports accuracy (± 95% CI) next to the majority-class baseline.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from translearn_jax.data.tokenizer import Tokenizer
from translearn_jax.data.vocab import folded_index, tokenize
from translearn_jax.errors import ConfigError
from translearn_jax.models import lm as lm_models


def parse_label_map(spec: str, label_names: Sequence[str], what: str) -> list[str]:
  """'negative=bad awful;positive=good great' -> texts in `label_names` order."""
  out = {}
  for part in spec.split(';'):
    if not part.strip():
      continue
    if '=' not in part:
      raise ConfigError(f'{what}: expected label=text, got {part.strip()!r}')
    name, text = part.split('=', 1)
    out[name.strip()] = text
  missing = [n for n in label_names if n not in out]
  unknown = [n for n in out if n not in label_names]
  if missing or unknown:
    raise ConfigError(f'{what}: labels of the data are {list(label_names)}; missing '
                      f'{missing}, unknown {unknown}')
  return [out[n] for n in label_names]


# -- (a) embedding similarity ------------------------------------------------------

def mean_vectors(texts: Sequence[str], index: dict, vectors: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(N, D) mean vector of each text's known words, (N,) bool: had a known word."""
  out = np.zeros((len(texts), vectors.shape[1]), np.float32)
  known = np.zeros(len(texts), bool)
  for i, t in enumerate(texts):
    ids = [index[w] for w in tokenize(t) if w in index]
    if ids:
      out[i] = vectors[ids].mean(0)
      known[i] = True
  return out, known


def embedding_predict(texts: Sequence[str], descriptions: Sequence[str], words: Sequence[str],
                      vectors: np.ndarray, fallback: int = 0) -> tuple[np.ndarray, int]:
  """(predictions, number of texts with no known word). Words match exactly, else through
  their first case-folded spelling (as grafts and the word-vector evaluation match them):
  `tokenize` lowercases, and cased vector files list many words only capitalised."""
  index = folded_index(words)
  index.update({w: i for i, w in reversed(list(enumerate(words)))})   # exact first
  labels, lknown = mean_vectors(descriptions, index, vectors)
  if not lknown.all():
    bad = [d for d, k in zip(descriptions, lknown) if not k]
    raise ConfigError(f'zero_shot.descriptions: no word of {bad} is in the pretrained vocabulary')
  x, known = mean_vectors(texts, index, vectors)
  unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  pred = np.argmax(unit(x) @ unit(labels).T, axis=1)
  pred[~known] = fallback
  return pred, int((~known).sum())


# -- (b) LM verbalisation scoring --------------------------------------------------

@functools.lru_cache(maxsize=None)
def _token_logp_fn(model):
  @jax.jit
  def f(params, tokens):
    logits = lm_models.logits(model, params, tokens[:, :-1]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  return f


def continuation_logprobs(model, params, prefixes: Sequence[list[int]],
                          continuations: Sequence[list[int]], max_len: int,
                          batch: int = 64) -> np.ndarray:
  """log p(continuation | prefix) summed over the continuation's tokens, per pair.

  Prefixes longer than the context are cut from the left (the end of a text,
  next to the verbalisation, is kept). Pairs are batched by length.
  """
  f = _token_logp_fn(model)
  seqs, starts = [], []
  for p, c in zip(prefixes, continuations):
    if len(c) + 1 > max_len:
      raise ConfigError(f'config.zero_shot.verbalisations: one of {len(c)} tokens does not '
                        f'fit the {max_len} tokens scored (config.zero_shot.max_tokens, at most '
                        'the LM context) with a token of text before it')
    p = p[max(0, len(p) + len(c) - max_len):]
    seqs.append(p + c)
    starts.append(len(p))
  lengths = np.array([len(s) for s in seqs])
  order = np.argsort(lengths, kind='stable')
  out = np.zeros(len(seqs), np.float64)
  for lo in range(0, len(seqs), batch):
    idx = order[lo:lo + batch]
    width = -(-int(lengths[idx].max()) // 16) * 16
    width = min(width, max_len)
    toks = np.zeros((batch, width), np.int32)
    for r, i in enumerate(idx):
      toks[r, :lengths[i]] = seqs[i]
    lp = np.asarray(f(params, jnp.asarray(toks)))  # (batch, width - 1): logp of toks[:, 1:]
    for r, i in enumerate(idx):
      out[i] = lp[r, starts[i] - 1:lengths[i] - 1].sum()
  return out


def lm_scores(model, params, tok: Tokenizer, texts: Sequence[str],
              verbalisations: Sequence[str], max_len: int, batch: int = 64
              ) -> tuple[np.ndarray, np.ndarray]:
  """((N, C) log p(verbalisation_c | EOS text_n), (C,) log p(verbalisation_c | EOS))."""
  text_ids = tok.encode_batch(list(texts))
  # as text that follows text: a word after a space (byte-level BPE: 'Ġword'), its own
  # leading space stripped first, or a verbalisation written ' It was great.' was scored
  # after two spaces there (an extra 'Ġ' piece)
  verb_ids = tok.encode_words([v.lstrip() for v in verbalisations])
  n, c = len(texts), len(verbalisations)
  eos = tok.eos_id
  prefixes = [[eos] + t for t in text_ids for _ in range(c)]
  conts = [v for _ in range(n) for v in verb_ids]
  scores = continuation_logprobs(model, params, prefixes, conts, max_len, batch).reshape(n, c)
  prior = continuation_logprobs(model, params, [[eos]] * c, verb_ids, max_len, batch)
  return scores, prior
