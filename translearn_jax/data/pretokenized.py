"""Pretokenised LM data on disk, streamed per process (issue #19).

`pretraining/lm.py` otherwise reads and tokenises the whole corpus in memory at
every start, on every process. A pretokenised directory is made once, and each
process of a run then memory-maps only its own shards:

  python -m translearn_jax.data.pretokenized --tokenizer RUN/tokenizer.model \\
      --input ../shared/data/pretrain_en --kind text --out /data/pretrain_en.tok \\
      --shards 16 --valid_fraction 0.05 [--seed 0] [--overwrite]
  python train.py --config configs/lm_transformer.py --workdir /tmp/lm \\
      --config.data.kind=pretokenized --config.data.path=/data/pretrain_en.tok

(`--verify DIR` re-hashes every file of a directory against its index.)

Directory layout (format version 1):

* `shard_00000.bin` ...: raw little-endian token ids (uint16 when the vocabulary
  has at most 65536 pieces, else uint32), whole documents one after another,
  each followed by the tokenizer's EOS: the framing of
  `tokenizer.encode_documents`, so a pretokenised run sees the token stream of
  today's in-memory one. Empty documents are skipped (as `lm.read_documents`
  does). Each document goes to the shard holding the fewest tokens so far
  (ties: the lowest index): shards are balanced in tokens and each is a sample
  of the whole corpus (documents interleave), not a contiguous slice of it.
* `valid.bin`: the held-out documents, same format (possibly empty).
* `piece_counts.npy`: how often each id occurs in the training shards (int64, read
  without pickle); a run on the directory records it (`transfer.piece_counts`).
* `index.json`: format and version, dtype, vocab_size, eos_id, per-file token
  and document counts and sha256, the tokenizer's file name and sha256, corpus
  statistics and where the documents came from.
* the tokenizer, copied in (`tokenizer.model`, or `tokenizer.json` with its
  `tokenizer_config.json`).

A directory is written under a hidden temporary sibling (`.NAME.partial-PID`)
and renamed into place when complete, so an interrupted run never leaves a
half-written directory (a `kill -9` leaves only that sibling); an existing
directory is replaced only with `overwrite=True`, and only if it is a
pretokenised one (or empty).

`ShardedTokenStream` serves the batches `lm_data.LMStream` serves (same
interface, same resumable `(epoch, batch)` positions):

* process p of P owns shards p, p+P, p+2P, ... and opens no other shard file;
* rows are windows of `seq_len + 1` tokens with stride `seq_len` inside a shard
  (`lm_data.pack`); a shard's tail that fills no window is dropped, and no
  window spans two shards;
* epoch e, process p: its shards are visited in the order
  `default_rng([seed, e, p, 1]).permutation`, and shard s's windows in the order
  `default_rng([seed, e, s]).permutation`. numpy pads short seeds with zeros, so
  shard 0's order is `LMStream`'s `default_rng([seed, e])`: a one-shard
  directory read by one process serves exactly the in-memory pipeline's batches;
* batches per epoch = min over processes of (windows of its shards) //
  (grad_accum x rows per process), computed from `index.json` (which every
  process reads): the same on every process with no collective. Each process
  drops the rest of its epoch (other windows each epoch);
* `make_batch(epoch, i)` finds its shard by a cumulative sum over the process's
  shards and computes that shard's permutation: a resume jumps to any position
  in O(shards) without replaying batches;
* memory: at most two shards' window permutations (8 bytes per window, a
  batch may straddle two shards) plus the batch; the tokens are paged in by
  the operating system. Nothing grows with the corpus at a fixed shard size.

Pick the shard count as a multiple of the number of processes, with shards of
at least a few batches each (`seq_len + 1` tokens at the very least).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import json
import os
import shutil
import sys
from typing import Iterable, Optional

import numpy as np

from translearn_jax.data import lm_data, readers
from translearn_jax.data.tokenizer import load_tokenizer
from translearn_jax.errors import DataError, TranslearnError

FORMAT, VERSION = 'translearn_jax.pretokenized', 1
INDEX, VALID = 'index.json', 'valid.bin'


PIECE_COUNTS = 'piece_counts.npy'   # occurrences of each id in the training shards

def shard_name(i: int) -> str:
  return f'shard_{i:05d}.bin'


def token_dtype(vocab_size: int) -> np.dtype:
  """Little-endian uint16 when every id fits (vocab_size <= 65536), else uint32."""
  return np.dtype('<u2') if vocab_size <= 1 << 16 else np.dtype('<u4')


def tokenizer_sha256(tok) -> str:
  """sha256 of what `tok.save` writes as its model file (sentencepiece proto, or the
  Hugging Face tokenizer.json text): equal for the same pieces wherever the file lies."""
  data = getattr(tok, 'proto', None)
  if data is None and getattr(tok, 'json', None) is not None:
    data = tok.json.encode('utf-8')
  if data is None:
    raise DataError(f'{getattr(tok, "path", tok)}: cannot fingerprint a tokenizer of type '
                    f'{type(tok).__name__}')
  return hashlib.sha256(data).hexdigest()


# -- writing ---------------------------------------------------------------------

class _TokenFile:
  """One output file: ids appended as `dtype`, counted and hashed as they go."""

  def __init__(self, path: str, dtype: np.dtype, vocab_size: int = 0):
    self.path, self.dtype = path, dtype
    self.f = open(path, 'wb')
    self.sha = hashlib.sha256()
    self.tokens = self.documents = 0
    self.counts = np.zeros(vocab_size, np.int64)   # occurrences of each id

  def write(self, ids: list[int], documents: int) -> None:
    if not ids:
      return
    arr = np.asarray(ids, np.int64)
    limit = np.iinfo(self.dtype).max
    if arr.min() < 0 or arr.max() > limit:
      raise DataError(f'token id {int(arr.max() if arr.max() > limit else arr.min())} does not '
                      f'fit {self.dtype.name} (the tokenizer reports a smaller vocabulary)')
    data = arr.astype(self.dtype).tobytes()
    if len(self.counts):
      self.counts += np.bincount(arr, minlength=len(self.counts))[:len(self.counts)]
    self.f.write(data)
    self.sha.update(data)
    self.tokens += len(arr)
    self.documents += documents

  def close(self) -> dict:
    self.f.flush()
    os.fsync(self.f.fileno())
    self.f.close()
    return {'file': os.path.basename(self.path), 'tokens': self.tokens,
            'documents': self.documents, 'sha256': self.sha.hexdigest()}


def _encode_into(documents: Iterable[str], tok, batch_docs: int, pick, files,
                 max_chars: int = 1 << 23) -> dict:
  """Encodes `documents` `batch_docs` at a time (fewer when they hold over `max_chars`
  characters); a document's ids and EOS go to `files[pick(their count)]`. Returns corpus
  statistics."""
  stats = {'documents': 0, 'tokens': 0, 'words': 0}
  eos = int(tok.eos_id)

  def flush(chunk):
    parts = {}
    for ids in tok.encode_batch(chunk):
      n = len(ids) + 1
      ids_list, count = parts.setdefault(pick(n), ([], [0]))
      ids_list.extend(ids)
      ids_list.append(eos)
      count[0] += 1
      stats['tokens'] += n
    for k in sorted(parts):
      files[k].write(parts[k][0], parts[k][1][0])

  chunk: list[str] = []
  chars = 0
  for doc in documents:
    if not doc.strip():
      continue
    chunk.append(doc)
    chars += len(doc)
    stats['documents'] += 1
    stats['words'] += len(doc.split())
    if len(chunk) >= batch_docs or chars >= max_chars:
      flush(chunk)
      chunk, chars = [], 0
  if chunk:
    flush(chunk)
  return stats


def _check_out(out_dir: str, overwrite: bool) -> None:
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise DataError(f'{out_dir}: exists and is not a directory: not replaced')
  complete = os.path.isfile(os.path.join(out_dir, INDEX))
  if os.listdir(out_dir) and not complete:
    raise DataError(f'{out_dir}: exists and is not a pretokenised directory (no {INDEX}): '
                    f'not replaced; choose another output directory')
  if complete and not overwrite:
    raise DataError(f'{out_dir}: a pretokenised directory already exists there (overwrite=True '
                    f'/ --overwrite replaces it)')


def pretokenize(documents: Iterable[str], tokenizer, out_dir: str, num_shards: int,
                valid_documents: Iterable[str] = (), *, batch_docs: int = 4096,
                overwrite: bool = False, source: Optional[dict] = None) -> dict:
  """Writes the pretokenised directory `out_dir` (see the module docstring); returns its
  index. `documents` and `valid_documents` are iterated once, `batch_docs` documents
  encoded at a time: the corpus's ids are never held whole. `source`: what to record
  about where the documents came from."""
  if int(num_shards) < 1:
    raise DataError(f'the number of shards must be >= 1, got {num_shards}')
  if int(batch_docs) < 1:
    raise DataError(f'batch_docs must be >= 1, got {batch_docs}')
  out_dir = os.path.abspath(out_dir)
  _check_out(out_dir, overwrite)
  parent, name = os.path.split(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.{name}.partial-{os.getpid()}')
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  dtype = token_dtype(tokenizer.vocab_size)
  files: list[_TokenFile] = []
  try:
    files = [_TokenFile(os.path.join(tmp, shard_name(i)), dtype, int(tokenizer.vocab_size))
             for i in range(num_shards)]
    files.append(_TokenFile(os.path.join(tmp, VALID), dtype))
    heap = [(0, i) for i in range(num_shards)]   # (tokens so far, shard): least loaded first

    def least_loaded(n):
      load, i = heapq.heappop(heap)
      heapq.heappush(heap, (load + n, i))
      return i

    train = _encode_into(documents, tokenizer, batch_docs, least_loaded, files)
    if not train['documents']:
      raise DataError('no non-empty documents to pretokenise')
    valid = _encode_into(valid_documents, tokenizer, batch_docs, lambda n: num_shards, files)
    entries = [f.close() for f in files]
    counts = sum(f.counts for f in files[:num_shards])   # the training shards' pieces
    with open(os.path.join(tmp, PIECE_COUNTS), 'wb') as f:
      np.save(f, counts, allow_pickle=False)
    tokenizer.save(os.path.join(tmp, tokenizer.file_name))
    index = {
        'format': FORMAT, 'version': VERSION, 'dtype': dtype.name, 'byteorder': 'little',
        'vocab_size': int(tokenizer.vocab_size), 'eos_id': int(tokenizer.eos_id),
        'tokenizer': {'file': tokenizer.file_name, 'sha256': tokenizer_sha256(tokenizer)},
        'shards': entries[:num_shards], 'valid': entries[num_shards],
        'train_documents': train['documents'], 'train_tokens': train['tokens'],
        'train_words': train['words'], 'valid_documents': valid['documents'],
        'valid_tokens': valid['tokens'], 'valid_words': valid['words'],
        'source': source or {}}
    readers.write_file(os.path.join(tmp, INDEX), json.dumps(index, indent=1).encode('utf-8'))
    readers.fsync_dir(tmp)
    _check_out(out_dir, overwrite)   # nothing appeared there meanwhile
    if os.path.exists(out_dir):
      old = os.path.join(parent, f'.{name}.old-{os.getpid()}')
      os.replace(out_dir, old)
      os.replace(tmp, out_dir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out_dir)
    readers.fsync_dir(parent)
    return index
  finally:
    for f in files:
      if not f.f.closed:
        f.f.close()
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


# -- reading ---------------------------------------------------------------------

_INDEX_FIELDS = ('dtype', 'vocab_size', 'tokenizer', 'shards', 'valid')


def read_index(directory: str) -> dict:
  """`directory`'s index.json, checked (format, version, fields)."""
  path = os.path.join(directory, INDEX)
  if not os.path.isdir(directory):
    raise DataError(f'{directory}: no such directory (a pretokenised directory is made by '
                    f'python -m translearn_jax.data.pretokenized)')
  try:
    with open(path, encoding='utf-8') as f:
      index = json.load(f)
  except FileNotFoundError:
    raise DataError(f'{path}: missing: {directory} is not a pretokenised directory (make one '
                    f'with python -m translearn_jax.data.pretokenized)') from None
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: cannot read it ({e})') from None
  if not isinstance(index, dict) or index.get('format') != FORMAT:
    raise DataError(f'{path}: not a {FORMAT} index')
  if index.get('version') != VERSION:
    raise DataError(f'{path}: format version {index.get("version")!r}; this code reads '
                    f'version {VERSION} (pretokenise again)')
  missing = [k for k in _INDEX_FIELDS if k not in index]
  if missing:
    raise DataError(f'{path}: no field(s) {missing}')
  if index['dtype'] not in ('uint16', 'uint32') or not index['shards']:
    raise DataError(f'{path}: dtype {index["dtype"]!r} with {len(index["shards"])} shards: '
                    f'expected uint16/uint32 and at least one shard')
  return index


