"""Pretokenised, sharded LM data (issue #19): the format, the per-process stream, the
command, and the LM runner on it.

Most tests use `IdTokenizer` (a document is its ids written as numbers) so that shard
sizes and window contents are exact and no sentencepiece model is trained; the runner
test uses a real run's sentencepiece tokenizer.
"""

import builtins
import itertools
import json
import os
import tracemalloc

import numpy as np
import pytest

from conftest import StopAfter, lm_config

from translearn_jax.data import pretokenized as pt
from translearn_jax.data import readers
from translearn_jax.data.lm_data import LMState, LMStream, pack
from translearn_jax.data.tokenizer import Tokenizer, encode_documents
from translearn_jax.errors import DataError

LEE = readers.TextSpec(kind='text', path='gensim:lee_background.cor')


class IdTokenizer:
  """A document "17 5 923" encodes to [17, 5, 923]; EOS is 3."""
  file_name = 'tokenizer.model'
  eos_id = 3

  def __init__(self, vocab_size=1000):
    self.vocab_size, self.path = vocab_size, f'<ids below {vocab_size}>'
    self.proto = f'ids<{vocab_size}'.encode()

  def encode_batch(self, texts):
    return [[int(w) for w in t.split()] for t in texts]

  def save(self, path):
    with open(path, 'wb') as f:
      f.write(self.proto)


def id_docs(n, length, seed=0, vocab=1000):
  """`n` documents of `length` random ids each (as text for `IdTokenizer`)."""
  rng = np.random.default_rng(seed)
  return [' '.join(map(str, rng.integers(4, vocab, length))) for _ in range(n)]


def windows_of(tokens):
  """Each row of a (..., T+1) batch as a tuple."""
  return [tuple(r) for r in np.asarray(tokens).reshape(-1, tokens.shape[-1]).tolist()]


def all_windows(directory, seq_len):
  """Every window of every shard (tuples), as `lm_data.pack` cuts each shard."""
  index = pt.read_index(directory)
  out = []
  for e in index['shards']:
    shard = np.fromfile(os.path.join(directory, e['file']),
                        np.dtype(index['dtype']).newbyteorder('<'))
    out += [tuple(r) for r in pack(shard.astype(np.int32), seq_len).tolist()]
  return out


def test_stream_equals_in_memory_pipeline(tmp_path):
  """One shard, one process: the shard is `encode_documents`' stream, the held-out rows
  are `pack`'s, and the batches are LMStream's, batch for batch (the same permutation
  seeds, by design). Several shards: per epoch, every window served is a window of a
  shard, none twice, and the documents' ids are all there once."""
  tok = Tokenizer.train(['the cat sat on the mat', 'a dog ran far away', 'birds sing at dawn',
                         'rain falls on the hills'] * 5, vocab_size=300)
  words = 'the cat sat on mat a dog ran far away birds sing at dawn rain falls hills'.split()
  rng = np.random.default_rng(0)
  docs = [' '.join(rng.choice(words, rng.integers(3, 30))) for _ in range(120)]
  valid = docs[:10]
  pt.pretokenize(iter(docs[10:] + ['', '  ']), tok, str(tmp_path / 'one'), 1, iter(valid),
                 batch_docs=7)
  stream = encode_documents(tok, docs[10:])
  index = pt.read_index(str(tmp_path / 'one'))
  assert index['dtype'] == 'uint16' and index['train_documents'] == 110
  shard = np.fromfile(tmp_path / 'one' / 'shard_00000.bin', '<u2')
  np.testing.assert_array_equal(shard, stream)
  np.testing.assert_array_equal(pt.valid_rows(str(tmp_path / 'one'), 16),
                                pack(encode_documents(tok, valid), 16))
  mine = pt.ShardedTokenStream(str(tmp_path / 'one'), 16, 4, 2, 2, seed=5)
  ref = LMStream(pack(stream, 16), 4, 2, 2, 5)
  assert mine.total_steps == ref.total_steps > 4
  for (a, x), (b, y) in zip(mine.iterate(LMState()), ref.iterate(LMState()), strict=True):
    assert a == b
    np.testing.assert_array_equal(x['tokens'], y['tokens'])

  pt.pretokenize(iter(docs[10:]), tok, str(tmp_path / 'three'), 3, batch_docs=7)
  shards = [np.fromfile(tmp_path / 'three' / pt.shard_name(i), '<u2') for i in range(3)]
  assert sorted(np.concatenate(shards).tolist()) == sorted(stream.tolist())
  sizes = [len(s) for s in shards]
  longest = max(len(ids) + 1 for ids in tok.encode_batch(docs[10:]))
  assert max(sizes) - min(sizes) <= longest   # least-loaded placement: within one document
  three = pt.ShardedTokenStream(str(tmp_path / 'three'), 16, 4, 2, 2, seed=5)
  every = all_windows(str(tmp_path / 'three'), 16)
  for epoch in range(2):
    served = [w for b in range(three.batches_in(epoch))
              for w in windows_of(three.make_batch(epoch, b)['tokens'])]
    assert len(set(served)) == len(served) == three.batches_per_epoch * 8
    assert set(served) <= set(every) and len(every) - len(served) < 8


