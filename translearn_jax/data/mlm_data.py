"""Masked-LM rows: documents packed into fixed-width rows, attention kept inside each document.

Each document becomes one or more *segments* `<bos> pieces… <eos>` ([CLS] …
[SEP]) placed one after another in rows of `width` positions. A row carries
three planes (`ROW_PLANES`): the piece ids, the segment id of each position
(1, 2, … within the row; 0 = padding) and the position inside its segment
(restarting at 0). The encoder (`models.encoder`) lets a position attend only
to its own segment, so no attention crosses documents and a packed document
is encoded exactly as it would be alone.

A document longer than the space left in a row is cut: the part that fits
goes in (when at least `min_piece` pieces fit, else the row is closed), the
rest starts the next row as a new segment. Rows waste only the tails shorter
than `min_piece` + 2. Packing is deterministic and done once; rows are then
shuffled per epoch by `lm_data.LMStream` (rows of shape (3, width)).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from translearn_jax.data import lm_data
from translearn_jax.data.tokenizer import BOS, EOS
from translearn_jax.errors import DataError

ROW_PLANES = ('tokens', 'segments', 'positions')


class Packer:
  """Adds documents (piece id lists) to rows of `width`; `rows()` → (N, 3, width) int32."""

  def __init__(self, width: int, min_piece: int = 8, bos: int = BOS, eos: int = EOS):
    if width < min_piece + 2:
      raise DataError(f'row width {width} is too small for a segment of {min_piece} pieces '
                      'plus <bos>/<eos>')
    self.width, self.min_piece, self.bos, self.eos = width, min_piece, bos, eos
    self._done: list[np.ndarray] = []
    self._new_row()
    self.documents = 0
    self.pieces = 0

  def _new_row(self):
    self._row = np.zeros((3, self.width), np.int32)
    self._fill, self._segment = 0, 0

  def _close_row(self):
    if self._fill:
      self._done.append(self._row)
    self._new_row()

  def add(self, ids: Sequence[int]) -> None:
    rest = np.asarray(ids, np.int32)
    if not len(rest):
      return
    self.documents += 1
    self.pieces += len(rest)
    while len(rest):
      space = self.width - self._fill
      take = min(len(rest), space - 2)
      if take < len(rest) and take < self.min_piece:
        self._close_row()
        continue
      seg = np.concatenate([[self.bos], rest[:take], [self.eos]]).astype(np.int32)
      lo, hi = self._fill, self._fill + len(seg)
      self._segment += 1
      self._row[0, lo:hi] = seg
      self._row[1, lo:hi] = self._segment
      self._row[2, lo:hi] = np.arange(len(seg))
      self._fill = hi
      rest = rest[take:]
      if self.width - self._fill < self.min_piece + 2:
        self._close_row()

  def rows(self) -> np.ndarray:
    self._close_row()
    if not self._done:
      return np.zeros((0, 3, self.width), np.int32)
    return np.stack(self._done)


def pack_documents(tokenizer, documents: Iterable[str], width: int, min_piece: int = 8,
                   batch: int = 4096) -> tuple[np.ndarray, dict]:
  """(rows (N, 3, width), stats) of `documents` encoded with `tokenizer` and packed."""
  docs = list(documents)

  def encoded():
    for lo in range(0, len(docs), batch):
      yield from tokenizer.encode_batch(docs[lo:lo + batch])

  return pack_pieces(encoded(), width, min_piece, tokenizer.bos_id, tokenizer.eos_id)


def pack_pieces(documents: Iterable[Sequence[int]], width: int, min_piece: int = 8,
                bos: int = BOS, eos: int = EOS) -> tuple[np.ndarray, dict]:
  """(rows (N, 3, width), stats) of already encoded documents (piece id lists), packed."""
  packer = Packer(width, min_piece, bos, eos)
  for ids in documents:
    packer.add(ids)
  rows = packer.rows()
  real = int((rows[:, 1] > 0).sum())
  return rows, {'documents': packer.documents, 'pieces': packer.pieces, 'rows': len(rows),
                'fill': real / max(rows.size // 3, 1)}


# -- rows from a pretokenised stream (data.kind='pretokenized', issue #19) -------------------

def window_rows(windows: np.ndarray, width: int, min_piece: int = 8, bos: int = BOS,
                eos: int = EOS) -> np.ndarray:
  """Masked-LM rows (N, 3, width) from windows (N, W) of a pretokenised token stream, in
  which every document ends with `eos` (`data.pretokenized`).

  Each window is laid out as `Packer` lays out documents: its runs of pieces between
  `eos` marks become segments `<bos> pieces… <eos>`, one after another, and a run that
  does not fit is cut (when at least `min_piece` of its pieces fit; else the row is
  closed). Pieces of the window that do not fit in the row are not used, nor is a run
  that the window's end cuts to fewer than `min_piece` pieces (a fragment of a document's
  start). Each row depends only on its window, so a stream of windows stays randomly
  accessible and resumable. Padding is segment 0.
  """
  windows = np.asarray(windows)
  out = np.zeros((len(windows), 3, width), np.int32)
  for r, win in enumerate(windows):
    ends = np.flatnonzero(win == eos)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(win)]])
    fill = seg = 0
    for a, b in zip(starts.tolist(), stops.tolist()):
      n = b - a
      if not n:
        continue
      if b == len(win) and n < min_piece:   # the window's end cuts a document short
        break
      take = min(n, width - fill - 2)
      if take < n and take < min_piece:
        break
      seg += 1
      lo, hi = fill, fill + take + 2
      out[r, 0, lo] = bos
      out[r, 0, lo + 1:hi - 1] = win[a:a + take]
      out[r, 0, hi - 1] = eos
      out[r, 1, lo:hi] = seg
      out[r, 2, lo:hi] = np.arange(take + 2)
      fill = hi
      if take < n or width - fill < min_piece + 2:
        break
  return out


class PackedWindows(lm_data.EpochBatches):
  """A token-window stream (`{'tokens': (accum, rows, W)}` batches, e.g.
  `pretokenized.ShardedTokenStream`) served as masked-LM rows `(accum, rows, 3, width)`
  (`window_rows`): same epochs, batches and resumable positions."""

  def __init__(self, windows: lm_data.EpochBatches, width: int, bos: int, eos: int,
               min_piece: int = 8):
    self.windows, self.width, self.bos, self.eos, self.min_piece = (windows, width, bos, eos,
                                                                    min_piece)
    self.epochs, self.batches_per_epoch = windows.epochs, windows.batches_per_epoch

  @property
  def total_steps(self) -> int:
    return self.windows.total_steps

  def batches_in(self, epoch: int) -> int:
    return self.windows.batches_in(epoch)

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    toks = self.windows.make_batch(epoch, index)['tokens']
    rows = window_rows(toks.reshape(-1, toks.shape[-1]), self.width, self.min_piece,
                       self.bos, self.eos)
    return {'tokens': rows.reshape(toks.shape[:-1] + rows.shape[1:])}
