"""Seeds under `jax.vmap` vs one after another: the learning-curve runner on MR.

  python benchmarks/vmap_seeds.py --vectors runs/sg_pretrain_en/vectors.txt \
      [--budgets 1000,all] [--seeds 5] [--repeats 3] [--json out.json]

For each strategy (scratch, finetune, feature_extraction) and label budget,
`experiments.learning_curves.CurveRunner` trains the seeds of one cell twice:
all seeds in one compiled, vmapped program, and seed by seed with one compiled
step (the peer). Times are whole cells as a user sees them (compilation,
training, test scoring); the two alternate `--repeats` times and the medians
are compared. Both must give the same accuracies (checked).
Model: configs/curves_mr_skipgram.py (bag of embeddings, 100-d, ~17k-word
vocabulary, batch 50, Adam), MR from ../shared/data/rt_polarity.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import curves_mr_skipgram  # noqa: E402
from translearn_jax.downstream import classification  # noqa: E402
from translearn_jax.experiments import learning_curves as lc  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--vectors', required=True, help='word2vec text vectors (a skip-gram run)')
  ap.add_argument('--budgets', default='1000,all')
  ap.add_argument('--strategies', default='scratch,finetune,feature_extraction')
  ap.add_argument('--seeds', type=int, default=5)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--json', default='')
  args = ap.parse_args()
  config = curves_mr_skipgram.get_config()
  config.init.path = args.vectors
  setup = classification.ClassificationTask(config)
  runner = lc.CurveRunner(setup, config)
  budgets = lc.parse_budgets(args.budgets, len(runner.labels))
  seeds = list(range(args.seeds))
  rows = []
  for strategy in [s.strip() for s in args.strategies.split(',') if s.strip()]:
    for budget in budgets:
      t = {True: [], False: []}
      accs = {}
      for _ in range(args.repeats):
        for vmapped in (True, False):
          acc, secs, _ = runner.run(strategy, budget, seeds, vmapped=vmapped)
          t[vmapped].append(secs)
          accs[vmapped] = acc
      diff = float(np.abs(accs[True] - accs[False]).max())
      if diff > 1e-6:
        raise SystemExit(f'{strategy} at {budget} labels: vmapped and one-by-one accuracies '
                         f'differ by {diff}: the two modes do not train the same models')
      steps = runner.steps_for(budget, min(config.train.batch_size, budget))
      row = {'strategy': strategy, 'budget': budget, 'steps': steps,
             'vmapped_s': float(np.median(t[True])), 'sequential_s': float(np.median(t[False])),
             'max_accuracy_difference': diff}
      row['speedup'] = row['sequential_s'] / row['vmapped_s']
      rows.append(row)
      print(f'{strategy:<20} {budget:>6} labels {steps:>5} steps: vmapped '
            f'{row["vmapped_s"]:6.2f} s, one by one {row["sequential_s"]:6.2f} s, '
            f'speed-up {row["speedup"]:.2f}x (accuracy difference {diff:.1e})', flush=True)
  print(f'\n{len(seeds)} seeds per cell, medians of {args.repeats} alternating repeats')
  print(f'{"strategy":<20} {"labels":>7} {"steps":>6} {"vmapped s":>10} {"one by one s":>13} '
        f'{"speed-up":>9}')
  for r in rows:
    print(f'{r["strategy"]:<20} {r["budget"]:>7} {r["steps"]:>6} {r["vmapped_s"]:>10.2f} '
          f'{r["sequential_s"]:>13.2f} {r["speedup"]:>8.2f}x')
  if args.json:
    metrics.write_json(args.json, {'seeds': len(seeds), 'repeats': args.repeats, 'rows': rows})


if __name__ == '__main__':
  main()
