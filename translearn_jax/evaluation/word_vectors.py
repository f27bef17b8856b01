"""Intrinsic evaluation of word vectors: similarity (Spearman ρ) and analogies.

Similarity files: one pair per line, `word1 word2 score ...` separated by tabs,
commas (WordSim-353's `combined.csv`, MTurk-771; quoted fields as CSV writers quote
them) or spaces; lines starting with '#' are skipped, and so is a first line whose
columns are names (a header). Leading columns that hold a number on every line (a row
index, as pandas' `to_csv` writes one; a pair id) come before the two words. The
score is the first numeric column after the two words, fixed per file by its
first data line: column 3 for WordSim-353, MEN, RareWords; column 4 after the
POS column of SimLex-999's and SimVerb-3500's own files. Words with a part-of-speech
suffix on every line (MEN's lemma form, `sun-n`) lose it. Pairs with a word
outside the vocabulary are skipped and counted, as gensim's
`evaluate_word_pairs` does (which also, unlike this, treats words beyond the 300,000
most frequent as outside: the same for any vocabulary smaller than that).

Analogies (Google `questions-words.txt`, or MSR-style files without `:`
section lines): 3CosAdd on unit vectors restricted to the `restrict` most
frequent words (word2vec's 30,000 and gensim's old `accuracy()`; gensim 4's
`evaluate_word_analogies` defaults to 300,000), excluding the three question
words; questions with a word outside the restricted vocabulary are skipped and
counted.

Words match case-blind after NFC normalisation, as gensim's `case_insensitive`
default: a vocabulary that keeps capitals is looked up through its most
frequent spelling of each folded word (`words` are sorted by frequency).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import warnings
from typing import Optional, Sequence

import numpy as np

from translearn_jax.data.readers import read_text, resolve_paths
from translearn_jax.data.vocab import fold, folded_index
from translearn_jax.errors import ConfigError, DataError

_POS_SUFFIX = re.compile(r'^(.+)-[nvjar]$')
# evaluation sets are read as UTF-8 (data.encoding is the training corpus's)
_UTF8 = ('evaluation files are read as UTF-8 (or UTF-16 with a byte-order mark): convert '
         'this one, e.g. iconv -f latin1 -t utf-8')


def _path(path: str) -> str:
  files = resolve_paths(path)
  if len(files) != 1:
    raise DataError(f'{path}: names {len(files)} files ({files[0]}, ...); an evaluation set '
                    'is one file (name each: eval.similarity=ws=a.txt,men=b.txt)')
  return files[0]


def _fields(line: str) -> list[str]:
  """A line's fields: tab- or comma-separated as CSV (quoted fields, as R's `write.csv` and
  Python's `csv.QUOTE_ALL` write them, lose their quotes), else whitespace-separated."""
  line = line.strip()
  for sep in ('\t', ','):           # no word of these sets holds a tab or a comma
    if sep in line:
      return [f.strip() for f in next(csv.reader([line], delimiter=sep))]
  return [f[1:-1] if len(f) > 1 and f[0] == f[-1] == '"' else f for f in line.split()]


def _number(field: str) -> Optional[float]:
  try:
    return float(field)
  except ValueError:
    return None


def _leading_index_columns(lines) -> int:
  """How many leading columns hold a number on every line but the first (a row index, as
  pandas' `to_csv` writes one, or a numeric pair id): the words are the two columns after
  them. 0 when that would leave no two words and a score."""
  body = [parts for _, _, parts in lines[1:]] or [lines[0][2]]
  k = 0
  while all(len(p) > k + 2 and _number(p[k]) is not None for p in body):
    k += 1
  return k


