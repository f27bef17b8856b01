"""Run safety for a workdir: one run at a time, resumes that match, atomic config.json.

`open_workdir(config, workdir)` (used by `train.py`'s `run`) checks the
directory, takes `workdir/.lock`, compares a resumed run's config with the
saved `config.json` (`RESUME_MAY_CHANGE` lists what a resume may change) and
only then writes `config.json` atomically. Every problem is a one-line
`TranslearnError`.

The lock is a JSON file (pid, host, start time) created atomically: written
to a temporary file and hard-linked to `.lock` (`os.link` fails if it
exists), so the lock never exists half-written; where links are unsupported,
`O_CREAT|O_EXCL` creates it. Creation by link/O_EXCL is atomic on local and
network file systems, unlike `flock` (not honoured by every network file
system), and the file names its holder. A lock left by a killed run (same
host, pid no longer alive) is taken over with a warning; a lock of another
host is never guessed stale.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import socket
import time
from typing import Any, Iterator, Optional

from translearn_jax.errors import ConfigError, TranslearnError
from translearn_jax.training import preemption
from translearn_jax.training.files import atomic_write
from translearn_jax.training.metrics import info

LOCK = '.lock'
CONFIG = 'config.json'

# The total budget: a learning-rate schedule that decays over it is stretched from the
# resumed step on when it changes (`check_resume` warns).
BUDGET_FIELDS = ('max_steps', 'epochs', 'steps', 'train.steps', 'train.epochs')
# Config fields a resumed run may change: they set how long it runs (`BUDGET_FIELDS`), how
# often it logs/evaluates/checkpoints, where it runs, and which runs of a comparison are
# made; none but the budget changes what a step computes. Any other difference is an
# error. A pattern 'a.b' matches that dotted path; '**.x' matches a last path component
# `x` at any depth (fnmatch wildcards allowed).
RESUME_MAY_CHANGE = (
    *BUDGET_FIELDS,
    # cadence
    '**.*_every_steps', '**.log_every*', '**.eval_every*', '**.checkpoint_every*',
    '**.keep_checkpoints', '**.eval_max_rows',
    # seq2seq's scoring during training: how often, how wide, on how many (it changes no
    # parameter: byte-identical runs with it on and off)
    'eval.every_steps', 'eval.during_beam', 'eval.during_max_examples',
    # where and how it runs
    '**.num_devices', '**.peak_flops_per_device', '**.progress', 'model.remat',
    'mesh.*',                   # a checkpoint restores onto another mesh (issue #18)
    'model.table_sharding',     # word2vec: tables converted between layouts on resume (#20)
    'model.step_kernel',        # word2vec: the XLA step or the CPU kernel, one update (#20)
    'train.prefetch', 'train.input_workers',  # word2vec: the same blocks, made ahead (#20)
    # word2vec: what is done with the vectors once trained (export, evaluation sets)
    'export.format', 'eval.similarity', 'eval.analogy', 'eval.analogy_restrict',
    # the runs of a comparison, and which of their models are kept
    'seeds', 'compare_scratch', 'with_scratch', 'transfer.strategies',
    '**.save_models',           # a run's, and a multi-task run's tasks' ('mr.save_models')
    # the cells of a seq2seq curve study (each cell records what it started from, and a
    # recorded cell whose source differs from the config's is refused: seq2seq_curves)
    'curve.budgets', 'curve.conditions', 'curve.bt_budgets', 'curve.title',
    'curve.denoise_path', 'curve.lm_path', 'curve.mlm_path',
    # which seeds run here and whose cells count (each cell records its seed and tokenizer
    # digest; another tokenizer's cells are refused)
    'curve.seed_list', 'curve.import_cells', 'curve.tokenizer',
)

_ABSENT = '<absent>'


def may_change(path: str) -> bool:
  """Whether a resume may change the config field `path` (see `RESUME_MAY_CHANGE`)."""
  name = path.rsplit('.', 1)[-1]
  for pattern in RESUME_MAY_CHANGE:
    if pattern.startswith('**.'):
      if fnmatch.fnmatchcase(name, pattern[3:]):
        return True
    elif fnmatch.fnmatchcase(path, pattern):
      return True
  return False


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
  if isinstance(tree, dict):
    out: dict[str, Any] = {}
    for k, v in tree.items():
      out.update(flatten(v, f'{prefix}{k}.'))
    return out if out or not prefix else {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def config_dict(config) -> dict:
  """The config as the JSON that `config.json` holds."""
  return json.loads(config.to_json_best_effort())


# Fields that count something every family needs at least one of, wherever they sit.
POSITIVE_FIELDS = ('batch_size', 'max_tokens', 'dim', 'd_model', 'num_heads', 'num_layers',
                   'd_ff', 'seq_length', 'grad_accum', 'beam', 'during_beam', 'seeds',
                   'max_len', 'max_source_len', 'max_target_len')
# seeds (numpy's generators take none below 0) and bounds whose 0 means none (`vocab.max_size`,
# seq2seq's `eval.max_examples`: a negative one dropped the last examples)
NONNEGATIVE_FIELDS = ('seed', 'split_seed', 'subset_seed', 'max_size', 'max_examples',
                      'during_max_examples', 'every_steps')


def validate_fields(config) -> None:
  """Generic checks every family shares: dropout rates in [0, 1), sizes and counts
  (`POSITIVE_FIELDS`) >= 1, seeds and bounds (`NONNEGATIVE_FIELDS`) >= 0."""
  for path, v in flatten(config_dict(config)).items():
    name = path.rsplit('.', 1)[-1]
    if not isinstance(v, (int, float)) or isinstance(v, bool):
      continue
    if ('dropout' in name or name == 'weight_drop') and not 0 <= v < 1:
      raise ConfigError(f'config.{path}: must be in [0, 1), got {v}')
    if name in POSITIVE_FIELDS and v < 1:
      raise ConfigError(f'config.{path}: must be >= 1, got {v}')
    if name in NONNEGATIVE_FIELDS and v < 0:
      raise ConfigError(f'config.{path}: must be >= 0, got {v}')


def _show(v: Any) -> str:
  return _ABSENT if v is _ABSENT else json.dumps(v, ensure_ascii=False)


# Fields added to a family after runs of it existed, with the value those runs
# computed with: a `config.json` without the field equals one that has it at
# this value (so adding a field does not make older run directories unresumable).
# Append only, in the order added: a comparison's records carry a fingerprint made with
# the entries of their day (`experiments.runs.fingerprints` tries each prefix).
ADDED_FIELDS = {
    'optim.row_cap': 0.0,       # word2vec (issue #20): plain summed row updates
    'optim.row_cap_mode': 'count',      # word2vec (issue #20): the cap counts contributions
    'model.pair_negatives': False,      # skip-gram (issue #20): negatives shared per center
    'model.negative_draws': 0,          # skip-gram (issue #20): model.negatives drawn per center
    'model.table_sharding': 'replicated',  # word2vec (issue #20): every device holds the tables
    'num_devices': 1,           # fine-tuning (issue #18): one device (other families always had it)
    'model.pad_id': 0,          # masked-LM encoders (issue #14): this project's pad id
    'model.pooler': False,      # masked-LM encoders (issue #15): BERT's pooler
    'model.layer_norm_eps': 1e-6,       # Transformer LMs (issue #15): flax's default
    'model.activation': 'gelu_tanh',    # Transformer LMs (issue #15); seq2seq too
    'model.norm': 'pre',                # seq2seq (issue #15): BART/Marian options
    'model.positions': 'learned',
    'model.position_offset': 0,
    'model.scale_embedding': False,
    'model.embed_ln': False,
    'model.final_logits_bias': False,
    'train.loss_chunk': 0,              # LMs (issue #18): the plain cross-entropy
    'model.attention_impl': 'einsum',   # LM/encoder (issue #18): this project's attention
    'model.remat': 'none',              # LM/encoder (issue #18): no rematerialisation
    'data.tfds_split': 'train',         # classification (issue #17): TFDS datasets
    'data.data_dir': '',                #   classification and tagging
    'data.kind': 'conll',               #   tagging: CoNLL files (or 'tfds')
    'data.path': '',                    #   tagging: the TFDS dataset
    'data.tokens_field': 'tokens',
    'data.tags_field': 'ner_tags',
    'mesh.data': -1,                    # Transformer LMs (issue #18): the data-parallel mesh
    'mesh.fsdp': 1,
    'mesh.tensor': 1,
    'mesh.rules': '',
    'save_models': 'best',              # classification/tagging (issue #17): saved models
    'init.kind': 'seq2seq',             # seq2seq (issue #16): a pretrained initialisation
    'init.path': '',
    'init.rules': '',
    'objective': 'supervised',          #   seq2seq: parallel pairs (not 'denoise')
    'data.max_train_pairs': 0,          #   seq2seq: every training pair
    'data.subset_seed': 0,
    'backtranslation.model': '',        #   seq2seq: no back-translation
    'backtranslation.path': '',
    'backtranslation.max_sentences': 0,
    'backtranslation.beam': 1,
    'backtranslation.batch_size': 128,
    'dtype': 'float32',                 #   seq2seq (issue #18): float32 compute
    'train.grad_accum': 1,              #   seq2seq (issue #18): no accumulation
    'data.encoding': 'utf-8',           # tagging and seq2seq files: UTF-8, strictly
    'data.encoding_fallback': '',
    'data.token_column': 0,             # tagging: CoNLL columns
    'data.tag_column': -1,
    'eval.bleu_tokenize': '13a',        # seq2seq: sacrebleu's default tokenizer
    'eval.rouge_tokenize': 'default',   #   and rouge-score's
    'eval.metric': 'accuracy',          # classification: scored by accuracy
    'data.header': 'auto',              # classification: TSV/CSV by column number, header?
    'tokenizer.normalization': 'nmt_nfkc',  # seq2seq: sentencepiece's default normalization
    'data.truncate_source': False,      #   and long training pairs dropped, not cut
    'init.unicode_errors': 'strict',    # word-vector files: words must be UTF-8
    'tokenizer.source_lang': '',        # seq2seq: no language codes (mBART's framing)
    'tokenizer.target_lang': '',
    'curve.import_cells': '',           # seq2seq curves: no cells from other workdirs
    'curve.seed_list': '',              #   and every seed run here
    'eval.length_penalty_form': 'gnmt',  # seq2seq: GNMT's length penalty
    'model.negative_share': 1,          # word2vec (issue #20): positions sharing one draw
    'eval.min_length': 0,               # seq2seq: no minimum length, no n-gram ban
    'eval.no_repeat_ngram_size': 0,
    'tokenizer.train_threads': 16,      # lm/seq2seq: runs before it trained with the cores'
    'eval.early_stopping': 'never',     # seq2seq: the exact beam search
    'optim.warmup_steps': 0,            # word2vec (issue #20): no warmup (other families had it)
    'data.tag_scheme': '',              # tagging: prefixed tags (IO files were refused)
    'model.skip_target_negatives': False,  # word2vec (issue #20): target-equal negatives scored
    'model.max_score': 0.0,             #   every score trains
    'model.pair_order': 'summed',       #   a step's pairs summed
    'model.step_kernel': 'xla',         #   the XLA step
    'optim.row_cap_cross': 0.0,         #   the curvature cap without its cross term
    'train.batch_rows': 'block',        #   a step's rows one stretch of text
    'transfer.strategy': 'finetune',    # seq2seq: the whole model at one LR, every group live
    'transfer.groups': '',
    'transfer.factor': 1 / 2.6,
    'transfer.unfreeze_every': 500,
    'transfer.freeze_bottom': 0,
    'model.lora_alpha': 16.0,           # LM-bodied transfer (stop 52): LoRA's scale, alpha/rank
    'model.vocab_size': 0,              # LM/MLM configs (stop 52): the tokenizer's rows
}

# Fields a family never read, taken out of its shipped config (stop 52) so that an override
# of one is an error: a saved config holding them resumes under a config without them.
UNREAD_FIELDS = {
    'dann': ('transfer.', 'train.epochs', 'seed', 'init.kind', 'with_scratch', 'compare_scratch',
             'save_models', 'model.type', 'model.pooling', 'optim.schedule',
             'optim.warmup_steps', 'optim.grad_clip', 'optim.weight_decay'),
    'curves': ('transfer.strategies', 'transfer.strategy', 'train.epochs', 'seed',
               'with_scratch', 'compare_scratch', 'save_models'),
}


def added_field(path: str) -> Optional[str]:
  """The `ADDED_FIELDS` entry of config field `path`: the path itself, or the same field of
  a task's config nested in another ('mr.data.header' of the multi-task config)."""
  parts = path.split('.')
  return next((p for p in ('.'.join(parts[i:]) for i in range(max(1, len(parts) - 1)))
               if p in ADDED_FIELDS), None)


