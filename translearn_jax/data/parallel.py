"""Parallel text (translation, summarisation pairs) behind one interface.

* two aligned plain-text files, one sentence a line (`kind='text'`,
  `source_path` + `target_path`): a different number of lines, an empty
  line on either side, or a path naming several files (a directory, a glob)
  is an error naming the file (and line);
* TSV / CSV / JSONL pairs (`kind='tsv'|'csv'|'jsonl'`, `path`, `source_field`,
  `target_field`), e.g. (document, summary) files, read strictly by
  `readers.iter_records` (both fields must be strings; TSV column counts
  must match the header);
* a prepared TFDS translation dataset (`kind='tfds'`, `path`=name,
  `source_field`/`target_field` = the language codes), read without TensorFlow.

`length_filter` drops pairs whose token counts fall outside the limits and
says how many it dropped.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

from translearn_jax.data import readers
from translearn_jax.errors import ConfigError, DataError


def _lines(path: str, encoding: str = 'utf-8', fallback: str = '') -> list[str]:
  files = readers.resolve_paths(path)
  if len(files) != 1:
    raise DataError(f'{path}: aligned parallel text needs one file per side, this names '
                    f'{len(files)} ({files[0]}, ...)')
  text = readers.read_text(files[0], encoding, fallback)
  lines = text.split('\n')
  while lines and not lines[-1].strip():   # blank lines at the end are no pairs
    lines.pop()
  return lines


def read_aligned(source_path: str, target_path: str, encoding: str = 'utf-8',
                 fallback: str = '') -> list[tuple[str, str]]:
  src, tgt = _lines(source_path, encoding, fallback), _lines(target_path, encoding, fallback)
  if len(src) != len(tgt):
    raise DataError(f'misaligned parallel files: {source_path} has {len(src)} lines, '
                    f'{target_path} has {len(tgt)}')
  for n, (s, t) in enumerate(zip(src, tgt), 1):
    for path, line in ((source_path, s), (target_path, t)):
      if not line.strip():
        raise DataError(f'{path}:{n}: empty line in parallel text')
  if not src:
    raise DataError(f'{source_path}: no lines')
  return list(zip(src, tgt))


def read_pairs_fields(kind: str, path: str, source_field: str, target_field: str,
                      encoding: str = 'utf-8', fallback: str = '', header: str = 'auto'
                      ) -> list[tuple[str, str]]:
  """The (source, target) pairs of TSV/CSV/JSONL `path`. Fields given by column number are
  read without a header row unless `header='yes'`; with 'auto', a warning names the first
  pair of each file (nothing tells a header row of two texts from a pair: 'English,French'
  would be trained on and scored), and 'no' reads it as data without one."""
  numbered = readers.numbered_fields(kind, [source_field, target_field], header)
  pairs, first = [], {}
  for file, n, rec in readers.iter_records(path, kind, [source_field, target_field], encoding,
                                           fallback, header=numbered and header == 'yes'):
    for f in (source_field, target_field):
      if not rec[f].strip():
        raise DataError(f'{file}:{n}: field {f!r} missing or empty')
    pairs.append((rec[source_field], rec[target_field]))
    first.setdefault(file, (n, pairs[-1]))
  if not pairs:
    raise DataError(f'{path}: no pairs')
  if numbered and header == 'auto':
    for file, (n, (src, tgt)) in first.items():
      warnings.warn(f'{file}:{n}: columns {source_field} and {target_field} are read without '
                    f'a header row, so the first pair ({src[:40]!r} -> {tgt[:40]!r}) is data; '
                    'if it is a header row, set data.header=yes (data.header=no: no warning)',
                    stacklevel=2)
  return pairs


def read_tfds_pairs(name: str, split: str, source_field: str, target_field: str,
                    data_dir: Optional[str] = None) -> list[tuple[str, str]]:
  from translearn_jax.data import tfds_source
  src = tfds_source.open_source(name, split, data_dir)
  out = []
  for i in range(len(src)):
    rec = src[i]
    for f in (source_field, target_field):
      if f not in rec:
        raise DataError(f'TFDS {name!r} record {i} has no feature {f!r} (has {sorted(rec)}); '
                        'set data.source_field / data.target_field (language codes)')
    dec = lambda v: v.decode('utf-8') if isinstance(v, bytes) else str(v)
    out.append((dec(rec[source_field]), dec(rec[target_field])))
  return out


def read_split(cfg, split: str) -> list[tuple[str, str]]:
  """Pairs of `split` ('train', 'valid', 'test') as the `data` config names them."""
  encoding, fallback = readers.config_encodings(cfg)
  if cfg.kind == 'text':
    return read_aligned(cfg[f'{split}_source'], cfg[f'{split}_target'], encoding, fallback)
  if cfg.kind in readers.RECORD_KINDS:
    return read_pairs_fields(cfg.kind, cfg[f'{split}_path'], cfg.source_field,
                             cfg.target_field, encoding, fallback, cfg.get('header', 'auto'))
  if cfg.kind == 'tfds':
    return read_tfds_pairs(cfg.path, cfg[f'{split}_split'], cfg.source_field,
                           cfg.target_field, cfg.data_dir or None)
  check_kind(cfg.kind)


PAIR_KINDS = ('text',) + tuple(readers.RECORD_KINDS) + ('tfds',)


def check_kind(kind: str) -> None:
  if kind not in PAIR_KINDS:
    raise ConfigError(f'config.data.kind must be one of {PAIR_KINDS} for pairs, got {kind!r}')


def split_fields(kind: str, split: str) -> tuple[str, ...]:
  """The `data` fields that name `split`'s pairs for data of `kind`."""
  if kind == 'text':
    return (f'{split}_source', f'{split}_target')
  return (f'{split}_split',) if kind == 'tfds' else (f'{split}_path',)


