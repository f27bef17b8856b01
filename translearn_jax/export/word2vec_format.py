"""Word-vector files: word2vec text and binary, fastText `.vec`, GloVe.

word2vec text: a header line `<count> <dim>`, then `word v1 ... vD` per line.
fastText `.vec` files are word2vec text (rows end in a space, which is
ignored; the first word is often `</s>`).
word2vec binary: the same header, then per word `word<space>` + D
little-endian float32 + `\\n` (word2vec.c layout; the newline is optional when
reading).
GloVe: word2vec text without the header; the width is that of line 1.
fastText `.bin` (a trained model, `cc.en.300.bin`): recognised by its magic number
whatever the other settings say; each word of its dictionary gets the vector fastText's
`get_word_vector` gives (the word's row averaged with its character n-gram rows), read
with gensim's parser of that format (no pickle). `load_fasttext_model` also keeps the
n-gram rows, so that words outside the dictionary get vectors from their n-grams.

`load_word2vec` reads the two word2vec formats strictly: a file whose header,
row widths or size do not match the chosen format raises naming the file and
row (and says so when the other format would fit), as do NaN/Inf values.
`load_vectors` reads any of them, by name or detected (`format='auto'`), and
keeps only the first row of a word that occurs twice (released files have
had such repeats), with a warning. Text rows are parsed in blocks by one
`np.fromstring` each, not value by value in Python.
Files are written to a temporary name and renamed, so an existing export is
never left half-overwritten.
"""

from __future__ import annotations

import mmap
import os
import warnings
from typing import Sequence

import numpy as np

from translearn_jax.data import readers
from translearn_jax.errors import ConfigError, DataError

FORMATS = ('auto', 'word2vec', 'fasttext', 'glove', 'word2vec_binary', 'fasttext_bin')
FASTTEXT_MAGIC = 793712314            # the first int32 of a fastText .bin model


# what word2vec.c, gensim and this module's readers split a row's fields or rows at
_SEPARATORS = frozenset(' \t\n\r\x0b\x0c')


def _check(words: Sequence[str], vectors: np.ndarray) -> None:
  if vectors.ndim != 2 or len(words) != vectors.shape[0]:
    raise ValueError(f'{len(words)} words but vectors of shape {vectors.shape}')
  for w in words:      # ASCII whitespace separates fields; Unicode spaces (NBSP...) do not
    if not w or any(c in _SEPARATORS for c in w):
      raise ValueError(f'word {w!r} is empty or contains whitespace; word2vec files cannot hold it')
  bad = ~np.isfinite(vectors).all(axis=1) if vectors.ndim == 2 else None
  if bad is not None and bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f'{int(bad.sum())} vector(s) hold NaN or infinity (first: row {i + 1}, '
                     f'{words[i]!r}): a diverged run; the file would not load back')


def save_word2vec(path: str, words: Sequence[str], vectors: np.ndarray,
                  binary: bool = False) -> None:
  vectors = np.asarray(vectors, np.float32)
  _check(words, vectors)
  path = readers.write_target(path)      # a symbolic link stays one; its target is replaced
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(f'{len(words)} {vectors.shape[1]}\n'.encode())
      if binary:
        le = vectors.astype('<f4')
        for w, v in zip(words, le):
          f.write(w.encode('utf-8') + b' ' + v.tobytes() + b'\n')
      else:
        # 9 significant digits read back to the same float32 (FLT_DECIMAL_DIG), in one
        # formatting call a row: 2.6x as fast as each float's repr, and a third shorter
        fmt = ' '.join(['%.9g'] * vectors.shape[1])
        for w, v in zip(words, vectors):     # a row at a time: no list of the whole table
          f.write((w + ' ' + fmt % tuple(v.tolist()) + '\n').encode('utf-8'))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_word2vec(path: str, binary: bool = False, option: str = 'binary',
                  unicode_errors: str = 'strict') -> tuple[list[str], np.ndarray]:
  """The words and float32 vectors of a word2vec text or binary file.

  Strict: the header must be two positive integers; a text row must be a word
  and exactly `dim` numbers (trailing whitespace is ignored); a binary file
  must be exactly as long as its header implies; NaN/Inf values raise. Errors
  name the file and the row; when the file would parse in the other format
  the message says to flip `option` (the setting that chose `binary`, e.g.
  'config.init.binary'). Every row is returned, repeated words included.
  """
  words, vecs, _ = _read(path, 'word2vec_binary' if binary else 'word2vec', option,
                         unicode_errors)
  return words, vecs