def _dtype(index) -> np.dtype:
  return np.dtype('<u2' if index['dtype'] == 'uint16' else '<u4')


def _open_tokens(directory: str, entry: dict, dtype: np.dtype) -> np.ndarray:
  """The file of `entry` memory-mapped, after checking its size against index.json."""
  path = os.path.join(directory, entry['file'])
  expected = int(entry['tokens']) * dtype.itemsize
  try:
    size = os.path.getsize(path)
  except OSError:
    raise DataError(f'{path}: missing (listed in {os.path.join(directory, INDEX)})') from None
  if size != expected:
    raise DataError(f'{path}: {size} bytes, but {INDEX} lists {entry["tokens"]} {dtype.name} '
                    f'tokens ({expected} bytes): a truncated or changed copy (pretokenise '
                    f'again, or copy the directory whole)')
  if not expected:
    return np.zeros((0,), dtype)
  return np.memmap(path, dtype=dtype, mode='r', shape=(int(entry['tokens']),))


def verify(directory: str) -> dict:
  """Re-hashes every token file and the tokenizer file of `directory` against its index;
  the first mismatch is a DataError naming the file. Returns the index."""
  index = read_index(directory)
  for entry in [*index['shards'], index['valid'], index['tokenizer']]:
    path = os.path.join(directory, entry['file'])
    if 'tokens' in entry:
      _open_tokens(directory, entry, _dtype(index))   # the size first: a clearer error
    elif not os.path.isfile(path):
      raise DataError(f'{path}: missing (listed in {os.path.join(directory, INDEX)})')
    if _sha256_file(path) != entry['sha256']:
      raise DataError(f'{path}: sha256 differs from {INDEX}: a corrupted copy')
  return index