def test_two_processes_open_disjoint_shards_and_cover_each_window_once(tmp_path,
                                                                        monkeypatch):
  """Process p of 2 opens index.json and shards p, p+2 only (counted at `open`); the
  batch counts agree; over an epoch the two serve every window exactly once (the data
  is made to fill whole steps: 4 shards × 5 documents of 16 ids = 4 windows of 16+1)."""
  d = str(tmp_path / 'tok')
  docs = id_docs(20, 15, vocab=70000)    # 15 ids + EOS: shards of 80 tokens
  index = pt.pretokenize(docs, IdTokenizer(70000), d, 4)
  assert index['dtype'] == 'uint32' and [e['tokens'] for e in index['shards']] == [80] * 4
  opened = []
  real_open = builtins.open

  def spy(path, *a, **k):
    opened.append(os.path.basename(str(path)))
    return real_open(path, *a, **k)

  streams, files = [], []
  for p in (0, 1):
    opened.clear()
    monkeypatch.setattr(builtins, 'open', spy)
    streams.append(pt.ShardedTokenStream(d, 16, batch=4, accum=2, epochs=2, seed=1,
                                         process_index=p, process_count=2,
                                         row_start=2 * p, row_stop=2 * p + 2))
    for e in range(2):
      for b in range(streams[p].batches_in(e)):
        streams[p].make_batch(e, b)
    monkeypatch.setattr(builtins, 'open', real_open)
    files.append(sorted(set(opened)))
  assert files == [['index.json', 'shard_00000.bin', 'shard_00002.bin'],
                   ['index.json', 'shard_00001.bin', 'shard_00003.bin']]
  assert streams[0].batches_per_epoch == streams[1].batches_per_epoch == 2
  every = all_windows(d, 16)
  assert max(max(w) for w in every) >= 1 << 16   # uint32 ids come back whole
  orders = []
  for epoch in range(2):
    served = []
    for s in streams:
      for b in range(s.batches_in(epoch)):
        batch = s.make_batch(epoch, b)['tokens']
        assert batch.shape == (2, 2, 17) and batch.dtype == np.int32
        served += windows_of(batch)
    assert sorted(served) == sorted(every)     # each window exactly once
    orders.append(served)
  assert orders[0] != orders[1]                # reshuffled per epoch


def test_resume_jumps_to_any_batch(tmp_path):
  """A fresh stream started at (epoch, batch) yields exactly what the uninterrupted
  iteration yields from there, batches straddling shard boundaries included; only the
  permutations of the (at most two) shards a batch touches are kept."""
  d = str(tmp_path / 'tok')
  rng = np.random.default_rng(3)
  docs = [' '.join(map(str, rng.integers(4, 1000, rng.integers(5, 60)))) for _ in range(150)]
  pt.pretokenize(docs, IdTokenizer(), d, 5)
  make = lambda: pt.ShardedTokenStream(d, 8, 3, 1, 3, seed=2)  # noqa: E731
  full = list(make().iterate(LMState()))
  s = make()
  assert len(full) == s.total_steps and s.batches_per_epoch * 3 > s.windows[0]  # shards < epoch
  for k in (0, 5, s.batches_per_epoch - 1, s.batches_per_epoch, len(full) - 2):
    fresh = make()
    resumed = list(fresh.iterate(full[k][0]))
    assert [st for st, _ in resumed] == [st for st, _ in full[k + 1:]]
    for (_, x), (_, y) in zip(resumed, full[k + 1:]):
      np.testing.assert_array_equal(x['tokens'], y['tokens'])
    assert len(fresh._perm_cache) <= 2