# Fields a run fills in itself when its config leaves them out (a seq2seq model's special
# ids, from the checkpoint it starts from): the saved config has them, the one given to
# resume it need not, and the run fills them in again from the same source.
FILLED_BY_RUN = ('model.pad_id', 'model.eos_id', 'model.decoder_start_id', 'model.suppress_ids',
                 'model.forced_bos_id')


def config_changes(old: dict, new: dict) -> tuple[list[str], list[str]]:
  """(forbidden, allowed) differences between two configs, as 'path old → new'.
  A field of `ADDED_FIELDS` (`added_field`) missing from `old` counts as its listed value;
  one of `FILLED_BY_RUN` missing from `new` is left to the run."""
  a, b = flatten(old), flatten(new)
  forbidden, allowed = [], []
  for path in sorted(set(a) | set(b)):
    va, vb = a.get(path, _ABSENT), b.get(path, _ABSENT)
    if vb is _ABSENT and path in FILLED_BY_RUN:
      continue
    if vb is _ABSENT and any(path == f or (f.endswith('.') and path.startswith(f))
                             for f in UNREAD_FIELDS.get(new.get('family'), ())):
      continue
    if va is _ABSENT and path in b and (added := added_field(path)):
      va = ADDED_FIELDS[added]
    if va == vb:
      continue
    (allowed if may_change(path) else forbidden).append(f'{path} {_show(va)} → {_show(vb)}')
  return forbidden, allowed