def _sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def directory_tokenizer(directory: str, index: Optional[dict] = None):
  """The tokenizer copied into `directory`, checked against the index's sha256."""
  index = index or read_index(directory)
  tok = load_tokenizer(os.path.join(directory, index['tokenizer']['file']))
  check_tokenizer(tok, directory, index)
  return tok


def check_tokenizer(tok, directory: str, index: Optional[dict] = None) -> None:
  """A DataError naming `tok`'s file when it is not the tokenizer `directory` was made with."""
  index = index or read_index(directory)
  want, got = index['tokenizer']['sha256'], tokenizer_sha256(tok)
  if got != want:
    raise DataError(f'{getattr(tok, "path", "the tokenizer")}: sha256 {got[:12]}… differs from '
                    f'the tokenizer {os.path.join(directory, INDEX)} was made with '
                    f'({want[:12]}…, its {index["tokenizer"]["file"]}): the ids would stand '
                    f'for other pieces; use that tokenizer or pretokenise again')


def valid_rows(directory: str, seq_len: int) -> Optional[np.ndarray]:
  """The held-out rows (N, seq_len + 1) int32 in memory, as `lm_data.pack` cuts them from
  the held-out documents' stream; None when the directory holds none."""
  index = read_index(directory)
  if not int(index['valid']['tokens']):
    return None
  stream = np.array(_open_tokens(directory, index['valid'], _dtype(index)), np.int32)
  return lm_data.pack(stream, seq_len, 'held-out')