def test_memory_does_not_grow_with_the_corpus(tmp_path):
  """Twice the corpus in twice the shards: the peak Python/numpy allocation of a whole
  epoch (tracemalloc; the tokens themselves are memory-mapped) grows by less than one
  byte per added window (an order over the corpus would take 8: only O(shards) grows),
  and the orders kept are one shard's windows each, at most two of them."""
  peaks, windows = [], []
  for n_shards in (4, 8):
    pt.pretokenize(id_docs(40 * n_shards, 499, seed=n_shards), IdTokenizer(),
                   str(tmp_path / f'c{n_shards}'), n_shards, batch_docs=64)
  warm = pt.ShardedTokenStream(str(tmp_path / 'c4'), 8, 16, 1, 1, seed=1)  # first-use costs
  warm.make_batch(0, 0)
  for n_shards in (4, 8):
    d = str(tmp_path / f'c{n_shards}')
    tracemalloc.start()
    s = pt.ShardedTokenStream(d, 8, 16, 1, 1, seed=0)
    for b in range(s.batches_in(0)):
      s.make_batch(0, b)
    peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    windows.append(sum(s.windows))
    assert len(s._perm_cache) == 2
    assert all(len(p) == s.windows[k[1]] == 2499 for k, p in s._perm_cache.items())
    assert s.batches_per_epoch * 16 > 0.99 * windows[-1]   # the whole corpus is served
  assert peaks[1] - peaks[0] < windows[1] - windows[0], peaks
  assert peaks[1] < 1.2 * peaks[0], peaks


def test_bad_files_are_one_error_naming_the_file(tmp_path):
  """A truncated shard (only its owner looks at it), a truncated valid.bin, a seq_len
  longer than a shard, too few shards, a tokenizer that is not the index's."""
  d = tmp_path / 'tok'
  pt.pretokenize(id_docs(8, 30), IdTokenizer(), str(d), 2, valid_documents=id_docs(2, 30))
  pt.verify(str(d))
  shard0, shard1 = d / 'shard_00000.bin', d / 'shard_00001.bin'
  shard0.write_bytes(b'\0\0' + shard0.read_bytes()[2:])    # same size, other bytes
  with pytest.raises(DataError, match=f'^{shard0}: sha256 differs from index.json'):
    pt.verify(str(d))
  shard1.write_bytes(shard1.read_bytes()[:-2])
  with pytest.raises(DataError, match=f'^{shard1}: 246 bytes, but index.json lists 124 uint16'):
    pt.ShardedTokenStream(str(d), 8, 2, 1, 1, 0, process_index=1, process_count=2)
  pt.ShardedTokenStream(str(d), 8, 2, 1, 1, 0, process_index=0, process_count=2)
  valid = d / 'valid.bin'
  valid.write_bytes(valid.read_bytes()[:-1])
  with pytest.raises(DataError, match=f'^{valid}: 123 bytes'):
    pt.valid_rows(str(d), 8)
  with pytest.raises(DataError, match=r'shard_00000\.bin: 124 tokens, fewer than one sequence '
                                      r'of seq_len \+ 1 = 201'):
    pt.ShardedTokenStream(str(d), 200, 2, 1, 1, 0, process_index=0, process_count=2)
  with pytest.raises(DataError, match='2 shards for 3 processes'):
    pt.ShardedTokenStream(str(d), 8, 3, 1, 1, 0, process_index=0, process_count=3)
  other = IdTokenizer(999)
  with pytest.raises(DataError, match=rf'^<ids below 999>: sha256 \w+… differs from the '
                                      rf'tokenizer {d}/index.json was made with'):
    pt.check_tokenizer(other, str(d))
  with pytest.raises(DataError, match='made with tokenizer sha256'):
    pt.ShardedTokenStream(str(d), 8, 2, 1, 1, 0, 0, 2, tokenizer_sha256=pt.tokenizer_sha256(other))
  with pytest.raises(DataError, match=f'{tmp_path}/none/index.json: missing'):
    (tmp_path / 'none').mkdir()
    pt.read_index(str(tmp_path / 'none'))


