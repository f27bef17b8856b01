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

JSONL and TSV files are checked strictly: a text field must be a JSON string
(null, numbers, lists and objects raise), every TSV row must have as many
columns as the header, and an empty file raises; each error names the file
and line.

Text files are decoded as UTF-8 (a BOM is dropped, CRLF line ends are
normalised; CR alone ends lines only in a file without LF, else it reads as a
space). Bytes that are not UTF-8 raise a `DataError` naming the file and line,
unless `encoding` names the file's real encoding (e.g. 'latin-1') or
`encoding_fallback` names one to use for files that are not valid UTF-8.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import itertools
import json
import os
import re
import warnings
from typing import Iterator, Optional, Sequence

from translearn_jax.data.fields import MISSING, field_value
from translearn_jax.errors import ConfigError, DataError

TEXT_KINDS = ('text', 'jsonl', 'tsv', 'csv', 'tfds', 'wiki')
RECORD_KINDS = ('jsonl', 'tsv', 'csv')      # files of fields: `iter_records`
# Files a directory contributes, by kind; None: every regular file.
_DIR_SUFFIX = {'text': ('.txt', '.cor', '.text'), 'jsonl': ('.jsonl', '.json'),
               'tsv': ('.tsv',), 'csv': ('.csv',), 'wiki': ('.xml', '.xml.bz2', '.bz2'),
               'conll': None}


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
  """Expands a path spec (files, directories, globs, comma-separated) into a sorted list of
  existing files; a directory's hidden files (names starting with '.') are left out."""
  if not path:
    raise DataError('data.path is empty: give a file, a directory or a glob')
  files: list[str] = []
  for part in [p.strip() for p in path.split(',') if p.strip()]:
    if part.startswith('gensim:'):
      files.append(_gensim_datapath(part[len('gensim:'):]))
    elif os.path.isdir(part):
      named = suffixes = _DIR_SUFFIX.get(kind, ())
      if suffixes is not None and kind != 'wiki':   # and compressed: a.txt.gz
        suffixes = tuple(s + z for s in suffixes for z in ('', *COMPRESSED_SUFFIXES))
      found = sorted(os.path.join(part, f) for f in os.listdir(part)
                     if not f.startswith('.')    # .DS_Store, editors' swap files
                     and (suffixes is None or f.lower().endswith(suffixes))
                     and os.path.isfile(os.path.join(part, f)))
      if not found:
        what = 'files' if suffixes is None else f'{kind} files ({", ".join(named)})'
        raise DataError(f'no {what} in directory {part}')
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
  """gensim's `test.utils.datapath(name)`, found without importing gensim (over 1 s: it
  imports scipy.stats)."""
  import importlib.util
  spec = importlib.util.find_spec('gensim')
  if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a dependency
    raise DataError(f'gensim:{name} needs gensim installed')
  p = os.path.join(list(spec.submodule_search_locations)[0], 'test', 'test_data', name)
  if not os.path.isfile(p):
    raise DataError(f'gensim ships no test file named {name!r} (looked for {p})')
  return p


def _decode_with_fallback(data: bytes, path: str, enc: str, encoding: str,
                          fallback: str) -> str:
  """`data`, not valid `enc`, decoded with `fallback`: line by line when both read ASCII
  as ASCII (the lines that are valid `enc` stay so: a UTF-8 file with a few Latin-1 lines
  keeps its UTF-8 text), else whole. Undecodable bytes raise naming the file and line."""
  import codecs
  try:
    name = codecs.lookup(fallback).name
  except LookupError:
    raise DataError(f'unknown encoding {fallback!r} (data.encoding_fallback)') from None

  def whole(chunk: bytes, first_line: int) -> str:
    try:
      return chunk.decode(fallback)
    except UnicodeDecodeError as f:
      line = first_line + chunk.count(b'\n', 0, f.start)
      raise DataError(f'{path}:{line}: bytes are valid neither as {encoding} nor as '
                      f'{fallback} ({f.reason} at byte {f.start}; data.encoding_fallback)'
                      ) from None

  wide = ('utf-16', 'utf-32')
  if enc.startswith(wide) or name.startswith(wide):
    return whole(data, 1)
  out = []
  for n, line in enumerate(data.split(b'\n'), 1):
    try:
      out.append(line.decode(enc if n == 1 else 'utf-8' if enc == 'utf-8-sig' else enc))
    except UnicodeDecodeError:
      out.append(whole(line, n))
  return '\n'.join(out)