def read_similarity_pairs(path: str) -> list[tuple[str, str, float]]:
  real = _path(path)
  rows, col = [], None
  text = read_text(real, advice=_UTF8)
  lines = [(n, line, _fields(line)) for n, line in enumerate(text.split('\n'), 1)
           if line.strip() and not line.lstrip().startswith('#')]
  if not lines:
    raise DataError(f'{real}: no word pairs found')
  w = _leading_index_columns(lines)      # the words: columns w and w + 1
  if (len(lines) > 1 and len(lines[0][2]) >= w + 3 and len(lines[1][2]) >= w + 3
      and not re.match(r'[-+.\d]', lines[0][2][w + 2]) and _number(lines[1][2][w + 2]) is not None):
    lines = lines[1:]      # a header above scores in column 3 ('Word 1,Word 2,Human (mean),1,2')
  for n, line, parts in lines:
    if len(parts) < w + 3:
      raise DataError(f'{real}:{n}: expected "word1 word2 score"'
                      + (f' after {w} index column(s)' if w else '') + f', got {line!r}')
    if col is None:
      col = next((c for c in range(w + 2, len(parts)) if _number(parts[c]) is not None), None)
      if col is None:
        # a header names its columns; a first line with a number-like score field that
        # does not parse (6.77x) is a typo, not a header
        if not rows and not re.match(r'[-+.\d]', parts[w + 2]):
          continue
        raise DataError(f'{real}:{n}: no numeric score after the two words in {line!r}')
    score = _number(parts[col]) if col < len(parts) else None
    if score is None:
      raise DataError(f'{real}:{n}: score {parts[col] if col < len(parts) else None!r} '
                      f'(column {col + 1}) is not a number')
    if not math.isfinite(score):
      raise DataError(f'{real}:{n}: score {parts[col]!r} is not finite')
    rows.append((fold(parts[w]), fold(parts[w + 1]), score))
  if not rows:
    raise DataError(f'{real}: no word pairs found')
  stems = [_POS_SUFFIX.match(w) for a, b, _ in rows for w in (a, b)]
  if all(stems):                     # MEN's lemma form: every word tagged (sun-n)
    it = iter(m.group(1) for m in stems)
    rows = [(next(it), next(it), s) for _, _, s in rows]
  return rows


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
  index = folded_index(words)
  pairs = read_similarity_pairs(path)
  unit = _unit(np.asarray(vectors, np.float64))
  model, human = [], []
  for a, b, score in pairs:
    if a in index and b in index:
      model.append(float(unit[index[a]] @ unit[index[b]]))
      human.append(score)
  oov = len(pairs) - len(model)
  if len(model) < 2:
    warnings.warn(f'{path}: {len(model)} of {len(pairs)} pairs have both words in the '
                  'vocabulary: no Spearman rho (reported as NaN)', stacklevel=2)
  from scipy import stats      # here: scipy.stats takes 0.7 s to import, a run needs it once
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
  for n, line in enumerate(read_text(real, advice=_UTF8).split('\n'), 1):
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    if line.startswith(':'):
      section = line[1:].strip()
      continue
    parts = [fold(w) for w in line.split()]
    if len(parts) != 4:
      raise DataError(f'{real}:{n}: expected 4 words, got {line!r}')
    out.append((section or '', tuple(parts)))
  if not out:
    raise DataError(f'{real}: no analogy questions found')
  return out


def evaluate_analogies(words: Sequence[str], vectors: np.ndarray, path: str,
                       restrict: int = 30000, batch: int = 1024) -> AnalogyResult:
  """3CosAdd accuracy; `words` must be sorted by descending frequency. `restrict` <= 0
  searches every word (as `vocab.max_size=0` keeps every word)."""
  words = list(words)[:restrict] if restrict > 0 else list(words)
  unit = _unit(np.asarray(vectors[:len(words)], np.float32))
  index = folded_index(words)
  # the folded row of every row: another spelling of an answer is the answer (gensim)
  canon = np.array([index[fold(w)] for w in words], np.int64)
  questions = read_analogies(path)
  usable = [(s, [index[w] for w in q]) for s, q in questions if all(w in index for w in q)]
  oov = len(questions) - len(usable)
  if not usable:
    warnings.warn(f'{path}: none of the {len(questions)} questions has all four words among '
                  f'the {len(words)} most frequent: no accuracy (reported as NaN)', stacklevel=2)
  sections: dict[str, list[int]] = {}
  correct = 0
  for lo in range(0, len(usable), batch):
    chunk = usable[lo:lo + batch]
    ids = np.array([q for _, q in chunk])
    query = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]
    sims = query @ unit.T
    for j in range(3):               # every spelling of the three question words
      sims[canon[None, :] == ids[:, j:j + 1]] = -np.inf
    pred = sims.argmax(1)
    hit = canon[pred] == ids[:, 3]
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
  names = [n for n, _ in out]
  twice = sorted({n for n in names if names.count(n) > 1} | ({'analogy'} & set(names)))
  if twice:        # results are keyed by name: one set's score would replace the other's
    raise ConfigError(f'evaluation set names {twice} are used twice or reserved (analogy); '
                      f'name each set: name=path,name2=path2 (got {spec!r})')
  return out
