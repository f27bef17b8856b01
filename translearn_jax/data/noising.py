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
from typing import Sequence

import numpy as np

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
