"""XLA:CPU custom calls written in C++ (`*.cc` beside this file), built at first use.

A kernel's source is compiled with the machine's C++ compiler (`$CXX`, else `g++`, else
`c++`/`clang++`) against the XLA FFI headers that jaxlib ships (`jax.ffi.include_dir()`),
for this CPU (`-march=native`), into a cache directory (`$TRANSLEARN_KERNEL_CACHE`, else
`$XDG_CACHE_HOME/translearn_jax/kernels`, else `~/.cache/translearn_jax/kernels`). The
library's name holds a hash of everything it depends on (the source, the compiler and its
version, jaxlib's version, the CPU's model and flags), so a changed input builds a new one
and a stale one is never loaded. A build goes to a temporary file renamed into place, so
two processes building at once, or a build cut short, never leave a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import metadata

import jax

from translearn_jax.errors import ConfigError

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOCK = threading.Lock()


class KernelUnavailable(ConfigError):
  """A kernel cannot be built or loaded here (no compiler, or the build failed)."""


def cache_dir() -> str:
  path = os.environ.get('TRANSLEARN_KERNEL_CACHE')
  if not path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    path = os.path.join(base, 'translearn_jax', 'kernels')
  return path


def compiler() -> str | None:
  """The C++ compiler kernels are built with, or None."""
  for name in (os.environ.get('CXX'), 'g++', 'c++', 'clang++'):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_signature() -> str:
  """The CPU's model and instruction-set flags (what `-march=native` compiles for)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      lines = [l for l in f if l.startswith(('model name', 'flags', 'Features', 'CPU part'))]
    return ''.join(sorted(set(lines)))
  except OSError:
    return platform.processor() + platform.machine()


def _flags(include: str) -> list[str]:
  return ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-I', include]


def build(name: str) -> str:
  """The path of kernel `name`'s shared library (`name.cc` beside this module), built now if
  the cache has none for this source, compiler, jaxlib and CPU."""
  source = os.path.join(_HERE, f'{name}.cc')
  cxx = compiler()
  if cxx is None:
    raise KernelUnavailable(
        f'the CPU kernel {name} is built from {source} with a C++ compiler, and none was '
        'found (set CXX, or install g++); the XLA step (the default) needs none')
  try:
    version = subprocess.run([cxx, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
  except (OSError, subprocess.SubprocessError) as e:
    raise KernelUnavailable(f'{cxx} --version failed: {e}') from e
  include = jax.ffi.include_dir()
  with open(source, 'rb') as f:
    text = f.read()
  key = hashlib.sha256(b'\0'.join([
      text, cxx.encode(), version.encode(), jax.__version__.encode(),
      metadata.version('jaxlib').encode(),
      _cpu_signature().encode(), ' '.join(_flags('')).encode()])).hexdigest()[:16]
  target_dir = cache_dir()
  library = os.path.join(target_dir, f'{name}-{key}.so')
  if os.path.exists(library):
    return library
  os.makedirs(target_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{name}-', suffix='.so', dir=target_dir)
  os.close(fd)
  try:
    done = subprocess.run([cxx, *_flags(include), source, '-o', tmp], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
      raise KernelUnavailable(
          f'building the CPU kernel {source} with {cxx} failed (exit {done.returncode}):\n'
          + done.stderr[-4000:])
    os.replace(tmp, library)     # atomic: a reader sees no library or a whole one
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return library


@functools.cache
def _registered(name: str, symbol: str) -> str:
  """Builds and loads kernel `name` and registers its FFI handler `symbol` for the CPU
  platform (once a process); returns the custom call target's name."""
  with _LOCK:
    library = ctypes.CDLL(build(name))
    target = f'translearn_{name}_{symbol}'
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform='cpu')
    return target


def target(name: str, symbol: str) -> str:
  """The registered custom call target of `symbol` in kernel `name` (built on first use)."""
  return _registered(name, symbol)


def word2vec_step(mode: str, in_embed: jax.Array, out_embed: jax.Array, tokens: jax.Array,
                  segment: jax.Array, window_ids: jax.Array, negatives: jax.Array,
                  lr: jax.Array, *, window: int, negative_weight_k: int, max_score: float,
                  skip_target: bool, row_cap: float = 0.0, row_cap_cross: float = 0.0
                  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """word2vec's sparse SGD step (`word2vec_cpu.cc`), `mode` 'cbow', 'skipgram' (shared
  negatives) or 'skipgram_sequential' (per-pair negatives, one context offset at a time;
  `negative_weight_k` is then the K draws of each pair): (in_embed, out_embed, summed
  loss, pairs: positions with a context for CBOW, valid (center, context) pairs for
  skip-gram). `row_cap` > 0 (with `row_cap_cross`) is the curvature cap of
  `models.word2vec.apply_rows`, for 'skipgram_sequential' only: each sub-step's rows scaled
  by min(1, row_cap / their summed step curvature). The tables are updated in place when the
  caller donates them (inside a jitted scan they are the carry). Single device, CPU only:
  the caller checks."""
  import jax.numpy as jnp
  import numpy as np
  symbols = {'cbow': 'TranslearnCbowStep', 'skipgram': 'TranslearnSkipgramStep',
             'skipgram_sequential': 'TranslearnSkipgramSequentialStep'}
  table = jax.ShapeDtypeStruct(in_embed.shape, jnp.float32)
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  call = jax.ffi.ffi_call(target('word2vec_cpu', symbols[mode]),
                          (table, table, scalar, scalar), input_output_aliases={0: 0, 1: 1})
  i32 = lambda x: jnp.asarray(x, jnp.int32)   # noqa: E731
  return call(in_embed.astype(jnp.float32), out_embed.astype(jnp.float32), i32(tokens),
              i32(segment), i32(window_ids), i32(negatives), jnp.asarray(lr, jnp.float32),
              window=np.int64(window), negatives=np.int64(negative_weight_k),
              max_score=np.float32(max_score), skip_target=bool(skip_target),
              row_cap=np.float32(row_cap), row_cap_cross=np.float32(row_cap_cross))