def load_vectors(path: str, format: str = 'auto', option: str = 'binary',
                 unicode_errors: str = 'strict') -> tuple[list[str], np.ndarray]:
  """The words and float32 vectors of a word-vectors file in one of `FORMATS`.

  'word2vec' (text; 'fasttext' names the same format) and 'word2vec_binary'
  are read as `load_word2vec` reads them. 'glove' is headerless text: the
  width D is the count of numbers on line 1 and every line must be a word and
  exactly D numbers, else an error names the line. A GloVe line with more
  fields, whose field before the last D is not a number, holds a word with
  spaces (glove.840B has '. . .'): the word is the leading fields joined by
  single spaces. 'auto' reads word2vec text when line 1 is two integers (a
  header; so a width-1 GloVe file starting with an integer word is not
  supported) and GloVe when it is a word and numbers. Binary files are read
  only when asked for: a binary file read as text says to set `option`=True.

  Duplicates: a word that occurs again keeps its first row (gensim's rule;
  released files have repeated words, e.g. fastText's cc.ja.300.vec before
  its 2018 fix, and a garbled entry of a GloVe release); later rows are
  dropped with a warning naming the first repeat's line.

  `unicode_errors` ('strict', 'replace', 'ignore'; gensim's option of that name): how a
  word that is not UTF-8 decodes. 'strict' raises naming the row; word2vec.c's own output
  can hold such words (it cuts words at 100 bytes, inside a character).
  """
  if format not in FORMATS:
    raise ValueError(f'vector file format must be one of {FORMATS}, got {format!r}')
  if is_fasttext_bin(path) or format == 'fasttext_bin':
    kv = load_fasttext_model(path)
    return list(kv.index_to_key), np.asarray(kv.vectors, np.float32)
  if unicode_errors not in UNICODE_ERRORS:
    raise ConfigError(f'unicode_errors must be one of {UNICODE_ERRORS}, got {unicode_errors!r}')
  words, vecs, first_line = _read(path, format, option, unicode_errors)
  if len(set(words)) == len(words):
    return words, vecs
  first = {}
  for i, w in enumerate(words):
    first.setdefault(w, i)
  keep = list(first.values())
  i = next(i for i, w in enumerate(words) if first[w] != i)
  where = (lambda r: f'row {r + 1}') if first_line is None else (lambda r: f'line {r + first_line}')
  warnings.warn(f'{path}: {len(words) - len(keep)} rows repeat an earlier word and are dropped '
                f'(first: {words[i]!r} at {where(i)}, first seen at {where(first[words[i]])})',
                stacklevel=2)
  return [words[i] for i in keep], vecs[keep]


def _magic(head: bytes) -> bool:
  return len(head) >= 4 and int.from_bytes(head[:4], 'little') == FASTTEXT_MAGIC


def _old_fasttext_args(head: bytes) -> bool:
  """Whether `head` starts as a model of fastText before its 2017 format (no magic number
  or version: the training arguments come first) does: dim, ws, epoch, minCount, neg,
  wordNgrams, loss (1-4), model (1-3), bucket, minn, maxn, lrUpdateRate and the sampling
  threshold t, each in its range. A text file never reads so."""
  import struct
  if len(head) < 56:
    return False
  dim, ws, epoch, min_count, neg, ngrams, loss, model, bucket, minn, maxn, lr_update = \
      struct.unpack_from('<12i', head)
  t, = struct.unpack_from('<d', head, 48)
  return (0 < dim <= 100_000 and 0 < ws <= 1000 and 0 < epoch <= 100_000
          and 0 <= min_count and 0 <= neg <= 10_000 and 0 < ngrams <= 100 and 1 <= loss <= 4
          and 1 <= model <= 3 and 0 <= bucket <= 1 << 30 and 0 <= minn <= maxn <= 1000
          and 0 < lr_update and 0 <= t < 1)


