"""Run safety: workdir lock, resume validation, checkpoint integrity, kill -9, SIGTERM."""

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_fields
from translearn_jax.errors import ConfigError, TranslearnError
from translearn_jax.training import preemption
from translearn_jax.training import workdir as workdir_lib
from translearn_jax.training.checkpoint import DAMAGED, MANIFEST, Checkpointer
from translearn_jax.training.loop import last_good
from translearn_jax.training.metrics import MetricWriter
from translearn_jax.training.state import TrainState

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALL_CLOCK = ('time', 'mfu', 'model_tflops_per_sec')

W2V = {'progress': False, 'model.dim': 16, 'num_devices': 1, 'data.kind': 'text',
       'data.path': 'gensim:lee_background.cor', 'train.epochs': 3, 'train.batch_size': 8,
       'train.seq_length': 64, 'train.steps_per_call': 4, 'train.checkpoint_every_steps': 12,
       'train.log_every_steps': 8, 'train.keep_checkpoints': 3, 'eval.analogy': '',
       'export.format': ''}
LM = {'progress': False, 'data.kind': 'text', 'data.path': 'gensim:lee_background.cor',
      'tokenizer.vocab_size': 400, 'model.d_model': 32, 'model.num_layers': 1,
      'model.d_ff': 64, 'model.max_len': 64, 'model.dropout': 0.1, 'train.seq_length': 32,
      'train.batch_size': 8, 'train.epochs': 1, 'train.steps': 80, 'num_devices': 1,
      'train.log_every_steps': 5, 'train.checkpoint_every_steps': 7,
      'train.eval_every_steps': 1000,
      'train.eval_max_rows': 16, 'optim.warmup_steps': 5}
CONFIGS = {'skipgram': W2V, 'lm_transformer': LM}


def make_config(name, **over):
  """The config `train.py --config configs/NAME.py` builds with the same overrides."""
  import importlib
  config = importlib.import_module(f'configs.{name}').get_config()
  return set_fields(config, {**CONFIGS[name], **over})


def train_cmd(name, workdir, **over):
  args = [f'--config.{k}={v}' for k, v in {**CONFIGS[name], **over}.items()]
  return [sys.executable, os.path.join(ROOT, 'train.py'), '--config',
          os.path.join(ROOT, 'configs', f'{name}.py'), '--workdir', str(workdir), *args]


def env():
  return {**os.environ, 'PYTHONPATH': ROOT}


def run_cmd(cmd, timeout=120):
  return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True,
                        timeout=timeout)


def one_error_line(res):
  lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), res.stderr
  return lines[0]


def metric_records(workdir):
  out = {}
  for line in open(os.path.join(workdir, 'metrics.jsonl')):
    rec = json.loads(line)
    out[rec['step']] = {k: v for k, v in rec.items()
                        if k not in WALL_CLOCK and not k.endswith('_per_sec')}
  return out


def newest_params(workdir):
  """Raw arrays of the newest checkpoint, restored without a template."""
  import orbax.checkpoint as ocp
  step = max(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'state'))
  return step, tree['params']


# -- workdir -------------------------------------------------------------------

def test_workdir_that_is_a_file_is_one_line_error(tmp_path):
  f = tmp_path / 'file'
  f.write_text('x')
  res = run_cmd(train_cmd('skipgram', f))
  assert res.returncode == 2
  assert 'is a file, not a directory' in one_error_line(res)


def test_held_lock_refused_naming_holder_stale_lock_taken_over(tmp_path, capsys):
  wd = tmp_path / 'w'
  wd.mkdir()
  holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'start_time': '2024-01-01 10:00'}
  (wd / '.lock').write_text(json.dumps(holder))
  before = (wd / '.lock').read_bytes()
  res = run_cmd(train_cmd('skipgram', wd))
  assert res.returncode == 2
  line = one_error_line(res)
  assert 'in use by another run' in line and f'pid {os.getpid()}' in line, line
  assert (wd / '.lock').read_bytes() == before and not (wd / 'checkpoints').exists()
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (wd / '.lock').write_text(json.dumps({**holder, 'pid': dead.pid}))
  capsys.readouterr()
  with workdir_lib.lock(str(wd)) as me:
    assert json.loads((wd / '.lock').read_text()) == me and me['pid'] == os.getpid()
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'no longer alive' in err[0] and f'pid {dead.pid}' in err[0]
  assert not (wd / '.lock').exists()
  with pytest.raises(RuntimeError, match='failed inside the lock'):  # released then too
    with workdir_lib.lock(str(wd)):
      raise RuntimeError('failed inside the lock')
  assert not (wd / '.lock').exists()


