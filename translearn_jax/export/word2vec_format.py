"""word2vec text and binary vector files (the formats gensim and word2vec.c read).

Text: a header line `<count> <dim>`, then `word v1 ... vD` per line.
Binary: the same header, then per word `word<space>` + D little-endian
float32 + `\\n` (word2vec.c layout; the newline is optional when reading).
`load_word2vec` is strict about both: a file whose header, row widths or size
do not match the chosen format raises naming the file and row (and says so
when the other format would fit), as do NaN/Inf values. Files are written to
a temporary name and renamed, so an existing export is never left
half-overwritten.
"""

from __future__ import annotations

import mmap
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


def load_word2vec(path: str, binary: bool = False, option: str = 'binary'
                  ) -> tuple[list[str], np.ndarray]:
  """The words and float32 vectors of a word2vec text or binary file.

  Strict: the header must be two positive integers; a text row must be a word
  and exactly `dim` numbers; a binary file must be exactly as long as its
  header implies; NaN/Inf values raise. Errors name the file and the row; when
  the file would parse in the other format the message says to flip `option`
  (the setting that chose `binary`, e.g. 'config.init.binary').
  """
  try:
    with open(path, 'rb') as f:
      size = os.fstat(f.fileno()).st_size
      buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b''
  except (OSError, ValueError) as e:
    raise DataError(f'cannot read {path}: {getattr(e, "strerror", None) or e}') from None
  try:
    return _load(path, buf, binary, option)
  finally:
    if isinstance(buf, mmap.mmap):
      try:
        buf.close()
      except BufferError:  # a view is still alive; the GC closes it
        pass


def _load(path, buf, binary, option):
  count, dim, start = _header(path, buf)
  if binary and _first_row_is_text(buf, start, dim):
    raise DataError(f'{path}: {option}=True but row 1 reads as a word and {dim} numbers: '
                    f'this looks like a text word2vec file; set {option}=False')
  parse, other = (_parse_binary, _parse_text) if binary else (_parse_text, _parse_binary)
  try:
    words, vecs = parse(path, buf, start, count, dim)
  except DataError as e:
    try:
      other(path, buf, start, count, dim)
    except DataError:
      raise e from None
    kind = 'text' if binary else 'binary'
    raise DataError(f'{e}; {option}={binary} but the file parses as a {kind} word2vec '
                    f'file: set {option}={not binary}') from None
  bad = ~np.isfinite(vecs).all(axis=1)
  if bad.any():  # binary only: text rows are checked as they are parsed
    i = int(np.argmax(bad))
    raise DataError(f'{path}: row {i + 1} ({words[i]!r}) has a non-finite value '
                    f'({vecs[i][~np.isfinite(vecs[i])][0]})')
  return words, vecs


def _header(path, buf) -> tuple[int, int, int]:
  """(count, dim, offset of row 1); the header must be two positive integers."""
  if not len(buf):
    raise DataError(f'{path}: empty file (expected a "<count> <dim>" header)')
  end = buf.find(b'\n')
  end = len(buf) if end < 0 else end
  line = bytes(buf[:min(end, 200)])
  parts = line.split()
  if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
    return int(parts[0]), int(parts[1]), end + 1
  hint = ' (a GloVe-style file without a header? prepend "<count> <dim>")' if len(parts) > 2 else ''
  raise DataError(f'{path}:1: expected a "<count> <dim>" header of two positive integers, '
                  f'got {line[:60].decode("utf-8", "replace")!r}{hint}')


def _first_row_is_text(buf, start: int, dim: int) -> bool:
  end = buf.find(b'\n', start)
  end = len(buf) if end < 0 else end
  try:
    parts = bytes(buf[start:end]).decode('utf-8').rstrip().split(' ')
    if len(parts) != dim + 1:
      return False
    [float(x) for x in parts[1:]]
  except ValueError:  # UnicodeDecodeError included
    return False
  return True


_F32_MAX = float(np.finfo(np.float32).max)


def _parse_text(path, buf, pos, count, dim):
  words, vecs = [], np.empty((count, dim), np.float32)
  size = len(buf)
  for i in range(count):
    line_no = i + 2
    if pos >= size:
      raise DataError(f'{path}:{line_no}: file ends after {i} of the {count} vectors '
                      'its header announces')
    end = buf.find(b'\n', pos)
    end = size if end < 0 else end
    try:
      line = bytes(buf[pos:end]).decode('utf-8')
    except UnicodeDecodeError as e:
      raise DataError(f'{path}:{line_no}: row {i + 1} is not UTF-8 text (byte {pos + e.start})'
                      ) from None
    pos = end + 1
    parts = line.rstrip().split(' ')
    if len(parts) != dim + 1 or not parts[0]:
      raise DataError(f'{path}:{line_no}: expected a word and {dim} numbers, got '
                      f'{len(parts) - 1} numbers after {parts[0][:40]!r} (row {i + 1})')
    try:
      row = np.array(parts[1:], np.float64)
    except ValueError:
      raise DataError(f'{path}:{line_no}: row {i + 1} ({parts[0]!r}): not a number in the '
                      'vector') from None
    bad = ~(np.abs(row) <= _F32_MAX)  # NaN, Inf, or Inf once cast to float32
    if bad.any():
      raise DataError(f'{path}:{line_no}: row {i + 1} ({parts[0]!r}) has a non-finite value '
                      f'({parts[1 + int(np.argmax(bad))]}; float32 holds up to {_F32_MAX:.4g})')
    words.append(parts[0])
    vecs[i] = row
  if bytes(buf[pos:]).strip():
    raise DataError(f'{path}:{count + 2}: more rows than the {count} its header announces')
  return words, vecs


def _parse_binary(path, buf, pos, count, dim):
  words, vecs = [], np.empty((count, dim), np.float32)
  size, width = len(buf), 4 * dim
  for i in range(count):
    if pos >= size:
      raise DataError(f'{path}: file ends after {i} of the {count} vectors its header '
                      f'announces (row {i + 1} missing)')
    sp = buf.find(b' ', pos)
    raw = bytes(buf[pos:size if sp < 0 else sp])
    if sp < 0 or not raw or any(c in raw for c in b'\t\n\r\x0b\x0c'):
      raise DataError(f'{path}: row {i + 1} at byte {pos}: expected a word and a space, got '
                      f'{raw[:40]!r}')
    try:
      word = raw.decode('utf-8')
    except UnicodeDecodeError:
      raise DataError(f'{path}: row {i + 1} at byte {pos}: word {raw[:40]!r} is not UTF-8'
                      ) from None
    pos = sp + 1
    if pos + width > size:
      raise DataError(f'{path}: row {i + 1} ({word!r}): file ends {pos + width - size} bytes '
                      f'short of its {dim} float32 values')
    vecs[i] = np.frombuffer(bytes(buf[pos:pos + width]), '<f4')
    words.append(word)
    pos += width
    if buf[pos:pos + 1] == b'\n':
      pos += 1
  if pos != size:
    raise DataError(f'{path}: {size - pos} bytes after row {count}, the last row its header '
                    'announces (file longer than the header implies)')
  return words, vecs