def is_fasttext_bin(path: str) -> bool:
  """Whether `path` starts with a fastText `.bin` model's magic number; a compressed one
  (`cc.en.300.bin.gz` as downloaded) is an error saying to decompress it."""
  head = readers.head_bytes(path, 56)
  if not (_magic(head) or _old_fasttext_args(head)):   # the content's, archive or not
    return False
  with open(path, 'rb') as f:
    compressed = readers.is_compressed(f.read(8))
  if compressed:
    raise DataError(f'{path}: a compressed fastText .bin model; decompress it first (e.g. '
                    '`gunzip`): the model is read in place, not through the archive')
  return True


def load_fasttext_model(path: str):
  """gensim's `FastTextKeyedVectors` of a fastText `.bin` model: `index_to_key`, `vectors`
  (each dictionary word's `get_word_vector`) and `kv[word]` for any word (from its
  n-grams when outside the dictionary). Errors name the file."""
  from gensim.models.fasttext import load_facebook_vectors
  _check_fasttext_bin(path)     # gensim's parser loops forever on a file cut inside its words
  try:
    kv = load_facebook_vectors(path)
  except Exception as e:  # noqa: BLE001 -- OS, struct, assertion and decoding errors alike
    raise DataError(f'{path}: not a readable fastText .bin model ({type(e).__name__}: '
                    f'{e})') from None
  if not np.isfinite(kv.vectors).all():
    raise DataError(f'{path}: non-finite values in the word vectors')
  return kv


def _check_fasttext_bin(path: str) -> None:
  """Raises naming `path` unless its dictionary and input matrix are complete (the layout
  of fastText's `FastText::saveModel`: header, args, dictionary, input matrix, ...)."""
  import struct

  def check(buf):
    n = len(buf)

    def unpack(fmt, pos):
      size = struct.calcsize(fmt)
      if pos + size > n:
        raise DataError(f'{path}: truncated fastText .bin model (ends at byte {n}, inside '
                        'its header or dictionary)')
      return struct.unpack_from(fmt, buf, pos), pos + size

    (magic, _), pos = unpack('<2i', 0)
    new = magic == FASTTEXT_MAGIC          # else the layout before 2017: no magic, version
    if not new and not _old_fasttext_args(bytes(buf[:56])):
      raise DataError(f'{path}: not a fastText .bin model (no magic number {FASTTEXT_MAGIC}, '
                      'nor the training arguments a model before 2017 starts with)')
    _, pos = unpack('<12id', pos if new else 0)
    (size, _, labels), pos = unpack('<3i', pos)
    if labels > 0:
      raise DataError(f'{path}: a supervised fastText model (it has {labels} labels); word '
                      'vectors come from unsupervised (skipgram/cbow) models')
    if new:
      (_, pruned), pos = unpack('<2q', pos)
    else:
      (_,), pos = unpack('<q', pos)
      pruned = 0
    for i in range(size):
      end = buf.find(b'\0', pos)
      if end < 0:
        raise DataError(f'{path}: truncated fastText .bin model (word {i + 1} of {size} of '
                        'its dictionary is cut off)')
      pos = end + 1 + 9                     # the word, its count (int64) and type (int8)
    pos += 8 * max(pruned, 0)
    (rows, dim), pos = unpack('<2q', pos + int(new))   # after the quantisation flag
    if rows < 0 or dim < 0 or pos + rows * dim * 4 > n:
      raise DataError(f'{path}: truncated fastText .bin model (its {rows} x {dim} input '
                      f'matrix needs {rows * dim * 4} bytes after byte {pos}; the file has '
                      f'{n - pos})')

  _with_buffer(path, check)


def detect_format(path: str) -> str:
  """'word2vec' or 'glove': how `load_vectors(path, 'auto')` reads `path`."""
  return _with_buffer(path, lambda buf: _detect(path, buf))