def test_a_lock_whose_pid_is_now_another_process_is_stale(tmp_path):
  """A container's main process is pid 1 after every restart: a lock left by a killed
  pid 1 was 'in use' forever (a review). The lock records its process's start time and
  boot, so a later process with the same pid (this one, here) takes it over."""
  wd = tmp_path / 'w'
  wd.mkdir()
  me = {'pid': os.getpid(), 'host': socket.gethostname(), 'start_time': 'then',
        'proc_start': workdir_lib._proc_start(os.getpid()), 'boot': workdir_lib._boot_id()}
  assert me['proc_start'] is not None and me['boot']
  (wd / '.lock').write_text(json.dumps({**me, 'proc_start': me['proc_start'] - 1}))
  with workdir_lib.lock(str(wd)) as held:
    assert held['proc_start'] == me['proc_start']
  (wd / '.lock').write_text(json.dumps({**me, 'boot': 'another-boot'}))
  with workdir_lib.lock(str(wd)):
    pass
  # a live process that started when its lock says is alive: refused
  (wd / '.lock').write_text(json.dumps({**me, 'pid': os.getppid(),
                                        'proc_start': workdir_lib._proc_start(os.getppid())}))
  with pytest.raises(TranslearnError, match='in use by another run'):
    with workdir_lib.lock(str(wd)):
      pass
  assert workdir_lib.held_by_other(str(wd))
  (wd / '.lock').write_text(json.dumps({**me, 'pid': os.getppid(), 'proc_start': 1}))
  assert not workdir_lib.held_by_other(str(wd))        # that pid is another process now


def test_resume_with_changed_architecture_is_refused(tmp_path):
  wd = tmp_path / 'w'
  with workdir_lib.open_workdir(make_config('lm_transformer'), str(wd)):
    pass
  saved = (wd / 'config.json').read_bytes()
  # config.json alone is no resume: any config may take the workdir over
  with workdir_lib.open_workdir(make_config('lm_transformer', seed=5), str(wd)):
    pass
  assert json.loads((wd / 'config.json').read_text())['seed'] == 5
  with workdir_lib.open_workdir(make_config('lm_transformer'), str(wd)):
    pass
  assert (wd / 'config.json').read_bytes() == saved
  (wd / 'checkpoints' / '8').mkdir(parents=True)  # now it holds a run
  res = run_cmd(train_cmd('lm_transformer', wd, **{'model.d_model': 48}))
  assert res.returncode == 2
  line = one_error_line(res)
  assert 'model.d_model 32 → 48' in line and 'seed' not in line, line
  assert (wd / 'config.json').read_bytes() == saved
  with pytest.raises(ConfigError, match='model.d_model 32 → 48; seed 0 → 1'):
    with workdir_lib.open_workdir(make_config('lm_transformer', seed=1,
                                              **{'model.d_model': 48}), str(wd)):
      pass
  assert (wd / 'config.json').read_bytes() == saved
  more = make_config('lm_transformer', **{'train.steps': 160, 'train.log_every_steps': 10,
                                          'train.eval_max_rows': 0})
  # a longer run may resume, and is told that its schedule is stretched from here on
  with pytest.warns(UserWarning, match=r'another training length \(train\.steps 80 → 160\): '
                                       r'a learning-rate schedule .* is stretched'):
    with workdir_lib.open_workdir(more, str(wd)):
      pass
  assert json.loads((wd / 'config.json').read_text())['train']['steps'] == 160


def test_resume_refuses_input_files_changed_under_the_run(tmp_path):
  """The config names the corpus by path: documents appended to it (or another file copied
  over it) must not resume silently, with other rows and another held-out split."""
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('one document here\n\nanother one\n', encoding='utf-8')
  config = make_config('lm_transformer', **{'data.path': str(corpus)})
  wd = tmp_path / 'run'
  with workdir_lib.open_workdir(config, str(wd)):
    pass
  saved = json.loads((wd / 'inputs.json').read_text())
  assert list(saved['data.path']) == [str(corpus)]
  (wd / 'checkpoints' / '8').mkdir(parents=True)       # it holds a run now
  with workdir_lib.open_workdir(config, str(wd)):      # the same file: resumes
    pass
  # an untouched file (size and time as recorded) is not read again: a resume of a large
  # corpus costs no pass over it (a record whose digest was bogus still resumes)
  bogus = json.loads(json.dumps(saved))
  bogus['data.path'][str(corpus)]['sha256'] = '0' * 64
  (wd / 'inputs.json').write_text(json.dumps(bogus))
  with workdir_lib.open_workdir(config, str(wd)):
    pass
  (wd / 'inputs.json').write_text(json.dumps(saved))
  corpus.write_text('one document here\n\nanother one\n\nand a third\n', encoding='utf-8')
  with pytest.raises(ConfigError, match=r'read other input files; data\.path: .*corpus\.txt '
                                        r'changed \(31 → 44 bytes\)'):
    with workdir_lib.open_workdir(config, str(wd)):
      pass
  corpus.write_text('one document HERE\n\nanother one\n', encoding='utf-8')   # same size
  with pytest.raises(ConfigError, match=r'changed \(31 → 31 bytes, other contents\)'):
    with workdir_lib.open_workdir(config, str(wd)):
      pass
  corpus.write_text('one document here\n\nanother one\n', encoding='utf-8')
  with workdir_lib.open_workdir(config, str(wd)):
    pass
  assert json.loads((wd / 'inputs.json').read_text()) == saved


