"""Skip-gram in word2vec's update order at a batch that grows with devices: 64 rows × 256
tokens a step (32 devices × 2 rows, 8 × 8, ...) with each row's step bounded by its curvature.

configs/skipgram.py's order (K draws a pair, a step's pairs applied one context offset at a
time) with the curvature cap of large batches (`optim.row_cap=1`,
`optim.row_cap_mode='curvature'`), bounding the rows each of a step's 2·window sub-steps
moves, its cross term (`optim.row_cap_cross`) for the first steps, when a hot row and its
many partners move along each other, and the larger step the cap keeps stable (α0 0.05).
A step's 64 rows come from 64 parts of the epoch (`train.batch_rows='spread'`), as
word2vec's threads each read their own part of the file: 64 consecutive rows are one
stretch of a novel, whose topical words recur within the step and are summed from one
stale value.

Measured on the novels (README, Results: "A large batch's rows from across the epoch"; 5
seeds each, against configs/skipgram.py at batch 2):
- after one epoch, above it on both sets (WordSim-353 +0.095, SimLex-999 +0.054);
- after five, with `--config.optim.learning_rate=0.025` (α0 0.05 then costs any batch
  SimLex-999), level with it (WordSim-353 +0.008 ± 0.011, SimLex-999 -0.003 ± 0.007),
  where consecutive rows trailed by 0.012 on SimLex-999.
On one CPU device the step is the CPU kernel ('auto'; 0.31M words/s end to end on the
novels, stop 49), and configs/skipgram.py at batch 2 is faster still; this config is for
many devices and accelerators (the XLA step), where `--config.model.table_sharding=rows`
gives each device 1/n of the tables and flat per-device traffic.

  python train.py --config configs/skipgram_large_batch.py --workdir /tmp/sg_large
"""

from translearn_jax.configs import skipgram


def get_config():
  config = skipgram.get_config()
  config.train.batch_size = 64                 # rows a step over all devices
  config.optim.row_cap = 1.0                   # each row's step at most its Newton step...
  config.optim.row_cap_mode = 'curvature'      # ...by its summed curvature, each sub-step
  config.optim.row_cap_cross = 0.05            # the rows' joint move in the first steps
  config.optim.learning_rate = 0.05            # α0: the cap keeps this step stable
  config.train.batch_rows = 'spread'           # row r reads the r-th of 64 parts of the epoch
  return config
