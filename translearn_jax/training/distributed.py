"""Multi-process (multi-host) runs: start-up, agreement between processes, shared workdirs.

`initialize(coordinator_address, num_processes, process_id)` joins a run of several
processes through `jax.distributed.initialize`:

* by hand, with no cluster environment: all three given (the flags `--coordinator_address
  HOST:PORT --num_processes N --process_id K` of `train.py`, or the environment variables
  `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`);
* on a cluster JAX detects (SLURM, TPU pods, Open MPI, ...): none given (`--distributed`).

Giving some but not all of the three is one `ConfigError` naming the missing ones. On CPU
the cross-process collectives are set to gloo first, so two processes on localhost are a
real multi-process run (the tests launch exactly that).

Several processes: SIGTERM is JAX's preemption notice (its notifier takes the signal in
`jax.distributed.initialize`); `preemption_sync(step)`, which the training loop asks at
every step, turns True on every process at the same step once any process got it, so all
checkpoint together there and exit 0. `check_shared_workdir(workdir)` fails at once, on every
process, with one error when the processes do not see the same workdir (checkpoints and
the run's files need a filesystem every process shares).
"""

from __future__ import annotations

import os
import uuid
from typing import Optional

import numpy as np

from translearn_jax.errors import ConfigError, DataError

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


def settings(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1
             ) -> dict:
  """The explicit settings (flags first, then the environment); {} means auto-detection."""
  got = {'coordinator_address': coordinator_address or os.environ.get(ENV['coordinator_address'],
                                                                      ''),
         'num_processes': num_processes or _env_int('num_processes', 0),
         'process_id': process_id if process_id >= 0 else _env_int('process_id', -1)}
  given = {k for k, ok in (('coordinator_address', bool(got['coordinator_address'])),
                           ('num_processes', got['num_processes'] != 0),
                           ('process_id', got['process_id'] != -1)) if ok}
  if not given:
    return {}
  if given != set(got):
    missing = sorted(set(got) - given)
    raise ConfigError('multi-process settings: give all of --coordinator_address, '
                      '--num_processes and --process_id (or none, to let JAX detect the '
                      f'cluster); missing: {", ".join("--" + m for m in missing)} '
                      f'(or {", ".join(ENV[m] for m in missing)})')
  if got['num_processes'] < 1 or not 0 <= got['process_id'] < got['num_processes']:
    raise ConfigError(f'--process_id must be in [0, --num_processes={got["num_processes"]}), '
                      f'got {got["process_id"]}')
  if ':' not in got['coordinator_address']:
    raise ConfigError(f'--coordinator_address must be HOST:PORT, got '
                      f'{got["coordinator_address"]!r}')
  return got


def _env_int(name: str, default: int) -> int:
  raw = os.environ.get(ENV[name], '')
  if not raw:
    return default
  try:
    return int(raw)
  except ValueError:
    raise ConfigError(f'{ENV[name]} must be an integer, got {raw!r}') from None


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
               timeout_s: int = 300) -> None:
  """Joins the multi-process run (see the module doc); call before any other JAX use."""
  import jax
  explicit = settings(coordinator_address, num_processes, process_id)
  if _cpu_only():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(initialization_timeout=timeout_s, **explicit)


def _cpu_only() -> bool:
  """True unless JAX_PLATFORMS names an accelerator or one is installed (checked without
  initialising a backend, which `jax.distributed.initialize` must precede)."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  import importlib.util
  return not any(importlib.util.find_spec(m) for m in (
      'jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'libtpu'))


def process_count() -> int:
  import jax
  return jax.process_count()


def preemption_sync(step: int) -> bool:
  """True on every process at the same step once any of them got SIGTERM (JAX's preemption
  notice; `multihost_utils.reached_preemption_sync_point`: every process must ask at every
  step, with the same steps). Always False in a single-process run."""
  import jax
  if jax.process_count() == 1:
    return False
  from jax.experimental import multihost_utils
  return multihost_utils.reached_preemption_sync_point(step)


def check_shared_workdir(workdir: str) -> None:
  """One `DataError` on every process, at once, unless they all see `workdir` (process 0
  writes a token file there; the others must read it)."""
  import jax
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  token = uuid.uuid4().int & 0x7FFFFFFF
  token = int(multihost_utils.broadcast_one_to_all(np.int32(token)))
  path = os.path.join(workdir, f'.shared-check-{token}')
  if jax.process_index() == 0:
    with open(path, 'w') as f:
      f.write(str(token))
  multihost_utils.sync_global_devices(f'shared workdir {token} written')
  seen = _reads(path, token)
  seen_all = np.asarray(multihost_utils.process_allgather(np.int32(seen)))
  multihost_utils.sync_global_devices(f'shared workdir {token} read')
  if jax.process_index() == 0:
    os.remove(path)
  if not seen_all.all():
    blind = np.flatnonzero(~seen_all.astype(bool)).tolist()
    raise DataError(f'{workdir}: processes {blind} do not see the files process 0 writes '
                    'there; a multi-process run needs a workdir on a filesystem every '
                    'process shares (checkpoints are written collectively)')


def _reads(path: str, token: int) -> bool:
  try:
    with open(path) as f:
      return f.read() == str(token)
  except OSError:
    return False


def describe() -> Optional[str]:
  """'process K of N, D local / T global devices' in a multi-process run, else None."""
  import jax
  if jax.process_count() == 1:
    return None
  return (f'process {jax.process_index()} of {jax.process_count()}, '
          f'{jax.local_device_count()} local / {jax.device_count()} global devices')