def test_seq2seq_scoring_during_training_may_change_on_resume_and_its_sizes_are_checked():
  """`eval.every_steps`, `eval.during_beam` and `eval.during_max_examples` change no
  parameter (a review: byte-identical runs), so a resume may change them, as the LM's
  `train.eval_every_steps`; a beam of 0 (greedy, silently) or a negative cadence is refused."""
  for f in ('eval.every_steps', 'eval.during_beam', 'eval.during_max_examples',
            'export.format', 'eval.similarity', 'eval.analogy_restrict'):  # word2vec's too
    assert workdir_lib.may_change(f), f
  from configs import seq2seq_multi30k
  for field, value, match in (('during_beam', 0, r'config\.eval\.during_beam'),
                              ('every_steps', -1, r'config\.eval\.every_steps')):
    c = seq2seq_multi30k.get_config()
    c.eval[field] = value
    with pytest.raises(ConfigError, match=match):
      workdir_lib.validate_fields(c)


def test_resume_allow_list():
  old = {'seed': 0, 'seeds': 3, 'compare_scratch': True, 'transfer': {'strategies': 'a,b',
         'lr': 1.0}, 'train': {'log_every_steps': 5, 'steps': 10, 'dropout': 0.1},
         'keep_checkpoints': 3, 'num_devices': 0, 'eval_every_epochs': 1}
  new = json.loads(json.dumps(old))
  new.update(seeds=5, compare_scratch=False, keep_checkpoints=1, num_devices=8,
             eval_every_epochs=2)
  new['transfer']['strategies'] = 'a'
  new['train'].update(log_every_steps=50, steps=20)
  assert workdir_lib.config_changes(old, new)[0] == []
  new['transfer']['lr'] = 2.0
  new['train']['dropout'] = 0.2
  new['extra'] = 1
  forbidden, _ = workdir_lib.config_changes(old, new)
  assert forbidden == ['extra <absent> → 1', 'train.dropout 0.1 → 0.2', 'transfer.lr 1.0 → 2.0']
  # a field added later (ADDED_FIELDS) is, when absent from an old run, its listed value
  old_run, today = {'model': {'d_model': 8}}, {'model': {'d_model': 8, 'pad_id': 0}}
  assert workdir_lib.config_changes(old_run, today) == ([], [])
  today['model']['pad_id'] = 1
  assert workdir_lib.config_changes(old_run, today)[0] == ['model.pad_id 0 → 1']
  # a skip-gram run saved before the step kernel, the prefetch knobs, the cap's cross term
  # and the rows' layout existed resumes under today's config (the kernel and the knobs may
  # change: the same update, the same blocks), but not into the large-batch config's other
  # row layout, which would give the saved stream position other tokens
  from configs import skipgram, skipgram_large_batch
  for name, config in (('skipgram', skipgram), ('large', skipgram_large_batch)):
    today = workdir_lib.config_dict(config.get_config())
    old_run = json.loads(json.dumps(today))
    old_run['model'].pop('step_kernel')
    for f in ('prefetch', 'input_workers', 'batch_rows'):
      old_run['train'].pop(f)
    old_run['optim'].pop('row_cap_cross')
    forbidden, allowed = workdir_lib.config_changes(old_run, today)
    assert sorted(allowed) == ['model.step_kernel "xla" → "auto"', 'train.input_workers <absent> → 0',
                               'train.prefetch <absent> → 2']
    assert forbidden == ([] if name == 'skipgram' else
                         ['optim.row_cap_cross 0.0 → 0.05', 'train.batch_rows "block" → "spread"'])
  # a seq2seq run saved before its fine-tuning strategies, and a multi-task run before its
  # tasks' saved models, resume too
  from configs import multitask, seq2seq_multi30k
  today = workdir_lib.config_dict(seq2seq_multi30k.get_config())
  old_run = json.loads(json.dumps(today))
  assert sorted(old_run.pop('transfer')) == ['factor', 'freeze_bottom', 'groups', 'strategy',
                                              'unfreeze_every']
  assert workdir_lib.config_changes(old_run, today) == ([], [])
  today = workdir_lib.config_dict(multitask.get_config())
  old_run = json.loads(json.dumps(today))
  old_run['mr'].pop('save_models')
  assert workdir_lib.config_changes(old_run, today)[0] == []


