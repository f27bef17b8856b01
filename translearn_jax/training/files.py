"""Crash-safe file writes: a file is either its old or its new content, never half of one."""

from __future__ import annotations

import contextlib
import os

from translearn_jax.data import readers
from translearn_jax.data.readers import fsync_dir  # noqa: F401 (the one definition)


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to a temporary file in the same directory, fsyncs it, renames it over `path`.
  A symbolic link is kept and its target replaced; a path that is neither a file nor absent
  (a pipe, `/dev/stdout`) is written directly, as nothing can be renamed over it."""
  path = readers.write_target(path)
  if os.path.exists(path) and not os.path.isfile(path):
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
    return
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