def valid_documents(directory: str) -> list[np.ndarray]:
  """The held-out documents of a pretokenised directory as int32 piece arrays (each
  without its `eos`), in order; [] when it holds none."""
  index = read_index(directory)
  if not int(index['valid']['tokens']):
    return []
  stream = np.array(_open_tokens(directory, index['valid'], _dtype(index)), np.int32)
  ends = np.flatnonzero(stream == int(index['eos_id']))
  starts = np.concatenate([[0], ends[:-1] + 1])
  return [stream[a:b] for a, b in zip(starts, ends)]


class ShardedTokenStream(lm_data.EpochBatches):
  """`LMStream`'s batches `{'tokens': (accum, rows of this process, seq_len + 1)}` from
  this process's shards of a pretokenised directory (see the module docstring).

  `batch`: the global micro-batch; this process serves `row_stop - row_start` rows of
  it (default: `batch // process_count`). `tokenizer_sha256`: when given, it must be
  the index's (a runner's tokenizer that is not the directory's is an error).
  """

  def __init__(self, directory: str, seq_len: int, batch: int, accum: int, epochs: int,
               seed: int, process_index: int = 0, process_count: int = 1,
               row_start: Optional[int] = None, row_stop: Optional[int] = None,
               tokenizer_sha256: Optional[str] = None):
    self.directory, self.seq_len, self.batch, self.accum = directory, seq_len, batch, accum
    self.epochs, self.seed = epochs, seed
    self.process_index, self.process_count = process_index, process_count
    if not 0 <= process_index < process_count:
      raise DataError(f'process_index {process_index} is not in [0, {process_count})')
    index = self.index = read_index(directory)
    if tokenizer_sha256 is not None and tokenizer_sha256 != index['tokenizer']['sha256']:
      raise DataError(f'{os.path.join(directory, INDEX)}: made with tokenizer sha256 '
                      f'{index["tokenizer"]["sha256"][:12]}…, not this run\'s '
                      f'{tokenizer_sha256[:12]}…')
    if row_start is None:
      if batch % process_count:
        raise DataError(f'a batch of {batch} rows does not split over {process_count} '
                        f'processes')
      row_start = process_index * batch // process_count
      row_stop = row_start + batch // process_count
    self.rows = int(row_stop) - int(row_start)
    self.per_step = accum * self.rows
    shards = index['shards']
    if len(shards) < process_count:
      raise DataError(f'{os.path.join(directory, INDEX)}: {len(shards)} shards for '
                      f'{process_count} processes (each needs one at least; pretokenise '
                      f'with --shards a multiple of {process_count})')
    self.windows = []
    for entry in shards:
      n = max(int(entry['tokens']) - 1, 0) // seq_len
      if n < 1:
        raise DataError(f'{os.path.join(directory, entry["file"])}: {entry["tokens"]} tokens, '
                        f'fewer than one sequence of seq_len + 1 = {seq_len + 1}: pretokenise '
                        f'with fewer shards (--shards) or lower train.seq_length')
      self.windows.append(n)
    per_process = [sum(self.windows[q::process_count]) for q in range(process_count)]
    self.batches_per_epoch = min(per_process) // self.per_step
    if self.batches_per_epoch < 1:
      q = int(np.argmin(per_process))
      raise DataError(f'{directory}: process {q} of {process_count} has {per_process[q]} '
                      f'training sequences, fewer than one step of grad_accum × rows per '
                      f'process = {accum} × {self.rows}; lower them or add data')
    self.min_windows = min(per_process)
    self.mine = list(range(process_index, len(shards), process_count))
    dtype = _dtype(index)
    self._views = {s: lm_data.pack(_open_tokens(directory, shards[s], dtype), seq_len,
                                   shards[s]['file'])
                   for s in self.mine}
    self._plan_cache: tuple = (None, None, None)
    self._perm_cache: dict = {}

  @property
  def total_steps(self) -> int:
    return self.batches_per_epoch * self.epochs

  def shard_order(self, epoch: int) -> tuple[list[int], np.ndarray]:
    """(this process's shards in `epoch`'s order, cumulative window counts)."""
    if self._plan_cache[0] != epoch:
      order = np.random.default_rng([self.seed, epoch, self.process_index, 1]).permutation(
          len(self.mine))
      seq = [self.mine[i] for i in order]
      self._plan_cache = (epoch, seq, np.cumsum([self.windows[s] for s in seq]))
    return self._plan_cache[1], self._plan_cache[2]

  def window_order(self, epoch: int, shard: int) -> np.ndarray:
    """Shard `shard`'s windows in `epoch`'s order (the two most recent are kept)."""
    key = (epoch, shard)
    if key not in self._perm_cache:
      if len(self._perm_cache) >= 2:
        self._perm_cache.pop(next(iter(self._perm_cache)))
      self._perm_cache[key] = np.random.default_rng([self.seed, epoch, shard]).permutation(
          self.windows[shard])
    return self._perm_cache[key]

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.batches_per_epoch:
      raise IndexError(f'batch {index} of an epoch of {self.batches_per_epoch}')
    seq, ends = self.shard_order(epoch)
    lo, hi = index * self.per_step, (index + 1) * self.per_step
    out = np.empty((self.per_step, self.seq_len + 1), np.int32)
    j = int(np.searchsorted(ends, lo, side='right'))
    pos = lo
    while pos < hi:
      start = int(ends[j - 1]) if j else 0
      take = min(hi, int(ends[j])) - pos
      pick = self.window_order(epoch, seq[j])[pos - start:pos - start + take]
      out[pos - lo:pos - lo + take] = self._views[seq[j]][pick]
      pos += take
      j += 1
    return {'tokens': out.reshape(self.accum, self.rows, self.seq_len + 1)}

  def sample_rows(self, n: int) -> np.ndarray:
    """The first `n` windows of this process's shards in index order (int32, in memory;
    at most as many as the process with the fewest has, so every process returns as
    many): a training sample to score, as `train_rows[:n]` of the in-memory runner."""
    n = min(int(n), self.min_windows)
    parts, got = [], 0
    for s in self.mine:
      if got >= n:
        break
      take = min(n - got, self.windows[s])
      parts.append(np.asarray(self._views[s][:take], np.int32))
      got += take
    return np.concatenate(parts)