@pytest.mark.parametrize('field, value', [('model.dropout', 1.5), ('model.dropout', -0.5),
                                          ('model.attention_dropout', 1.0)])
def test_dropout_out_of_range_names_the_field(tmp_path, field, value):
  with pytest.raises(ConfigError, match=rf'^config\.{field}: must be in \[0, 1\), got {value}$'):
    train.run(make_config('lm_transformer', **{field: value}), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


# -- checkpoints -----------------------------------------------------------------

def small_state(step):
  return TrainState(step=jnp.asarray(step, jnp.int32),
                    params={'w': jnp.arange(4000, dtype=jnp.float32).reshape(40, 100) * step,
                            'b': jnp.full((7,), float(step))}, opt_state={},
                    rng=jax.random.key(0))


def saved_steps(tmp_path, steps=(10, 20, 30)):
  ck = Checkpointer(str(tmp_path))
  for s in steps:
    ck.save(s, small_state(s), {'pos': s})
  ck.close()
  return os.path.join(str(tmp_path), 'checkpoints')


def test_restore_params_reads_the_params_without_a_missing_metadata_warning(tmp_path, caplog):
  """`restore_params` reads `<step>/state` on its own; orbax's warning that this item
  directory has no `_CHECKPOINT_METADATA` (it is in the step directory) is not shown."""
  import logging
  saved_steps(tmp_path, (10, 20))
  ck = Checkpointer(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    params = ck.restore_params(10)
  ck.close()
  np.testing.assert_array_equal(params['w'], np.asarray(small_state(10).params['w']))
  assert not [r for r in caplog.records if 'Metadata file does not exist' in r.getMessage()]
  caplog.clear()
  with caplog.at_level(logging.WARNING):    # other orbax warnings still pass
    logging.getLogger('absl').warning('Metadata file does not exist: %s', '/x/_CHECKPOINT_METADATA')
  assert len(caplog.records) == 1


def array_file(step_dir):
  d = os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd')
  return max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)


def damage(step_dir, how):
  if how == 'truncate':
    p = array_file(step_dir)
    with open(p, 'r+b') as f:
      f.truncate(os.path.getsize(p) // 2)
  elif how == 'flip':
    p = array_file(step_dir)
    b = bytearray(open(p, 'rb').read())
    b[len(b) // 2] ^= 0x01
    open(p, 'wb').write(bytes(b))
  elif how == 'delete':
    files = json.load(open(os.path.join(step_dir, MANIFEST)))['files']
    os.remove(os.path.join(step_dir, sorted(files)[-1]))
  elif how == 'metadata':
    os.remove(os.path.join(step_dir, 'state', '_METADATA'))


@pytest.mark.parametrize('how', ['truncate', 'flip', 'delete', 'metadata', 'stray'])
def test_damaged_newest_checkpoint_falls_back(tmp_path, capsys, how):
  ckpts = saved_steps(tmp_path)
  if how == 'stray':
    os.makedirs(os.path.join(ckpts, '99999'))
    bad = 99999
  else:
    damage(os.path.join(ckpts, '30'), how)
    bad = 30
  os.makedirs(os.path.join(ckpts, '40.orbax-checkpoint-tmp-123'))
  capsys.readouterr()
  ck = Checkpointer(str(tmp_path))
  state, data = ck.restore(small_state(0))
  ck.close()
  want = 30 if how == 'stray' else 20
  assert int(state.step) == want and data == {'pos': want}
  np.testing.assert_array_equal(state.params['w'], small_state(want).params['w'])
  assert ck.last_good_step() == want
  assert os.path.isdir(os.path.join(str(tmp_path), DAMAGED, str(bad)))
  assert sorted(os.listdir(ckpts)) == sorted({'10', '20', '30'} - {str(bad)})
  err = [l for l in capsys.readouterr().err.splitlines() if 'warning' in l]
  assert len(err) == 2 and sum('orbax-checkpoint-tmp' in l for l in err) == 1, err
  assert sum(f'step {bad} is damaged' in l for l in err) == 1, err


def test_all_checkpoints_damaged_is_one_error(tmp_path):
  ckpts = saved_steps(tmp_path, (10, 20))
  damage(os.path.join(ckpts, '20'), 'flip')
  damage(os.path.join(ckpts, '10'), 'truncate')
  ck = Checkpointer(str(tmp_path))
  with pytest.raises(TranslearnError, match='no intact checkpoint') as e:
    ck.restore(small_state(0))
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(os.path.join(str(tmp_path), DAMAGED))) == ['10', '20']
  assert last_good(ck) == 'no checkpoint was saved yet'


def test_disk_full_during_save_is_one_error(tmp_path, monkeypatch):
  ck = Checkpointer(str(tmp_path))
  ck.save(5, small_state(5), {})
  tmp = os.path.join(ck.directory, '10.orbax-checkpoint-tmp-99')

  def full(step, args, force):
    os.makedirs(os.path.join(tmp, 'state'))
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ck.manager, 'save', full)
  with pytest.raises(TranslearnError, match='disk full while saving checkpoint step 10') as e:
    ck.save(10, small_state(10), {})
  assert '\n' not in str(e.value) and 'last good checkpoint is step 5' in str(e.value)
  assert not os.path.exists(tmp)
  ck.close()


def test_metrics_after_resume_drop_later_steps(tmp_path):
  w = MetricWriter(str(tmp_path))
  for s in (4, 8, 12):
    w.write(s, {'loss': float(s)})
  w._jsonl.write('{"step": 16, "lo')  # cut off by a kill
  w._jsonl.flush()
  w.drop_after(8)
  w.write(12, {'loss': 1.0})
  w.close()
  recs = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [(r['step'], r['loss']) for r in recs] == [(4, 4.0), (8, 8.0), (12, 1.0)]


# -- SIGTERM ---------------------------------------------------------------------

def test_sigterm_raises_outside_deferred_sections():
  preemption.install()
  try:
    with pytest.raises(preemption.Preempted, match=f'^signal {int(signal.SIGTERM)}$'):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)
    preemption.install()
    with pytest.raises(preemption.Preempted, match=f'^signal {int(signal.SIGTERM)}$'):
      with preemption.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        inside = preemption.received()
    assert inside == signal.SIGTERM
    preemption.install()
    with preemption.deferred(raise_at_end=False):
      with preemption.StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGTERM
  finally:
    preemption.uninstall()


