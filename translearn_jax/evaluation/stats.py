"""Summaries over seeds: mean and a 95% confidence interval (Student t)."""

from __future__ import annotations

import math
from typing import Sequence

from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width of the t confidence interval); half-width nan for n < 2."""
  n = len(values)
  if n == 0:
    return float('nan'), float('nan')
  mean = sum(values) / n
  if n < 2:
    return mean, float('nan')
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
