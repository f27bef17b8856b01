"""Row-sharded word2vec tables (issue #20): same vectors as replicated tables, 1/n of the
rows a device, and per-device collective bytes that stay flat as devices double."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from translearn_jax.data.word2vec_stream import BlockStream, StreamConfig, StreamState
from translearn_jax.models import row_sharded
from translearn_jax.models import word2vec as w2v
from translearn_jax.pretraining import word2vec
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training.hlo import collective_bytes, collectives

SCHEDULE = word2vec._linear_schedule(0.025, 0.025 * 1e-4, 100)


def test_layout_round_trip_and_interleaving():
  table = jnp.arange(11 * 3, dtype=jnp.float32).reshape(11, 3)
  phys = row_sharded.to_sharded_layout(table, 4)
  assert phys.shape == (12, 3)
  # block d holds rows d, d+4, d+8 (and a zero padding row past the vocabulary)
  np.testing.assert_array_equal(phys[3:6, 0], table[[1, 5, 9], 0])
  np.testing.assert_array_equal(phys[9:12, 0], [table[3, 0], table[7, 0], 0.0])
  np.testing.assert_array_equal(row_sharded.from_sharded_layout(phys, 4, 11), table)
  with pytest.raises(ValueError, match='not 11 rows over 5 shards'):
    row_sharded.from_sharded_layout(phys, 5, 11)


def _blocks(config, batch, calls=3, steps=4, length=64):
  corpus = word2vec.load_corpus(config)
  cfg = word2vec.model_config(config, len(corpus.vocab))
  stream = BlockStream(corpus, StreamConfig(batch=batch, length=length, steps=steps,
                                            window=cfg.window,
                                            negatives=cfg.negatives_per_position,
                                            sample=1e-3, seed=0,
                                            negative_share=cfg.negative_share), epochs=1)
  return cfg, [b for _, b in stream.iterate(StreamState(), prefetch=0)][:calls]


def _train(cfg, blocks, n, rows):
  mesh = mesh_lib.make_mesh(n)
  shards = n if rows else 0
  state = word2vec.init_state(cfg, 0, mesh, shards)
  fn = word2vec.make_train_fn(cfg, SCHEDULE, mesh, rows)
  losses = []
  for b in blocks:
    state, m = fn(state, mesh_lib.shard_batch(b, mesh, batch_axis=1))
    losses.append(float(m['loss_sum']))
  return state, losses


SEQUENTIAL = {'pair_negatives': True, 'negative_draws': 0, 'pair_order': 'sequential'}
# window 2: its 4 context offsets are 4 sub-steps of routed lookups and updates each, unrolled
# (window 5's 10 took 10 s of the suite to compile, replicated and row-sharded)
SEQUENTIAL_SMALL = dict(SEQUENTIAL, window=2)


@pytest.mark.parametrize('mode, row_cap, cap_mode, model', [
    ('skipgram', 0.0, 'count', {}), ('skipgram', 2.0, 'count', {}), ('cbow', 2.0, 'norm', {}),
    ('cbow', 0.0, 'count', {}), ('skipgram', 1e-3, 'curvature', {}),
    ('cbow', 0.3, 'curvature', {'cross': 0.1}),
    # word2vec's order under the curvature cap (the sub-steps' sums exchanged) and its term
    ('skipgram', 0.02, 'curvature', dict(SEQUENTIAL_SMALL, cross=0.05))])
def test_row_sharded_tables_give_the_replicated_vectors(tiny_config, mode, row_cap, cap_mode,
                                                        model):
  assert jax.device_count() == 8, 'conftest forces 8 CPU devices'
  tiny_config.model.mode, tiny_config.optim.row_cap = mode, row_cap
  tiny_config.optim.row_cap_mode = cap_mode
  model = dict(model)
  tiny_config.optim.row_cap_cross = model.pop('cross', 0.0)    # the cap's cross term
  tiny_config.model.update(model)
  if mode == 'cbow':   # with negatives shared by groups of 4 positions (B, L/4, K)
    tiny_config.model.negative_draws, tiny_config.model.negative_share = 0, 4
  cfg, blocks = _blocks(tiny_config, batch=8)
  assert blocks[0]['negatives'].shape[2] == 64 // cfg.negative_share
  ref, ref_losses = _train(cfg, blocks, 8, rows=False)
  state, losses = _train(cfg, blocks, 8, rows=True)
  if cap_mode == 'curvature':   # the cap binds in these steps (its rows' sums are exchanged)
    plain, _ = _train(dataclasses.replace(cfg, row_cap=0.0, row_cap_cross=0.0), blocks, 8,
                      rows=False)
    assert np.abs(word2vec.embeddings(plain) - word2vec.embeddings(ref)).max() > 1e-4
  # each device holds its interleaved block of ceil(V/8) rows, not the whole table
  table = state.params['in_embed']
  per_device = {s.data.shape for s in table.addressable_shards}
  assert per_device == {(row_sharded.local_rows(cfg.vocab_size, 8), cfg.dim)}
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for name in ('in_embed', 'out_embed'):
    got = word2vec.embeddings(state, cfg.vocab_size, 8, table=name)
    want = word2vec.embeddings(ref, table=name)
    assert np.abs(want - word2vec.embeddings(
        word2vec.init_state(cfg, 0, mesh_lib.make_mesh(1)), table=name)).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('cap_mode', ['', 'count'])
def test_overflowing_buckets_take_more_rounds_and_lose_nothing(cap_mode):
  """With one slot a bucket, every id beyond the first a destination needs waits for a
  later round; the rows and updates still all arrive, and the count cap sees each row's
  whole step, as on replicated tables. (The norm cap scales each round's part of a row:
  README; exact, it needed a block-sized scratch, which stop 52 tried and took back.)"""
  n, vocab, dim = 4, 37, 3
  cap = 1.5 if cap_mode else 0.0
  mesh = mesh_lib.make_mesh(n)
  table = jax.random.normal(jax.random.key(0), (vocab, dim))
  ids = jax.random.randint(jax.random.key(1), (n, 9), 0, vocab)  # 9 ids a device
  upd = jax.random.normal(jax.random.key(2), (n, 9, dim))
  P = jax.sharding.PartitionSpec

  def local(block, ids, upd):
    tables = row_sharded.RowShardedTables({'t': block}, 'data', n, capacity=1, row_cap=cap,
                                          row_cap_mode=cap_mode or 'count')
    rows, = tables.gather('t', ids)
    return rows, tables.add('t', (ids,), (upd,)), tables._routes['t'][1].rounds[None]

  fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P('data'), P('data'), P('data')),
                             out_specs=(P('data'), P('data'), P('data')), check_vma=False))
  rows, new, rounds = fn(row_sharded.to_sharded_layout(table, n), ids, upd)
  assert int(rounds.max()) > 1
  np.testing.assert_allclose(rows, table[ids], rtol=1e-6)
  flat, u = ids.reshape(-1), upd.reshape(-1, dim)
  norms = jnp.linalg.norm(u, axis=-1)
  uniq, _, (total, norm_total, count) = w2v.sum_by_row(flat, -1, u, norms,
                                                      (norms > 0).astype(u.dtype))
  scale = {'': jnp.ones_like(count), 'count': w2v.count_scale(count, cap),
           'norm': w2v.norm_cap_scale(total, norm_total, count, cap)}[cap_mode]
  assert cap_mode == '' or float(scale.min()) < 0.9           # the cap binds somewhere
  want = table.at[jnp.where(uniq >= 0, uniq, vocab)].add(total * scale[:, None], mode='drop')
  np.testing.assert_allclose(row_sharded.from_sharded_layout(new, n, vocab), want, rtol=1e-5,
                             atol=1e-6)


def test_collective_bytes_per_device_stay_flat_as_devices_double(tiny_config):
  """Skip-gram (CBOW's figures: benchmarks/word2vec_collectives.py)."""
  corpus = word2vec.load_corpus(tiny_config)
  cfg = word2vec.model_config(tiny_config, len(corpus.vocab))
  per_device_rows, length = 2, 64
  out = {}
  for n in (4, 8):
    mesh = mesh_lib.make_mesh(n)
    for rows in (False, True):
      state = jax.eval_shape(lambda: word2vec.init_state(cfg, 0, mesh, n if rows else 0))
      batch = {k: jax.ShapeDtypeStruct((1, per_device_rows * n, length) + extra, jnp.int32)
               for k, extra in (('tokens', ()), ('segment', ()), ('window', ()),
                                ('negatives', (cfg.negatives_per_position,)))}
      fn = word2vec.make_train_fn(cfg, SCHEDULE, mesh, rows)
      hlo = fn.lower(state, batch).compile().as_text()
      out[n, rows] = collective_bytes(hlo)
  assert out[4, True] > 0 and out[4, False] > 0
  # replicated tables all-gather every device's updates: they grow with the devices
  assert out[8, False] > 1.5 * out[4, False], out
  # routed to owners in fixed-size buckets: flat (within the rounding of bucket sizes)
  assert out[8, True] <= 1.1 * out[4, True], out


def test_collectives_are_read_from_hlo_text():
  """The parser counts arrays and tuples (XLA:CPU's split all-to-all), and nothing else."""
  hlo = """
  %a = f32[8,4]{1,0} all-gather(%x), channel_id=1, dimensions={0}
  %b = (s32[32]{0}, s32[32]{0}, /*index=2*/s32[32]{0}) all-to-all(%p, %q, %r), channel_id=2
  %c = f32[] all-reduce(%y), to_apply=%sum
  %d = f32[1000]{0} add(%u, %v)
  %e = bf16[16]{0} all-reduce-start(%z), to_apply=%sum
  """
  assert collectives(hlo) == {'all-gather': 128, 'all-to-all': 384, 'all-reduce': 4 + 32}
  assert collective_bytes(hlo) == 128 + 384 + 36


def test_run_with_row_sharded_tables_resumes_in_any_layout(tiny_config, tmp_path, monkeypatch):
  """A run cut on 8 devices with row-sharded tables and resumed on 4 (its checkpoints
  converted to the new layout), then continued by another run with replicated tables,
  ends where the uninterrupted replicated run ends: same loss curve, same vectors."""
  from conftest import StopAfter
  config = tiny_config
  full = word2vec.train_and_evaluate(config, str(tmp_path / 'full'))

  config.model.table_sharding, config.num_devices = 'rows', 8
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(3))
  part = word2vec.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert part['stopped_by_signal']
  monkeypatch.undo()
  config.num_devices = 4
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(3))
  # no device holds more than its rows while the tables change layout: the saved ones are
  # read to the host, and each device takes its rows from there
  largest, place = [], word2vec.place_table

  def spy(table, old, new, mesh, vocab_size):
    largest.append(max(s.data.shape[0] for a in jax.live_arrays()     # the 4 devices'
                       if a.ndim == 2 and len(a.sharding.device_set) == 4
                       for s in a.addressable_shards))
    out = place(table, old, new, mesh, vocab_size)
    largest.append(max(s.data.shape[0] for s in out.addressable_shards))
    return out
  monkeypatch.setattr(word2vec, 'place_table', spy)
  part = word2vec.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert part['stopped_by_signal']
  monkeypatch.undo()
  assert len(largest) == 4 and max(largest) == row_sharded.local_rows(part['vocab_size'], 4)
  config.model.table_sharding, config.num_devices = 'replicated', 1
  resumed = word2vec.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert resumed['steps'] == full['steps']
  for name in ('wordsim353', 'simlex999'):
    assert resumed['eval'][name]['spearman'] == pytest.approx(full['eval'][name]['spearman'],
                                                              abs=2e-3)
  a = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics.jsonl')]
  b = [json.loads(l) for l in open(tmp_path / 'cut' / 'metrics.jsonl')]
  assert [r['step'] for r in a] == [r['step'] for r in b]
  np.testing.assert_allclose([r['loss'] for r in b], [r['loss'] for r in a], rtol=1e-4)