def test_a_second_ctrl_c_aborts_at_once_and_a_released_signal_is_pythons_again():
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  preemption.install((signal.SIGTERM, signal.SIGINT))
  try:
    with pytest.raises(KeyboardInterrupt):
      with preemption.deferred(raise_at_end=False):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert preemption.received() == signal.SIGINT      # the first: recorded
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    preemption.release(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before[0]
    assert preemption.installed() and signal.getsignal(signal.SIGTERM) is not before[1]
  finally:
    preemption.uninstall()
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize('trigger', ['.lock', 'vocab.tsv'])
def test_sigterm_during_startup_exits_zero_untrained(tmp_path, trigger):
  """SIGTERM once the lock is taken (before the family: stops at once) or once the
  family wrote its vocabulary (deferred: the loop returns before its first step)."""
  proc = subprocess.Popen(train_cmd('skipgram', tmp_path), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 60
  while time.time() < deadline and not (tmp_path / trigger).exists():
    time.sleep(0.005)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert 'stopped by signal' in err and 'Traceback' not in err, err
  if trigger == 'vocab.tsv' and 'no checkpoint saved' not in err:
    pytest.skip(f'the signal came after the first step (machine busy): {err}')
  ckpts = tmp_path / 'checkpoints'
  assert not ckpts.exists() or not any(d.isdigit() for d in os.listdir(ckpts))
  assert not (tmp_path / '.lock').exists()
  if trigger == 'vocab.tsv':
    assert 'arrived before training' in err and not (tmp_path / 'metrics.jsonl').read_text()


# -- kill -9 and resume ------------------------------------------------------------

@pytest.fixture(scope='module')
def reference_runs(tmp_path_factory):
  """Uninterrupted runs, in this process, of the configs the kill tests use."""
  out = {}
  for name in CONFIGS:
    wd = str(tmp_path_factory.mktemp(f'ref_{name}'))
    train.run(make_config(name), wd)
    out[name] = wd
  return out


@pytest.mark.parametrize('name', ['skipgram', 'lm_transformer'])
def test_kill9_then_resume_equals_uninterrupted_run(tmp_path, reference_runs, name):
  """SIGKILL after a random number of metrics records (+ a random few ms), so at any
  point of training, now and then during a checkpoint write."""
  seed = random.randrange(1 << 30)
  rng = random.Random(seed)
  records = len(metric_records(reference_runs[name]))
  margin = {'skipgram': 8, 'lm_transformer': 4}[name]  # log intervals left to train
  target, jitter = rng.randrange(1, records - margin), rng.uniform(0.0, 0.25)
  proc = subprocess.Popen(train_cmd(name, tmp_path), cwd=ROOT, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 90
  while time.time() < deadline and proc.poll() is None and not (
      metrics.exists() and metrics.read_bytes().count(b'\n') >= target):
    time.sleep(0.002)
  time.sleep(jitter)
  proc.kill()
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, f'finished before the kill (seed {seed})'
  print(f'seed {seed}: killed after {target} records + {jitter * 1e3:.0f} ms: '
        f'{sorted(os.listdir(tmp_path / "checkpoints"))}')
  summary = train.run(make_config(name), str(tmp_path))
  assert not summary['stopped_by_signal']
  ref = reference_runs[name]
  step_a, pa = newest_params(ref)
  step_b, pb = newest_params(str(tmp_path))
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, pa, pb)
  assert metric_records(str(tmp_path)) == metric_records(ref)
  assert json.load(open(os.path.join(ref, 'config.json'))) == \
      json.load(open(tmp_path / 'config.json'))


def test_ctrl_c_checkpoints_exits_130_and_resume_equals_uninterrupted_run(tmp_path,
                                                                          reference_runs):
  """Ctrl-C (SIGINT) in training stops as SIGTERM does, at a step with a checkpoint, but
  exits 130 (an interrupt: `train && next` must not go on); the rerun ends where an
  uninterrupted run does."""
  proc = subprocess.Popen(train_cmd('skipgram', tmp_path), cwd=ROOT, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 90
  while time.time() < deadline and proc.poll() is None and not (
      metrics.exists() and metrics.read_bytes().count(b'\n') >= 1):
    time.sleep(0.002)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert 'Ctrl-C: stopping at the next safe point' in err and 'Traceback' not in err, err
  [line] = [x for x in err.splitlines() if x.startswith('stopped by signal at step')]
  step = int(line.split('step ')[1].split(';')[0])
  assert line.endswith('checkpoint saved') and str(step) in os.listdir(tmp_path / 'checkpoints')
  summary = train.run(make_config('skipgram'), str(tmp_path))
  assert not summary['stopped_by_signal']
  ref = reference_runs['skipgram']
  step_a, pa = newest_params(ref)
  step_b, pb = newest_params(str(tmp_path))
  assert step_a == step_b > step
  jax.tree.map(np.testing.assert_array_equal, pa, pb)
  assert metric_records(str(tmp_path)) == metric_records(ref)


def test_damaged_run_resumes_from_older_step_and_completes(tmp_path, reference_runs):
  """The finished reference run, its newest step flipped, a stray step and an orbax
  tmp dir added: a rerun falls back a step, retrains it, and ends where the reference did;
  a SIGTERM during its final evaluation lets the outputs finish (exit 0 in train.py)."""
  ref = reference_runs['skipgram']
  wd = str(tmp_path / 'w')
  shutil.copytree(ref, wd)
  ckpts = os.path.join(wd, 'checkpoints')
  newest = max(int(d) for d in os.listdir(ckpts))
  damage(os.path.join(ckpts, str(newest)), 'flip')
  os.makedirs(os.path.join(ckpts, '99999'))
  os.makedirs(os.path.join(ckpts, f'{newest}.orbax-checkpoint-tmp-5'))
  os.remove(os.path.join(wd, 'eval.json'))
  from translearn_jax.pretraining import word2vec
  evaluate = word2vec.evaluate

  def evaluate_then_sigterm(*a):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    return evaluate(*a)
  preemption.install()
  try:
    word2vec.evaluate = evaluate_then_sigterm
    summary = train.run(make_config('skipgram'), wd)
    assert preemption.received() == signal.SIGTERM
  finally:
    word2vec.evaluate = evaluate
    preemption.uninstall()
  assert summary['steps'] == newest and not summary['stopped_by_signal']
  assert os.path.exists(os.path.join(wd, 'eval.json'))
  assert sorted(os.listdir(os.path.join(wd, DAMAGED))) == sorted([str(newest), '99999'])
  jax.tree.map(np.testing.assert_array_equal, newest_params(ref)[1], newest_params(wd)[1])
  assert metric_records(wd) == metric_records(ref)


def test_sigterm_where_python_cannot_raise_is_recorded_not_printed(monkeypatch):
  """A SIGTERM landing in a finaliser or a GC callback (where `Preempted` cannot
  propagate) must not print a traceback; it stays recorded for the next safe point."""
  import sys
  from translearn_jax.training import preemption
  seen, hook = [], sys.unraisablehook
  monkeypatch.setattr(preemption, '_previous_unraisable', seen.append)
  preemption.install()

  class Finalised:
    def __init__(self, exc):
      self.exc = exc

    def __del__(self):
      raise self.exc

  try:
    Finalised(preemption.Preempted(15))
    Finalised(ValueError('not ours'))
  finally:
    preemption.uninstall()
    sys.unraisablehook = hook
  assert [type(u.exc_value) for u in seen] == [ValueError]


def test_manifests_hashed_in_the_background_land_and_errors_surface(tmp_path, monkeypatch):
  """`save` hashes the previous step's files in a thread (not on the training thread);
  every step still gets its manifest by `close`, and a failure in that thread is raised
  at the next save, not lost."""
  state = {'w': jnp.arange(1000, dtype=jnp.float32)}
  ck = Checkpointer(str(tmp_path), max_to_keep=3)
  threads = []
  real_start = Checkpointer._hash_in_background
  monkeypatch.setattr(Checkpointer, '_hash_in_background',
                      lambda self, step: threads.append(step) or real_start(self, step))
  for step in (1, 2, 3):
    ck.save(step, state, {'step': step})
  ck.close()
  assert threads == [1, 2]                        # step 3's manifest: written by close
  for step in (1, 2, 3):
    assert os.path.exists(tmp_path / 'checkpoints' / str(step) / MANIFEST)
    assert Checkpointer(str(tmp_path)).verify(step) is None
  # a failing background hash is raised where the training thread next joins it
  ck = Checkpointer(str(tmp_path / 'b'), max_to_keep=3)
  monkeypatch.setattr(Checkpointer, '_write_manifest',
                      lambda self, step: (_ for _ in ()).throw(PermissionError('no access')))
  ck.save(1, state, {})
  ck.save(2, state, {})                           # starts hashing step 1, which fails
  with pytest.raises(PermissionError, match='no access'):
    ck.save(3, state, {})
  monkeypatch.undo()
  ck.close()


def test_atomic_writes_keep_a_symbolic_link_and_write_a_pipe_directly(tmp_path):
  """Both atomic writers replace a link's target (the link stays a link); a FIFO, which nothing
  can be renamed over, is written in place."""
  import threading
  from translearn_jax.data import readers
  from translearn_jax.training.files import atomic_write
  for i, write in enumerate((lambda p, t: atomic_write(p, t),
                             lambda p, t: readers.write_file(p, t.encode()))):
    target, link = tmp_path / f'target{i}', tmp_path / f'link{i}'
    target.write_text('old')
    os.symlink(target, link)
    write(str(link), 'new')
    assert os.path.islink(link) and target.read_text() == 'new'
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f'target{j}' for j in range(i + 1)] + [f'link{j}' for j in range(i + 1)])
  fifo = tmp_path / 'fifo'
  os.mkfifo(fifo)
  got = []
  reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
  reader.start()
  atomic_write(str(fifo), 'through the pipe\n')
  reader.join(10)
  assert got == ['through the pipe\n'] and fifo.is_fifo()
  if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK):   # a plain file under /dev
    shm = f'/dev/shm/translearn_test_{os.getpid()}'
    try:
      atomic_write(shm, 'first\n')
      atomic_write(shm, 'second\n')
      assert open(shm).read() == 'second\n'
    finally:
      os.remove(shm)


