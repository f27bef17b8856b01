"""Skip-gram / CBOW pretraining: `train_and_evaluate(config, workdir)`.

Run through `train.py --config configs/skipgram.py` (or `configs/cbow.py`).
Writes to `workdir`: `checkpoints/` (orbax), `vocab.tsv`, `metrics.jsonl`,
`tb/` (TensorBoard), `eval.json`, and the vectors in word2vec format when
`export.format` is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from translearn_jax.data import readers
from translearn_jax.data.vocab import EncodedCorpus, Vocabulary, encode_corpus
from translearn_jax.data.word2vec_stream import (BLOCK, ROW_LAYOUTS, BlockStream, StreamConfig,
                                                 StreamState)
from translearn_jax.errors import ConfigError, DataError, NonFiniteLossError
from translearn_jax.evaluation import word_vectors
from translearn_jax.export.word2vec_format import save_word2vec
from translearn_jax.models import row_sharded
from translearn_jax.models import word2vec as w2v
from translearn_jax.training import memo
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import optimizers
from translearn_jax.training.loop import Run
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.state import TrainState
from translearn_jax.transfer import sources
from translearn_jax.transfer.graft import remap_rows


REPLICATED, ROWS = 'replicated', 'rows'


def _require(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ConfigError(f'config.{field}: {msg}')


def validate(config: ml_collections.ConfigDict) -> None:
  _require(int(config.train.get('input_workers', 0)) >= 0, 'train.input_workers',
           f'must be >= 0 (0: auto), got {config.train.get("input_workers")}')
  _require(config.train.get('batch_rows', BLOCK) in ROW_LAYOUTS, 'train.batch_rows',
           f"must be {w2v.choices(ROW_LAYOUTS)}, got {config.train.get('batch_rows')!r}")
  for field in ('batch_size', 'seq_length', 'steps_per_call', 'epochs',
                'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints'):
    _require(int(config.train[field]) >= 1, f'train.{field}',
             f'must be >= 1, got {config.train[field]}')
  _require(config.optim.learning_rate > 0, 'optim.learning_rate',
           f'must be > 0, got {config.optim.learning_rate}')
  _require(int(config.optim.get('warmup_steps', 0)) >= 0, 'optim.warmup_steps',
           f'must be >= 0 (0: none), got {config.optim.get("warmup_steps")}')
  _require(config.sample >= 0, 'sample', f'must be >= 0, got {config.sample}')
  _require(config.optim.get('row_cap', 0.0) >= 0, 'optim.row_cap',
           f'must be >= 0 (0: off), got {config.optim.get("row_cap")}')
  _require(config.optim.get('row_cap_mode', 'count') in w2v.ROW_CAP_MODES, 'optim.row_cap_mode',
           f"must be {w2v.ROW_CAP_CHOICES}, got {config.optim.get('row_cap_mode')!r}")
  cross = config.optim.get('row_cap_cross', 0.0)
  _require(cross >= 0 and (not cross or (config.optim.get('row_cap', 0.0) > 0 and
                                         config.optim.get('row_cap_mode') == w2v.CURVATURE)),
           'optim.row_cap_cross', f"must be >= 0, and only with optim.row_cap > 0 and "
           f"optim.row_cap_mode='curvature' (it adds to the curvature totals), got {cross}")
  _require(config.vocab.min_count >= 1, 'vocab.min_count', 'must be >= 1')
  _require(config.model.mode in w2v.MODES, 'model.mode',
           f'must be {w2v.MODE_CHOICES}, got {config.model.mode!r}')
  for f in ('dim', 'window', 'negatives'):
    _require(config.model[f] >= 1, f'model.{f}', f'must be >= 1, got {config.model[f]}')
  _require(not (config.model.get('pair_negatives', False) and config.model.mode == w2v.CBOW),
           'model.pair_negatives', 'is for skip-gram (CBOW draws its negatives per position, '
           'one pair a position, already)')
  draws = config.model.get('negative_draws', 0)
  _require(draws >= 0, 'model.negative_draws', f'must be >= 0 (0: model.negatives), got {draws}')
  _require(not draws or not config.model.get('pair_negatives', False),
           'model.negative_draws', 'is for shared negatives (not with model.pair_negatives, '
           'which draws K for every pair)')
  order = config.model.get('pair_order', w2v.SUMMED)
  _require(order in w2v.PAIR_ORDERS, 'model.pair_order',
           f'must be {w2v.PAIR_ORDER_CHOICES}, got {order!r}')
  _require(order == w2v.SUMMED or (config.model.mode == w2v.SKIPGRAM
                                   and config.model.get('pair_negatives', False)),
           'model.pair_order', "'sequential' is for skip-gram with model.pair_negatives=True")
  _require(order == w2v.SUMMED or not config.optim.get('row_cap', 0.0)
           or config.optim.get('row_cap_mode', 'count') == w2v.CURVATURE, 'optim.row_cap',
           w2v.SEQUENTIAL_CAP.removeprefix('optim.row_cap '))
  bound = config.model.get('max_score', 0.0)
  _require(bound >= 0, 'model.max_score',           # NaN fails too
           f'must be >= 0 (0: every score trains; gensim: 6), got {bound}')
  share = config.model.get('negative_share', 1)
  _require(isinstance(share, int) and share >= 1, 'model.negative_share',
           f'must be an integer >= 1 (1: negatives per position), got {share!r}')
  _require(share == 1 or not config.model.get('pair_negatives', False), 'model.negative_share',
           'shares one draw among positions; model.pair_negatives draws per pair: choose one')
  _require(config.train.seq_length % share == 0, 'model.negative_share',
           f'must divide train.seq_length={config.train.seq_length} (groups of consecutive '
           f'positions of a row), got {share}')
  kernel = config.model.get('step_kernel', w2v.XLA_KERNEL)
  _require(kernel in w2v.STEP_KERNELS, 'model.step_kernel',
           f'must be {w2v.STEP_KERNEL_CHOICES}, got {kernel!r}')
  in_scope = w2v.cpu_kernel_computes(share, config.optim.get('row_cap', 0.0),
                                     config.model.get('pair_negatives', False),
                                     config.model.get('pair_order', w2v.SUMMED))
  _require(kernel != w2v.CPU_KERNEL or in_scope, 'model.step_kernel',
           w2v.CPU_KERNEL_SCOPE.removeprefix('model.step_kernel='))
  _require(config.model.get('table_sharding', REPLICATED) in (REPLICATED, ROWS),
           'model.table_sharding',
           f"must be 'replicated' or 'rows', got {config.model.get('table_sharding')!r}")
  _require(config.export.format in ('', 'text', 'binary'), 'export.format',
           f"must be '', 'text' or 'binary', got {config.export.format!r}")
  # the evaluation sets are read now, so that a bad one stops the run before training
  for _, path in word_vectors.parse_named_paths(config.eval.similarity):
    word_vectors.read_similarity_pairs(path)
  if config.eval.analogy:
    word_vectors.read_analogies(config.eval.analogy)


# the largest batch (rows a step) measured at batch 2's quality without `optim.row_cap`
# (README, "Skip-gram / CBOW design": 8 rows diverged on the Wikipedia excerpt, 16 on the novels)
UNCAPPED_BATCH_LIMIT = 4
# the large-batch recipe (either pair order)
CAP_RECIPE = "optim.row_cap=1 with optim.row_cap_mode='curvature'"


def warn_uncapped_large_batch(config: ml_collections.ConfigDict) -> None:
  """A warning when `train.batch_size` is past `UNCAPPED_BATCH_LIMIT` with no row cap: the
  run may diverge or lose quality, and the measured recipe is one override away."""
  batch = int(config.train.batch_size)
  if batch > UNCAPPED_BATCH_LIMIT and not config.optim.get('row_cap', 0.0):
    warnings.warn(
        f'train.batch_size={batch} with optim.row_cap=0: a frequent word\'s row sums its '
        f'updates over the whole batch, and batches over {UNCAPPED_BATCH_LIMIT} rows diverged '
        f'or lost quality in the measurements (README); {CAP_RECIPE} kept batch 16 '
        "at batch 2's quality", stacklevel=2)


def load_corpus(config) -> EncodedCorpus:
  spec = readers.TextSpec.from_config(config.data)
  t0 = time.perf_counter()
  corpus = encode_corpus(readers.read_documents(spec), min_count=config.vocab.min_count,
                         max_size=config.vocab.max_size or None,
                         lowercase=config.data.lowercase, source=spec.path or spec.kind)
  if len(corpus.ids) <= config.model.window:
    raise DataError(
        f'{spec.path}: only {len(corpus.ids)} in-vocabulary tokens, not more than '
        f'model.window={config.model.window}: too small to train a context window')
  if len(corpus.vocab) < 2:
    raise DataError(f'{spec.path}: one distinct word ({corpus.vocab.words[0]!r}) after '
                    f'vocab.min_count={config.vocab.min_count}: nothing to tell apart (every '
                    'negative would be the word itself)')
  sizes = np.bincount(corpus.segments)
  if not (sizes >= 2).any():
    raise DataError(f'{spec.path}: no document has two in-vocabulary words, so no (word, '
                    'context) pair exists (contexts stay inside a document); read longer '
                    "documents (data.unit='paragraph' or 'file') or lower vocab.min_count")
  info('corpus %s: %d documents, %d words, %d in vocabulary (%d types) in %.1fs',
               spec.path, corpus.num_documents, corpus.raw_words, len(corpus.ids),
               len(corpus.vocab), time.perf_counter() - t0)
  return corpus


def model_config(config, vocab_size: int) -> w2v.Word2VecConfig:
  m = config.model
  return w2v.Word2VecConfig(vocab_size=vocab_size, dim=m.dim, window=m.window,
                            negatives=m.negatives, mode=m.mode,
                            row_cap=float(config.optim.get('row_cap', 0.0)),
                            row_cap_mode=config.optim.get('row_cap_mode', 'count'),
                            row_cap_cross=float(config.optim.get('row_cap_cross', 0.0)),
                            pair_negatives=bool(m.get('pair_negatives', False)),
                            negative_draws=int(m.get('negative_draws', 0)),
                            negative_share=int(m.get('negative_share', 1)),
                            skip_target_negatives=bool(m.get('skip_target_negatives', False)),
                            max_score=float(m.get('max_score', 0.0)),
                            pair_order=m.get('pair_order', w2v.SUMMED),
                            step_kernel=m.get('step_kernel', w2v.XLA_KERNEL))


def lr_schedule(config, total_steps: int) -> optax.Schedule:
  """word2vec's linear decay from α0 to α0·end_lr_ratio; with `optim.warmup_steps` > 0, a
  linear rise from 0 to α0 over those steps first (large batches: the first steps' summed
  updates of the hottest rows, from tables that know nothing yet, are the largest)."""
  warmup = int(config.optim.get('warmup_steps', 0))
  if warmup > 0:
    return optimizers.lr_schedule('linear', float(config.optim.learning_rate), int(total_steps),
                                  warmup, float(config.optim.end_lr_ratio))
  return _linear_schedule(float(config.optim.learning_rate),
                          float(config.optim.learning_rate * config.optim.end_lr_ratio),
                          int(total_steps))


@memo.memoized()
def _linear_schedule(start: float, end: float, steps: int) -> optax.Schedule:
  return optax.linear_schedule(start, end, steps)


def init_state(cfg: w2v.Word2VecConfig, seed: int, mesh, shards: int = 0) -> TrainState:
  """word2vec's initial tables: replicated, or with `shards` > 0 in the row-sharded layout
  (`models.row_sharded`) split over the mesh's batch axes (their size must be `shards`).

  The values are drawn on the host, as word2vec.c and gensim draw theirs: the input table
  uniform in ±0.5/dim (`initial_rows`), the output table zeros. No program is compiled for
  them (a jitted initialiser's compile and threefry took ~0.4 s of a CBOW run's ~6 s), and
  each device's rows are made where it lives, so the values do not depend on the layout,
  the devices or the processes."""
  rows = row_sharded.layout_size(cfg.vocab_size, shards)
  table = table_sharding(mesh, shards)

  # this process's distinct row ranges (one when replicated, a device's block when sharded),
  # drawn together: each generator chunk once, though every block holds rows of every chunk
  ranges = sorted({index[0].indices(rows)[:2]
                   for index in table.addressable_devices_indices_map((rows, cfg.dim)).values()})
  drawn = dict(zip(ranges, initial_rows_of(
      seed, [row_sharded.vocab_ids(np.arange(start, stop), cfg.vocab_size, shards)
             for start, stop in ranges], cfg.vocab_size, cfg.dim, w2v.init_bound(cfg.dim))))

  def input_rows(index):
    return drawn[index[0].indices(rows)[:2]][:, index[1]]

  def zeros(index):
    return np.zeros((len(range(rows)[index[0]]), len(range(cfg.dim)[index[1]])), np.float32)

  place = functools.partial(jax.make_array_from_callback, sharding=table)
  return _state({'in_embed': place((rows, cfg.dim), data_callback=input_rows),
                 'out_embed': place((rows, cfg.dim), data_callback=zeros)}, seed, mesh)


def _state(params: dict, seed: int, mesh) -> TrainState:
  """A state at step 0 holding the placed tables `params`."""
  repl = mesh_lib.replicated(mesh)
  # the base key: word2vec's step draws nothing on the device (the host draws its windows
  # and negatives); kept for the checkpointed state's structure
  key = np.array([0, seed % 2 ** 32], np.uint32)
  return TrainState(
      step=jax.make_array_from_callback((), repl, lambda _: np.zeros((), np.int32)),
      params=params, opt_state={},
      rng=jax.random.wrap_key_data(
          jax.make_array_from_callback((2,), repl, lambda _: key), impl='threefry2x32'))


def place_table(table: np.ndarray, old_shards: int, new_shards: int, mesh,
                vocab_size: int) -> jax.Array:
  """A host table in the layout of `old_shards` (0: vocabulary order) placed on `mesh` in
  the layout of `new_shards`, each device's rows picked on the host: no device holds more
  than its own rows (a jitted permutation of a row-sharded table all-gathers all of it
  first: 1.0-1.25 tables a device, measured from the compiled program on 4 and 8 devices)."""
  if table.shape[0] != row_sharded.layout_size(vocab_size, old_shards):
    raise ValueError(f'a table of {table.shape[0]} rows is not {vocab_size} words in the '
                     f'layout of {old_shards} shard(s)')
  rows = row_sharded.layout_size(vocab_size, new_shards)
  picked: dict = {}     # a row range once, however many devices hold it (replicated: all)

  def pick(index):
    span = index[0].indices(rows)
    if span not in picked:
      ids = row_sharded.vocab_ids(np.arange(*span), vocab_size, new_shards)
      picked[span] = out = np.zeros((len(ids),) + table.shape[1:], table.dtype)
      real = ids < vocab_size
      out[real] = table[row_sharded.layout_rows(ids[real], vocab_size, old_shards)]
    return picked[span][:, index[1]]

  return jax.make_array_from_callback((rows,) + table.shape[1:],
                                      table_sharding(mesh, new_shards), pick)


INIT_CHUNK_ROWS = 4096   # vocabulary rows drawn from one generator (`initial_rows`)


def initial_rows(seed: int, ids: np.ndarray, vocab_size: int, dim: int, bound: float
                 ) -> np.ndarray:
  """The input table's initial rows `ids` (ids >= `vocab_size`: a layout's zero padding),
  `(len(ids), dim)` float32 uniform in [-bound, bound). Vocabulary row v is row v % C of
  the chunk drawn by `np.random.default_rng((seed, 0x77, v // C))` (C = INIT_CHUNK_ROWS),
  so a row's values depend on the seed and its id only."""
  return initial_rows_of(seed, [ids], vocab_size, dim, bound)[0]


