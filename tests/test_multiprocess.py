"""Multi-process runs (issue #19): two processes on localhost (2 CPU devices each, gloo
collectives), launched by hand with the explicit flags and no cluster environment."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LM = {'progress': False, 'data.kind': 'text', 'data.path': 'gensim:lee_background.cor',
      'tokenizer.vocab_size': 400, 'model.d_model': 32, 'model.num_layers': 1,
      'model.d_ff': 64, 'model.max_len': 64, 'train.seq_length': 32, 'train.batch_size': 8,
      'train.epochs': 1, 'train.steps': 30, 'num_devices': 0, 'train.log_every_steps': 1,
      'train.checkpoint_every_steps': 1000, 'train.eval_every_steps': 1000,
      'optim.warmup_steps': 5}
CLEAN = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'SLURM_JOB_ID',
         'OMPI_COMM_WORLD_SIZE')


def env(devices):
  """This process's environment (conftest's XLA:CPU compile flags and compilation cache)
  with `devices` CPU devices and no cluster variables."""
  e = {k: v for k, v in os.environ.items() if k not in CLEAN}
  flags = [f for f in e.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  e.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
           XLA_FLAGS=' '.join(flags + [f'--xla_force_host_platform_device_count={devices}']))
  return e


def cmd(workdir, *extra, **over):
  args = [f'--config.{k}={v}' for k, v in {**LM, **over}.items()]
  return [sys.executable, os.path.join(ROOT, 'train.py'), '--config',
          os.path.join(ROOT, 'configs', 'lm_transformer.py'), '--workdir', str(workdir),
          *args, *extra]


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def launch(workdirs, **over):
  """Two processes of one run (process k uses workdirs[k]); returns the Popen objects."""
  port = free_port()
  return [subprocess.Popen(cmd(w, f'--coordinator_address=localhost:{port}', '--num_processes=2',
                               f'--process_id={k}', **over),
                           cwd=ROOT, env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for k, w in enumerate(workdirs)]


def finish(procs, timeout=240):
  out = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('a process of the 2-process run hung')
    out.append((p.returncode, err))
  return out


def losses(workdir):
  recs = [json.loads(x) for x in open(os.path.join(workdir, 'metrics.jsonl'))]
  return {r['step']: r['loss'] for r in recs if 'loss' in r}


def last_step(workdir):
  try:
    return max(losses(workdir), default=0)
  except (OSError, ValueError):
    return 0


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """The reference: one process with the same 4 devices, uninterrupted (this one, on 4 of
  its 8 devices: no start-up of its own)."""
  import train
  from conftest import set_fields
  from configs import lm_transformer
  w = tmp_path_factory.mktemp('single') / 'run'
  train.run(set_fields(lm_transformer.get_config(), {**LM, 'num_devices': 4}), str(w))
  return w


def test_sigterm_to_one_process_stops_both_at_one_step_and_resume_is_exact(tmp_path, single):
  w = tmp_path / 'run'
  procs = launch([w, w])
  while procs[0].poll() is None and last_step(w) < 3:   # training has begun
    time.sleep(0.05)
  t0 = time.time()
  procs[0].send_signal(signal.SIGTERM)                   # process 0 alone
  (rc0, err0), (rc1, err1) = finish(procs, timeout=60)
  assert time.time() - t0 < 60
  assert (rc0, rc1) == (0, 0), err0[-1500:] + err1[-1500:]
  stops = [[x for x in e.splitlines() if x.startswith('stopped by signal at step')]
           for e in (err0, err1)]
  assert stops[0] and stops[0] == stops[1], (stops, err1[-1500:])
  stopped = int(stops[0][0].split('step ')[1].split(';')[0])
  assert 3 <= stopped < LM['train.steps']
  assert sorted(os.listdir(w / 'checkpoints')) == [str(stopped)]
  # resumed by a fresh pair of processes: every loss equals the uninterrupted run's
  finish(launch([w, w]))
  ours, ref = losses(w), losses(single)
  assert sorted(ours) == sorted(ref) == list(range(1, LM['train.steps'] + 1))
  for step in ref:
    assert ours[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
  # evaluation is split between the processes: the same held-out tokens, counted once
  ev, ev_ref = (json.load(open(d / 'eval.json')) for d in (w, single))
  assert ev['valid']['tokens'] == ev_ref['valid']['tokens'] > 0
  assert ev['valid']['loss'] == pytest.approx(ev_ref['valid']['loss'], rel=1e-5)


def test_a_workdir_the_processes_do_not_share_is_one_error_at_once(tmp_path):
  t0 = time.time()
  out = finish(launch([tmp_path / 'a', tmp_path / 'b']), timeout=120)
  assert time.time() - t0 < 120
  for rc, err in out:
    errors = [x for x in err.splitlines() if x.startswith('error:')]
    assert rc == 2 and len(errors) == 1 and 'filesystem every process shares' in errors[0], err
  assert not (tmp_path / 'a' / 'checkpoints').exists()


@pytest.mark.parametrize('flags,match', [
    (['--num_processes=2'], 'missing: --coordinator_address, --process_id'),
    (['--coordinator_address=localhost:1', '--num_processes=2', '--process_id=2'],
     r'--process_id must be in \[0, --num_processes=2\)'),
    (['--coordinator_address=nohostport', '--num_processes=2', '--process_id=0'],
     'HOST:PORT'),
])
def test_partial_or_bad_multiprocess_flags_are_one_error(tmp_path, flags, match):
  import re
  res = subprocess.run(cmd(tmp_path / 'w', *flags), cwd=ROOT, env=env(1),
                       capture_output=True, text=True, timeout=120)
  lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
  assert res.returncode == 2 and len(lines) == 1 and re.search(match, lines[0]), res.stderr


def test_row_sharded_word2vec_tables_across_two_processes(tmp_path, tiny_config):
  """Skip-gram (the shared draws: the large-batch config that row sharding serves; the
  default's sequential order is 2.8x its XLA step time) with `model.table_sharding='rows'`
  on 2 processes × 2 devices (each table row lives on one of the 4 devices; lookups and
  updates cross processes in gloo all-to-alls) exports the vectors of one process with 4
  devices and replicated tables. The sequential order on row-sharded tables is
  `test_word2vec_row_sharded.py`'s."""
  import numpy as np
  from translearn_jax.pretraining import word2vec
  over = {'data.kind': 'text', 'data.path': 'gensim:lee_background.cor', 'model.dim': 16,
          'train.batch_size': 4, 'train.seq_length': 64, 'train.steps_per_call': 4,
          'train.epochs': 1, 'progress': False, 'eval.analogy': '', 'export.format': 'text',
          'model.table_sharding': 'rows'}
  port = free_port()
  run = tmp_path / 'run'
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'train.py'), '--config',
       os.path.join(ROOT, 'configs', 'skipgram_shared.py'), '--workdir', str(run),
       *[f'--config.{k}={v}' for k, v in over.items()],
       f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={k}'],
      cwd=ROOT, env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for k in range(2)]
  for rc, err in finish(procs):
    assert rc == 0, err[-2000:]
  tiny_config.train.batch_size, tiny_config.export.format = 4, 'text'  # as `over` (and 4 devices)
  tiny_config.model.table_sharding, tiny_config.num_devices = 'replicated', 4
  word2vec.train_and_evaluate(tiny_config, str(tmp_path / 'single'))

  def vectors(path):
    with open(path) as f:
      rows = [line.split() for line in f.read().splitlines()[1:]]
    return {r[0]: np.asarray(r[1:], float) for r in rows}
  a, b = vectors(run / 'vectors.txt'), vectors(tmp_path / 'single' / 'vectors.txt')
  assert a.keys() == b.keys() and len(a) > 1000
  assert max(np.abs(a[w] - b[w]).max() for w in a) < 1e-5
