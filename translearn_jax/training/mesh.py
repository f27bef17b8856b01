"""Device mesh, logical-axis rules and shardings (data parallelism, FSDP, tensor parallelism).

The mesh always has three named axes, `data`, `fsdp` and `tensor` (size-1 axes
cost nothing). A run sets their sizes with `config.mesh.data`, `mesh.fsdp` and
`mesh.tensor`; one of them may be -1, the devices that remain. Their product
must equal the devices used (`config.num_devices`, 0: all). `make_mesh(n)` with
a plain count is the 1-D data-parallel mesh of before: data=n, fsdp=1, tensor=1.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`,
`norm`, ...; see `models/layers.py`), and activations `batch` and `length`.
One rules table per run maps them to mesh axes (`DEFAULT_RULES`): FSDP shards
weights along `embed` over `fsdp`, tensor parallelism shards heads, MLP and
vocabulary over `tensor`, and the batch is split over (`data`, `fsdp`).
Rules are tried in order; mesh axes of size 1 are left out of them first, so a
later rule for the same logical axis is its fallback (`mlp` goes to `tensor`,
or to `fsdp` when there is no tensor parallelism).
`config.mesh.rules` overrides entries of it with a string such as
`'embed=fsdp,mlp=tensor,mlp=fsdp,batch=data+fsdp,vocab='`: comma-separated
`logical=mesh axes`, several mesh axes joined by `+`, nothing after `=` for
replicated; the entries of a logical axis named there replace all its default
ones (in the order given). A dimension that the mapped mesh axes do not
divide evenly is replicated instead (e.g. a vocabulary of 50257 over `tensor` 4).

Multi-host runs call `jax.distributed.initialize()` first (see
`train.py --distributed`); each process then loads only its rows of the global
batch and `jax.make_array_from_process_local_data` assembles the global array.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from translearn_jax.errors import ConfigError

DATA, FSDP, TENSOR = 'data', 'fsdp', 'tensor'
AXES = (DATA, FSDP, TENSOR)
BATCH_AXES = (DATA, FSDP)

# logical axis -> mesh axes (None: replicated), in priority order (flax's rule format).
# A later entry of the same logical axis is its fallback: it applies when the earlier
# one's mesh axes are all of size 1, or already used by another dimension of the array.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ('batch', BATCH_AXES),
    ('length', None),
    ('embed', FSDP),
    ('mlp', TENSOR),
    ('heads', TENSOR),
    ('kv', None),
    ('head_dim', None),
    ('vocab', TENSOR),
    ('norm', None),
    # without tensor parallelism, FSDP also shards what has no `embed` axis (biases)
    ('mlp', FSDP),
    ('heads', FSDP),
    ('vocab', FSDP),
)


def _as_dict(spec: Any) -> dict:
  if spec is None:
    return {}
  return dict(spec.to_dict() if hasattr(spec, 'to_dict') else spec)


def mesh_sizes(spec: Optional[Mapping[str, Any]], num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) of `spec` over `num_devices`; a missing field is 1, but a missing
  `data` is -1 when no other axis is."""
  spec = _as_dict(spec)
  unknown = sorted(set(spec) - set(AXES) - {'rules'})
  if unknown:
    raise ConfigError(f'config.mesh.{unknown[0]}: unknown mesh field; the mesh axes are '
                      f'{", ".join(AXES)} (and mesh.rules)')
  sizes = []
  data_default = 1 if -1 in (spec.get(FSDP), spec.get(TENSOR)) else -1
  for axis, default in zip(AXES, (data_default, 1, 1)):
    v = spec.get(axis, default)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (v < 1 and v != -1):
      raise ConfigError(f'config.mesh.{axis}: must be a positive integer or -1 (the devices '
                        f'that remain), got {v!r}')
    sizes.append(int(v))
  rest = [a for a, s in zip(AXES, sizes) if s == -1]
  if len(rest) > 1:
    raise ConfigError(f'config.mesh.{rest[1]}: only one mesh axis may be -1 '
                      f'(mesh.{rest[0]} already is; set it to a size)')
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if rest:
    if num_devices % fixed:
      raise ConfigError(f'config.mesh.{rest[0]}=-1: the other mesh axes ({fixed} devices) do '
                        f'not divide the {num_devices} devices used')
    sizes[AXES.index(rest[0])] = num_devices // fixed
  elif fixed != num_devices:
    shown = ' × '.join(f'mesh.{a}={s}' for a, s in zip(AXES, sizes))
    raise ConfigError(f'config.mesh: {shown} = {fixed} devices, but {num_devices} are used '
                      '(config.num_devices, 0: all); set one of mesh.data, mesh.fsdp, '
                      'mesh.tensor to -1 or make their product match')
  return tuple(sizes)


