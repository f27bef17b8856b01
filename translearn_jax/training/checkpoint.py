"""Orbax checkpoints: train state + data-iterator position, keep-N, resume latest intact.

A checkpoint directory `workdir/checkpoints/<step>/` holds two items: `state`
(the train-state pytree) and `data` (JSON: where the input pipeline stands,
plus the training loop's open logging window). Orbax writes each step to a
temporary directory and renames it on success, so a crash mid-save never
leaves a half-written step; a leftover `*.orbax-checkpoint-tmp*` directory is
removed (with a warning) when the workdir is opened again.

(Over 300 lines: saving, verifying, setting aside and restoring are one
protocol over one directory layout; splitting them would spread it.)

Orbax does not check the bytes of array chunks (a flipped byte restores as a
wrong value), so after each save `translearn_manifest.json` records the size
and sha256 of every file of the step (written atomically, after orbax's
commit). `restore` verifies the newest step against it and lets orbax read
it; a damaged step (file missing, truncated or changed, empty directory,
orbax unable to read it) is moved to `workdir/checkpoints_damaged/<step>`
with one warning, and the next older step is tried. A step without a manifest
(saved by an older version, or a kill between orbax's commit and the
manifest) is checked by orbax alone. Damaged steps are only moved by process
0, and never while another live run holds the workdir's lock.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from translearn_jax.errors import TranslearnError
from translearn_jax.training import preemption
from translearn_jax.training.files import atomic_write
from translearn_jax.training import workdir as workdir_lib
from translearn_jax.training.metrics import info

MANIFEST = 'translearn_manifest.json'
DAMAGED = 'checkpoints_damaged'
TMP_MARK = '.orbax-checkpoint-tmp'
LOOP_KEY = '_loop'  # the training loop's own state inside the `data` item


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
    with contextlib.suppress(OSError):
      os.fsync(f.fileno())  # the step's bytes reach the disk before its manifest
  return h.hexdigest()


def _disk_full(e: BaseException) -> bool:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or 'No space left on device' in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


class _DiskFullFilter(logging.Filter):
  """Drops orbax's multi-line ENOSPC tracebacks: `save` reports a full disk in one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not (_disk_full(exc) or 'No space left on device' in record.getMessage())


def _first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return f'{type(e).__name__}: {lines[0][:200] if lines else ""}'