# where runs keep their checkpoints: a run's own, a comparison's or DANN's runs
# (`runs/<name>/`), a seq2seq curve study's cells (`cells/<budget>/<cell>/`)
CHECKPOINT_DIRS = ('checkpoints', 'runs/*/checkpoints', 'cells/*/*/checkpoints')
RECORDS = ('runs.jsonl', 'cells.jsonl')     # finished runs of a comparison, cells of a study


def is_resume(workdir: str) -> bool:
  """A workdir holds earlier work: a checkpoint step (of the run, or of one of the runs it
  holds: `CHECKPOINT_DIRS`) or a record of finished runs (`RECORDS`)."""
  import glob
  if any(os.path.exists(os.path.join(workdir, r)) for r in RECORDS):
    return True
  for pattern in CHECKPOINT_DIRS:
    for ckpt in glob.glob(os.path.join(glob.escape(workdir), pattern)):
      try:
        if any(n.isdigit() and os.path.isdir(os.path.join(ckpt, n)) for n in os.listdir(ckpt)):
          return True
      except OSError:
        continue
  return False


# -- the lock ------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a killed child not yet reaped is a zombie: dead
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return True


def _proc_start(pid: int) -> Optional[int]:
  """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), None
  where it cannot be read: with the boot, what tells a pid's process from a later one."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _boot_id() -> Optional[str]:
  try:
    with open('/proc/sys/kernel/random/boot_id') as f:
      return f.read().strip()
  except OSError:
    return None


def _holder_gone(holder: dict) -> bool:
  """Whether the recorded holder of a lock on this host is no longer running: its pid is
  dead, or the pid is now another process (a later boot, or another start time: a
  container's main process is pid 1 after every restart, its own included)."""
  pid = holder.get('pid')
  if not isinstance(pid, int):
    return False
  if holder.get('boot') and _boot_id() and holder['boot'] != _boot_id():
    return True
  started = holder.get('proc_start')
  if pid == os.getpid():
    return started is not None and started != _proc_start(pid)
  if not _pid_alive(pid):
    return True
  return started is not None and _proc_start(pid) not in (None, started)


def read_lock(workdir: str) -> Optional[dict]:
  """The holder recorded in `workdir/.lock`, {} if unreadable, None if there is no lock."""
  try:
    with open(os.path.join(workdir, LOCK), encoding='utf-8') as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


def held_by_other(workdir: str) -> bool:
  """Whether another live process holds `workdir`'s lock (then leave its files alone)."""
  holder = read_lock(workdir)
  if not holder:
    return False
  if holder.get('host') != socket.gethostname():
    return True
  pid = holder.get('pid')
  return isinstance(pid, int) and pid != os.getpid() and not _holder_gone(holder)


def _describe(holder: dict) -> str:
  return (f'pid {holder.get("pid")} on host {holder.get("host")}, started '
          f'{holder.get("start_time")}')


def _create(path: str, text: str) -> bool:
  """Creates `path` holding `text` unless it exists; True if created."""
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  except OSError as e:  # no hard links here: O_EXCL, then the content
    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
      raise
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    return True
  finally:
    with contextlib.suppress(OSError):
      os.unlink(tmp)


def _take_over(path: str, stale: dict) -> None:
  """Moves the stale lock aside, unless another run replaced it meanwhile (then puts it back)."""
  aside = f'{path}.stale{os.getpid()}'
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  moved = {}
  with contextlib.suppress(OSError, ValueError):
    with open(aside, encoding='utf-8') as f:
      moved = json.load(f)
  if moved != stale:  # a live run's lock, taken over a moment ago: give it back
    with contextlib.suppress(OSError):
      os.rename(aside, path)
    return
  os.unlink(aside)


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[dict]:
  """Holds `workdir/.lock` for the duration of the block (released on exceptions too)."""
  path = os.path.join(workdir, LOCK)
  me = {'pid': os.getpid(), 'host': socket.gethostname(),
        'start_time': time.strftime('%Y-%m-%d %H:%M:%S %z'), 'time': time.time(),
        'proc_start': _proc_start(os.getpid()), 'boot': _boot_id()}
  text = json.dumps(me)
  with preemption.deferred(raise_at_end=False):  # a signal now is raised inside the block
    for _ in range(3):
      try:
        if _create(path, text):
          break
      except OSError as e:
        raise TranslearnError(f'--workdir {workdir}: cannot create {LOCK}: '
                              f'{e.strerror or e}') from None
      holder = read_lock(workdir)
      if holder is None:
        continue  # released meanwhile
      if not holder:
        raise TranslearnError(f'--workdir {workdir}: unreadable lock {path}; if no run uses '
                              'this workdir, delete it')
      if holder.get('host') == socket.gethostname() and _holder_gone(holder):
        info('warning: %s: taking over the lock of a run that is no longer alive (%s)',
             workdir, _describe(holder))
        _take_over(path, holder)
        continue
      raise TranslearnError(f'--workdir {workdir} is in use by another run ({_describe(holder)}); '
                            f'wait for it to finish, or delete {path} if it is gone')
    else:
      raise TranslearnError(f'--workdir {workdir}: could not take {path}; retry')
  try:
    yield me
  finally:
    with preemption.deferred(raise_at_end=False):
      if read_lock(workdir) == me:
        with contextlib.suppress(OSError):
          os.unlink(path)


# -- the whole check -------------------------------------------------------------

def check_directory(workdir: str) -> None:
  """Creates `workdir` if needed; a file or an unwritable directory is an error."""
  if not workdir:
    raise TranslearnError('--workdir: must not be empty')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise TranslearnError(f'--workdir {workdir}: is a file, not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise TranslearnError(f'--workdir {workdir}: cannot create it: {e.strerror or e}') from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise TranslearnError(f'--workdir {workdir}: not writable')


def check_resume(config, workdir: str) -> None:
  """Raises if `workdir` holds a run whose `config.json` differs in computation-changing fields."""
  path = os.path.join(workdir, CONFIG)
  if not is_resume(workdir) or not os.path.exists(path):
    return
  try:
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    info('warning: %s unreadable (%s); cannot compare it with this config, replacing it',
         path, ' '.join(str(e).split())[:200])
    return
  forbidden, allowed = config_changes(old, config_dict(config))
  if forbidden:
    raise ConfigError(f'--workdir {workdir} holds a run of another config; changed: '
                      f'{"; ".join(forbidden)} (use a new --workdir, or the old values)')
  if allowed:
    info('resuming %s with changed settings: %s', workdir, '; '.join(allowed))
  budget = [c for c in allowed if c.split(' ', 1)[0] in BUDGET_FIELDS]
  if budget:
    import warnings
    warnings.warn(f'resuming {workdir} with another training length ({"; ".join(budget)}): '
                  'a learning-rate schedule over the run\'s total steps (optim.schedule, '
                  "word2vec's linear decay) is stretched to the new total from the resumed "
                  "step on, so the run equals neither length's uninterrupted run",
                  stacklevel=2)


@contextlib.contextmanager
def open_workdir(config, workdir: str, primary: bool = True) -> Iterator[None]:
  """Checks and locks `workdir`, validates a resume, writes `config.json`; unlocks at the end.

  Only the `primary` process (process 0) locks and writes; every process checks.
  """
  check_directory(workdir)
  from translearn_jax.training import input_files
  with (lock(workdir) if primary else contextlib.nullcontext()):
    with preemption.deferred():  # raises a SIGTERM that came while locking, once unlockable
      check_resume(config, workdir)
      input_files.record_or_check(config, workdir, is_resume(workdir), primary)
      if primary:
        atomic_write(os.path.join(workdir, CONFIG), config.to_json_best_effort(indent=2))
    yield
