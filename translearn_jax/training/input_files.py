"""Fingerprints of a run's input files, so a resume cannot read other data than the run began
with.

A run's config names its inputs by path, and `workdir.check_resume` compares configs only:
a corpus edited or replaced at the same path (documents appended, another file copied over
it) resumed silently, with other training rows and another held-out split chosen from the
new document count, most of whose held-out documents the run had trained on. A run that
starts fresh writes `inputs.json` beside `config.json`: for every file its data fields name
(`data.path`, `data.*_path`, `data.*_source` / `*_target`, `tokenizer.path`; a directory,
glob or comma-separated list by its files), the size, modification time and a SHA-256 of
the contents (of the first and last MiB and the size, for a file over `WHOLE_HASH_BYTES`).
A resume recomputes the digest of each file whose size or time changed (an untouched
corpus is not read again) and refuses a file whose size or digest changed, naming the
field and the file. TFDS
datasets are not files and are not fingerprinted; neither are fields the run cannot resolve
(the run names those itself).
"""

from __future__ import annotations

import hashlib
import json
import os

from translearn_jax.errors import ConfigError
from translearn_jax.training.files import atomic_write

FILE = 'inputs.json'
WHOLE_HASH_BYTES = 1 << 30        # larger files: their first and last MiB and their size
_EDGE = 1 << 20


def _digest(path: str, before: dict | None = None) -> dict:
  """{'size', 'mtime_ns', 'sha256'} of `path`; the recorded `before`'s digest when its size
  and modification time are unchanged (a resume does not read a large corpus again)."""
  st = os.stat(path)
  if before and before.get('size') == st.st_size and before.get('mtime_ns') == st.st_mtime_ns:
    return dict(before)
  size = st.st_size
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    if size <= WHOLE_HASH_BYTES:
      for block in iter(lambda: f.read(1 << 22), b''):
        h.update(block)
    else:
      h.update(f.read(_EDGE))
      f.seek(size - _EDGE)
      h.update(f.read(_EDGE))
      h.update(str(size).encode())
  return {'size': size, 'mtime_ns': st.st_mtime_ns, 'sha256': h.hexdigest()}


def _fields(config) -> dict[str, tuple[str, str]]:
  """{'data.path': (value, kind to resolve it as), ...}: the config's input file fields."""
  out = {}
  data = config.get('data') if hasattr(config, 'get') else None
  if data is not None:
    kind = data.get('kind', 'text')
    for name in sorted(data.keys()):
      value = data[name]
      if not isinstance(value, str) or not value.strip():
        continue
      if name == 'path' and kind != 'tfds':
        out[f'data.{name}'] = (value, kind)
      elif name.endswith(('_path', '_source', '_target')) and kind != 'tfds':
        out[f'data.{name}'] = (value, 'text')
  tok = config.get('tokenizer') if hasattr(config, 'get') else None
  if tok is not None and isinstance(tok.get('path', ''), str) and tok.get('path', ''):
    out['tokenizer.path'] = (tok['path'], 'text')
  return out


def fingerprint(config, before: dict | None = None) -> dict:
  """{field: {file: {'size', 'mtime_ns', 'sha256'}}} of the files `config`'s input fields
  name (a file whose size and time match `before`'s record keeps its digest unread)."""
  from translearn_jax.data import readers
  out = {}
  for field, (value, kind) in _fields(config).items():
    try:
      files = readers.resolve_paths(value, kind)
    except Exception:  # noqa: BLE001 -- not resolvable (the run names it): not fingerprinted
      continue
    known = (before or {}).get(field, {})
    try:
      out[field] = {p: _digest(p, known.get(p)) for p in files if os.path.isfile(p)}
    except OSError:
      continue
  return out


def _same(a: dict, b: dict) -> bool:
  return a['size'] == b['size'] and a['sha256'] == b['sha256']


def record_or_check(config, workdir: str, resume: bool, primary: bool = True) -> None:
  """A fresh run records its inputs (`primary` writes); a resume of a run that recorded them
  raises `ConfigError` naming each input field whose files changed."""
  path = os.path.join(workdir, FILE)
  if resume and os.path.exists(path):
    try:
      with open(path, encoding='utf-8') as f:
        before = json.load(f)
    except (OSError, ValueError):
      before = None
    if isinstance(before, dict):
      now = fingerprint(config, before)
      changed = []
      for field, files in before.items():
        if field not in now:
          continue                 # not resolvable now: the run itself says why
        for p, d in files.items():
          got = now[field].get(p)
          if got is None:
            changed.append(f'{field}: {p} is gone')
          elif not _same(got, d):
            changed.append(f'{field}: {p} changed ({d["size"]:,} → {got["size"]:,} bytes'
                           + (', other contents' if got['size'] == d['size'] else '') + ')')
        for p in sorted(set(now[field]) - set(files)):
          changed.append(f'{field}: {p} is new')
      if changed:
        raise ConfigError(f'--workdir {workdir} holds a run that read other input files; '
                          + '; '.join(changed) + ' (a resume would read other data: '
                          'other training rows, another held-out split); restore them, '
                          'or use a new --workdir')
      return
  if primary:                      # a fresh run (or one that recorded nothing) records them
    atomic_write(path, json.dumps(fingerprint(config), indent=1, sort_keys=True))
