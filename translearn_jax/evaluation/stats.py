"""Summaries over seeds: mean and a 95% confidence interval (Student t)."""

from __future__ import annotations

import math
from typing import Optional, Sequence


def mean_ci(values: Sequence[float], confidence: float = 0.95
            ) -> tuple[Optional[float], Optional[float]]:
  """(mean, half-width of the t confidence interval); the half-width is None for n < 2
  (one seed has no interval) and both are None for n = 0."""
  n = len(values)
  if n == 0:
    return None, None
  mean = sum(values) / n
  if n < 2:
    return mean, None
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  from scipy import stats      # here: 0.7 s to import, which a run's start need not pay
  return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)


def fmt(mean: Optional[float], ci: Optional[float], scale: float = 100.0, sign: bool = False
        ) -> str:
  """'57.06 ± 1.49' (`scale`d, `sign`: '+14.11'); just the mean when there is no interval
  (a single seed), '–' when there is no value."""
  if mean is None:
    return '–'
  m = f'{scale * mean:+.2f}' if sign else f'{scale * mean:.2f}'
  return m if ci is None else f'{m} ± {scale * ci:.2f}'


def wilson_interval(successes: int, n: int, confidence: float = 0.95
                    ) -> tuple[Optional[float], Optional[float]]:
  """The Wilson score interval of a proportion `successes / n` (what one test set's accuracy
  says about the method, over its examples: inside [0, 1], and not of zero width at 0 or
  n, unlike mean ± t over 0/1 scores); (None, None) for n = 0."""
  if n == 0:
    return None, None
  from scipy import stats
  ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method='wilson')
  return float(ci.low), float(ci.high)