def test_writing_to_dev_stdout_appends_to_a_redirected_file_and_a_pipe(tmp_path):
  """`/dev/stdout` as an output path: a `>>`-redirected file keeps its earlier content, a
  pipe receives the text (nothing is renamed over either)."""
  import subprocess
  import sys
  code = ('from translearn_jax.training.files import atomic_write; '
          'atomic_write("/dev/stdout", "NEW\\n")')
  log = tmp_path / 'log.txt'
  log.write_text('OLD\n')
  with open(log, 'a') as f:
    subprocess.run([sys.executable, '-c', code], stdout=f, check=True)
  assert log.read_text() == 'OLD\nNEW\n'
  piped = subprocess.run(f'{sys.executable} -c \'{code}\' | cat', shell=True, check=True,
                         capture_output=True, text=True)
  assert piped.stdout == 'NEW\n'
  from translearn_jax.errors import DataError
  from translearn_jax.serving.predict import check_output
  os.symlink(tmp_path / 'no' / 'such.jsonl', tmp_path / 'dangling')
  with pytest.raises(DataError, match=r'dangling: the output directory .*/no does not exist'):
    check_output(str(tmp_path / 'dangling'))


def test_a_config_its_family_refuses_leaves_no_config_json(tmp_path):
  """config.json is written only once the run is validated, the family's own checks
  included (a bad word2vec `sample` left a config.json holding NaN)."""
  for name, over, field in (('skipgram', {'sample': float('nan')}, r'config\.sample'),
                            ('lm_transformer', {'optim.learning_rate': -1.0},
                             r'config\.optim\.learning_rate')):
    wd = tmp_path / name
    with pytest.raises(ConfigError, match=field):
      train.run(make_config(name, **over), str(wd))
    assert not (wd / 'config.json').exists() and not (wd / 'inputs.json').exists()
  from configs import seq2seq_multi30k
  config = set_fields(seq2seq_multi30k.get_config(), {'label_smoothing': 1.5})
  with pytest.raises(ConfigError, match=r'config\.label_smoothing'):
    train.run(config, str(tmp_path / 's2s'))
  assert not (tmp_path / 's2s' / 'config.json').exists()


