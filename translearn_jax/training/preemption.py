"""SIGTERM/SIGINT handling: the loop finishes its step, checkpoints, exits 0."""

from __future__ import annotations

import signal
import threading


class StopSignal:
  """Context manager that turns SIGTERM (and optionally SIGINT) into a flag."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self.signals = signals
    self.requested = False
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    self.requested = True
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    return False
