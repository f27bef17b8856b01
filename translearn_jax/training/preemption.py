"""SIGTERM handling: a preempted run exits 0 in every phase.

`train.py` calls `install()` at start-up, before the family runs, for SIGTERM and
SIGINT (Ctrl-C; a second Ctrl-C aborts at once, and a run stopped by one exits 130,
not 0; a multi-process run gives SIGINT back: see `release`). From then on
a SIGTERM is recorded, and what happens next depends on where the run is:

* inside the training loop (`StopSignal`): the loop finishes its step,
  checkpoints and returns `stopped_by_signal`; exit 0.
* inside a `deferred()` section (writing the lock, `config.json`, a
  checkpoint, and — for the loop families word2vec/lm/seq2seq — the whole
  run): the signal waits for the section's end. Before the loop the loop
  then returns at once without training; after the loop the final evaluation
  and outputs are finished first; exit 0.
* anywhere else (families without a training loop, e.g. the downstream
  comparisons): `Preempted` is raised at once in the main thread, the rest
  of the work is skipped (runs already finished stay in `runs.jsonl`);
  `train.py` exits 0.

Without `install()` (a library call), `StopSignal` handles SIGTERM during the
loop itself, as before.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional


class Preempted(BaseException):
  """A SIGTERM outside a deferred section; `train.py` exits 0.

  A BaseException (like KeyboardInterrupt), so `except Exception` handlers do
  not swallow it.
  """

  def __init__(self, signum: int):
    super().__init__(f'signal {signum}')
    self.signum = signum


_installed: dict[int, object] = {}  # signal -> previous handler, while installed
_received: Optional[int] = None
_defer_depth = 0


def _handle(signum, frame):
  global _received
  if signum == signal.SIGINT:
    if _received is not None:          # a second Ctrl-C: abort now, unsaved
      raise KeyboardInterrupt
    sys.stderr.write('\nCtrl-C: stopping at the next safe point (a training run finishes '
                     'its step and checkpoints); Ctrl-C again aborts at once, unsaved\n')
  _received = signum
  if _defer_depth == 0:
    raise Preempted(signum)


def _quiet_unraisable(unraisable) -> None:
  """A `Preempted` raised where Python cannot propagate it (a garbage-collection
  callback, a finaliser) is dropped silently: the signal is recorded in `_received`
  and acted on at the next safe point (the training loop, or the end of a deferred
  section). Anything else goes to the previous hook."""
  if isinstance(unraisable.exc_value, Preempted):
    return
  _previous_unraisable(unraisable)


_previous_unraisable = sys.unraisablehook


def install(signals=(signal.SIGTERM,)) -> None:
  """Process-wide handler (main thread only); see the module docstring."""
  global _received
  _received = None
  if threading.current_thread() is threading.main_thread():
    for s in signals:
      if s not in _installed:
        _installed[s] = signal.signal(s, _handle)
    sys.unraisablehook = _quiet_unraisable


def release(signum: int) -> None:
  """Gives `signum` back to the handler `install` replaced (a multi-process run's Ctrl-C:
  its processes stop together only at JAX's preemption sync point, which SIGTERM drives)."""
  if signum in _installed:
    signal.signal(signum, _installed.pop(signum))


def uninstall() -> None:
  """Restores the handlers `install` replaced (tests)."""
  global _received
  for s, h in list(_installed.items()):
    signal.signal(s, h)
    del _installed[s]
  sys.unraisablehook = _previous_unraisable
  _received = None


def installed() -> bool:
  return bool(_installed)


def received() -> Optional[int]:
  """The signal received since `install()`, if any."""
  return _received if _installed else None


@contextlib.contextmanager
def deferred(raise_at_end: bool = True) -> Iterator[None]:
  """A section a SIGTERM does not interrupt; on leaving the outermost one a
  pending signal raises `Preempted` (unless `raise_at_end=False`)."""
  global _defer_depth
  _defer_depth += 1
  try:
    yield
  finally:
    _defer_depth -= 1
  if raise_at_end and _defer_depth == 0 and received() is not None:
    raise Preempted(_received)


class StopSignal:
  """Context manager of the training loop: a SIGTERM becomes the flag `requested`.

  With `install()`ed handling it is a deferred section over the process-wide
  record; otherwise it installs its own handler for its duration.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self.signals = signals
    self._own: Optional[int] = None
    self._previous = {}
    self._section = None

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def signum(self) -> Optional[int]:
    return received() if self._section is not None else self._own

  def _handle(self, signum, frame):
    self._own = signum

  def __enter__(self):
    if installed():
      self._section = deferred()
      self._section.__enter__()
    elif threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    if self._section is not None:
      return self._section.__exit__(*exc)
    return False