def initial_rows_of(seed: int, id_lists: list, vocab_size: int, dim: int, bound: float
                    ) -> list[np.ndarray]:
  """`initial_rows` of each of `id_lists`, each chunk of the generator drawn once for all."""
  out, where = [], []
  for ids in id_lists:
    ids = np.asarray(ids, np.int64)
    out.append(np.zeros((len(ids), dim), np.float32))
    real = np.flatnonzero(ids < vocab_size)
    chunk = ids[real] // INIT_CHUNK_ROWS
    order = np.argsort(chunk, kind='stable')
    where.append((chunk[order], real[order], ids[real[order]] % INIT_CHUNK_ROWS))
  chunks = np.unique(np.concatenate([w[0] for w in where])) if where else []
  for c in chunks:
    block = np.random.default_rng((seed, 0x77, int(c))).random((INIT_CHUNK_ROWS, dim),
                                                               dtype=np.float32)
    for rows, (chunk, pos, offset) in zip(out, where):
      lo, hi = np.searchsorted(chunk, [c, c + 1])
      rows[pos[lo:hi]] = (block[offset[lo:hi]] * 2.0 - 1.0) * np.float32(bound)
  return out


def table_axes(mesh) -> tuple[str, ...]:
  """The mesh axes row-sharded tables (and the batch) are split over."""
  return mesh_lib.batch_axes(mesh)


