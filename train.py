"""The one entry point from a checkout: runs any shipped config or config file.

  python train.py --config configs/skipgram.py --workdir /tmp/run [--config.FIELD=VALUE ...]

The same command as `translearn train` (`translearn_jax/cli/train.py` holds
both): `--config` also takes a shipped config's name (`--config skipgram`).
Bad input (a missing file, an unknown config field, an empty corpus, a
workdir in use by another run or holding a run of another config, ...)
prints one line `error: ...` and exits 2; a non-finite loss exits 3 and keeps
the last good checkpoint. SIGTERM exits 0 in every phase: during training it
checkpoints first; see `translearn_jax/training/preemption.py` for the rest.
"""

import sys

from translearn_jax.cli.train import (FAMILIES, LOOP_FAMILIES, _parse_flags, catalogue, entry,
                                      main, run)

# What callers (the tests) use as `train.run(config, workdir)`, `train.FAMILIES`, ...
__all__ = ['FAMILIES', 'LOOP_FAMILIES', '_parse_flags', 'catalogue', 'entry', 'main', 'run']

__doc__ = (__doc__ or "") + catalogue()


if __name__ == '__main__':
  entry(sys.argv)
