"""Noise for denoising seq2seq pretraining (issue #16): BART's text infilling and sentence
permutation, T5's span corruption. Each maps one document's piece ids (a list or 1-D array
without BOS/EOS) to the corrupted source, deterministically in a `numpy.random.Generator`.

* `text_infilling(ids, rng, mask_id, mask_rate, poisson_lambda)` (Lewis et al. 2020, BART):
  spans with lengths drawn from Poisson(λ) are chosen until `mask_rate` of the pieces are
  covered; each span becomes ONE mask piece (a 0-length span inserts a mask), so the
  model also learns how many pieces are missing. The target is the original document.
* `sentence_permutation(ids, rng, boundary_ids)`: the sentences (ending at a piece of
  `boundary_ids`, e.g. '.', '!' or '?') in shuffled order.
* `span_corruption(ids, rng, sentinel_ids, noise_density, mean_span)` (Raffel et al. 2020,
  T5): exactly round(density · n) pieces in round(noised / mean_span) spans of random
  lengths; each span is replaced by a distinct sentinel in the source, and the target is
  the sentinels each followed by the span it stands for.

`NoiseConfig` + `corrupt(ids, rng, cfg)` choose the objective from config fields. A rate of
0 is the identity (source = target), so a denoising model can be checked on clean input.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from translearn_jax.data.bucketing import BucketStream
from translearn_jax.errors import ConfigError


def text_infilling(ids: Sequence[int], rng: np.random.Generator, mask_id: int,
                   mask_rate: float = 0.3, poisson_lambda: float = 3.0) -> list[int]:
  ids = list(ids)
  n = len(ids)
  if not 0 <= mask_rate < 1:
    raise ConfigError(f'noise.mask_rate must be in [0, 1), got {mask_rate}')
  budget = int(round(mask_rate * n))
  if budget == 0:
    return ids
  masked = np.zeros(n, bool)
  inserts: set[int] = set()       # positions before which a 0-length span inserts a mask
  covered, tries = 0, 0
  while covered < budget and tries < 100 * n:
    tries += 1
    length = min(int(rng.poisson(poisson_lambda)), budget - covered)
    start = int(rng.integers(0, n - length + 1)) if length else int(rng.integers(0, n + 1))
    if length == 0:
      inserts.add(start)
      continue
    if masked[start:start + length].any() or (start > 0 and masked[start - 1]) or \
        (start + length < n and masked[start + length]):
      continue                    # spans neither overlap nor touch (each one mask piece)
    masked[start:start + length] = True
    covered += length
  out = []
  for i in range(n + 1):
    if i in inserts and not (i < n and masked[i]) and not (i > 0 and masked[i - 1]):
      out.append(mask_id)
    if i == n:
      break
    if masked[i]:
      if i == 0 or not masked[i - 1]:
        out.append(mask_id)
    else:
      out.append(ids[i])
  return out


def sentence_permutation(ids: Sequence[int], rng: np.random.Generator,
                         boundary_ids: Sequence[int]) -> list[int]:
  ids, bounds = list(ids), set(boundary_ids)
  sentences, cur = [], []
  for t in ids:
    cur.append(t)
    if t in bounds:
      sentences.append(cur)
      cur = []
  if cur:
    sentences.append(cur)
  return [t for k in rng.permutation(len(sentences)) for t in sentences[k]]


def span_corruption(ids: Sequence[int], rng: np.random.Generator, sentinel_ids: Sequence[int],
                    noise_density: float = 0.15, mean_span: float = 3.0
                    ) -> tuple[list[int], list[int]]:
  """(source, target) as T5: span lengths are a random composition of the noised count
  into `round(noised / mean_span)` positive parts, the clean lengths likewise, interleaved
  clean-first."""
  ids = list(ids)
  n = len(ids)
  if not 0 <= noise_density < 1:
    raise ConfigError(f'noise.noise_density must be in [0, 1), got {noise_density}')
  noised = min(max(int(round(noise_density * n)), 1 if noise_density > 0 else 0), n - 1)
  if noised <= 0:
    return ids, []
  spans = max(1, min(int(round(noised / mean_span)), n - noised, len(sentinel_ids)))

  def composition(total: int, parts: int) -> np.ndarray:
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False)) if parts > 1 \
        else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [total]]))
  noise_len, clean_len = composition(noised, spans), composition(n - noised, spans)
  src, tgt, pos = [], [], 0
  for k in range(spans):
    src += ids[pos:pos + clean_len[k]]
    pos += clean_len[k]
    src.append(sentinel_ids[k])
    tgt += [sentinel_ids[k]] + ids[pos:pos + noise_len[k]]
    pos += noise_len[k]
  return src, tgt


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
  objective: str = 'infilling'      # 'infilling' (BART) | 'span_corruption' (T5)
  mask_rate: float = 0.3            # infilling: share of pieces masked
  poisson_lambda: float = 3.0       # infilling: mean span length
  permute_sentences: bool = False   # infilling: shuffle sentences first (BART's full noise)
  noise_density: float = 0.15       # span corruption: share of pieces noised
  mean_span: float = 3.0            # span corruption: mean span length


def corrupt(ids: Sequence[int], rng: np.random.Generator, cfg: NoiseConfig, *, mask_id: int,
            sentinel_ids: Sequence[int] = (), boundary_ids: Sequence[int] = ()
            ) -> tuple[list[int], list[int]]:
  """(source, target) of one document under `cfg`."""
  if cfg.objective == 'infilling':
    src = sentence_permutation(ids, rng, boundary_ids) if cfg.permute_sentences else list(ids)
    return text_infilling(src, rng, mask_id, cfg.mask_rate, cfg.poisson_lambda), list(ids)
  if cfg.objective == 'span_corruption':
    if not sentinel_ids:
      raise ConfigError('noise.objective=span_corruption needs sentinel pieces in the tokenizer')
    return span_corruption(ids, rng, sentinel_ids, cfg.noise_density, cfg.mean_span)
  raise ConfigError(f"noise.objective must be 'infilling' or 'span_corruption', "
                    f'got {cfg.objective!r}')


# -- training rows -------------------------------------------------------------

SENTINEL = '<extra_id_{}>'     # T5's sentinel pieces, added to the tokenizer


def sentinel_pieces(count: int) -> tuple[str, ...]:
  return tuple(SENTINEL.format(k) for k in range(count))


@dataclasses.dataclass(frozen=True)
class NoiseIds:
  """The piece ids the noise and the rows use (from the run's tokenizer)."""
  mask: int
  bos: int
  eos: int
  pad: int
  sentinels: tuple[int, ...] = ()
  boundaries: tuple[int, ...] = ()   # pieces that end a sentence ('.', '!', '?')


def noise_ids(tok, cfg: NoiseConfig, sentinels: int = 0) -> NoiseIds:
  """`NoiseIds` of a tokenizer (`data.tokenizer.Tokenizer`): its mask piece, the first
  `sentinels` sentinel pieces (span corruption; each must be in the vocabulary) and the
  pieces ending in '.', '!' or '?'."""
  special = set(tok.special_ids())
  sent = []
  for piece in sentinel_pieces(sentinels if cfg.objective == 'span_corruption' else 0):
    i = tok.piece_id(piece)
    if i < 0:
      raise ConfigError(f'{tok.path}: the tokenizer has no sentinel piece {piece} (train it '
                        f'with noise.sentinels={sentinels} special pieces)')
    sent.append(i)
  bounds = tuple(i for i in range(tok.vocab_size) if i not in special
                 and tok.id_to_piece(i).rstrip().endswith(('.', '!', '?')))
  return NoiseIds(tok.mask_id, tok.bos_id, tok.eos_id, tok.pad_id, tuple(sent), bounds)


def chunk_documents(docs: Sequence[Sequence[int]], max_len: int) -> list[np.ndarray]:
  """Each document's pieces cut into the fewest consecutive chunks of at most `max_len`,
  of near-equal lengths (no stub of a piece or two at a document's end); empty documents
  are dropped. Every piece of a long document is trained on."""
  out = []
  for d in docs:
    d = np.asarray(d, np.int32)
    if len(d):
      out += np.array_split(d, -(-len(d) // max_len))
  return out


def noised_rows(docs: Sequence[np.ndarray], keys: Sequence[Sequence[int]], cfg: NoiseConfig,
                ids: NoiseIds, max_src: int, max_tgt: int, widths: Sequence[int] = ()
                ) -> dict[str, np.ndarray]:
  """{source, target_in, target_out} (len(docs), width) of the documents corrupted under
  `cfg`, document k with `np.random.default_rng(keys[k])`: target_in = BOS + target,
  target_out = target + EOS (the target cut to `max_tgt - 1`), the source cut to `max_src`.
  width: the smallest of `widths` holding every row (none given: the longest row)."""
  pairs = []
  for d, key in zip(docs, keys):
    src, tgt = corrupt(d, np.random.default_rng(list(key)), cfg, mask_id=ids.mask,
                       sentinel_ids=ids.sentinels, boundary_ids=ids.boundaries)
    pairs.append((src[:max_src], tgt[:max_tgt - 1]))
  need = max([max(len(s), len(t) + 1) for s, t in pairs] + [1])
  width = next((w for w in sorted(widths) if w >= need), need)
  out = {k: np.full((len(pairs), width), ids.pad, np.int32)
         for k in ('source', 'target_in', 'target_out')}
  for r, (s, t) in enumerate(pairs):
    out['source'][r, :len(s)] = s
    out['target_in'][r, :len(t) + 1] = [ids.bos] + t
    out['target_out'][r, :len(t) + 1] = t + [ids.eos]
  return out


class DenoiseStream(BucketStream):
  """Resumable batches `{source, target_in, target_out}` (1, batch, L) of documents noised
  afresh in every epoch (BART's dynamic noise): document k of epoch e is corrupted with
  the generator `[seed, 0, e, k]`, so a resumed run sees exactly the batches it would have.
  Batches are planned as `BucketStream` does, by clean length + 1 (the target's length);
  a batch is as wide as the smallest bucket boundary that holds its noised rows."""

  def __init__(self, docs: Sequence[np.ndarray], cfg: NoiseConfig, ids: NoiseIds,
               max_src: int, max_tgt: int, boundaries: Sequence[int], batch: int, epochs: int,
               seed: int, row_start: int = 0, row_stop: Optional[int] = None):
    lengths = np.asarray([len(d) + 1 for d in docs], np.int64)
    super().__init__({}, lengths, boundaries, batch, epochs, seed, row_start, row_stop)
    self.docs, self.cfg, self.ids = list(docs), cfg, ids
    self.max_src, self.max_tgt = max_src, max_tgt

  def make_batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    _, rows = self._plan(epoch)[index]
    rows = rows[self.row_start:self.row_stop]
    arrays = noised_rows([self.docs[r] for r in rows], [(self.seed, 0, epoch, int(r)) for r in rows],
                         self.cfg, self.ids, self.max_src, self.max_tgt, self.boundaries)
    return {k: a[None] for k, a in arrays.items()}
