"""Denoising noise (issue #16): BART text infilling and sentence permutation, T5 span
corruption — rates and span lengths as configured on a large sample, exact reconstruction,
identity at rate 0."""

import math

import numpy as np
import pytest

from translearn_jax.data import noising
from translearn_jax.errors import ConfigError

MASK = 0


def spans_of(out, n):
  """(masked pieces, lengths of the spans each mask stands for) of an infilled arange(1, n+1)."""
  kept = [t for t in out if t != MASK]
  assert kept == sorted(kept) and set(kept) <= set(range(1, n + 1))   # order kept, no new ids
  lengths, prev = [], 0
  for t in out + [n + 1]:
    if t == MASK:
      lengths.append(None)
      continue
    if lengths and lengths[-1] is None:
      lengths[-1] = t - prev - 1      # the pieces between the kept neighbours
    prev = t
  return n - len(kept), lengths


def test_text_infilling_masks_the_rate_in_poisson_spans_one_mask_each():
  rng, n = np.random.default_rng(0), 200
  ids = list(range(1, n + 1))
  total, lengths = 0, []
  for _ in range(300):
    out = noising.text_infilling(ids, rng, MASK, mask_rate=0.3, poisson_lambda=3.0)
    masked, ls = spans_of(out, n)
    assert masked == 60                          # round(0.3 · 200), exactly
    assert sum(ls) == masked
    total += masked
    lengths += ls
  lengths = np.array(lengths)
  # Poisson(3): P(0) = e^-3 ≈ 5% of spans insert a mask; non-empty spans average
  # 3 / (1 - e^-3) ≈ 3.16 (a little less: a span is cut at the remaining budget)
  assert 0.02 < (lengths == 0).mean() < 0.09
  assert 2.8 < lengths[lengths > 0].mean() < 3.3
  assert np.bincount(lengths).argmax() in (2, 3)      # the Poisson(3) mode


def test_span_corruption_noises_the_density_in_mean_spans_and_reconstructs():
  rng, n = np.random.default_rng(1), 300
  ids = list(range(1, n + 1))
  sentinels = list(range(1000, 1100))
  span_lengths = []
  for _ in range(200):
    src, tgt = noising.span_corruption(ids, rng, sentinels, noise_density=0.15, mean_span=3.0)
    noised = [t for t in tgt if t < 1000]
    assert len(noised) == 45                     # round(0.15 · 300)
    k = sum(t >= 1000 for t in src)
    assert k == 15 and [t for t in tgt if t >= 1000] == sentinels[:k]
    # sentinel i in the source stands for the pieces after sentinel i in the target
    parts, cur = {}, None
    for t in tgt:
      if t >= 1000:
        cur = t
        parts[cur] = []
      else:
        parts[cur].append(t)
    rebuilt = [p for t in src for p in (parts[t] if t >= 1000 else [t])]
    assert rebuilt == ids
    span_lengths += [len(v) for v in parts.values()]
  assert min(span_lengths) >= 1 and np.mean(span_lengths) == pytest.approx(3.0)


def test_identity_noise_and_sentence_permutation():
  rng = np.random.default_rng(2)
  ids = [5, 6, 7, 9, 8, 3, 9, 4, 4, 9]          # 9 ends a sentence
  assert noising.text_infilling(ids, rng, MASK, mask_rate=0.0) == ids
  assert noising.span_corruption(ids, rng, [100, 101], noise_density=0.0) == (ids, [])
  cfg = noising.NoiseConfig(mask_rate=0.0)
  assert noising.corrupt(ids, rng, cfg, mask_id=MASK) == (ids, ids)
  seen = set()
  for _ in range(50):
    out = noising.sentence_permutation(ids, rng, boundary_ids=[9])
    assert sorted(map(tuple, split(out))) == sorted(map(tuple, split(ids)))
    seen.add(tuple(out))
  assert len(seen) == math.factorial(3)          # every order of the 3 sentences occurs
  a = noising.text_infilling(list(range(1, 101)), np.random.default_rng(7), MASK)
  assert a == noising.text_infilling(list(range(1, 101)), np.random.default_rng(7), MASK)
  with pytest.raises(ConfigError, match='noise.objective'):
    noising.corrupt(ids, rng, noising.NoiseConfig(objective='shuffle'), mask_id=MASK)
  with pytest.raises(ConfigError, match='sentinel'):
    noising.corrupt(ids, rng, noising.NoiseConfig(objective='span_corruption'), mask_id=MASK)


def split(ids, end=9):
  out, cur = [], []
  for t in ids:
    cur.append(t)
    if t == end:
      out.append(cur)
      cur = []
  return out + ([cur] if cur else [])