def table_sharding(mesh, shards: int):
  """The sharding of the state's tables: rows over the batch axes, or replicated."""
  if not shards:
    return mesh_lib.replicated(mesh)
  return NamedSharding(mesh, P(table_axes(mesh), None))


def _state_shardings(mesh, shards: int):
  repl = mesh_lib.replicated(mesh)
  tables = table_sharding(mesh, shards)
  return TrainState(step=repl, params={'in_embed': tables, 'out_embed': tables},
                    opt_state={}, rng=repl)


def resolve_step_kernel(cfg: w2v.Word2VecConfig, mesh, row_sharded_tables: bool = False
                        ) -> w2v.Word2VecConfig:
  """`cfg` with `step_kernel='auto'` made 'cpu' or 'xla': the CPU kernel where it computes
  this step (`w2v.cpu_kernel_in_scope`), the run is on one CPU device with replicated tables
  and the kernel builds here (a C++ compiler is found); else the XLA step, saying why when
  it was the build."""
  if cfg.step_kernel != w2v.AUTO_KERNEL:
    return cfg
  use = (w2v.cpu_kernel_in_scope(cfg) and not row_sharded_tables and mesh.devices.size == 1
         and mesh.devices.flat[0].platform == 'cpu')
  if use:
    from translearn_jax.kernels import cpu
    try:
      cpu.target('word2vec_cpu', 'TranslearnCbowStep')
    except cpu.KernelUnavailable as e:
      warnings.warn(f"model.step_kernel='auto' runs the XLA step: {e}", stacklevel=2)
      use = False
  kernel = w2v.CPU_KERNEL if use else w2v.XLA_KERNEL
  info("model.step_kernel='auto': the %s step", 'CPU kernel' if use else 'XLA')
  return dataclasses.replace(cfg, step_kernel=kernel)


