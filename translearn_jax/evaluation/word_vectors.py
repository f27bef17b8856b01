"""Intrinsic evaluation of word vectors: similarity (Spearman ρ) and analogies.

Similarity files: one pair per line, `word1 word2 score` separated by tabs or
spaces; lines starting with '#' and a header line whose score is not a number
are skipped (reads gensim's `wordsim353.tsv`/`simlex999.txt` and the
wordvectors.org `EN-*.txt` files alike). Pairs with a word outside the
vocabulary are skipped and counted, as gensim's `evaluate_word_pairs` does.

Analogies (Google `questions-words.txt`): 3CosAdd on unit vectors restricted
to the `restrict` most frequent words (word2vec's and gensim's 30,000),
excluding the three question words; questions with a word outside the
restricted vocabulary are skipped and counted. Words are lowercased.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from scipy import stats

from translearn_jax.data.readers import read_text, resolve_paths
from translearn_jax.errors import DataError


def _path(path: str) -> str:
  return resolve_paths(path)[0]


def read_similarity_pairs(path: str) -> list[tuple[str, str, float]]:
  real = _path(path)
  pairs = []
  for n, line in enumerate(read_text(real).split('\n'), 1):
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    parts = line.split('\t') if '\t' in line else line.split()
    if len(parts) < 3:
      raise DataError(f'{real}:{n}: expected "word1 word2 score", got {line!r}')
    try:
      score = float(parts[2])
    except ValueError:
      if not pairs:  # a header row
        continue
      raise DataError(f'{real}:{n}: score {parts[2]!r} is not a number') from None
    pairs.append((parts[0].strip().lower(), parts[1].strip().lower(), score))
  if not pairs:
    raise DataError(f'{real}: no word pairs found')
  return pairs


def _unit(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return vectors / np.maximum(norms, 1e-12)


@dataclasses.dataclass
class SimilarityResult:
  name: str
  spearman: float
  pairs_used: int
  pairs_oov: int


def evaluate_similarity(words: Sequence[str], vectors: np.ndarray, path: str,
                        name: Optional[str] = None) -> SimilarityResult:
  index = {w: i for i, w in enumerate(words)}
  pairs = read_similarity_pairs(path)
  unit = _unit(np.asarray(vectors, np.float64))
  model, human = [], []
  for a, b, score in pairs:
    if a in index and b in index:
      model.append(float(unit[index[a]] @ unit[index[b]]))
      human.append(score)
  oov = len(pairs) - len(model)
  rho = float(stats.spearmanr(model, human).statistic) if len(model) >= 2 else float('nan')
  return SimilarityResult(name or path, rho, len(model), oov)


@dataclasses.dataclass
class AnalogyResult:
  accuracy: float
  correct: int
  answered: int
  oov: int
  sections: dict


def read_analogies(path: str) -> list[tuple[str, tuple[str, str, str, str]]]:
  real = _path(path)
  section, out = None, []
  for n, line in enumerate(read_text(real).split('\n'), 1):
    if not line.strip():
      continue
    if line.startswith(':'):
      section = line[1:].strip()
      continue
    parts = line.lower().split()
    if len(parts) != 4:
      raise DataError(f'{real}:{n}: expected 4 words, got {line!r}')
    out.append((section or '', tuple(parts)))
  if not out:
    raise DataError(f'{real}: no analogy questions found')
  return out


def evaluate_analogies(words: Sequence[str], vectors: np.ndarray, path: str,
                       restrict: int = 30000, batch: int = 1024) -> AnalogyResult:
  """3CosAdd accuracy; `words` must be sorted by descending frequency."""
  words = list(words)[:restrict]
  unit = _unit(np.asarray(vectors[:len(words)], np.float32))
  index = {w: i for i, w in enumerate(words)}
  questions = read_analogies(path)
  usable = [(s, [index[w] for w in q]) for s, q in questions if all(w in index for w in q)]
  oov = len(questions) - len(usable)
  sections: dict[str, list[int]] = {}
  correct = 0
  for lo in range(0, len(usable), batch):
    chunk = usable[lo:lo + batch]
    ids = np.array([q for _, q in chunk])
    query = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]
    sims = query @ unit.T
    rows = np.arange(len(chunk))
    for j in range(3):
      sims[rows, ids[:, j]] = -np.inf
    pred = sims.argmax(1)
    hit = pred == ids[:, 3]
    correct += int(hit.sum())
    for (s, _), h in zip(chunk, hit):
      c = sections.setdefault(s, [0, 0])
      c[0] += int(h)
      c[1] += 1
  answered = len(usable)
  return AnalogyResult(correct / answered if answered else float('nan'), correct, answered,
                       oov, {s: c[0] / c[1] for s, c in sections.items()})


def parse_named_paths(spec: str) -> list[tuple[str, str]]:
  """'name=path,name2=path2' (or bare paths) -> [(name, path)]."""
  out = []
  for part in [p.strip() for p in spec.split(',') if p.strip()]:
    name, sep, path = part.partition('=')
    out.append((name, path) if sep else (part.rsplit('/', 1)[-1].rsplit(':', 1)[-1], part))
  return out