def configured_splits(cfg, splits=('train', 'valid', 'test')) -> list[str]:
  """The splits the `data` config names, by its kind's fields (`split_fields`); one of a
  text split's two files without the other is an error naming both fields."""
  check_kind(cfg.kind)
  out = []
  for split in splits:
    fields = split_fields(cfg.kind, split)
    given = [f for f in fields if cfg.get(f)]
    if given and len(given) < len(fields):
      missing = [f for f in fields if f not in given]
      raise ConfigError(f'config.data.{given[0]} is set but config.data.{missing[0]} is '
                        f'empty: a {split} split needs both (or neither)')
    if given:
      out.append(split)
  return out


def check_held_out_location(cfg, named) -> list[str]:
  """Text pairs whose held-out files sit in another directory than the training files and
  end in other language suffixes (`train.fr` against `val.en`) are most often a config's
  defaults left behind when only `train_*` was overridden (Multi30k's test set scoring a
  model trained on other data): a warning naming the fields and how to drop a split (an
  empty field). Held-out files elsewhere with the same suffixes (WMT's dev/ and test/
  folders) are only noted. Returns the notes."""
  if cfg.kind != 'text' or 'train' not in named:
    return []
  home = os.path.dirname(os.path.abspath(cfg.train_source))
  suffix = lambda p: os.path.splitext(p)[1]
  notes = []
  for split in ('valid', 'test'):
    if split not in named:
      continue
    src, tgt = cfg[f'{split}_source'], cfg[f'{split}_target']
    if os.path.dirname(os.path.abspath(src)) == home:
      continue
    if (suffix(src), suffix(tgt)) != (suffix(cfg.train_source), suffix(cfg.train_target)):
      warnings.warn(f'config.data.{split}_source/{split}_target ({src}, {tgt}) are in another '
                    f'directory than config.data.train_source ({cfg.train_source}) and end '
                    f'in other language suffixes: if only the training files were '
                    f'overridden, this {split} split is still the config\'s default; name '
                    f'your own files, or set --config.data.{split}_source= '
                    f'--config.data.{split}_target= for none', stacklevel=2)
    else:
      notes.append(f'the {split} split is read from {os.path.dirname(src) or "."}, not the '
                   f'training files\' directory')
  return notes


def split_name(cfg, split: str) -> str:
  """Where `read_split` reads `split`'s targets from (for messages)."""
  if cfg.kind == 'text':
    return cfg[f'{split}_target']
  if cfg.kind == 'tfds':
    return f'{cfg.path}:{cfg[f"{split}_split"]}'
  return cfg[f'{split}_path']


def length_filter(src_ids, tgt_ids, max_source: int, max_target: int, min_len: int = 1):
  """Indices of pairs within the limits (target counted with its EOS)."""
  keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
          if min_len <= len(s) <= max_source and min_len <= len(t) + 1 <= max_target]
  return keep