def test_interrupted_or_refused_writes_leave_no_directory(tmp_path):
  """An exception mid-way (after some batches were written) leaves no output directory
  and no temporary sibling; a complete directory is kept unless overwrite=True, and an
  interrupted overwrite keeps the old one whole."""
  def failing(docs, after):
    for i, doc in enumerate(docs):
      if i == after:
        raise RuntimeError('reader died')
      yield doc

  out = tmp_path / 'out'
  with pytest.raises(RuntimeError, match='reader died'):
    pt.pretokenize(failing(id_docs(100, 10), 55), IdTokenizer(), str(out), 3, batch_docs=10)
  assert os.listdir(tmp_path) == []
  pt.pretokenize(id_docs(20, 10), IdTokenizer(), str(out), 2)
  before = {f: (out / f).read_bytes() for f in os.listdir(out)}
  with pytest.raises(DataError, match='already exists there'):
    pt.pretokenize(id_docs(30, 10), IdTokenizer(), str(out), 2)
  with pytest.raises(RuntimeError):
    pt.pretokenize(failing(id_docs(30, 10), 25), IdTokenizer(), str(out), 2, batch_docs=10,
                   overwrite=True)
  assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
  assert os.listdir(tmp_path) == ['out']
  pt.pretokenize(id_docs(30, 10), IdTokenizer(), str(out), 2, overwrite=True)
  assert pt.read_index(str(out))['train_documents'] == 30 and os.listdir(tmp_path) == ['out']
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
  with pytest.raises(DataError, match='is not a pretokenised directory'):
    pt.pretokenize(id_docs(3, 10), IdTokenizer(), str(tmp_path / 'mine'), 1, overwrite=True)