def _with_buffer(path, fn):
  """fn(the file's bytes): memory-mapped, or decompressed in memory when the file is
  gzip/bzip2/xz (`cc.en.300.vec.gz` as downloaded)."""
  try:
    with open(path, 'rb') as f:
      size = os.fstat(f.fileno()).st_size
      buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b''
      if readers.is_compressed(bytes(buf[:8])):
        data = bytes(buf)
        buf.close()
        buf = readers.decompress(data, path)
  except (OSError, ValueError) as e:
    raise DataError(f'cannot read {path}: {getattr(e, "strerror", None) or e}') from None
  try:
    return fn(buf)
  finally:
    if isinstance(buf, mmap.mmap):
      try:
        buf.close()
      except BufferError:  # a view is still alive; the GC closes it
        pass


def _read(path, fmt, option, errors='strict'):
  """(words, vectors, line number of row 1 or None for binary) of `path` read as `fmt`;
  `errors`: how words that are not UTF-8 decode ('strict' raises naming the row)."""
  return _with_buffer(path, lambda buf: _load(path, buf, fmt, option, errors))


def _load(path, buf, fmt, option, errors='strict'):
  if fmt == 'auto':
    fmt = _detect(path, buf)
  if fmt == 'glove':
    return _load_glove(path, buf, errors)
  binary = fmt == 'word2vec_binary'
  count, dim, start = _header(path, buf)
  if binary and _first_row_is_text(buf, start, dim):
    raise DataError(f'{path}: {option}=True but row 1 reads as a word and {dim} numbers: '
                    f'this looks like a text word2vec file; set {option}=False')
  parse, other = (_parse_binary, _parse_text) if binary else (_parse_text, _parse_binary)
  try:
    words, vecs = parse(path, buf, start, count, dim, errors)
  except DataError as e:
    try:
      other(path, buf, start, count, dim, errors)
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
  return words, vecs, None if binary else 2


_BOM = b'\xef\xbb\xbf'


def _start(buf) -> int:
  """Where line 1 starts: after a UTF-8 byte-order mark (some tools write one)."""
  return len(_BOM) if bytes(buf[:len(_BOM)]) == _BOM else 0


def _first_line(path, buf) -> bytes:
  """Line 1 without its line end (or a byte-order mark); an empty file raises."""
  if len(buf) <= _start(buf):
    raise DataError(f'{path}: empty file (expected a "<count> <dim>" header, or GloVe lines '
                    '"word v1 ... vD")')
  end = buf.find(b'\n')
  return bytes(buf[_start(buf):len(buf) if end < 0 else end]).rstrip()


def _is_header(fields) -> bool:
  return len(fields) == 2 and all(f.lstrip(b'+-').isdigit() for f in fields)


def _glove_width(fields) -> int:
  """How many fields after the first end line 1 as numbers (the GloVe width)."""
  dim = 0
  for f in reversed(fields[1:]):
    try:
      float(f)
    except ValueError:
      break
    dim += 1
  return dim


def _detect(path, buf) -> str:
  line = _first_line(path, buf)
  fields = line.split(b' ')
  if _is_header(line.split()):        # a header split as word2vec's reader (and gensim) split it
    return 'word2vec'
  if _glove_width(fields):
    return 'glove'
  raise DataError(f'{path}:1: neither a "<count> <dim>" header (word2vec, fastText) nor a '
                  f'word and numbers (GloVe): {line[:60].decode("utf-8", "replace")!r}')


def _load_glove(path, buf, errors='strict'):
  line = _first_line(path, buf)
  fields = line.split(b' ')
  if _is_header(line.split()):
    raise DataError(f'{path}:1: a "<count> <dim>" header: this is a word2vec or fastText file, '
                    "not GloVe (format 'word2vec' or 'auto' reads it)")
  dim = _glove_width(fields)
  if not dim:
    raise DataError(f'{path}:1: expected a word and numbers (GloVe), got '
                    f'{line[:60].decode("utf-8", "replace")!r}')
  words, vecs, _ = _parse_rows(path, buf, _start(buf), dim, first_line=1, glove=True,
                               errors=errors)
  return words, vecs, 1


