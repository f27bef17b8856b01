"""Word tokenisation, word vocabularies, and corpora encoded as id arrays."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Iterable, Optional

import numpy as np
import regex

from translearn_jax.data import readers
from translearn_jax.errors import DataError

# Letters/digits, keeping inner apostrophes ("don't", "o'clock"); with combining marks
# (Indic vowel signs, Arabic and Hebrew points, accents NFC cannot compose) as word
# characters when the text has any: `re` has no class for them, `regex` is ~1.4x slower.
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_MARK_RE = regex.compile(r'\p{M}')
_WORD_MARKS_RE = regex.compile(r"[\p{L}\p{N}\p{M}]+(?:['\u2019][\p{L}\p{N}\p{M}]+)*")
# Chinese characters (CJK ideographs) are written without spaces between words: each is a
# word of its own, as BERT's basic tokenizer makes them (else a clause would be one word)
_HAN_RE = re.compile('([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])')


def _lower(text: str) -> str:
  """`text` lowercased; Turkish İ, which lowercases to i + a combining dot, to plain i."""
  return text.lower().replace('i\u0307', 'i')


def fold(word: str) -> str:
  """The case-blind form words are matched in: NFC, lowercased (as `tokenize` makes them)."""
  return _lower(unicodedata.normalize('NFC', word))


def folded_index(words: Iterable[str]) -> dict[str, int]:
  """{folded word: index of its first spelling} (the most frequent one when `words` are
  sorted by frequency, as vocabularies and vector files are)."""
  index: dict[str, int] = {}
  for i, w in enumerate(words):
    index.setdefault(fold(w), i)
  return index


def tokenize(text: str, lowercase: bool = True) -> list[str]:
  """Splits text into word tokens (punctuation dropped), after Unicode NFC normalisation
  (a decomposed 'café' is the composed one); combining marks stay inside their word, and
  each Chinese character (CJK ideograph) is a token of its own. Other scripts written
  without spaces (Japanese kana, Thai) need text segmented beforehand."""
  if not unicodedata.is_normalized('NFC', text):
    text = unicodedata.normalize('NFC', text)
  if lowercase:
    text = _lower(text)
  if _HAN_RE.search(text):
    text = _HAN_RE.sub(r' \1 ', text)
  return (_WORD_MARKS_RE if _MARK_RE.search(text) else _WORD_RE).findall(text)


@dataclasses.dataclass
class EncodedCorpus:
  """A corpus as one flat id array plus a per-token segment (document) id."""
  ids: np.ndarray        # int32 (N,), ids into `vocab`
  segments: np.ndarray   # int32 (N,), non-decreasing document index
  vocab: 'Vocabulary'
  raw_words: int         # tokens read before out-of-vocabulary ones were dropped
  num_documents: int


class Vocabulary:
  """Words sorted by descending count (ties by word); id = rank."""

  def __init__(self, words: list[str], counts: np.ndarray):
    if len(words) != len(counts):
      raise ValueError('words and counts differ in length')
    self.words = list(words)
    self.counts = np.asarray(counts, np.int64)
    self.index = {w: i for i, w in enumerate(self.words)}
    if len(self.index) != len(self.words):
      raise DataError('vocabulary has duplicate words')

  def __len__(self) -> int:
    return len(self.words)

  def __contains__(self, word: str) -> bool:
    return word in self.index

  def get(self, word: str, default: int = -1) -> int:
    return self.index.get(word, default)

  @classmethod
  def from_counts(cls, counts: dict[str, int], min_count: int = 1,
                  max_size: Optional[int] = None, source: str = 'corpus') -> 'Vocabulary':
    items = sorted(((c, w) for w, c in counts.items() if c >= min_count),
                   key=lambda cw: (-cw[0], cw[1]))
    if max_size:
      items = items[:max_size]
    if not items:
      raise DataError(
          f'vocabulary of {source} is empty: no word occurs at least '
          f'min_count={min_count} times ({len(counts)} distinct words, most frequent '
          f'{max(counts.values()) if counts else 0} times); lower vocab.min_count')
    return cls([w for _, w in items], np.array([c for c, _ in items], np.int64))

  def save(self, path: str) -> None:
    """Writes `word<TAB>count` lines atomically."""
    readers.write_file(path, ''.join(f'{w}\t{int(c)}\n' for w, c in
                                     zip(self.words, self.counts)).encode('utf-8'))

  @classmethod
  def load(cls, path: str) -> 'Vocabulary':
    words, counts = [], []
    try:
      f = open(path, encoding='utf-8')
    except OSError as e:
      raise DataError(f'cannot read vocabulary {path}: {e.strerror}') from None
    with f:
      for n, line in enumerate(f, 1):
        parts = line.rstrip('\n').split('\t')
        if len(parts) != 2 or not parts[1].isdigit():
          raise DataError(f'{path}:{n}: expected "word<TAB>count"')
        words.append(parts[0])
        counts.append(int(parts[1]))
    return cls(words, np.array(counts, np.int64))


def encode_corpus(documents: Iterable[str], min_count: int = 5,
                  max_size: Optional[int] = None, lowercase: bool = True,
                  max_document_words: int = 10000, source: str = 'corpus',
                  vocab: Optional[Vocabulary] = None) -> EncodedCorpus:
  """Tokenises documents in one pass and encodes them against a vocabulary.

  Words are given provisional ids in order of first appearance; the
  vocabulary (built here unless given) is then applied with one vectorised
  remap, dropping out-of-vocabulary words as word2vec does. Documents longer
  than `max_document_words` are split (gensim's limit is 10,000).
  """
  provisional: dict[str, int] = {}
  chunks, seg_chunks = [], []
  raw = 0
  n_docs = 0
  for doc in documents:
    toks = tokenize(doc, lowercase)
    if not toks:
      continue
    ids = np.fromiter((provisional.setdefault(t, len(provisional)) for t in toks),
                      np.int32, len(toks))
    raw += len(toks)
    for start in range(0, len(ids), max_document_words):
      part = ids[start:start + max_document_words]
      chunks.append(part)
      seg_chunks.append(np.full(len(part), n_docs, np.int32))
      n_docs += 1
  if raw == 0:
    raise DataError(f'{source} is empty: no words found')
  flat = np.concatenate(chunks)
  segs = np.concatenate(seg_chunks)
  words = list(provisional)  # insertion order == provisional id
  if vocab is None:
    counts = np.bincount(flat, minlength=len(words))
    vocab = Vocabulary.from_counts(dict(zip(words, counts.tolist())), min_count,
                                   max_size, source)
  remap = np.array([vocab.get(w) for w in words], np.int32)
  final = remap[flat]
  keep = final >= 0
  return EncodedCorpus(ids=final[keep], segments=segs[keep], vocab=vocab, raw_words=raw,
                       num_documents=n_docs)