@memo.memoized()
def make_train_fn(cfg: w2v.Word2VecConfig, schedule: optax.Schedule, mesh,
                  row_sharded_tables: bool = False):
  """Jitted `(state, blocks) -> (state, metric sums)`; scans the steps axis.

  Replicated tables: each device computes its rows' updates and the updates (not dense
  tables) are all-gathered and applied everywhere. Row-sharded tables
  (`row_sharded_tables`): the step runs in a `shard_map` whose lookups and updates are
  routed to the device owning each row (`models.row_sharded`)."""
  cfg = resolve_step_kernel(cfg, mesh, row_sharded_tables)
  if cfg.step_kernel == w2v.CPU_KERNEL:
    platforms = {d.platform for d in mesh.devices.flat}
    _require(mesh.devices.size == 1 and platforms == {'cpu'} and not row_sharded_tables,
             'model.step_kernel', f"'cpu' runs on one CPU device with replicated tables; this "
             f'run has {mesh.devices.size} {"/".join(sorted(platforms))} device(s)'
             + (" and model.table_sharding='rows'" if row_sharded_tables else '')
             + " (num_devices=1, or model.step_kernel='xla')")
  if row_sharded_tables:
    return _make_row_sharded_train_fn(cfg, schedule, mesh)
  repl = mesh_lib.replicated(mesh)

  def replicate(x):  # gather the (sparse) row updates, not a dense table
    return jax.lax.with_sharding_constraint(x, repl)

  def one_step(state: TrainState, batch):
    batch, lr = _step_rate(schedule, state, batch)
    params, loss, pairs = _unless_padding(
        lambda p: w2v.sparse_sgd_step(p, batch, lr, cfg, constrain=replicate),
        state.params, jnp.any(batch['segment'] >= 0))
    return state.replace(step=state.step + 1, params=params), (loss, pairs, lr)

  def train_fn(state, blocks):
    state, (loss, pairs, lr) = jax.lax.scan(one_step, state, blocks)
    return state, {'loss_sum': loss.sum(), 'loss_count': pairs.sum(),
                   'learning_rate': lr[-1]}

  return jax.jit(train_fn, donate_argnums=0,
                 in_shardings=(repl, mesh_lib.batch_sharding(mesh, 1)),
                 out_shardings=(repl, repl))


