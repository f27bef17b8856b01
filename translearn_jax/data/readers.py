"""Reading text documents from local files and TFDS, behind one interface.

`read_documents(spec)` yields documents (strings) from

* plain text: one sentence or document per line (`kind='text'`), or
  paragraphs separated by blank lines (`kind='text', unit='paragraph'`),
  or a whole file as one document (`unit='file'`);
* JSONL: one JSON object per line, the text under `field`;
* TSV: one record per line, the text in column `field` (a header name when
  the file has a header row, or a 0-based column index);
* TFDS: a prepared catalogue dataset read with `tfds.data_source`
  (array_record, no TensorFlow needed), text under `field`;
* a MediaWiki XML dump (`kind='wiki'`, `.xml` or `.xml.bz2`): one document
  per article, markup stripped with gensim's `filter_wiki`, redirects skipped.

`path` may be a file, a directory (every `*.txt`/`*.jsonl`/`*.tsv` file in
it, sorted), a glob, a comma-separated list of those, or `gensim:NAME` for a
file of gensim's bundled test data (e.g. `gensim:lee_background.cor`).

Text files are decoded as UTF-8 (a BOM is dropped, CRLF line ends are
normalised). Bytes that are not UTF-8 raise a `DataError` naming the file and
line, unless `encoding` names the file's real encoding (e.g. 'latin-1') or
`encoding_fallback` names one to use for files that are not valid UTF-8.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Iterator, Sequence

from translearn_jax.errors import DataError

TEXT_KINDS = ('text', 'jsonl', 'tsv', 'tfds', 'wiki')
_DIR_SUFFIX = {'text': ('.txt', '.cor', '.text'), 'jsonl': ('.jsonl', '.json'),
               'tsv': ('.tsv',), 'wiki': ('.xml', '.xml.bz2', '.bz2')}


@dataclasses.dataclass(frozen=True)
class TextSpec:
  """Where documents come from; mirrors the `data` block of a config."""
  kind: str = 'text'
  path: str = ''
  field: str = 'text'           # JSONL key, TSV column (name or index), TFDS feature
  unit: str = 'line'            # text only: 'line', 'paragraph' or 'file'
  encoding: str = 'utf-8'
  encoding_fallback: str = ''   # e.g. 'latin-1'; '' means: raise on bad bytes
  split: str = 'train'          # TFDS split
  data_dir: str = ''            # TFDS data_dir ('' = TFDS default)

  @classmethod
  def from_config(cls, cfg) -> 'TextSpec':
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(cfg).items() if k in names})


def resolve_paths(path: str, kind: str = 'text') -> list[str]:
  """Expands a path spec into a sorted list of existing files."""
  if not path:
    raise DataError('data.path is empty: give a file, a directory or a glob')
  files: list[str] = []
  for part in [p.strip() for p in path.split(',') if p.strip()]:
    if part.startswith('gensim:'):
      files.append(_gensim_datapath(part[len('gensim:'):]))
    elif os.path.isdir(part):
      found = sorted(os.path.join(part, f) for f in os.listdir(part)
                     if f.endswith(_DIR_SUFFIX.get(kind, ())))
      if not found:
        raise DataError(f'no {kind} files ({", ".join(_DIR_SUFFIX.get(kind, ()))}) '
                        f'in directory {part}')
      files.extend(found)
    elif any(c in part for c in '*?['):
      found = sorted(glob.glob(part))
      if not found:
        raise DataError(f'no file matches {part}')
      files.extend(found)
    elif os.path.isfile(part):
      files.append(part)
    else:
      raise DataError(f'no such file or directory: {part}')
  return files


def _gensim_datapath(name: str) -> str:
  try:
    from gensim.test.utils import datapath
  except ImportError as e:  # pragma: no cover - gensim is a dependency
    raise DataError(f'gensim:{name} needs gensim installed') from e
  p = datapath(name)
  if not os.path.isfile(p):
    raise DataError(f'gensim ships no test file named {name!r} (looked for {p})')
  return p


def decode_bytes(data: bytes, path: str, encoding: str = 'utf-8',
                 fallback: str = '') -> str:
  """Decodes a whole file; a bad byte raises naming the file and line."""
  enc = 'utf-8-sig' if encoding.lower().replace('_', '-') in ('utf-8', 'utf8') else encoding
  try:
    text = data.decode(enc)
  except UnicodeDecodeError as e:
    if fallback:
      text = data.decode(fallback)
    else:
      line = data.count(b'\n', 0, e.start) + 1
      raise DataError(
          f'{path}:{line}: bytes are not valid {encoding} ({e.reason} at byte '
          f'{e.start}); set data.encoding (e.g. latin-1) or data.encoding_fallback'
      ) from None
  except LookupError:
    raise DataError(f'unknown encoding {encoding!r} (data.encoding)') from None
  if text.startswith('\ufeff'):
    text = text[1:]
  return text.replace('\r\n', '\n').replace('\r', '\n')


def read_text(path: str, encoding: str = 'utf-8', fallback: str = '') -> str:
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise DataError(f'cannot read {path}: {e.strerror}') from None
  return decode_bytes(data, path, encoding, fallback)


def _split_units(text: str, unit: str) -> Iterator[str]:
  if unit == 'line':
    yield from text.split('\n')
  elif unit == 'paragraph':
    para: list[str] = []
    for line in text.split('\n'):
      if line.strip():
        para.append(line)
      elif para:
        yield ' '.join(para)
        para = []
    if para:
      yield ' '.join(para)
  elif unit == 'file':
    yield text
  else:
    raise DataError(f"data.unit must be 'line', 'paragraph' or 'file', got {unit!r}")


def iter_records(path: str, kind: str, fields: Sequence[str], encoding: str = 'utf-8',
                 fallback: str = '') -> Iterator[tuple[str, int, dict]]:
  """`(file, line number, {field: text})` for each JSONL object / TSV row of `path`.

  JSONL: every field must be present; non-string values (e.g. integer labels)
  are turned into text. TSV: fields are header names, or 0-based column
  indices when every field is a number (the file then has no header). Blank
  lines are skipped; anything else malformed raises naming the file and line.
  """
  for file in resolve_paths(path, kind):
    lines = read_text(file, encoding, fallback).split('\n')
    if kind == 'jsonl':
      for n, line in enumerate(lines, 1):
        if not line.strip():
          continue
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f'{file}:{n}: invalid JSON ({e.msg})') from None
        missing = [f for f in fields if not isinstance(obj, dict) or f not in obj]
        if missing:
          raise DataError(f'{file}:{n}: no field {missing[0]!r}')
        yield file, n, {f: obj[f] if isinstance(obj[f], str) else json.dumps(obj[f])
                        for f in fields}
    elif kind == 'tsv':
      if all(f.isdigit() for f in fields):
        cols, start = {f: int(f) for f in fields}, 0
      else:
        header = lines[0].split('\t') if lines else []
        for f in fields:
          if f not in header:
            raise DataError(f'{file}:1: no column named {f!r} in header {header}')
        cols, start = {f: header.index(f) for f in fields}, 1
      for n, line in enumerate(lines[start:], start + 1):
        if not line.strip():
          continue
        row = line.split('\t')
        need = max(cols.values())
        if need >= len(row):
          raise DataError(f'{file}:{n}: has {len(row)} columns, needs column {need}')
        yield file, n, {f: row[c] for f, c in cols.items()}
    else:
      raise DataError(f"records need kind 'jsonl' or 'tsv', got {kind!r}")


def _wiki_docs(path: str) -> Iterator[str]:
  import bz2
  from gensim.corpora.wikicorpus import extract_pages, filter_wiki
  opener = bz2.open if path.endswith('.bz2') else open
  try:
    with opener(path, 'rb') as f:
      for _, text, _ in extract_pages(f):
        body = filter_wiki(text)
        if body.strip() and not body.lstrip().upper().startswith('#REDIRECT'):
          yield body
  except (OSError, EOFError) as e:
    raise DataError(f'cannot read wiki dump {path}: {e}') from None
  except Exception as e:  # XML parse errors
    raise DataError(f'{path}: not a MediaWiki XML dump ({e})') from None


def read_documents(spec: TextSpec) -> Iterator[str]:
  """Yields the documents named by `spec`, in a deterministic order."""
  if spec.kind not in TEXT_KINDS:
    raise DataError(f'data.kind must be one of {TEXT_KINDS}, got {spec.kind!r}')
  if spec.kind == 'tfds':
    from translearn_jax.data import tfds_source
    yield from tfds_source.read_text_field(spec.path, spec.split, spec.field,
                                           spec.data_dir or None)
    return
  if spec.kind in ('jsonl', 'tsv'):
    for _, _, rec in iter_records(spec.path, spec.kind, [spec.field], spec.encoding,
                                  spec.encoding_fallback):
      yield rec[spec.field]
    return
  for path in resolve_paths(spec.path, spec.kind):
    if spec.kind == 'wiki':
      yield from _wiki_docs(path)
    else:
      yield from _split_units(read_text(path, spec.encoding, spec.encoding_fallback), spec.unit)


def read_many(specs: Sequence[TextSpec]) -> Iterator[str]:
  for spec in specs:
    yield from read_documents(spec)
