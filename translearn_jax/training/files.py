"""Crash-safe file writes: a file is either its old or its new content, never half of one."""

from __future__ import annotations

import contextlib
import os

from translearn_jax.data import readers
from translearn_jax.data.readers import fsync_dir  # noqa: F401 (the one definition)


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to a temporary file in the same directory, fsyncs it, renames it over `path`.
  A symbolic link is kept and its target replaced; a device or pipe (`/dev/stdout`, a
  FIFO) is written in place, appended (`readers.writes_in_place`)."""
  if readers.writes_in_place(path):
    with open(path, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  path = readers.write_target(path)
  d = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp{os.getpid()}')
  try:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  fsync_dir(d)