def _step_rate(schedule: optax.Schedule, state: TrainState, batch) -> tuple[dict, jax.Array]:
  """(the step's batch, its learning rate): at the block's `schedule_step` (the step's
  place among the steps that train, `BlockStream.steps_per_epoch` an epoch: word2vec's rate
  follows the words trained, and an epoch's padded last steps must not spend its decay;
  every row holds it), or at `state.step` for a batch made without it."""
  batch = dict(batch)
  at = batch.pop('schedule_step', None)
  return batch, schedule(state.step if at is None else at[0])


def _unless_padding(step, params, live):
  """`step(params)` -> (params, loss, pairs) when `live` (the step holds a real token), else
  the tables unchanged and zero loss and pairs: an epoch's last block is padded to its
  `steps_per_call` steps, and a step of padding alone trains nothing (`lax.cond` runs one
  branch, so its gathers and scatters are skipped, not computed and masked)."""
  shapes = jax.eval_shape(step, params)

  def skip(params):
    return (params,) + tuple(jnp.zeros(s.shape, s.dtype) for s in shapes[1:])
  return jax.lax.cond(live, step, skip, params)


def _make_row_sharded_train_fn(cfg: w2v.Word2VecConfig, schedule: optax.Schedule, mesh):
  axes = table_axes(mesh)
  shards = mesh_lib.batch_ways(mesh)
  shardings = _state_shardings(mesh, shards)
  state_specs = jax.tree.map(lambda s: s.spec, shardings)

  def one_step(state: TrainState, batch):
    batch, lr = _step_rate(schedule, state, batch)
    def step(params):
      tables = row_sharded.RowShardedTables(params, axes, shards, cfg.row_cap,
                                            row_cap_mode=cfg.row_cap_mode)
      return w2v.table_step(tables, batch, lr, cfg)
    live = jax.lax.psum(jnp.any(batch['segment'] >= 0).astype(jnp.int32), axes) > 0
    params, loss, pairs = _unless_padding(step, state.params, live)
    return state.replace(step=state.step + 1, params=params), (loss, pairs, lr)

  def local_fn(state, blocks):
    state, (loss, pairs, lr) = jax.lax.scan(one_step, state, blocks)
    return state, {'loss_sum': jax.lax.psum(loss.sum(), axes),
                   'loss_count': jax.lax.psum(pairs.sum(), axes),
                   'learning_rate': lr[-1]}

  fn = jax.shard_map(local_fn, mesh=mesh, in_specs=(state_specs, P(None, axes)),
                     out_specs=(state_specs, P()), check_vma=False)
  return jax.jit(fn, donate_argnums=0,
                 in_shardings=(shardings, mesh_lib.batch_sharding(mesh, 1)),
                 out_shardings=(shardings, mesh_lib.replicated(mesh)))