class _ItemMetadataFilter(logging.Filter):
  """Drops orbax's warning that an item directory (`<step>/state`) has no
  `_CHECKPOINT_METADATA`: that file lives one level up, in the step directory, and
  reading the item alone is how `restore_params` reads it. Other warnings pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (str(record.msg).startswith('Metadata file does not exist')
                and any(str(a).endswith(os.path.join('state', '_CHECKPOINT_METADATA'))
                        for a in (record.args or ())))


@contextlib.contextmanager
def _quiet_item_metadata():
  logger, quiet = logging.getLogger('absl'), _ItemMetadataFilter()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def _abstract(leaf):
  """A template leaf as orbax's restore target: numpy arrays stay numpy (read to the host)."""
  return leaf if isinstance(leaf, np.ndarray) else ocp.utils.to_shape_dtype_struct(leaf)


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    self._primary = jax.process_index() == 0
    self._verified: set[int] = set()  # steps restored after verification, or saved here
    self._loop_states: dict[int, dict] = {}
    self._failed = False
    self._pending: Optional[int] = None   # a step whose save runs in the background
    self._hashing: Optional[threading.Thread] = None   # a manifest being written
    self._hash_error: Optional[tuple[int, BaseException]] = None
    self.manager = None
    self._sweep()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'data'))

  # -- bookkeeping --------------------------------------------------------------

  def _mutable(self) -> bool:
    """Whether this process may remove or move files under `checkpoints/`."""
    return self._primary and not workdir_lib.held_by_other(self.workdir)

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _sweep(self) -> None:
    """Warns about entries that are no checkpoint step; removes orbax's leftover tmp dirs;
    sets aside steps whose files are missing or of the wrong size (no hashing here)."""
    try:
      names = sorted(os.listdir(self.directory))
    except OSError:
      return
    mutable = None
    for name in names:
      if name.isdigit():
        problem = self.verify(int(name), hashes=False)
        if problem is not None:
          self._set_aside(int(name), problem)
        continue
      path = os.path.join(self.directory, name)
      if TMP_MARK in name:
        mutable = self._mutable() if mutable is None else mutable
        if mutable:
          shutil.rmtree(path, ignore_errors=True)
          info('warning: removed %s: an unfinished checkpoint save (the run was killed)', path)
      else:
        info('warning: %s is not a checkpoint step; ignored', path)

  def _disk_steps(self) -> list[int]:
    """Integer-named entries under `checkpoints/`, newest first."""
    try:
      return sorted((int(n) for n in os.listdir(self.directory) if n.isdigit()), reverse=True)
    except OSError:
      return []

  def latest_step(self) -> Optional[int]:
    """The newest step on disk, not yet verified (see `last_good_step`)."""
    return self.manager.latest_step()

  def last_good_step(self) -> Optional[int]:
    """The newest step this process saved or restored after verifying it (None if none)."""
    return max((s for s in self._verified if os.path.isdir(self._step_dir(s))), default=None)

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def loop_state(self, step: int) -> Optional[dict]:
    """The training loop's state saved with the restored `step` (None if none)."""
    return self._loop_states.get(step)

  # -- save ---------------------------------------------------------------------

  def save(self, step: int, state: Any, data_state: dict,
           loop_state: Optional[dict] = None) -> None:
    """Starts saving `step` (orbax copies the arrays to host memory, then writes them in
    the background, so training goes on); the save is finished, and the step's manifest
    written, at the next save, restore or `close` (`finish`). A full disk is a one-line
    error."""
    self.finish(background=True)
    data = dict(data_state)
    if loop_state is not None:
      data[LOOP_KEY] = loop_state
    data = copy.deepcopy(data)   # written in the background: the caller's dicts move on
    with preemption.deferred(), self._disk_guard(step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)), force=True)
      self._pending = step

  def finish(self, background: bool = False) -> None:
    """Waits for a save in progress and writes its manifest (a no-op without one).

    With `background` (as `save` calls it, one save later), the manifest -- a sha256 of
    every file of the step, ~75 ms for a 114 MB state on CPU -- is written by a thread
    while training goes on, and joined by the next `finish`, `restore` or `close`. A
    kill before it lands leaves the step without a manifest, which a restore treats as
    it treats the newest step of any killed run (orbax's own checks only)."""
    self._join_hashing()
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    with preemption.deferred(), self._disk_guard(step):
      self.manager.wait_until_finished()
      if self._primary and not background:
        self._write_manifest(step)
    if self._primary and background:
      self._hashing = threading.Thread(target=self._hash_in_background, args=(step,),
                                       name=f'manifest-{step}', daemon=True)
      self._hashing.start()
    self._verified.add(step)

  def _hash_in_background(self, step: int) -> None:
    try:
      self._write_manifest(step)
    except FileNotFoundError:
      pass   # the step was removed meanwhile (keep-N): it needs no manifest
    except BaseException as e:  # re-raised where the training thread joins
      self._hash_error = (step, e)

  def _join_hashing(self) -> None:
    if self._hashing is None:
      return
    self._hashing.join()
    self._hashing = None
    if self._hash_error is not None:
      (step, e), self._hash_error = self._hash_error, None
      with preemption.deferred(), self._disk_guard(step):
        raise e

  @contextlib.contextmanager
  def _disk_guard(self, step: int):
    """A full disk inside: the partial save removed and one `TranslearnError`."""
    quiet = _DiskFullFilter()
    logging.getLogger('absl').addFilter(quiet)
    try:
      yield
    except Exception as e:
      if not _disk_full(e):
        raise
      self._failed = True
      self._pending = None
      self._remove_partial(step)
      last = self.last_good_step()
      raise TranslearnError(
          f'disk full while saving checkpoint step {step} in {self.directory}; the partial '
          f'save was removed' + (f', last good checkpoint is step {last}' if last is not None
                                 else '') + '; free space and rerun to resume') from None
    finally:
      logging.getLogger('absl').removeFilter(quiet)

  def _write_manifest(self, step: int) -> None:
    d = self._step_dir(step)
    files = {}
    for root, dirs, names in os.walk(d):
      dirs.sort()
      for n in sorted(names):
        path = os.path.join(root, n)
        rel = os.path.relpath(path, d)
        if rel == MANIFEST or rel.startswith(f'.{MANIFEST}'):
          continue
        files[rel] = {'size': os.path.getsize(path), 'sha256': _sha256(path)}
    atomic_write(os.path.join(d, MANIFEST),
                 json.dumps({'step': step, 'files': files}, indent=1))

  def _remove_partial(self, step: int) -> None:
    if not self._primary:
      return
    with contextlib.suppress(OSError):
      for name in os.listdir(self.directory):
        if name == str(step) or name.startswith(f'{step}{TMP_MARK}'):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  # -- restore ------------------------------------------------------------------

  def verify(self, step: int, hashes: bool = True) -> Optional[str]:
    """None if the files of `step` match its manifest, else what is wrong."""
    d = self._step_dir(step)
    if not os.path.isdir(d):
      return 'not a directory'
    if not os.listdir(d):
      return 'empty directory'
    path = os.path.join(d, MANIFEST)
    if not os.path.exists(path):
      return None  # orbax's own checks only
    try:
      with open(path, encoding='utf-8') as f:
        files = json.load(f)['files']
    except (OSError, ValueError, KeyError, TypeError) as e:
      return f'unreadable {MANIFEST} ({_first_line(e)})'
    for rel, want in files.items():
      p = os.path.join(d, rel)
      if not os.path.isfile(p):
        return f'{rel} is missing'
      size = os.path.getsize(p)
      if size != want['size']:
        return f'{rel} has {size} bytes, {want["size"]} were written'
      if hashes and _sha256(p) != want['sha256']:
        return f'{rel} has changed (sha256 differs)'
    return None

  def _set_aside(self, step: int, problem: str) -> None:
    src = self._step_dir(step)
    if not self._mutable():
      info('warning: checkpoint step %d is damaged (%s); skipped', step, problem)
      return
    dst = os.path.join(self.workdir, DAMAGED, str(step))
    n = 1
    while os.path.exists(dst):
      dst = os.path.join(self.workdir, DAMAGED, f'{step}.{n}')
      n += 1
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.move(src, dst)
    info('warning: checkpoint step %d is damaged (%s); moved to %s, an older step is used',
         step, problem, dst)
    if self.manager is not None:
      self.manager.reload()

  def restore(self, state_template: Any, step: Optional[int] = None):
    """Restores (state, data_state) with the shardings/dtypes of the template; a numpy
    leaf of the template restores as a numpy array on the host (every process reads it
    whole), with the leaf's shape and dtype.

    Without `step`, the newest intact step (damaged newer ones are set aside).
    Raises `TranslearnError` when no step is intact. An orbax error on a step
    whose files match its manifest is no damage (e.g. a template of another
    shape) and is raised as is.
    """
    self.finish()
    abstract = jax.tree.map(_abstract, state_template)
    steps = [step] if step is not None else self._disk_steps()
    if not steps:
      raise TranslearnError(f'no checkpoint in {self.directory}')
    suspects: list[tuple[int, BaseException]] = []  # no manifest; orbax failed
    damaged: list[int] = []
    for s in steps:
      problem = self.verify(s)
      if problem is None:
        try:
          restored = self.manager.restore(s, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        except Exception as e:  # orbax/tensorstore raise many types
          if os.path.exists(os.path.join(self._step_dir(s), MANIFEST)):
            raise
          suspects.append((s, e))
          continue
        for bad, e in suspects:  # an older step restores: the newer ones were damaged
          self._set_aside(bad, f'orbax cannot read it: {_first_line(e)}')
        data = dict(restored['data'])
        self._loop_states[s] = data.pop(LOOP_KEY, None)
        self._verified.add(s)
        return restored['state'], data
      self._set_aside(s, problem)
      damaged.append(s)
    if suspects and not damaged:  # likely no damage but a template that does not fit
      s, e = suspects[0]
      raise TranslearnError(f'cannot restore checkpoint step {s} in {self.directory}: '
                            f'{_first_line(e)}')
    why = [f'damaged steps {", ".join(map(str, damaged))} set aside in '
           f'{os.path.join(self.workdir, DAMAGED)}'] if damaged else []
    if suspects:
      why.append(f'steps {", ".join(str(s) for s, _ in suspects)} unreadable '
                 f'({_first_line(suspects[0][1])})')
    raise TranslearnError(f'no intact checkpoint in {self.directory} ({"; ".join(why)}); '
                          'start over in a new --workdir')

  def saved_data(self, step: Optional[int] = None) -> dict:
    """The data position saved with a step (the newest without `step`), without its state."""
    self.finish()
    step = self.latest_step() if step is None else step
    if step is None:
      raise TranslearnError(f'no checkpoint in {self.directory}')
    restored = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
    data = dict(restored['data'])
    data.pop(LOOP_KEY, None)
    return data

  def restore_params(self, step: Optional[int] = None):
    """Only `state.params` of a checkpoint, as numpy arrays: no template, no optimiser.

    Shapes and dtypes come from the checkpoint's own metadata (orbax partial restore).
    """
    self.finish()
    step = self.latest_step() if step is None else step
    path = os.path.join(self.directory, str(step), 'state')
    with ocp.PyTreeCheckpointer() as ckptr, _quiet_item_metadata():
      meta = ckptr.metadata(path)
      tree = meta.item_metadata.tree if hasattr(meta, 'item_metadata') else meta.tree
      abstract = {'params': jax.tree.map(lambda m: np.empty(0, m.dtype), tree['params'])}
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
      restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=abstract, restore_args=restore_args, partial_restore=True))
    return restored['params']

  def close(self) -> None:
    if self._failed:  # after a failed save orbax may re-raise: nothing left to wait for
      with contextlib.suppress(Exception):
        self.manager.close()
      return
    try:
      self.finish()
    except BaseException:
      with contextlib.suppress(Exception):
        self.manager.close()
      raise
    self.manager.close()
