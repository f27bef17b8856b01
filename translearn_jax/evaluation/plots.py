"""Pictures of measured transfer: each strategy's paired gain over scratch with its 95% CI.

`gain_plot(rows, path, title, metric)` draws the rows of
`experiments.runs.summarise` (strategies with a `gain_mean`) as horizontal
bars with CI whiskers around zero (green: CI above zero; red: below; grey:
crosses zero, or a single seed), written to a temporary file and renamed into place.
`pyplot()` is the one place matplotlib (the `[plots]` extra) is imported: without
it every plot is skipped, with one logged warning per process naming the extra,
and the results it would have pictured are kept.
"""

from __future__ import annotations

import os

from absl import logging

_warned = False


def pyplot():
  """`matplotlib.pyplot` on the Agg backend, or None when matplotlib is not installed (the
  first time, a warning naming the `[plots]` extra)."""
  global _warned
  try:
    import matplotlib
  except ImportError:
    if not _warned:
      _warned = True
      logging.warning("matplotlib is not installed, so plots are skipped: pip install "
                      "'translearn_jax[plots]' (from a checkout: pip install -e '.[plots]')")
    return None
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def gain_plot(rows: list[dict], path: str, title: str, metric: str = 'accuracy'
              ) -> list[tuple]:
  """Writes the PNG; returns the bars drawn, (label, gain, CI half-width, colour) top
  first ([] and nothing written when no row has a gain over scratch, or without matplotlib)."""
  rows = [r for r in rows if r.get('gain_mean') is not None]
  plt = pyplot() if rows else None
  if plt is None:
    return []
  names = [f'{r["strategy"]} ({r["seeds"]} seeds)' for r in rows]
  gains = [100 * r['gain_mean'] for r in rows]
  cis = [100 * (r.get('gain_ci95') or 0.0) for r in rows]
  colors = ['tab:grey' if r.get('gain_ci95') is None     # one seed: no interval, no verdict
            else 'tab:green' if g - c > 0 else 'tab:red' if g + c < 0 else 'tab:grey'
            for r, g, c in zip(rows, gains, cis)]
  fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(rows) + 1.4))
  y = list(range(len(rows)))[::-1]
  ax.barh(y, gains, xerr=cis, color=colors, alpha=0.8, capsize=4)
  ax.axvline(0, color='black', lw=0.8)
  ax.set_yticks(y, names)
  ax.set_xlabel(f'test {metric} gain over scratch, points (paired, 95% CI)')
  ax.set_title(title)
  ax.grid(axis='x', alpha=0.3)
  save_png(plt, fig, path)
  return list(zip(names, gains, cis, colors))


def budget_curve_axes(ax, budgets, xlabel: str, ylabel: str, title: str) -> None:
  """The axes of a learning curve: budgets on a log x axis (one tick each), labels,
  grid and legend."""
  import matplotlib.ticker
  budgets = sorted(budgets)
  if len(budgets) > 1:
    ax.set_xscale('log')
  ax.set_xticks(budgets, [f'{b:,}' for b in budgets], rotation=45, ha='right')
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())   # no overlapping minor labels
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:      # e.g. a gain panel of a study of scratch alone
    ax.legend()


def save_png(plt, fig, path: str) -> None:
  """Writes `fig` to a temporary file beside `path`, closes it and renames it into place."""
  fig.tight_layout()
  tmp = f'{path}.tmp.png'
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