def test_configs_that_dropped_unread_fields_resume_runs_saved_with_them():
  """Stop 52 took fields DANN and the learning curves never read out of their configs (an
  override of one is an error now); a run saved with them resumes under today's config, and
  the LM configs' new `model.vocab_size` (0: the tokenizer's) equals its absence."""
  from configs import curves_mr_skipgram, dann_mr, lm_transformer, transfer_mr_skipgram
  saved = transfer_mr_skipgram.get_config().to_dict()
  for family, today in (('dann', dann_mr.get_config()), ('curves', curves_mr_skipgram.get_config())):
    old = json.loads(json.dumps({**saved, 'family': family}))
    new = today.to_dict()
    old.update({k: new[k] for k in new if k not in old})      # the family's own sections
    for section in ('train', 'model', 'optim'):
      old[section] = {**old[section], **new[section]}
    assert workdir_lib.config_changes(old, new)[0] == [], family
  lm = lm_transformer.get_config().to_dict()
  before = json.loads(json.dumps(lm))
  del before['model']['vocab_size']
  assert workdir_lib.config_changes(before, lm) == ([], [])
  # a field the family reads is still checked
  new = dann_mr.get_config().to_dict()
  old = json.loads(json.dumps(new))
  old['model']['dim'] = 10
  assert workdir_lib.config_changes(old, new)[0] == ['model.dim 10 → 100']