def make_mesh(spec: Any = None, num_devices: Optional[int] = None) -> Mesh:
  """The ('data', 'fsdp', 'tensor') mesh over the first `num_devices` devices (None/0: all).

  `spec` is a mapping with the axis sizes (`config.mesh`), or, as before, a plain
  device count (or None) for a data-parallel mesh: `make_mesh(4)` is data=4.
  """
  if spec is None or isinstance(spec, (int, np.integer)):
    spec, num_devices = {}, (spec or num_devices)
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ConfigError(f'config.num_devices: the mesh asks for {num_devices} devices, '
                        f'only {len(devices)} exist')
    devices = devices[:num_devices]
  sizes = mesh_sizes(spec, len(devices))
  return Mesh(np.asarray(devices).reshape(sizes), AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def mesh_from_config(config) -> Mesh:
  """The run's mesh: `config.mesh` (absent: data-parallel) over `config.num_devices`."""
  return make_mesh(_as_dict(config.get('mesh')), config.get('num_devices') or None)


def parse_rules(text: str, field: str = 'mesh.rules') -> tuple[tuple[str, Any], ...]:
  """`DEFAULT_RULES` with the entries of `text` ('embed=fsdp,batch=data+fsdp,vocab=') in
  place of the default entries of the logical axes they name (at the first one's place;
  a logical axis not in the defaults is added at the end)."""
  overrides: dict[str, list] = {}
  for item in (text or '').split(','):
    item = item.strip()
    if not item:
      continue
    if '=' not in item:
      raise ConfigError(f'config.{field}: {item!r} is not `logical=mesh axes` '
                        "(e.g. 'embed=fsdp,batch=data+fsdp,vocab=')")
    name, targets = (s.strip() for s in item.split('=', 1))
    axes = tuple(a.strip() for a in targets.split('+') if a.strip())
    bad = [a for a in axes if a not in AXES]
    if not name or bad:
      raise ConfigError(f'config.{field}: {item!r}: ' + (
          f'mesh axis {bad[0]!r} is not one of {", ".join(AXES)}' if bad
          else 'no logical axis name before `=`'))
    overrides.setdefault(name, []).append(
        None if not axes else axes[0] if len(axes) == 1 else axes)
  rules, placed = [], set()
  for n, m in DEFAULT_RULES:
    if n not in overrides:
      rules.append((n, m))
    elif n not in placed:
      placed.add(n)
      rules.extend((n, t) for t in overrides[n])
  unknown = [n for n in overrides if n not in placed]
  if unknown:     # a misspelt name ('embd') placed nothing, silently
    known = sorted({n for n, _ in DEFAULT_RULES})
    warnings.warn(f'config.{field}: logical axis {unknown[0]!r} is none that the shipped '
                  f'models name ({", ".join(known)}); it is added, and places nothing unless '
                  'a model of yours names it', stacklevel=2)
  rules.extend((n, t) for n, ts in overrides.items() if n not in placed for t in ts)
  return tuple(rules)


def rules_from_config(config) -> tuple[tuple[str, Any], ...]:
  """The run's rules table: `DEFAULT_RULES` overridden by `config.mesh.rules`."""
  return parse_rules(_as_dict(config.get('mesh')).get('rules', ''))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes a batch is split over: those of ('data', 'fsdp') the mesh has."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Axis `batch_axis` split over ('data', 'fsdp'); other axes (and `tensor`) replicated."""
  spec = [None] * batch_axis + [batch_axes(mesh)]
  return NamedSharding(mesh, P(*spec))


def batch_ways(mesh: Mesh) -> int:
  """How many pieces a batch is split into: data × fsdp."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def require_batch_split(rows: int, mesh: Mesh, field: str, error=ConfigError) -> None:
  """A batch of `rows` must split over the mesh's batch shards: else one `error` naming
  `field`."""
  ways = batch_ways(mesh)
  if rows % ways:
    raise error(f"{field}={rows} does not split over the mesh's {ways} batch shards "
                '(data x fsdp)')


def jit_step(step, mesh: Mesh, shardings=None, replicated_args: int = 0):
  """`jax.jit` of a step `(state, batch, *more) -> (state, metrics)` that donates the state.
  With `shardings` (the state's, over `mesh`) the state keeps that placement, the batch
  is split over the batch axes and the `replicated_args` arguments after it and the
  metrics are replicated; without, placement is left to the inputs."""
  if shardings is None:
    return jax.jit(step, donate_argnums=0)
  repl = replicated(mesh)
  return jax.jit(step, donate_argnums=0,
                 in_shardings=(shardings, batch_sharding(mesh), *[repl] * replicated_args),
                 out_shardings=(shardings, repl))


def process_rows(global_batch: int, mesh: Mesh) -> tuple[int, int]:
  """[start, stop) of the global batch rows this process loads."""
  ways = batch_ways(mesh)
  if global_batch % ways:
    raise ConfigError(f'config.train.batch_size: {global_batch} is not divisible by the '
                      f'{ways} batch shards of the mesh (mesh.data × mesh.fsdp = '
                      f'{mesh.shape.get(DATA, 1)} × {mesh.shape.get(FSDP, 1)})')
  per_proc = global_batch // jax.process_count()
  start = jax.process_index() * per_proc
  return start, start + per_proc


def shard_global_batch(arrays: Any, mesh: Mesh) -> Any:
  """A global batch every process holds whole (evaluation rows; a dict or any pytree of
  arrays with the same rows) -> global arrays, each process contributing only its rows
  (`process_rows`), so no row counts twice."""
  start, stop = process_rows(len(jax.tree.leaves(arrays)[0]), mesh)
  return shard_batch(jax.tree.map(lambda v: np.asarray(v)[start:stop], arrays), mesh)


def shard_batch(local: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
  """Host arrays (this process's rows; a dict or any pytree) -> global arrays split over
  ('data', 'fsdp')."""
  sharding = batch_sharding(mesh, batch_axis)
  return jax.tree.map(
      lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), local)


# -- parameters and state by the rules ---------------------------------------

def rules_for(mesh: Mesh, rules) -> tuple:
  """`rules` without the mesh axes of size 1 (or absent from `mesh`); a rule left with
  no mesh axis is dropped, one mapped to None (replicated) is kept."""
  out = []
  for name, axes in rules:
    if axes is None:
      out.append((name, None))
      continue
    group = tuple(a for a in ((axes,) if isinstance(axes, str) else axes)
                  if mesh.shape.get(a, 1) > 1)
    if group:
      out.append((name, group[0] if len(group) == 1 else group))
  return tuple(out)


def spec_for(names: Optional[Sequence[Any]], shape: Sequence[int], mesh: Mesh,
             rules) -> P:
  """The mesh PartitionSpec of an array of `shape` with logical axis `names`.

  Mesh axes of size 1 (and axes the mesh lacks) are left out of the rules first
  (a rule left with none is dropped, so the next rule of its logical axis applies);
  a data-parallel mesh gives `P()`. A dimension that its mesh axes do not divide
  evenly stays replicated.
  """
  if not names:
    return P()
  spec = nn.logical_to_mesh_axes(tuple(names), rules_for(mesh, rules))
  out = []
  for dim, axes in zip(shape, spec):
    group = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([mesh.shape[a] for a in group])) if group else 1
    ok = group and dim % ways == 0
    out.append((group[0] if len(group) == 1 else group) if ok else None)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def logical_names(boxed: Any) -> Any:
  """The tree of logical axis-name tuples (None where unannotated) of a boxed param tree."""
  return jax.tree.map(lambda x: tuple(x.names) if isinstance(x, nn.Partitioned) else None,
                      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def param_shardings(boxed: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """NamedShardings of a (possibly abstract) param tree whose leaves are `nn.Partitioned`
  boxes (from `nn.with_logical_partitioning`); unannotated leaves are replicated."""
  def one(x):
    names = tuple(x.names) if isinstance(x, nn.Partitioned) else None
    value = x.value if isinstance(x, nn.Partitioned) else x
    return NamedSharding(mesh, spec_for(names, np.shape(value), mesh, rules))
  return jax.tree.map(one, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _key_str(k) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def mirror_shardings(tree: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
  """Shardings for `tree` (e.g. an optimiser state): a leaf whose path ends with a param's
  path and has its shape gets that param's sharding (Adam's mu and nu, LoRA's subsets);
  everything else (counts, scalars) is replicated."""
  by_path = {}
  for (path, p), (_, s) in zip(jax.tree_util.tree_leaves_with_path(params),
                               jax.tree_util.tree_leaves_with_path(shardings)):
    by_path[tuple(_key_str(k) for k in path)] = (np.shape(p), s)
  repl = replicated(mesh)

  def one(path, leaf):
    keys = tuple(_key_str(k) for k in path)
    for i in range(len(keys)):
      hit = by_path.get(keys[i:])
      if hit is not None and hit[0] == np.shape(leaf):
        return hit[1]
    return repl
  return jax.tree_util.tree_map_with_path(one, tree)


def shardings_of(tree: Any) -> Any:
  """The sharding of every array of `tree` (e.g. a TrainState built by `init_train_state`)."""
  return jax.tree.map(lambda x: x.sharding, tree)
