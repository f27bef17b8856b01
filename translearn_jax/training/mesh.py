"""Device mesh and batch sharding for data parallelism.

One mesh axis, `data`, spans every device of every process. Parameters are
replicated; batches are split along their batch axis. Multi-host runs call
`jax.distributed.initialize()` first (see `train.py --distributed`); each
process then loads only its rows of the global batch and
`jax.make_array_from_process_local_data` assembles the global array.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from translearn_jax.errors import ConfigError

DATA = 'data'


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D ('data',) mesh over all devices (or the first `num_devices`)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ConfigError(f'mesh asks for {num_devices} devices, only {len(devices)} exist')
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  spec = [None] * batch_axis + [DATA]
  return NamedSharding(mesh, P(*spec))


def process_rows(global_batch: int, mesh: Mesh) -> tuple[int, int]:
  """[start, stop) of the global batch rows this process loads."""
  n_dev = mesh.devices.size
  if global_batch % n_dev:
    raise ConfigError(f'batch size {global_batch} is not divisible by the {n_dev} devices '
                      'of the mesh (config field: batch_size)')
  per_proc = global_batch // jax.process_count()
  start = jax.process_index() * per_proc
  return start, start + per_proc


def shard_batch(local: Mapping[str, Any], mesh: Mesh, batch_axis: int = 0) -> dict:
  """Host arrays (this process's rows) -> global arrays sharded on `data`."""
  sharding = batch_sharding(mesh, batch_axis)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