ENCODING_ADVICE = ('set data.encoding (e.g. latin-1) or data.encoding_fallback (translearn '
                   'predict/translate: --encoding)')


def decode_bytes(data: bytes, path: str, encoding: str = 'utf-8',
                 fallback: str = '', errors: str = 'strict', advice: str = ENCODING_ADVICE
                 ) -> str:
  """Decodes a whole file; a bad byte raises naming the file and line, and `advice` (what
  the caller's user can set). A UTF-16 byte-order mark (Excel's "Unicode Text", Windows
  Notepad) selects UTF-16 when UTF-8 was asked for. `errors='replace'` reads a file's head,
  which may end inside a character. Byte-order marks are dropped at the start and at the
  start of any line (files joined with `cat`, each written with one)."""
  enc = 'utf-8-sig' if encoding.lower().replace('_', '-') in ('utf-8', 'utf8') else encoding
  if enc == 'utf-8-sig' and data[:2] in (b'\xff\xfe', b'\xfe\xff'):
    enc = 'utf-16'
  try:
    text = data.decode(enc, errors)
  except UnicodeDecodeError as e:
    if fallback:
      text = _decode_with_fallback(data, path, enc, encoding, fallback)
    else:
      line = data.count(b'\n', 0, e.start) + 1
      raise DataError(
          f'{path}:{line}: bytes are not valid {encoding} ({e.reason} at byte '
          f'{e.start}); {advice}') from None
  except LookupError:
    raise DataError(f'unknown encoding {encoding!r} (data.encoding; translearn '
                    'predict/translate: --encoding)') from None
  if text.startswith('\ufeff'):
    text = text[1:]
  text = text.replace('\r\n', '\n')
  # a lone CR ends lines only in a file of CR line ends (classic Mac); inside a file of
  # LF lines it is a stray character in a line, and breaking there would shift every
  # later line (misaligned parallel files, split TSV rows, wrong line numbers)
  text = text.replace('\r', ' ' if '\n' in text else '\n')
  return text.replace('\n\ufeff', '\n')


def config_encodings(cfg) -> tuple[str, str]:
  """(`data.encoding`, `data.encoding_fallback`) of a data config block; defaults
  'utf-8' and '' (raise on bad bytes)."""
  return cfg.get('encoding', 'utf-8') or 'utf-8', cfg.get('encoding_fallback', '') or ''


_COMPRESSED = ((b'\x1f\x8b', 'gzip'), (b'BZh', 'bz2'), (b'\xfd7zXZ\x00', 'lzma'))
COMPRESSED_SUFFIXES = ('.gz', '.bz2', '.xz')   # file names of the archives read through


def _archive_module(head: bytes) -> Optional[str]:
  """'gzip', 'bz2' or 'lzma' when bytes starting with `head` are such an archive, else None."""
  return next((m for magic, m in _COMPRESSED if head.startswith(magic)), None)


def open_content(path: str):
  """`path` opened for reading bytes of its content: through gzip/bz2/lzma when the file is
  such an archive (found by its first bytes, not its name), else as it is."""
  import importlib
  with open(path, 'rb') as f:
    module = _archive_module(f.read(8))
  return importlib.import_module(module).open(path, 'rb') if module else open(path, 'rb')


def head_bytes(path: str, n: int) -> bytes:
  """The first `n` bytes of `path`'s content: decompressed when it is a gzip, bzip2 or xz
  archive (read as a stream, not whole); b'' when it cannot be read."""
  try:
    with open_content(path) as f:
      return f.read(n)
  except Exception:  # noqa: BLE001 -- missing, unreadable or damaged: the readers report it
    return b''


def is_compressed(head: bytes) -> bool:
  """Whether bytes starting with `head` are a gzip, bzip2 or xz archive."""
  return _archive_module(head) is not None


def decompress(data: bytes, path: str) -> bytes:
  """`data` itself, or decompressed when it starts with a gzip, bzip2 or xz header (so
  `corpus.txt.gz` or `cc.en.300.vec.gz` read as their text); a damaged archive raises
  naming the file."""
  module = _archive_module(data)
  if module is None:
    return data
  import importlib
  try:
    return importlib.import_module(module).decompress(data)
  except Exception as e:             # gzip/bz2/lzma each have their own errors
    raise DataError(f'{path}: damaged {module} archive ({e})') from None