def test_comparison_records_of_changed_strategies_are_run_again():
  """Records made before version 4 by gradual unfreezing (its schedule) or with LoRA
  adapters (their initialisation) trained otherwise: a resumed comparison runs them again
  instead of mixing them with new ones (a review)."""
  import ml_collections
  from translearn_jax.experiments import runs
  config = ml_collections.ConfigDict({'transfer': {'freeze_bottom': 0},
                                      'model': {'lora_rank': 0}})
  old = lambda s: {'strategy': s, 'version': 3}            # noqa: E731
  assert runs.recorded_before_frozen_change(old('gradual_unfreezing'), config)
  assert not runs.recorded_before_frozen_change(old('finetune'), config)
  assert not runs.recorded_before_frozen_change({'strategy': 'gradual_unfreezing',
                                                 'version': runs.VERSION}, config)
  config.model.lora_rank = 4
  assert runs.recorded_before_frozen_change(old('finetune'), config)


def test_a_record_after_a_cut_off_line_of_runs_jsonl_stays_readable(tmp_path):
  """A kill mid-append leaves a partial last line; the next record was glued to it,
  unreadable, and its run trained again (a review)."""
  from translearn_jax.experiments import runs
  path = tmp_path / 'runs.jsonl'
  runs.append_record(str(path), {'strategy': 'a', 'seed': 0})
  with open(path, 'a') as f:
    f.write('{"strategy": "b", "se')                   # cut off
  runs.append_record(str(path), {'strategy': 'c', 'seed': 1})
  lines = path.read_text().splitlines()
  assert json.loads(lines[0])['strategy'] == 'a' and json.loads(lines[-1])['strategy'] == 'c'
  assert len(lines) == 3 and path.read_text().endswith('\n')
  runs.append_record(str(path), {'strategy': 'd', 'seed': 2})
  assert len(path.read_text().splitlines()) == 4        # no blank line after a whole one


def test_predict_and_translate_refuse_to_write_over_their_input(tmp_path):
  from translearn_jax.errors import DataError
  from translearn_jax.serving import predict
  src = tmp_path / 'in.txt'
  src.write_text('a sentence\n')
  link = tmp_path / 'link.txt'
  link.symlink_to(src)
  for out in (src, link):
    with pytest.raises(DataError, match='the output is the input file'):
      predict.check_output(str(out), str(src))
  predict.check_output(str(tmp_path / 'out.txt'), str(src))
  predict.check_output('-', '-')
