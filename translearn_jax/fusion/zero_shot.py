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

`train_and_evaluate(config, workdir)` runs the configured methods on the
configured split and reports accuracy (± 95% CI) next to the majority-class
baseline of that split.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translearn_jax.data import labelled
from translearn_jax.data.tokenizer import EOS, Tokenizer
from translearn_jax.data.vocab import tokenize
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation.stats import mean_ci
from translearn_jax.training.metrics import info, write_json


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
  """(predictions, number of texts with no known word)."""
  index = {w: i for i, w in enumerate(words)}
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
  from translearn_jax.pretraining import lm

  @jax.jit
  def f(params, tokens):
    logits = lm.logits_of(model, params, tokens[:, :-1]).astype(jnp.float32)
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
      raise ConfigError(f'a verbalisation of {len(c)} tokens does not fit the LM context '
                        f'({max_len})')
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
  verb_ids = tok.encode_batch(list(verbalisations))
  n, c = len(texts), len(verbalisations)
  prefixes = [[EOS] + t for t in text_ids for _ in range(c)]
  conts = [v for _ in range(n) for v in verb_ids]
  scores = continuation_logprobs(model, params, prefixes, conts, max_len, batch).reshape(n, c)
  prior = continuation_logprobs(model, params, [[EOS]] * c, verb_ids, max_len, batch)
  return scores, prior


# -- entry point -----------------------------------------------------------------

def accuracy_row(name: str, pred: np.ndarray, labels: np.ndarray, **extra) -> dict:
  correct = (pred == labels).astype(np.float64)
  m, h = mean_ci(correct.tolist())
  return {'method': name, 'accuracy': m, 'ci95': h, 'examples': len(labels),
          'predicted_counts': np.bincount(pred, minlength=labels.max() + 1).tolist(), **extra}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  names = ('train', 'dev', 'test')
  if config.eval_split != 'all' and config.eval_split not in names:
    raise ConfigError(f"config.eval_split must be 'all' or one of {names}, got "
                      f'{config.eval_split!r}')
  splits = labelled.read_splits(config.data)
  label_names = splits['train'].label_names
  if config.eval_split == 'all':
    texts = [t for n in names for t in splits[n].texts]
    labels = np.concatenate([splits[n].labels for n in names])
  else:
    texts, labels = splits[config.eval_split].texts, splits[config.eval_split].labels
  counts = np.bincount(labels, minlength=len(label_names))
  majority = int(np.argmax(counts))
  rows = [accuracy_row('majority class', np.full_like(labels, majority), labels)]
  methods = [m.strip() for m in config.zero_shot.methods.split(',') if m.strip()]
  for method in methods:
    if method == 'embedding':
      from translearn_jax.export.word2vec_format import load_word2vec
      words, vecs = load_word2vec(config.zero_shot.vectors_path, binary=config.zero_shot.binary)
      desc = parse_label_map(config.zero_shot.descriptions, label_names,
                             'zero_shot.descriptions')
      pred, unknown = embedding_predict(texts, desc, words, vecs, fallback=majority)
      rows.append(accuracy_row('embedding similarity', pred, labels,
                               texts_without_known_words=unknown))
    elif method == 'lm':
      from translearn_jax.generation.sample import load_run
      from translearn_jax.pretraining import lm
      _, tok, mcfg, params = load_run(config.zero_shot.lm_path)
      verbs = parse_label_map(config.zero_shot.verbalisations, label_names,
                              'zero_shot.verbalisations')
      max_len = getattr(mcfg, 'max_len', None) or config.zero_shot.max_tokens
      max_len = min(max_len, config.zero_shot.max_tokens)
      scores, prior = lm_scores(lm.make_model(mcfg), params, tok, texts, verbs, max_len)
      rows.append(accuracy_row('LM verbalisation', np.argmax(scores, 1), labels,
                               verbalisations=verbs))
      rows.append(accuracy_row('LM verbalisation, calibrated', np.argmax(scores - prior, 1),
                               labels, verbalisations=verbs, prior=prior.tolist()))
    else:
      raise ConfigError(f"zero_shot.methods: unknown method {method!r} ('embedding', 'lm')")
  summary = {'rows': rows, 'label_names': label_names, 'eval_split': config.eval_split,
             'class_counts': counts.tolist(), 'seconds': time.perf_counter() - t0}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'zero_shot.json'), summary)
    print(format_rows(rows))
  info('zero-shot done in %.0f s', summary['seconds'])
  return summary


def format_rows(rows: list[dict]) -> str:
  out = [f'{"method":<32} {"accuracy % (95% CI)":>22} {"examples":>9}']
  for r in rows:
    out.append(f'{r["method"]:<32} {100 * r["accuracy"]:>13.2f} ± {100 * r["ci95"]:.2f} '
               f'{r["examples"]:>9}')
  return '\n'.join(out)