def read_text(path: str, encoding: str = 'utf-8', fallback: str = '',
              advice: str = ENCODING_ADVICE) -> str:
  """The text of `path` (decompressed if gzip/bzip2/xz), decoded by `decode_bytes`."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise DataError(f'cannot read {path}: {e.strerror}') from None
  return decode_bytes(decompress(data, path), path, encoding, fallback, advice=advice)


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
                 fallback: str = '', label_fields: Sequence[str] = (), header: bool = False
                 ) -> Iterator[tuple[str, int, dict]]:
  """`(file, line number, {field: text})` for each JSONL object / TSV or CSV row of `path`.

  JSONL: each line is an object holding every field (a dotted name, 'translation.en',
  reaches into nested objects); a field's value must be a string, except that fields in
  `label_fields` may also hold a number or a boolean (turned into text, e.g. 1 -> '1').
  TSV and CSV: fields are header names, or 0-based column indices when every field is a
  number (the file then has no header, unless `header`: its first row is then skipped);
  every row must have as many columns as the header (headerless: as the first row). CSV
  is read as RFC 4180 says (Python's `csv`): quoted fields may hold commas, doubled
  quotes and line breaks; a row's line number is the line it starts on.
  Blank lines are skipped; an empty file, and anything malformed, raises naming the file
  and line.
  """
  if kind not in RECORD_KINDS:
    raise DataError(f"records need kind 'jsonl', 'tsv' or 'csv', got {kind!r}")
  for file in resolve_paths(path, kind):
    text = read_text(file, encoding, fallback)
    lines = text.split('\n')
    if not any(line.strip() for line in lines):
      what = 'a header row naming' if kind != 'jsonl' and not by_index(fields) else \
          'records with'
      raise DataError(f'{file}:1: empty file (expected {what} field(s) {list(fields)})')
    if kind == 'jsonl':
      yield from _jsonl_records(file, lines, fields, label_fields)
    else:
      yield from _table_records(file, _table_rows(file, text, kind), fields, kind, header)


def table_header(file: str, kind: str, encoding: str = 'utf-8', fallback: str = '') -> list[str]:
  """The header of a TSV/CSV file (its first non-blank row, cells stripped of spaces, as
  `iter_records` reads it)."""
  first = next(_table_rows(file, read_text(file, encoding, fallback), kind), None)
  if first is None:
    raise DataError(f'{file}:1: empty file (expected a header row)')
  return [h.strip(' ') for h in first[1]]


def _table_rows(file: str, text: str, kind: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, cells) of each non-blank row of TSV or CSV `text`."""
  if kind == 'csv':
    return _csv_rows(file, text)
  rows = [(n, line.split('\t')) for n, line in enumerate(text.split('\n'), 1) if line.strip()]
  quoted = [n for n, cells in rows if any(_CSV_QUOTED.match(c) for c in cells)]
  if quoted:
    warnings.warn(f'{file}: {len(quoted)} row(s) have fields quoted as CSV writers quote them '
                  f'("..." with doubled quotes inside; first at line {quoted[0]}): TSV is read '
                  'unquoted, so the quotes stay in the text; write the file without quoting '
                  '(csv.QUOTE_NONE) or as .csv', stacklevel=3)
  return iter(rows)


# a TSV field as Python's csv and pandas' to_csv(sep='\t') write one holding a quote
_CSV_QUOTED = re.compile(r'^\s*"(?:[^"]|"")*""(?:[^"]|"")*"\s*$')


def _csv_rows(file: str, text: str) -> Iterator[tuple[int, list[str]]]:
  """(first line, cells) of each non-blank CSV record."""
  import csv
  import io
  csv.field_size_limit(2 ** 31 - 1)    # a long document is one field (the default: 128 KiB)
  reader = csv.reader(io.StringIO(text, newline=''), strict=True)
  start = 1
  while True:
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise DataError(f'{file}:{start}: not readable as CSV ({e})') from None
    if any(c.strip() for c in row):
      yield start, row
    start = reader.line_num + 1


HEADERS = ('auto', 'yes', 'no')   # data.header: TSV/CSV fields by column number, header row?


def numbered_fields(kind: str, fields: Sequence[str], header: str) -> bool:
  """Whether a TSV/CSV file's `fields` are column numbers (read without a header row unless
  `data.header` is 'yes'); a `header` outside `HEADERS`, or 'no' with named fields (looked
  up in a header row), is an error naming data.header."""
  if header not in HEADERS:
    raise ConfigError(f'data.header must be one of {HEADERS}, got {header!r}')
  numbered = kind != 'jsonl' and by_index(fields)
  if kind != 'jsonl' and not numbered and header == 'no':
    raise ConfigError(f'data.header=no: fields {list(fields)} must then be column '
                      'numbers (0-based); named fields are looked up in a header row')
  return numbered


def by_index(fields: Sequence[str]) -> bool:
  return all(f.isdigit() for f in fields)


def _json_kind(v) -> str:
  if v is None:
    return 'null'
  if isinstance(v, bool):
    return f'a boolean ({json.dumps(v)})'
  if isinstance(v, (int, float)):
    return f'a number ({v!r})'
  return {list: 'a list', dict: 'an object'}.get(type(v), type(v).__name__)


def json_object(path: str) -> dict:
  """The JSON object in `path` ({} when there is no such file); not JSON, or not an
  object, raises naming the file."""
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      out = json.load(f)
  except ValueError as e:
    raise DataError(f'{path}: not JSON ({e})') from None
  if not isinstance(out, dict):
    raise DataError(f'{path}: not a JSON object')
  return out


def json_objects(file, lines, wanted: str = ''):
  """(line number, object) of each non-blank JSONL line; a line that is not JSON or not an
  object is a DataError naming file:line (`wanted` describes the expected fields)."""
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f'{file}:{n}: invalid JSON ({e.msg})') from None
    if not isinstance(obj, dict):
      raise DataError(f'{file}:{n}: expected a JSON object{wanted}, got {_json_kind(obj)}')
    yield n, obj


