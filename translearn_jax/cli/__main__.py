"""`python -m translearn_jax.cli COMMAND ...`: the `translearn` script, without installing it."""

import sys

from translearn_jax.cli import main

if __name__ == '__main__':
  sys.exit(main())