# -- the command -------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2, like the rest of the project
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def _held_out_split(spec: readers.TextSpec, valid_fraction: float, seed: int):
  """(training documents, held-out documents) generators of one corpus, holding out the
  documents `lm_data.split_documents` would (a first pass counts them)."""
  n = sum(1 for d in readers.read_documents(spec) if d.strip())
  held = lm_data.held_out_mask(n, valid_fraction, seed)

  def part(want):
    i = 0
    for d in readers.read_documents(spec):
      if d.strip():
        if held[i] == want:
          yield d
        i += 1
  return part(False), part(True)


def main(argv=None, prog: str = 'python -m translearn_jax.data.pretokenized') -> int:
  p = _Parser(prog=prog,
              description='Tokenise a corpus once into shards of token ids for '
                          "data.kind='pretokenized' LM runs.")
  p.add_argument('--tokenizer', help='sentencepiece .model or Hugging Face tokenizer.json')
  p.add_argument('--input', help='corpus path spec (file, directory, glob, comma list)')
  p.add_argument('--kind', default='text', choices=readers.TEXT_KINDS)
  p.add_argument('--field', default='text', help='JSONL key / TSV column / TFDS feature')
  p.add_argument('--unit', default='line', help="text: 'line' | 'paragraph' | 'file'")
  p.add_argument('--encoding', default='utf-8')
  p.add_argument('--encoding_fallback', default='')
  p.add_argument('--out', help='the directory to write')
  p.add_argument('--shards', type=int, default=1, help='shard files (a multiple of the '
                 'number of training processes)')
  p.add_argument('--valid_fraction', type=float, default=0.0,
                 help='documents held out (chosen with --seed, as data.valid_fraction)')
  p.add_argument('--valid_input', default='', help='or a separate held-out corpus')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--batch_docs', type=int, default=4096, help='documents encoded at a time')
  p.add_argument('--overwrite', action='store_true', help='replace an existing directory')
  p.add_argument('--verify', metavar='DIR', help='only re-hash DIR against its index')
  args = p.parse_args(argv)
  try:
    if args.verify:
      index = verify(args.verify)
      print(f'{args.verify}: {len(index["shards"])} shards and {VALID} match {INDEX}')
      return 0
    missing = [f'--{k}' for k in ('tokenizer', 'input', 'out') if not getattr(args, k)]
    if missing:
      p.error(f'the following arguments are required: {", ".join(missing)}')
    if not 0 <= args.valid_fraction < 1:
      p.error(f'--valid_fraction must be in [0, 1), got {args.valid_fraction}')
    if args.valid_fraction and args.valid_input:
      p.error('give --valid_fraction or --valid_input, not both')
    _check_out(os.path.abspath(args.out), args.overwrite)   # before reading anything
    tok = load_tokenizer(args.tokenizer)
    spec = readers.TextSpec(kind=args.kind, path=args.input, field=args.field, unit=args.unit,
                            encoding=args.encoding, encoding_fallback=args.encoding_fallback)
    if args.valid_input:
      train = readers.read_documents(spec)
      valid = readers.read_documents(dataclasses.replace(spec, path=args.valid_input))
    elif args.valid_fraction:
      train, valid = _held_out_split(spec, args.valid_fraction, args.seed)
    else:
      train, valid = readers.read_documents(spec), ()
    source = {'input': args.input, 'kind': args.kind, 'field': args.field, 'unit': args.unit,
              'valid_fraction': args.valid_fraction, 'valid_input': args.valid_input,
              'seed': args.seed, 'tokenizer': os.path.abspath(args.tokenizer)}
    index = pretokenize(train, tok, args.out, args.shards, valid, batch_docs=args.batch_docs,
                        overwrite=args.overwrite, source=source)
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'{args.out}: {index["train_documents"]} documents, {index["train_tokens"]} tokens in '
        f'{len(index["shards"])} shards ({index["dtype"]}); {index["valid_documents"]} held-out '
        f'documents, {index["valid_tokens"]} tokens')
  return 0


if __name__ == '__main__':
  sys.exit(main())
