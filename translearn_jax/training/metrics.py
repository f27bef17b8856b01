"""Metric logging: TensorBoard event files and a JSONL log, process 0 only."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping

import jax

from translearn_jax.training.files import atomic_write


def _summary_writer_class():
  """tensorboardX's `SummaryWriter`, imported without importing PyTorch.

  tensorboardX's writer module imports torch, when it is installed, only to accept torch
  tensors as values; that import costs 2-4 s in every process that logs (every train.py
  run on a machine with the `[hf]` extra). The writer here logs Python floats, so torch is
  hidden for the import (`import torch` raises ImportError meanwhile, which tensorboardX
  handles). A process that has already imported torch imports tensorboardX as usual.
  """
  hide = 'torch' not in sys.modules
  if hide:
    sys.modules['torch'] = None
  try:
    import tensorboardX
  finally:
    if hide:
      del sys.modules['torch']
  return tensorboardX.SummaryWriter


class MetricWriter:
  """Writes scalars to `workdir/tb` (TensorBoard format) and `workdir/metrics.jsonl`.

  A resumed run calls `drop_after(step)` first, so `metrics.jsonl` holds each
  step once, like an uninterrupted run's. TensorBoard event files are only
  appended to: after a resume they may hold a step twice (TensorBoard shows
  the later value).
  """

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._tb = None
    self._jsonl = None
    self._path = os.path.join(workdir, 'metrics.jsonl')
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._tb = _summary_writer_class()(os.path.join(workdir, 'tb'))
      self._jsonl = open(self._path, 'a', encoding='utf-8')

  def drop_after(self, step: int) -> None:
    """Removes `metrics.jsonl` records of steps after `step` (and cut-off lines), atomically."""
    if not self.enabled or not os.path.getsize(self._path):
      return
    with open(self._path, encoding='utf-8') as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        rec = json.loads(line)
      except ValueError:
        continue
      if line.endswith('\n') and isinstance(rec, dict) and rec.get('step', 0) <= step:
        keep.append(line)
    if len(keep) == len(lines):
      return
    self._jsonl.close()
    atomic_write(self._path, ''.join(keep))
    self._jsonl = open(self._path, 'a', encoding='utf-8')

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    record = {'step': int(step), 'time': time.time(),
              **{k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
    self._jsonl.write(dumps(record) + '\n')
    self._jsonl.flush()

  def flush(self) -> None:
    """Writes out what TensorBoard's writer holds (it flushes every 2 minutes by itself):
    the loop calls this at each checkpoint, so a run killed later and resumed from it has
    its TensorBoard steps up to there (they had been lost with the unflushed buffer)."""
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.flush()
      self._tb.close()
      self._jsonl.close()


def info(msg: str, *args) -> None:
  """A progress message on stderr (process 0), independent of absl verbosity."""
  if jax.process_index() == 0:
    import sys
    print(msg % args if args else msg, file=sys.stderr, flush=True)


def finite(obj):
  """`obj` with every NaN/±Inf float (at any depth) replaced by None: strict JSON has no
  NaN, and readers such as `JSON.parse` or `jq` refuse the bare token."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite(v) for v in obj]
  if hasattr(obj, 'dtype') and hasattr(obj, 'shape') and hasattr(obj, 'tolist'):
    return finite(obj.tolist())       # numpy / jax scalars and arrays: numbers, not strings
  return obj


def dumps(obj, **kw) -> str:
  """Strict JSON of `obj` (non-finite floats become null; `default=str` for the rest)."""
  return json.dumps(finite(obj), allow_nan=False, default=str, **kw)


def write_json(path: str, obj) -> None:
  """Writes `obj` as strict JSON with `atomic_write`: a reader never sees a half-written
  file, and an existing one survives a crash."""
  atomic_write(path, dumps(obj, indent=2, ensure_ascii=False))