def embeddings(state: TrainState, vocab_size: int | None = None, shards: int = 0,
               table: str = 'in_embed') -> np.ndarray:
  """A table in vocabulary order (`vocab_size` rows; `shards`: the row-sharded layout's)."""
  array = state.params[table]
  if array.is_fully_addressable:
    rows = np.asarray(jax.device_get(array))
  else:  # row-sharded over several processes: every process gets the whole table
    rows = np.asarray(multihost_utils.process_allgather(array, tiled=True))
  if shards:                       # on the host, numpy in and out
    rows = row_sharded.from_sharded_layout(rows, shards, vocab_size)
  return rows


def evaluate(config, vocab: Vocabulary, vectors: np.ndarray) -> dict:
  results: dict[str, Any] = {}
  for name, path in word_vectors.parse_named_paths(config.eval.similarity):
    r = word_vectors.evaluate_similarity(vocab.words, vectors, path, name)
    results[name] = {'spearman': r.spearman, 'pairs': r.pairs_used, 'oov_pairs': r.pairs_oov}
  if config.eval.analogy:
    a = word_vectors.evaluate_analogies(vocab.words, vectors, config.eval.analogy,
                                        restrict=config.eval.analogy_restrict)
    results['analogy'] = {'accuracy': a.accuracy, 'correct': a.correct,
                          'answered': a.answered, 'oov_questions': a.oov}
  return results


def format_results(results: dict) -> str:
  lines = [f'{"benchmark":<14} {"score":>8} {"used":>7} {"OOV":>6}']
  for name, r in results.items():
    if 'spearman' in r:
      lines.append(f'{name:<14} {r["spearman"]:>8.4f} {r["pairs"]:>7d} {r["oov_pairs"]:>6d}'
                   '   (Spearman rho; pairs)')
    else:
      lines.append(f'{name:<14} {r["accuracy"]:>8.4f} {r["answered"]:>7d} '
                   f'{r["oov_questions"]:>6d}   (3CosAdd accuracy; questions)')
  return '\n'.join(lines)


