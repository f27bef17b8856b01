"""JAX's persistent compilation cache for the command line's runs.

A run compiles its programs (the jitted init, the scanned training step, evaluation)
before its first step: on CPU, seconds that a short run or a sweep of seeds pays again
for every identical program. `translearn train` / `train.py` therefore keep compiled
programs in a directory (`--compilation_cache`, default `$XDG_CACHE_HOME/translearn_jax/xla/<this CPU>`,
`~/.cache/...` without it), as MaxText does with its `jax_cache_dir`, so a rerun of the
same model and shapes loads them instead. JAX keys every entry by the program, its
devices, compile options and the jax/jaxlib versions, so a stale entry is never used. An
explicit `JAX_COMPILATION_CACHE_DIR` in the environment wins (JAX reads it itself); an empty
`--compilation_cache` turns the cache off. Our directory is bounded
(`--compilation_cache_max_gb`, default 4 GiB): past it JAX deletes the least recently used
programs (its LRU cache, which locks the directory with `filelock`), so a home directory
does not fill with the programs of every model and shape ever run. A directory named by
the environment is left as JAX's own settings say (`JAX_COMPILATION_CACHE_MAX_SIZE`): other
programs may write there without the access times that the bounded cache needs.
"""

from __future__ import annotations

import os

ENV = 'JAX_COMPILATION_CACHE_DIR'
DEFAULT_MAX_GB = 4.0


def host_key() -> str:
  """This host's CPU: its architecture and (Linux) instruction-set flags. XLA:CPU compiles
  for the host's features and JAX's cache key does not name them, so a home directory shared
  by machines of different CPUs (a cluster's NFS home) keeps one cache a kind of CPU."""
  import hashlib
  import platform
  flags = ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      flags = next((line.split(':', 1)[1] for line in f
                    if line.startswith(('flags', 'Features'))), '')
  except OSError:
    pass
  digest = hashlib.sha256(' '.join(sorted(flags.split())).encode()).hexdigest()[:12]
  return f'{platform.machine() or "cpu"}-{digest}'


def default_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'translearn_jax', 'xla', host_key())


def max_bytes(max_gb: float) -> int:
  """JAX's `jax_compilation_cache_max_size` for a bound in GiB (<= 0: no bound, -1)."""
  if max_gb != max_gb or max_gb in (float('inf'), float('-inf')):
    raise ValueError(f'--compilation_cache_max_gb: must be a finite number of GiB, got {max_gb}')
  return -1 if max_gb <= 0 else max(1, int(max_gb * 2**30))


def _stamp_unbounded_entries(path: str) -> None:
  """Gives each program an unbounded cache wrote (an earlier version's run, `max_gb <= 0`)
  the access-time file JAX's bounded cache reads for every entry when it evicts (without
  one, every write to the directory fails): its file's modification time."""
  suffix = '-cache'
  for name in os.listdir(path):
    if not name.endswith(suffix):
      continue
    atime = os.path.join(path, name[:-len(suffix)] + '-atime')
    if not os.path.exists(atime):
      try:
        stamp = os.stat(os.path.join(path, name)).st_mtime_ns
        with open(atime, 'wb') as f:
          f.write(stamp.to_bytes(8, 'little'))
      except OSError:             # removed meanwhile, or unwritable: JAX reports it
        pass


def configure(path: str, max_gb: float = DEFAULT_MAX_GB) -> str:
  """Points JAX's persistent cache at `path` ('' : off) unless the environment names one;
  bounds it to `max_gb` GiB (least recently used programs go first; <= 0: unbounded);
  returns the directory in use ('' when off). Call before the first compilation."""
  import jax
  limit = max_bytes(max_gb)
  if os.environ.get(ENV):
    return os.environ[ENV]
  if not path:
    return ''
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:                 # an unwritable home: run without the cache
    return ''
  if limit != -1:
    _stamp_unbounded_entries(path)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_compilation_cache_max_size', limit)
  # our programs compile in well under JAX's default 1 s threshold on accelerators, and
  # in 0.5-2 s each on CPU: keep every one
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path