@pytest.mark.parametrize('old, new', [(0, 4), (8, 4), (4, 8), (3, 0), (8, 8), (0, 0)])
def test_a_host_table_is_placed_in_any_layout_each_device_its_rows(old, new):
  """`place_table`: a table saved in one layout (vocabulary order, or rows over `old`
  devices) lands in another, each device holding only its block."""
  vocab, dim = 101, 3
  table = np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim) + 1
  src = row_sharded.to_sharded_layout(table, old) if old else table
  assert isinstance(src, np.ndarray)                    # numpy in, numpy out: on the host
  mesh = mesh_lib.make_mesh(new or 4)
  got = word2vec.place_table(src, old, new, mesh, vocab)
  want = np.asarray(row_sharded.to_sharded_layout(table, new)) if new else table
  np.testing.assert_array_equal(np.asarray(got), want)
  blocks = {s.data.shape for s in got.addressable_shards}
  assert blocks == {(row_sharded.local_rows(vocab, new) if new else vocab, dim)}
  with pytest.raises(ValueError, match='not 101 words in the layout of 5 shard'):
    word2vec.place_table(src, 5, new, mesh, vocab)


def test_continued_pretraining_from_a_row_sharded_run(tiny_config, tmp_path):
  """`init.path` reads a run's tables in the layout it recorded, whatever this run's."""
  import dataclasses

  from translearn_jax.data.vocab import Vocabulary
  from translearn_jax.training.checkpoint import Checkpointer
  src_dir = str(tmp_path / 'src')
  tiny_config.model.table_sharding, tiny_config.num_devices = 'rows', 8
  word2vec.train_and_evaluate(tiny_config, src_dir)
  src_vocab = Vocabulary.load(f'{src_dir}/vocab.tsv')
  ck = Checkpointer(src_dir)
  saved = ck.restore_params()
  assert ck.saved_data()['table_shards'] == 8
  ck.close()
  c = tiny_config.copy_and_resolve_references()
  c.data.path, c.data.encoding = 'gensim:lee.cor', 'latin-1'
  c.init.path = src_dir
  union = word2vec.union_vocabulary(word2vec.load_corpus(c).vocab, src_vocab)
  cfg = dataclasses.replace(word2vec.model_config(c, 1), vocab_size=len(union))
  for shards in (0, 4):
    state, _ = word2vec.init_from_run(c, cfg, union, 0, mesh_lib.make_mesh(4), shards)
    for name in ('in_embed', 'out_embed'):
      src = row_sharded.from_sharded_layout(saved[name], 8, len(src_vocab))
      got = word2vec.embeddings(state, len(union), shards, table=name)
      for w in ('the', 'government', src_vocab.words[-1]):
        np.testing.assert_array_equal(got[union.index[w]], src[src_vocab.index[w]])
