"""Seed-paired comparison of one strategy across two transfer runs (e.g. adapted vs not).

  python -m translearn_jax.evaluation.compare runs/A/results.json runs/B/results.json \
      [--strategy finetune] [--other-strategy finetune]

Both files are `results.json` of `train.py` comparisons (classification or
tagging) over the same seeds; prints B − A per seed and its mean ± 95% CI, so
"does domain adaptation help?" is answered with the same pairing as
"does transfer help?". Files that record their seeds and a digest of their test split
(since stop 51) must agree on both: runs that scored different test examples (another
`data.split_seed`, another file) or other seeds are not paired. Older files are paired
by position (the i-th seed of each), unchecked.
"""

from __future__ import annotations

import argparse
import json
import sys

from translearn_jax.errors import DataError
from translearn_jax.evaluation.stats import fmt, mean_ci


def read_results(path: str) -> dict:
  try:
    with open(path) as f:
      out = json.load(f)
    out['rows']
  except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
    raise DataError(f'{path}: not a results.json of a transfer comparison ({e})') from None
  return out


def per_seed(path: str, strategy: str, results: dict | None = None) -> list[float]:
  rows = (results or read_results(path))['rows']
  for r in rows:
    if r['strategy'] == strategy:
      return list(r['test'])
  raise DataError(f'{path}: no strategy {strategy!r} (has {[r["strategy"] for r in rows]})')


def check_pairable(a_path: str, a: dict, b_path: str, b: dict) -> None:
  """Refuses two results files that record different seeds, different test splits or
  different metrics (accuracy against macro-F1 had been paired silently)."""
  for key, what in (('test_digest', 'test examples'), ('seeds', 'seeds'), ('metric', 'metric')):
    if key in a and key in b and a[key] != b[key]:
      raise DataError(f'{a_path} and {b_path} have other {what} ({key} {a[key]} vs '
                      f'{b[key]}): a paired comparison needs the same')


def paired(a: list[float], b: list[float]) -> dict:
  if len(a) != len(b):
    raise DataError(f'the runs have different numbers of seeds ({len(a)} vs {len(b)})')
  diff = [y - x for x, y in zip(a, b)]
  m, h = mean_ci(diff)
  return {'a_mean': mean_ci(a)[0], 'b_mean': mean_ci(b)[0], 'diff': diff, 'mean': m, 'ci95': h}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('a')
  ap.add_argument('b')
  ap.add_argument('--strategy', default='finetune')
  ap.add_argument('--other-strategy', default='', help='strategy in B (default: --strategy)')
  args = ap.parse_args(argv)
  try:
    ra, rb = read_results(args.a), read_results(args.b)
    check_pairable(args.a, ra, args.b, rb)
    r = paired(per_seed(args.a, args.strategy, ra),
               per_seed(args.b, args.other_strategy or args.strategy, rb))
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  n = len(r['diff'])
  print(f'A {100 * r["a_mean"]:.2f}  B {100 * r["b_mean"]:.2f}  B - A per seed: '
        + ' '.join(f'{100 * d:+.2f}' for d in r['diff'])
        + f'  mean {fmt(r["mean"], r["ci95"], sign=True)} '
        + (f'(95% CI, {n} seeds)' if n > 1 else '(one seed: no interval)'))
  return 0


if __name__ == '__main__':
  sys.exit(main())