def _header(path, buf) -> tuple[int, int, int]:
  """(count, dim, offset of row 1); the header must be two positive integers."""
  if len(buf) <= _start(buf):
    raise DataError(f'{path}: empty file (expected a "<count> <dim>" header)')
  end = buf.find(b'\n')
  end = len(buf) if end < 0 else end
  line = bytes(buf[_start(buf):min(end, 200)])
  parts = line.split()
  if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
    return int(parts[0]), int(parts[1]), end + 1
  hint = (' (a GloVe file, which has no header? It is text: init.binary=False reads it, as '
          "load_vectors' format 'glove' or 'auto' does)" if len(parts) > 2 else '')
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


UNICODE_ERRORS = ('strict', 'replace', 'ignore')
# word2vec.c cuts words at 100 bytes, which can split a character: gensim's
# `unicode_errors` option, here too
_UNICODE_HINT = (" (word2vec.c cuts long words inside a character; unicode_errors='replace' "
                 "or 'ignore' reads such files, as gensim's option does)")
_F32_MAX = float(np.finfo(np.float32).max)
_BLOCK = 1 << 22                 # bytes of text rows parsed by one np.fromstring
_SPACE = b' \t\n\r\x0b\x0c'


def _parse_text(path, buf, pos, count, dim, errors='strict'):
  words, vecs, more = _parse_rows(path, buf, pos, dim, first_line=2, limit=count,
                                  errors=errors)
  if len(words) < count:
    raise DataError(f'{path}:{len(words) + 2}: file ends after {len(words)} of the {count} '
                    'vectors its header announces')
  if more:
    raise DataError(f'{path}:{count + 2}: more rows than the {count} its header announces')
  return words, vecs


def _parse_rows(path, buf, pos, dim, first_line, limit=None, glove=False, errors='strict'):
  """Text rows `word v1 ... vD` from byte `pos`, up to `limit` rows.

  Returns (words, (n, dim) float32 vectors, whether text is left after row
  `limit`); blank lines at the end are ignored. Rows are split in blocks of
  about 4 MiB and a block's numbers parsed by one `np.fromstring`; a block
  where that fails is read row by row (`_parse_row`), which raises naming the
  first bad line. `first_line`: the line number of the first row; `glove`:
  rows of other widths may hold words with spaces, and messages name lines
  only (word2vec text names rows too).
  """
  size = len(buf)
  while size > pos and buf[size - 1] in _SPACE:
    size -= 1
  words, blocks, n = [], [], 0
  while pos < size and (limit is None or n < limit):
    nl = buf.find(b'\n', pos + _BLOCK, size) if pos + _BLOCK < size else -1
    end = size if nl < 0 else nl
    lines = bytes(buf[pos:end]).split(b'\n')
    if limit is not None and n + len(lines) > limit:
      lines = lines[:limit - n]
      end = pos + sum(len(x) + 1 for x in lines) - 1
    w, v = _parse_block(path, lines, dim, first_line + n, pos, glove, errors)
    words += w
    blocks.append(v)
    n += len(lines)
    pos = end + 1
  vecs = np.concatenate(blocks) if len(blocks) > 1 else (
      blocks[0] if blocks else np.empty((0, dim), np.float32))
  return words, vecs, pos < size


def _parse_block(path, lines, dim, line_no, offset, glove, errors='strict'):
  """The rows `lines` (line `line_no` first, at byte `offset`), parsed in bulk."""
  rows = [x.rstrip() for x in lines]
  regular = [x.count(b' ') == dim for x in rows]
  n_regular = sum(regular)
  if n_regular < len(rows) and not glove:
    return _parse_slowly(path, lines, dim, line_no, offset, glove, errors)
  heads = [x.partition(b' ') for x, r in zip(rows, regular) if r]
  numbers = b' '.join([h[2] for h in heads])
  # np.fromstring takes any run of whitespace as one separator: with single
  # spaces only, each row holds exactly `dim` fields and the count checks them.
  if numbers[:1] == b' ' or any(s in numbers for s in (b'  ', b'\t', b'\r', b'\x0b', b'\x0c')):
    return _parse_slowly(path, lines, dim, line_no, offset, glove, errors)
  try:
    words = b'\n'.join([h[0] for h in heads]).decode('utf-8', errors).split('\n') if heads else []
    vals = np.fromstring(numbers, np.float32, sep=' ')
  except ValueError:  # UnicodeDecodeError included
    return _parse_slowly(path, lines, dim, line_no, offset, glove, errors)
  if vals.size != len(heads) * dim or not all(words) or not np.isfinite(vals).all():
    return _parse_slowly(path, lines, dim, line_no, offset, glove, errors)
  vals = vals.reshape(len(heads), dim)
  if n_regular == len(rows):
    return words, vals
  # GloVe rows of another width: words with spaces, or errors (in line order,
  # since every regular row parsed).
  out_words, out, k = [], np.empty((len(rows), dim), np.float32), 0
  for i, (raw, r) in enumerate(zip(lines, regular)):
    if r:
      out_words.append(words[k])
      out[i] = vals[k]
      k += 1
    else:
      out_words.append(_parse_row(path, raw, out[i], line_no + i, offset, glove, errors))
    offset += len(raw) + 1
  return out_words, out


