"""word2vec text and binary vector files (the formats gensim and word2vec.c read).

Text: a header line `<count> <dim>`, then `word v1 ... vD` per line.
Binary: the same header, then per word `word<space>` + D little-endian
float32 + `\\n` (word2vec.c layout). Files are written to a temporary name and
renamed, so an existing export is never left half-overwritten.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from translearn_jax.errors import DataError


def _check(words: Sequence[str], vectors: np.ndarray) -> None:
  if vectors.ndim != 2 or len(words) != vectors.shape[0]:
    raise ValueError(f'{len(words)} words but vectors of shape {vectors.shape}')
  for w in words:
    if not w or any(c.isspace() for c in w):
      raise ValueError(f'word {w!r} is empty or contains whitespace; word2vec files cannot hold it')


def save_word2vec(path: str, words: Sequence[str], vectors: np.ndarray,
                  binary: bool = False) -> None:
  vectors = np.asarray(vectors, np.float32)
  _check(words, vectors)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(f'{len(words)} {vectors.shape[1]}\n'.encode())
      if binary:
        le = vectors.astype('<f4')
        for w, v in zip(words, le):
          f.write(w.encode('utf-8') + b' ' + v.tobytes() + b'\n')
      else:
        for w, v in zip(words, vectors):
          f.write((w + ' ' + ' '.join(repr(float(x)) for x in v) + '\n').encode('utf-8'))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_word2vec(path: str, binary: bool = False) -> tuple[list[str], np.ndarray]:
  try:
    f = open(path, 'rb')
  except OSError as e:
    raise DataError(f'cannot read {path}: {e.strerror}') from None
  with f:
    header = f.readline().split()
    try:
      count, dim = int(header[0]), int(header[1])
    except (IndexError, ValueError):
      raise DataError(f'{path}:1: expected a "<count> <dim>" header') from None
    words, vecs = [], np.empty((count, dim), np.float32)
    if binary:
      for i in range(count):
        word = bytearray()
        while True:
          c = f.read(1)
          if not c:
            raise DataError(f'{path}: file ends after {i} of {count} vectors')
          if c == b' ':
            break
          if c != b'\n':
            word += c
        raw = f.read(4 * dim)
        if len(raw) != 4 * dim:
          raise DataError(f'{path}: vector {i + 1} ({word.decode("utf-8", "replace")}) is truncated')
        words.append(word.decode('utf-8'))
        vecs[i] = np.frombuffer(raw, '<f4')
    else:
      for i in range(count):
        line = f.readline()
        parts = line.decode('utf-8').rstrip('\n').rstrip().split(' ')
        if len(parts) != dim + 1:
          raise DataError(f'{path}:{i + 2}: expected a word and {dim} numbers, '
                          f'got {len(parts)} fields')
        words.append(parts[0])
        try:
          vecs[i] = np.array(parts[1:], np.float32)
        except ValueError:
          raise DataError(f'{path}:{i + 2}: not a number in the vector') from None
  return words, vecs
