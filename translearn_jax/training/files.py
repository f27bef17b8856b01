"""Crash-safe file writes: a file is either its old or its new content, never half of one."""

from __future__ import annotations

import contextlib
import os

from translearn_jax.data import readers
from translearn_jax.data.readers import fsync_dir  # noqa: F401 (the one definition)


def atomic_write(path: str, text: str | bytes) -> None:
  """Writes `text` (str as UTF-8, or bytes) to a temporary file in the same directory,
  fsyncs it, renames it over `path`. A symbolic link is kept and its target replaced; a
  device or pipe (`/dev/stdout`, a FIFO) is written in place, appended
  (`readers.writes_in_place`)."""
  mode, kw = ('b', {}) if isinstance(text, bytes) else ('', {'encoding': 'utf-8'})
  if readers.writes_in_place(path):
    with open(path, 'a' + mode, **kw) as f:
      f.write(text)
    return
  path = readers.write_target(path)
  d = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(d, f'.{os.path.basename(path)}.tmp{os.getpid()}')
  try:
    with open(tmp, 'w' + mode, **kw) as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  fsync_dir(d)