def _parse_slowly(path, lines, dim, line_no, offset, glove, errors='strict'):
  words, vecs = [], np.empty((len(lines), dim), np.float32)
  for i, raw in enumerate(lines):
    words.append(_parse_row(path, raw, vecs[i], line_no + i, offset, glove, errors))
    offset += len(raw) + 1
  return words, vecs


def _parse_row(path, raw, out, line_no, offset, glove, errors='strict'):
  """Parses one text row (bytes, line `line_no` at byte `offset`) into `out`; its word."""
  dim = len(out)
  row = '' if glove else f' (row {line_no - 1})'
  try:
    line = raw.decode('utf-8', errors)
  except UnicodeDecodeError as e:
    raise DataError(f'{path}:{line_no}: {"line" if glove else f"row {line_no - 1}"} is not '
                    f'UTF-8 text (byte {offset + e.start}){_UNICODE_HINT}') from None
  parts = line.rstrip().split(' ')
  word, nums = parts[0], parts[1:]
  if glove and len(nums) > dim and word:
    try:
      float(parts[-dim - 1])
    except ValueError:  # a word with spaces: every field before the last `dim`
      word, nums = ' '.join(parts[:-dim]), parts[-dim:]
  if len(nums) != dim or not word:
    width = f'{dim} numbers (the width of line 1)' if glove else f'{dim} numbers'
    raise DataError(f'{path}:{line_no}: expected a word and {width}, got {len(nums)} numbers '
                    f'after {word[:40]!r}{row}')
  who = repr(word) if glove else f'row {line_no - 1} ({word!r})'
  try:
    vals = np.array(nums, np.float64)
  except ValueError:
    raise DataError(f'{path}:{line_no}: {who}: not a number in the vector') from None
  bad = ~(np.abs(vals) <= _F32_MAX)  # NaN, Inf, or Inf once cast to float32
  if bad.any():
    raise DataError(f'{path}:{line_no}: {who} has a non-finite value '
                    f'({nums[int(np.argmax(bad))]}; float32 holds up to {_F32_MAX:.4g})')
  out[:] = vals
  return word


def _parse_binary(path, buf, pos, count, dim, errors='strict'):
  words, vecs = [], np.empty((count, dim), np.float32)
  size, width = len(buf), 4 * dim
  for i in range(count):
    if pos >= size:
      raise DataError(f'{path}: file ends after {i} of the {count} vectors its header '
                      f'announces (row {i + 1} missing)')
    sp = buf.find(b' ', pos)
    raw = bytes(buf[pos:size if sp < 0 else sp])
    # only a newline cannot be part of a word: word2vec.c splits words at space, tab and
    # newline alone (a form feed or vertical tab stays in its word), and gensim writes any
    # key; a row read out of step (a wrong header width) runs into the newline after a vector
    if sp < 0 or not raw or b'\n' in raw:
      raise DataError(f'{path}: row {i + 1} at byte {pos}: expected a word and a space, got '
                      f'{raw[:40]!r}')
    try:
      word = raw.decode('utf-8', errors)
    except UnicodeDecodeError:
      raise DataError(f'{path}: row {i + 1} at byte {pos}: word {raw[:40]!r} is not UTF-8'
                      f'{_UNICODE_HINT}') from None
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