def _jsonl_records(file, lines, fields, label_fields):
  for n, obj in json_objects(file, lines, f' with field(s) {list(fields)}'):
    rec = {}
    for f in fields:
      v = field_value(obj, f)
      if v is MISSING:
        under = [k for k, x in obj.items() if isinstance(x, dict) and f in x]
        hint = f' (it is inside {under[0]!r}: name it {under[0]}.{f})' if under else ''
        raise DataError(f'{file}:{n}: no field {f!r}{hint}')
      if isinstance(v, str):
        rec[f] = v
      elif f in label_fields and isinstance(v, (int, float)):
        rec[f] = json.dumps(v)
      else:
        want = 'a string or a number' if f in label_fields else 'a string'
        raise DataError(f'{file}:{n}: field {f!r} is {_json_kind(v)}, expected {want}')
    yield file, n, rec


def _table_records(file, rows, fields, kind, skip_header=False):
  """The records of TSV/CSV `rows` ((line number, cells) of each non-blank row); with
  column numbers for `fields`, `skip_header` skips the first row."""
  sep = {'tsv': 'tab', 'csv': 'comma'}[kind]
  rows = iter(rows)
  if by_index(fields):
    cols, header, ncols, ref = {f: int(f) for f in fields}, None, None, None
    if skip_header:
      first = next(rows, None)
      if first is not None:
        header, ncols, ref = [h.strip(' ') for h in first[1]], len(first[1]), 'the header'
        if max(cols.values()) >= ncols:
          raise DataError(f'{file}:{first[0]}: the header has {ncols} columns, needs column '
                          f'{max(cols.values())}')
  else:
    first = next(rows, None)
    if first is None:
      raise DataError(f'{file}:1: no header row (every row is empty; expected a header '
                      f'naming {list(fields)})')
    header = [h.strip(' ') for h in first[1]]
    for f in fields:
      if f not in header:
        raise DataError(f'{file}:1: no column named {f!r} in header {header}')
      if header.count(f) > 1:
        raise DataError(f'{file}:1: column {f!r} appears {header.count(f)} times in header '
                        f'{header}')
    cols, ncols, ref = {f: header.index(f) for f in fields}, len(header), 'the header'
  seen, seen_second, repeats = False, False, []
  for n, row in rows:
    if header is not None and [c.strip(' ') for c in row] == header:
      repeats.append(n)                  # files concatenated with their headers
      continue
    if ncols is None:
      need = max(cols.values())
      if need >= len(row):
        raise DataError(f'{file}:{n}: has {len(row)} columns, needs column {need}')
      ncols, ref = len(row), f'line {n}'
    if len(row) != ncols:
      hint = lambda more, fewer: (' (a tab inside a field?)' if kind == 'tsv' else
                                  ' (an unquoted comma inside a field?)') if more > fewer else ''
      if header is None and not seen_second and ref.startswith('line '):
        # headerless: the width came from the first row alone; when the next rows (up to 4)
        # all agree with this one, the first row is the odd one out
        after = list(itertools.islice(rows, 4))
        if after and all(len(a[1]) == len(row) for a in after):
          raise DataError(f'{file}:{ref[5:]}: has {ncols} {sep}-separated columns but lines '
                          f'{n} to {after[-1][0]} have {len(row)}{hint(ncols, len(row))}')
      raise DataError(f'{file}:{n}: has {len(row)} {sep}-separated columns but {ref} has '
                      f'{ncols}{hint(len(row), ncols)}')
    seen_second = seen
    seen = True
    yield file, n, {f: row[c] for f, c in cols.items()}
  if repeats:
    warnings.warn(f'{file}: {len(repeats)} line(s) repeat the header and are skipped (first: '
                  f'line {repeats[0]}; files concatenated with their headers?)', stacklevel=2)
  if not seen:
    start = 1 if header is None else 2
    raise DataError(f'{file}:{start}: no rows after the header (expected rows with '
                    f'column(s) {list(fields)})')


