"""Error types with messages meant for people.

Every error raised for bad input (a file, a line, a config field) is a
`TranslearnError`; `train.py` prints its message on one line and exits 2.
"""


class TranslearnError(Exception):
  """Base class: a problem the user can fix, with a one-line message."""


class DataError(TranslearnError):
  """A data file or dataset is missing, empty, or malformed."""


class ConfigError(TranslearnError):
  """A config field has a bad value or does not exist."""


class NonFiniteLossError(TranslearnError):
  """Training produced a NaN/Inf loss; the last good checkpoint is kept.

  `runs`: for a step over several runs stacked by `jax.vmap` (the seeds of a
  learning curve), the positions of those whose loss was not finite.
  """

  def __init__(self, message: str = '', runs=()):
    super().__init__(message)
    self.runs = list(runs)


class MissingExtraError(TranslearnError):
  """An optional dependency is not installed; the message names the pip extra that brings it."""

  def __init__(self, package: str, extra: str, needed_for: str):
    super().__init__(f"{needed_for} needs {package}, which is not installed: pip install "
                     f"'translearn_jax[{extra}]' (from a checkout: pip install -e '.[{extra}]')")
    self.package, self.extra = package, extra
