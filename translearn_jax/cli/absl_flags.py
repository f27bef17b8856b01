"""absl flags for the subcommands built on absl (train, sample): help text and parse errors.

absl's own `--help` lists the flags of the `__main__` module, which is the
console script (or `train.py`), not the module defining them; the subcommands
print `flag_help(module)` themselves. Bad flags are one `error:` line, exit 2.
"""

from __future__ import annotations

import sys

from absl import flags

HELP_FLAGS = ('-h', '-help', '--help', '-?', '--helpshort')


def flag_help(module: str) -> str:
  """The help lines of the absl flags that `module` defines (without absl's module header)."""
  return flags.FLAGS.module_help(module).strip().split('\n', 1)[-1]


def parse_absl_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors are one `error:` line and exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    sys.exit(2)