def test_command_errors_are_one_line(tmp_path, capsys):
  for argv, message in [
      (['--input', 'x', '--out', str(tmp_path / 'o')], 'error: the following arguments are '
                                                       'required: --tokenizer'),
      (['--tokenizer', '/no/tok.model', '--input', 'x', '--out', str(tmp_path / 'o')],
       'error: tokenizer model not found: /no/tok.model'),
      (['--shards', 'two'], "error: argument --shards: invalid int value: 'two'"),
      (['--verify', str(tmp_path)], f'error: {tmp_path}/index.json: missing')]:
    with pytest.raises(SystemExit) as e:
      raise SystemExit(pt.main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_lm_runner_on_a_pretokenised_directory(tmp_path, monkeypatch):
  """The design makes a one-shard directory on one process serve the in-memory
  pipeline's batches in the same order (module docstring of data/pretokenized.py), so
  the strongest check is chosen: a run on the directory that the command made with the
  in-memory run's tokenizer (its tokenizer.path; the directory's run uses the copy in the
  directory) and the same held-out split (--valid_fraction 0.05, seed 0),
  interrupted after 4 steps and resumed, logs the in-memory run's losses step for step
  and ends with its held-out and training-sample losses exactly. A tokenizer.path that
  is not the directory's is one error naming it, before any training."""
  from translearn_jax.pretraining import lm
  tok = Tokenizer.train(itertools.islice(readers.read_documents(LEE), 60), vocab_size=400)
  tok.save(str(tmp_path / 'lee.model'))
  over = {'train.steps': 8, 'train.log_every_steps': 1, 'train.checkpoint_every_steps': 6}
  ref = lm.train_and_evaluate(lm_config(**over, **{'tokenizer.path': str(tmp_path / 'lee.model')}),
                              str(tmp_path / 'mem'))
  d = str(tmp_path / 'lee.tok')
  assert pt.main(['--tokenizer', str(tmp_path / 'lee.model'), '--input',
                  'gensim:lee_background.cor', '--out', d, '--shards', '1',
                  '--valid_fraction', '0.05']) == 0
  c = lm_config(**over, **{'data.kind': 'pretokenized', 'data.path': d})
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(3))
  part = lm.train_and_evaluate(c, str(tmp_path / 'tok'))
  assert part['stopped_by_signal'] and part['steps'] == 4
  monkeypatch.undo()
  got = lm.train_and_evaluate(c, str(tmp_path / 'tok'))
  assert got['steps'] == ref['steps'] == 8
  for k in ('valid', 'train_sample', 'train_documents', 'valid_documents', 'train_tokens',
            'valid_tokens', 'train_words'):
    assert got[k] == ref[k], k

  def losses(run):
    return {r['step']: r['loss'] for r in map(json.loads, open(tmp_path / run / 'metrics.jsonl'))
            if 'loss' in r}
  assert losses('tok') == losses('mem') and len(losses('mem')) == 8
  assert os.path.exists(tmp_path / 'tok' / 'tokenizer.model')
  # the directory counts its training shards' pieces; the run records them (for grafts)
  index = pt.read_index(d)
  shard = np.fromfile(os.path.join(d, index['shards'][0]['file']), '<u2')
  want = np.bincount(shard, minlength=400)
  counts = np.load(os.path.join(tmp_path / 'tok', 'piece_counts.npy'), allow_pickle=False)
  np.testing.assert_array_equal(counts, want)
  assert counts.sum() == index['train_tokens']
  np.testing.assert_array_equal(np.load(os.path.join(d, 'piece_counts.npy')), want)
  wrong = Tokenizer.train(['some other words entirely'] * 10, vocab_size=300)
  wrong.save(str(tmp_path / 'wrong.model'))
  c.tokenizer.path = str(tmp_path / 'wrong.model')
  with pytest.raises(DataError, match=f'^{tmp_path}/wrong.model: sha256'):
    lm.train_and_evaluate(c, str(tmp_path / 'other'))
  # a run given tokenizer.path keeps a copy, which is its tokenizer from then on: the file
  # at the path replaced later (here by another model) changes nothing the run serves
  from translearn_jax.transfer import sources
  kept = open(tmp_path / 'mem' / 'tokenizer.model', 'rb').read()
  assert kept == open(tmp_path / 'lee.model', 'rb').read()
  (tmp_path / 'lee.model').write_bytes(open(tmp_path / 'wrong.model', 'rb').read())
  run_tok = sources.run_tokenizer(str(tmp_path / 'mem'),
                                  sources.run_config(str(tmp_path / 'mem'), 'init.path'))
  assert run_tok.vocab_size == 400 == tok.vocab_size
  # a tokenizer of the other kind left in the directory by an earlier run that never
  # checkpointed is removed when the copy is kept (read first, it served another tokenizer)
  (tmp_path / 'mem' / 'tokenizer.json').write_text('{}')
  sources.keep_tokenizer(tok, str(tmp_path / 'mem'))
  assert sorted(os.listdir(tmp_path / 'mem')).count('tokenizer.json') == 0
  assert sources.run_tokenizer(str(tmp_path / 'mem'), sources.run_config(
      str(tmp_path / 'mem'), 'init.path')).vocab_size == 400


# -- the masked-LM runner on a pretokenised directory ------------------------------------