# a redirect page in any language's dump: '#REDIRECT [[X]]', '#WEITERLEITUNG [[X]]', '#重定向 [[X]]'
_REDIRECT = re.compile(r'\s*#\S+\s*\[\[')


def _wiki_docs(path: str) -> Iterator[str]:
  from gensim.corpora.wikicorpus import extract_pages, filter_wiki
  try:
    with open_content(path) as f:
      for _, text, _ in extract_pages(f):
        body = filter_wiki(text)
        if body.strip() and not _REDIRECT.match(text or ''):   # the page's own markup
          yield body
  except (OSError, EOFError) as e:
    raise DataError(f'cannot read wiki dump {path}: {e}') from None
  except Exception as e:  # XML parse errors
    raise DataError(f"{path}: not a MediaWiki XML dump ({e}); data.kind='wiki' reads "
                    "dumps: set data.kind='text' for plain text") from None


def read_documents(spec: TextSpec) -> Iterator[str]:
  """Yields the documents named by `spec`, in a deterministic order."""
  if spec.kind not in TEXT_KINDS:
    raise DataError(f'data.kind must be one of {TEXT_KINDS}, got {spec.kind!r}')
  if spec.kind == 'tfds':
    from translearn_jax.data import tfds_source
    yield from tfds_source.read_text_field(spec.path, spec.split, spec.field,
                                           spec.data_dir or None)
    return
  if spec.kind in RECORD_KINDS:
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


def fsync_dir(d: str) -> None:
  """Makes a rename in directory `d` durable (best effort)."""
  with contextlib.suppress(OSError):
    fd = os.open(d, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def writes_in_place(path: str) -> bool:
  """Whether a write to `path` must go straight into it, appended, since nothing can be
  renamed over it: a device or pipe (a FIFO, `/dev/null`), also behind a link, or a file
  reached through /proc (`/dev/stdout` -> /proc/self/fd/1 -> a `>>`-redirected file, whose
  earlier content appending keeps). A plain file under /dev/shm is replaced as any other."""
  hops, p = [os.path.abspath(path)], os.path.abspath(path)
  while os.path.islink(p) and len(hops) < 40:   # /dev/stdout -> /proc/self/fd/1 -> a file
    p = os.path.abspath(os.path.join(os.path.dirname(p), os.readlink(p)))
    hops.append(p)
  real = os.path.realpath(path)
  return any(h.startswith('/proc/') for h in hops[1:] + [real]) or (
      os.path.exists(real) and not os.path.isfile(real))


def write_target(path: str) -> str:
  """Where a write to `path` goes: a symbolic link's target (the link is kept), else `path`."""
  return os.path.realpath(path) if os.path.islink(path) else path


def write_file(path: str, data: bytes) -> None:
  """Writes `data` under a temporary name, then renames it over `path`: an existing file
  is never left half-written (tokenizers, vocabularies; the data layer cannot use
  `training.files`, a layer above it). A symbolic link is kept and its target replaced;
  a device or pipe is written in place (`writes_in_place`)."""
  if writes_in_place(path):
    with open(path, 'ab') as f:
      f.write(data)
    return
  path = write_target(path)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