def _check_vocab(workdir: str, vocab: Vocabulary) -> None:
  path = os.path.join(workdir, 'vocab.tsv')
  if os.path.exists(path):
    saved = Vocabulary.load(path)
    if saved.words != vocab.words:
      raise DataError(f'{path}: the checkpoints in {workdir} were trained on a different '
                      'vocabulary (corpus or vocab settings changed); use a new workdir')
  elif jax.process_index() == 0:
    vocab.save(path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Loads the corpus named by `config.data`, then `train_on_corpus`."""
  validate(config)
  corpus = load_corpus(config)
  if config.init.path:
    src_vocab = Vocabulary.load(_run_file(config.init.path, 'vocab.tsv'))
    corpus = dataclasses.replace(corpus, vocab=union_vocabulary(corpus.vocab, src_vocab))
  return train_on_corpus(config, corpus, workdir)


def _run_file(run_dir: str, name: str) -> str:
  path = os.path.join(run_dir, name)
  if not os.path.exists(path):
    raise DataError(f'config.init.path: {path} not found (init.path must be a word2vec run '
                    'directory)')
  return path


def union_vocabulary(vocab: Vocabulary, source: Vocabulary) -> Vocabulary:
  """`vocab`'s words (ids unchanged) then the source's other words with count 0.

  Words with count 0 are never subsampled in or drawn as negatives; they keep
  their source vectors, so continued training never loses coverage.
  """
  extra = [w for w in source.words if w not in vocab]
  return Vocabulary(vocab.words + extra,
                    np.concatenate([vocab.counts, np.zeros(len(extra), np.int64)]))


def init_from_run(config, cfg: w2v.Word2VecConfig, vocab: Vocabulary, seed: int, mesh,
                  shards: int = 0) -> tuple[TrainState, dict]:
  """Fresh state whose rows of both tables come from the run `config.init.path` (in
  either layout), in the layout of `shards` (`init_state`)."""
  run = config.init.path
  _run_file(run, 'vocab.tsv')
  src = sources.load_run(run, 'init.path')       # both tables in vocabulary order
  # the words the source lacks start as a fresh run's do (`init_state`'s values)
  fresh = {'in_embed': initial_rows(seed, np.arange(cfg.vocab_size), cfg.vocab_size, cfg.dim,
                                    w2v.init_bound(cfg.dim)),
           'out_embed': np.zeros((cfg.vocab_size, cfg.dim), np.float32)}
  params, stats = {}, {}
  for name in ('in_embed', 'out_embed'):
    table = np.asarray(src.params[name])
    if table.shape != (len(src.vocab), cfg.dim):
      raise DataError(f'config.init.path: {run} holds {name} of shape {table.shape}, not '
                      f'({len(src.vocab)} words of its vocab.tsv, model.dim={cfg.dim})')
    rows, stats[name] = remap_rows(table, src.vocab, vocab.words, fresh.pop(name), init='init')
    params[name] = place_table(np.asarray(rows, np.float32), 0, shards, mesh, cfg.vocab_size)
  return _state(params, seed, mesh), stats


def _restore(run: Run, state: TrainState, shards: int, cfg: w2v.Word2VecConfig, mesh
             ) -> tuple[TrainState, dict]:
  """`run.restore(state)`, converting tables saved in another layout (another shard count,
  or replicated vs row-sharded) to this run's."""
  if not run.resuming:
    return state, {}
  saved_shards = int(run.checkpointer.saved_data().get(row_sharded.TABLE_SHARDS, 0))
  if saved_shards == shards:
    restored, saved = run.restore(state)
  else:
    # the saved tables are read to the host (numpy leaves restore as numpy) and each device
    # takes its rows of the new layout from there: no device holds a whole table
    rows = row_sharded.layout_size(cfg.vocab_size, saved_shards)
    host = {k: np.empty((rows, cfg.dim), np.float32) for k in state.params}
    restored, saved = run.restore(state.replace(params=host))
    restored = restored.replace(params={
        k: place_table(v, saved_shards, shards, mesh, cfg.vocab_size)
        for k, v in restored.params.items()})
    info('tables converted from %s to %s', _layout_name(saved_shards), _layout_name(shards))
  if int(saved.get(row_sharded.TABLE_SHARDS, 0)) != saved_shards:
    raise DataError(f'{run.checkpointer.directory}: the restored step holds tables of another '
                    'layout than the newest step (a damaged step was set aside); resume again')
  return restored, {k: v for k, v in saved.items() if k != row_sharded.TABLE_SHARDS}


def _layout_name(shards: int) -> str:
  return f'rows over {shards} devices' if shards else 'replicated'


def device_count(config) -> int:
  """`num_devices`, or with 0 (all) on one process, the most devices that split
  `train.batch_size` rows evenly: the small default batch (2 rows; larger batches need
  `optim.row_cap`) then runs on an 8-device host, on 2 of them, instead of refusing."""
  n, total = config.num_devices, jax.device_count()
  if n or jax.process_count() > 1:
    return n or total
  fit = max(d for d in range(1, total + 1) if config.train.batch_size % d == 0)
  if fit < total:
    info('train.batch_size=%d rows split over %d of the %d devices (set num_devices or a '
         'batch size that is a multiple of the device count to use them all)',
         config.train.batch_size, fit, total)
  return fit


def block_stream(config: ml_collections.ConfigDict, cfg: w2v.Word2VecConfig,
                 corpus: EncodedCorpus, row_start: int, row_stop: int) -> BlockStream:
  """The run's host stream of blocks: `config`'s batch, row length, steps per call,
  subsampling, row layout (`train.batch_rows`), seed and epochs, `cfg`'s window and negatives;
  rows `row_start:row_stop` of each batch (this process's)."""
  return BlockStream(corpus, StreamConfig(
      batch=config.train.batch_size, length=config.train.seq_length,
      steps=config.train.steps_per_call,
      window=cfg.window, negatives=cfg.negatives_per_position, sample=config.sample,
      seed=config.seed, negative_share=cfg.negative_share,
      batch_rows=config.train.get('batch_rows', BLOCK)),
      epochs=config.train.epochs, row_start=row_start, row_stop=row_stop)


def input_workers(config: ml_collections.ConfigDict, mesh) -> int:
  """`train.input_workers`, or with 0 (auto) 1 on CPU devices (the step uses the cores) and
  otherwise up to 4 of the host's cores, leaving two: an accelerator's step at batch 2 takes
  blocks faster than one thread draws them (README, "On an accelerator")."""
  workers = int(config.train.get('input_workers', 0))
  if workers:
    return workers
  if all(d.platform == 'cpu' for d in mesh.devices.flat):
    return 1
  return max(1, min(4, (os.cpu_count() or 1) - 2))


@contextlib.contextmanager
def _diverged_hint(config: ml_collections.ConfigDict):
  """A non-finite loss names the fields that bring a run back: for a batch past the
  uncapped limit the cap, then under the curvature cap its cross term (the first steps of
  a large batch move many rows at once: CBOW at batch 64 under the curvature cap diverges
  without it, with a 20-step warmup too), then a warmup; else α0."""
  try:
    yield
  except NonFiniteLossError as e:
    batch = config.train.batch_size
    cap = float(config.optim.get('row_cap', 0.0))
    lower = f'a lower optim.learning_rate (now {config.optim.learning_rate:g})'
    if batch > UNCAPPED_BATCH_LIMIT and not cap:
      hint = f'train.batch_size={batch} is a large batch: try {CAP_RECIPE}, or {lower}'
    elif batch > UNCAPPED_BATCH_LIMIT:
      cross = ''
      if (config.optim.get('row_cap_mode') == w2v.CURVATURE
          and not config.optim.get('row_cap_cross', 0.0)):
        cross = 'optim.row_cap_cross=0.1 (the cap then bounds the rows\' joint move too), '
      hint = (f'train.batch_size={batch} under optim.row_cap={cap:g}: try {cross}a few warmup '
              f'steps (optim.warmup_steps, now {config.optim.get("warmup_steps", 0)}), or '
              f'{lower}')
    else:
      hint = f'try {lower}'
    raise NonFiniteLossError(f'{e}; {hint}', runs=e.runs) from None


def train_on_corpus(config: ml_collections.ConfigDict, corpus: EncodedCorpus,
                    workdir: str) -> dict:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluates, exports.

  The summary's `wall_seconds`/`wall_words_per_sec` cover everything from
  model initialisation to the last step (compilation, input pipeline and
  checkpoints included); `words_per_sec` excludes the first (compiling) call.
  """
  validate(config)
  warn_uncapped_large_batch(config)
  vocab = corpus.vocab
  mesh = mesh_lib.make_mesh(device_count(config))
  row_start, row_stop = mesh_lib.process_rows(config.train.batch_size, mesh)
  cfg = model_config(config, len(vocab))
  stream = block_stream(config, cfg, corpus, row_start, row_stop)
  total_steps = stream.estimated_total_steps()
  _require(int(config.optim.get('warmup_steps', 0)) < total_steps, 'optim.warmup_steps',
           f'must be below the run\'s {total_steps} steps (the rise would never reach '
           f'optim.learning_rate and decay), got {config.optim.get("warmup_steps")}')
  schedule = lr_schedule(config, total_steps)
  os.makedirs(workdir, exist_ok=True)
  _check_vocab(workdir, vocab)
  shards = mesh_lib.batch_ways(mesh) if config.model.get('table_sharding') == ROWS else 0
  with Run(workdir, config.train.keep_checkpoints) as run, contextlib.ExitStack() as stack:
    fresh = not run.resuming
    # a fresh run reads the stream from its start: its thread subsamples the first epoch
    # and prepares blocks while the tables are initialised (a resumed run's position is
    # known once a checkpoint has been restored)
    workers = input_workers(config, mesh)
    if fresh:
      blocks = stack.enter_context(contextlib.closing(
          stream.iterate(StreamState(), config.train.prefetch, workers)))
    if config.init.path and fresh:
      state, remap = init_from_run(config, cfg, vocab, config.seed, mesh, shards)
      info('init.path %s: %d of %d words found', config.init.path,
           remap['in_embed']['found'], len(vocab))
    else:
      state = init_state(cfg, config.seed, mesh, shards)
    state, saved = _restore(run, state, shards, cfg, mesh)
    data_state = StreamState(**saved)
    if not fresh:
      blocks = stack.enter_context(contextlib.closing(
          stream.iterate(data_state, config.train.prefetch, workers)))
    layout = {row_sharded.TABLE_SHARDS: shards}
    with _diverged_hint(config):
      result = run.train(
          state=state,
          stream=((dict(s.to_dict(), **layout), b) for s, b in blocks),
          step_fn=make_train_fn(cfg, schedule, mesh, bool(shards)),
          to_device=functools.partial(mesh_lib.shard_batch, mesh=mesh, batch_axis=1),
          total_steps=total_steps, steps_per_call=config.train.steps_per_call,
          checkpoint_every=config.train.checkpoint_every_steps,
          log_every=config.train.log_every_steps,
          units_per_step=corpus.raw_words * config.train.epochs / total_steps, units_name='words',
          data_state=dict(data_state.to_dict(), **layout), progress=config.progress)
  summary = run.summary(result)
  summary.update(wall_words_per_sec=result.units_total / summary['wall_seconds'],
                 corpus_words=corpus.raw_words, vocab_size=len(vocab))
  if result.stopped_by_signal:
    return summary
  vectors = embeddings(result.state, len(vocab), shards)
  if jax.process_index() == 0 and config.export.format:   # the vectors first, then their scores
    binary = config.export.format == 'binary'
    path = os.path.join(workdir, 'vectors.bin' if binary else 'vectors.txt')
    try:
      save_word2vec(path, vocab.words, vectors, binary=binary)
    except ValueError as e:             # non-finite vectors: the run diverged
      raise NonFiniteLossError(f'{path} not written: {e} (the checkpoints are kept; a lower '
                          'optim.learning_rate, or optim.row_cap for large batches)') from None
    summary['exported'] = path
  summary['eval'] = evaluate(config, vocab, vectors)
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'eval.json'), summary)
    print(format_results(summary['eval']))
  return summary