def test_window_rows_lay_out_documents_as_the_packer_does():
  from translearn_jax.data.mlm_data import window_rows
  bos, eos = 1, 2
  win = np.array([5, 6, 7, eos, 8, 9, 10, 11, eos, 12, 13])   # a window's end cuts [12, 13]
  rows = window_rows(win[None], 16, min_piece=3, bos=bos, eos=eos)
  assert rows.shape == (1, 3, 16)
  np.testing.assert_array_equal(rows[0, 0], [1, 5, 6, 7, 2, 1, 8, 9, 10, 11, 2] + [0] * 5)
  np.testing.assert_array_equal(rows[0, 1], [1] * 5 + [2] * 6 + [0] * 5)
  np.testing.assert_array_equal(rows[0, 2], list(range(5)) + list(range(6)) + [0] * 5)
  long = window_rows(np.arange(10, 40)[None], 16, min_piece=3, bos=bos, eos=eos)[0]
  np.testing.assert_array_equal(long[0], [1] + list(range(10, 24)) + [2])   # cut to fit
  # random windows: segments never cross a document end, each is <bos> run-slice <eos>
  rng = np.random.default_rng(0)
  wins = rng.integers(3, 30, (200, 41))
  wins[rng.random(wins.shape) < 0.08] = eos
  out = window_rows(wins, 40, min_piece=4, bos=bos, eos=eos)
  for win, (tok, seg, pos) in zip(wins, out):
    runs = [list(r) for r in np.split(win, np.flatnonzero(win == eos)) if len(r)]
    runs = [r[1:] if r[0] == eos else r for r in runs]
    real = seg > 0
    assert seg[0] == 1 and (np.diff(seg[real]) >= 0).all()
    assert real.all() or not real[real.argmin():].any()        # padding only at the end
    for s in range(1, seg.max() + 1):
      part = tok[seg == s]
      assert part[0] == bos and part[-1] == eos and (pos[seg == s] == np.arange(len(part))).all()
      body = list(part[1:-1])
      assert eos not in body and any(r[:len(body)] == body for r in runs), (win, body)


def test_mlm_runner_on_a_pretokenised_directory(tmp_path, monkeypatch):
  """A masked-LM run on a directory that the command made with a <mask> tokenizer: it
  resumes exactly (losses step for step), packs the held-out documents exactly as the
  in-memory run packs the same held-out split (same rows: the same masked pieces are
  scored), and a directory made with a tokenizer without <mask> is one error."""
  from conftest import mlm_config
  from translearn_jax.data.tokenizer import MASK_PIECE
  from translearn_jax.pretraining import mlm
  tok = Tokenizer.train(itertools.islice(readers.read_documents(LEE), 60), vocab_size=400,
                        special_pieces=(MASK_PIECE,))
  tok.save(str(tmp_path / 'lee.model'))
  d = str(tmp_path / 'lee.tok')
  assert pt.main(['--tokenizer', str(tmp_path / 'lee.model'), '--input',
                  'gensim:lee_background.cor', '--out', d, '--shards', '2',
                  '--valid_fraction', '0.05']) == 0
  over = {'train.steps': 6, 'train.log_every_steps': 1, 'train.checkpoint_every_steps': 4,
          'data.valid_fraction': 0.05}
  c = mlm_config(**over, **{'data.kind': 'pretokenized', 'data.path': d})
  full = mlm.train_and_evaluate(c, str(tmp_path / 'full'))
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(2))
  part = mlm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert part['stopped_by_signal'] and part['steps'] == 3
  monkeypatch.undo()
  got = mlm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert got['steps'] == full['steps'] == 6 and got['valid'] == full['valid']

  def losses(run):
    return {r['step']: r['loss'] for r in map(json.loads, open(tmp_path / run / 'metrics.jsonl'))
            if 'loss' in r}
  assert losses('cut') == losses('full') and len(losses('full')) == 6
  # the held-out rows are the in-memory runner's rows of the same documents
  mem = mlm.load_data(mlm_config(**over, **{'tokenizer.path': str(tmp_path / 'lee.model')}),
                      str(tmp_path / 'mem'))
  _, _, valid_rows, _, _ = mlm.load_pretokenized(c, str(tmp_path / 'full'), 0, 8)
  np.testing.assert_array_equal(valid_rows, mem[2])
  assert full['valid']['masked_tokens'] > 0
  # a directory whose tokenizer has no <mask>
  plain = Tokenizer.train(itertools.islice(readers.read_documents(LEE), 60), vocab_size=400)
  plain.save(str(tmp_path / 'plain.model'))
  d2 = str(tmp_path / 'plain.tok')
  assert pt.main(['--tokenizer', str(tmp_path / 'plain.model'), '--input',
                  'gensim:lee_background.cor', '--out', d2, '--shards', '1']) == 0
  with pytest.raises(DataError, match=r'plain.tok/tokenizer.model: the tokenizer has no <mask> piece'):
    mlm.train_and_evaluate(mlm_config(**{'data.kind': 'pretokenized', 'data.path': d2}),
                           str(tmp_path / 'plain'))
