"""CoNLL-style sequence-tagging files and BIO spans.

Reads one token per line with its tag in the last column (`token ... TAG`; columns
split by tabs when a line has one, else by spaces), sentences separated by blank lines
(and by `-DOCSTART-` lines, which are skipped): the CoNLL-2003 layout and its common
variants. A line starting with '#' above a sentence is a comment (GermEval 2014's source
lines, CoNLL-U's `# sent_id = ...`) unless it reads as a token with a valid tag (a
tweet's `#` tagged O). A path may be a directory: every regular file
in it is read, in sorted order. Malformed lines raise a `DataError` naming the
file and line.

`read_tfds` reads the same from a prepared TFDS dataset shaped like TFDS's
`conll2003` (token and tag sequences).

Tags are `O` or a prefix and a type: IOB1/IOB2 (`B-X`, `I-X`), IOBES (also `E-X`,
`S-X`) or BILOU (`L-X`, `U-X`: IOBES's `E-X`, `S-X` by other names); a bare prefix (`B`,
`I`: one entity type) is type '_', as seqeval names it. IO files (Few-NERD's layout: the
entity type alone, `person-actor`, or `O`) are read with `scheme='io'`: a run of words with
the same type is one entity, and the tags are converted to IOB2 on reading (`from_io`);
`convert_tags(tags, 'io')` writes them back.
`entity_spans` extracts entity spans exactly as seqeval does by default
(its conlleval-style chunking): an `I-X` that does not continue an open `X` chunk
starts a new one, `E-X` and `S-X` close their chunk (BILOU is chunked as IOBES, which
seqeval's default mode does not read; its strict BILOU mode finds the same spans in
well-formed sequences).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import warnings

from translearn_jax.data import readers, tfds_source
from translearn_jax.errors import DataError


@dataclasses.dataclass
class TaggedCorpus:
  sentences: list      # list[list[str]]
  tags: list           # list[list[str]]
  path: str


def read_conll(path: str, encoding: str = 'utf-8', fallback: str = '', token_column: int = 0,
               tag_column: int = -1, scheme: str = '') -> TaggedCorpus:
  """The sentences of `path`: a file, a glob, a comma-separated list, or a
  directory, whose every regular file is read (sorted by name; a directory
  without files is an error). A sentence never spans two files. The token and
  the tag are the columns `token_column` and `tag_column` (0-based; negative
  counts from the end: GermEval 2014's `index token outer inner` is 1 and 2). `scheme`
  '' reads prefixed tags (IOB1/IOB2/IOBES/BILOU) as they are; 'io' reads every tag but `O`
  as an entity type and returns the IOB2 tags of its runs (`from_io`)."""
  check_input_scheme(scheme)
  files = readers.resolve_paths(path, 'conll')
  sentences, tags = [], []
  for file in files:
    _read_conll_file(file, encoding, fallback, token_column, tag_column, sentences, tags,
                     scheme)
  where = files[0] if len(files) == 1 else path
  if not sentences:
    raise DataError(f'{where}: no sentences')
  if scheme == 'io':
    tags = read_io(tags, where)
  return TaggedCorpus(sentences, tags, where)


def read_tfds(name: str, split: str, tokens_field: str = 'tokens',
              tags_field: str = 'ner_tags', data_dir: str | None = None,
              scheme: str = '') -> TaggedCorpus:
  """The sentences of a prepared TFDS split shaped like TFDS's `conll2003`: a sequence of
  token strings and a sequence of tags (`ClassLabel` ids, read as their names, or strings),
  read in batches through `tfds.data_source` (no TensorFlow). Tags as in `read_conll`."""
  check_input_scheme(scheme)
  valid = tag_check(scheme)
  names = tfds_source.feature_names(name, tags_field, data_dir)
  tfds_source.feature_names(name, tokens_field, data_dir)   # a missing feature: one error
  sentences, tags = [], []
  where = f'TFDS {name!r} split {split!r}'
  for i, rec in tfds_source.records(name, split, data_dir):
    words = [tfds_source.text(w) for w in rec[tokens_field]]
    labels = [names[int(t)] if names is not None else tfds_source.text(t)
              for t in rec[tags_field]]
    if len(words) != len(labels):
      raise DataError(f'{where} record {i}: {len(words)} tokens but {len(labels)} tags')
    for tag in labels:
      if not valid(tag):
        raise DataError(f'{where} record {i}: tag {tag!r} {tag_rule(scheme)}')
    if words:
      sentences.append(words)
      tags.append(labels)
  if not sentences:
    raise DataError(f'{where}: no sentences')
  if scheme == 'io':
    tags = read_io(tags, where)
  return TaggedCorpus(sentences, tags, f'tfds:{name}/{split}')


def _read_conll_file(file: str, encoding: str, fallback: str, token_column: int,
                     tag_column: int, sentences: list, tags: list, scheme: str = '') -> None:
  valid = tag_check(scheme)
  need = max(c + 1 if c >= 0 else -c for c in (token_column, tag_column))
  words, labels = [], []
  for n, line in enumerate(readers.read_text(file, encoding, fallback).split('\n'), 1):
    parts = _columns(line)
    if not parts:
      if words:
        sentences.append(words)
        tags.append(labels)
        words, labels = [], []
      continue
    if parts[0] == '-DOCSTART-':         # a document boundary ends a sentence too
      if words:
        sentences.append(words)
        tags.append(labels)
        words, labels = [], []
      continue
    complete = len(parts) >= max(2, need) and bool(parts[token_column])
    if not words and line.startswith('#') and (
        not (complete and valid(parts[tag_column])) or _METADATA.match(line)):
      continue                            # a comment above a sentence (CoNLL-U, GermEval)
    if not complete:
      what = ('"token ... TAG"' if (token_column, tag_column) == (0, -1) else
              f'the token in column {token_column} and the tag in column {tag_column}')
      raise DataError(f'{file}:{n}: expected {what}, got {line!r}')
    tag = parts[tag_column]
    if not valid(tag):
      raise DataError(f'{file}:{n}: tag {tag!r} {tag_rule(scheme)}')
    words.append(parts[token_column])
    labels.append(tag)
  if words:
    sentences.append(words)
    tags.append(labels)


@dataclasses.dataclass
class TokenLines:
  """The sentences of a CoNLL-layout file read for prediction (tags optional), with every
  line kept so that predictions can be written back beside the input's own columns:
  `lines[k]` is `(text, (sentence, word))` for a token line, `(text, None)` otherwise."""
  sentences: list      # list[list[str]]
  lines: list          # list[tuple[str, tuple[int, int] | None]]
  path: str


def read_token_lines(path: str, encoding: str = 'utf-8', token_column: int = 0,
                     scheme: str = '', known=None) -> TokenLines:
  """A CoNLL-layout file's tokens (column `token_column`; any other columns, a gold tag
  among them, are kept but not read). Sentences end at blank lines and `-DOCSTART-`
  lines; a line starting with '#' above a sentence is a comment when it is CoNLL-U
  metadata, several columns whose last is not a tag, or fewer columns than the file's
  other lines have (JNLPBA's `###MEDLINE:...`, which `read_conll` skips too); in a file
  of tokens alone a lone `#` token is a token. `scheme` 'io': a last column is a tag when it
  is `O` or one of the `known` IO tags (any, if None)."""
  valid = tag_check(scheme, known)
  text = readers.read_text(path, encoding)
  raw = text.split('\n')
  if raw and raw[-1] == '':
    raw = raw[:-1]
  widths = collections.Counter(len(_columns(x)) for x in raw
                               if _columns(x) and not x.startswith('#'))
  width = widths.most_common(1)[0][0] if widths else 1
  sentences, lines, words = [], [], []
  for n, line in enumerate(raw, 1):
    line = line.rstrip('\r')
    parts = _columns(line)
    if not parts or parts[0] == '-DOCSTART-':
      if words:
        sentences.append(words)
        words = []
      lines.append((line, None))
      continue
    if not words and line.startswith('#') and (
        _METADATA.match(line) or (len(parts) >= 2 and not valid(parts[-1]))
        or len(parts) < width):
      lines.append((line, None))
      continue
    if not (-len(parts) <= token_column < len(parts)) or not parts[token_column]:
      raise DataError(f'{path}:{n}: no token in column {token_column}: {line!r}')
    lines.append((line, (len(sentences), len(words))))
    words.append(parts[token_column])
  if words:
    sentences.append(words)
  if not sentences:
    raise DataError(f'{path}: no sentences')
  return TokenLines(sentences, lines, path)


def with_predictions(doc: TokenLines, tags: list) -> str:
  """`doc`'s lines with each token's predicted tag appended as a last column (by the
  line's own separator: a tab when it has one, else a space), `-DOCSTART-` lines with
  `O`, blank lines kept and comment lines left out (conlleval wants every line to have
  as many columns): the `token ... gold predicted` layout conlleval scores."""
  out = []
  for line, at in doc.lines:
    body = line.rstrip(' \t\r')
    sep = '\t' if '\t' in body else ' '
    if at is not None:
      out.append(f'{body}{sep}{tags[at[0]][at[1]]}')
    elif _columns(line) and _columns(line)[0] == '-DOCSTART-':
      out.append(f'{body}{sep}O')
    elif not _columns(line):
      out.append('')
  return '\n'.join(out) + '\n'


def looks_like_conll(path: str, encoding: str = 'utf-8', lines: int = 400,
                     tag_column: int = -1, scheme: str = '', known=None) -> bool:
  """Whether the start of `path` reads as CoNLL (a token and a tag a line, blank lines
  between sentences) rather than one sentence a line: nine in ten or more of its first
  non-blank, non-comment lines (all of them when there are under ten) have two or more
  columns with a tag in column `tag_column` (the last by default; the column training
  read), and a sentence break occurs. A stray untagged line does not make a CoNLL file
  plain text (prediction reads a line's token, tagged or not). The start is decoded
  as `readers.read_text` decodes the whole file (a UTF-16 byte-order mark selects UTF-16,
  CR-only line ends end lines); an unknown encoding is a `DataError`. `scheme` 'io': a tag
  is `O` or one of the `known` IO tags (any non-empty column if None), and some line is
  tagged `O` (a table of sentences or plain text has words there)."""
  valid = tag_check(scheme, known)
  text = readers.decode_bytes(readers.head_bytes(path, 1 << 16), path, encoding,
                              errors='replace')
  head = text.split('\n')
  head = head[:lines] if len(head) > lines else head[:-1] or head
  rows = [_columns(x) for x in head if not x.startswith('#')]
  filled = [r for r in rows if r and r[0] != '-DOCSTART-']
  breaks = any(not r or r[0] == '-DOCSTART-' for r in rows)
  need = max(2, tag_column + 1 if tag_column >= 0 else -tag_column)
  tagged = [r for r in filled if len(r) >= need and valid(r[tag_column])]
  return (len(filled) >= 2 and (breaks or len(filled) >= 5)
          and len(tagged) >= (len(filled) if len(filled) < 10 else 0.9 * len(filled))
          and (scheme != 'io' or any(r[tag_column] == 'O' for r in tagged)))


def _columns(line: str) -> list[str]:
  """A line's columns: tab-separated when it has a tab (a token may then hold spaces, as
  'New York' or '10 000'), else separated by runs of ASCII spaces. Only those separate:
  a no-break or ideographic space is part of a token. [] for a blank line."""
  if not line.strip():
    return []
  line = line.rstrip(' \t')
  if '\t' in line:
    return [c.strip(' ') for c in line.split('\t')]
  return [c for c in line.split(' ') if c]


_ASCII_SPACES = re.compile(r'[ \t\n\r\f\v]+')


def split_words(text: str) -> list[str]:
  """A sentence's words for a tagger: split at ASCII whitespace only, as `_columns` splits
  CoNLL lines, so a no-break or ideographic space stays inside a word ('Nueva\u00a0York',
  '10\u202f000') as it does in the training files (`str.split` would cut it there)."""
  return [w for w in _ASCII_SPACES.split(text) if w]


# CoNLL-U's sentence metadata: '# sent_id = 1', '# text = ...'
_METADATA = re.compile(r'#\s*[\w.:-]+\s*=(\s|$)')


_PREFIXES = ('B-', 'I-', 'E-', 'S-', 'L-', 'U-')
_TAG_RULE = 'is not O, B-X or I-X (IOB), or E-X or S-X (IOBES), or L-X or U-X (BILOU)'
_BILOU = {'L': 'E', 'U': 'S'}       # BILOU's last and unit tags: IOBES's end and single


def is_tag(tag: str) -> bool:
  """O, or B-/I-/E-/S-/L-/U- and a non-empty type, or a bare B, I, E, S, L or U (one
  entity type, as biomedical sets such as NCBI-disease write it; seqeval names its type
  '_')."""
  return (tag == 'O' or tag in ('B', 'I', 'E', 'S', 'L', 'U')
          or (len(tag) > 2 and tag[:2] in _PREFIXES))


INPUT_SCHEMES = ('', 'io')     # how files write their tags: prefixed (any of SCHEMES), or IO


def check_input_scheme(scheme: str) -> None:
  if scheme not in INPUT_SCHEMES:
    raise ValueError(f"tag scheme must be '' (prefixed tags: IOB, IOBES, BILOU) or 'io' "
                     f"(entity types alone), got {scheme!r}")


def tag_check(scheme: str = '', known=None):
  """The test a file's tag must pass: `is_tag`; with `scheme='io'` any non-empty tag, or,
  given the `known` IO tags (a saved tagger's), one of those or `O`."""
  if scheme != 'io':
    return is_tag
  return bool if known is None else (lambda t: t == 'O' or t in known)


def tag_rule(scheme: str = '') -> str:
  return 'is empty (IO tags: an entity type, or O)' if scheme == 'io' else _TAG_RULE


def read_io(tag_lists, where: str) -> list:
  """The IOB2 tags (`from_io`) of the IO tag lists read from `where`, with a warning when
  every tag looks prefixed (`is_tag`: B-PER, I-PER, ...): IO reads each whole tag as an
  entity type, so 'B-PER I-PER' would be two entities of types 'B-PER' and 'I-PER' and the
  scores would be of those."""
  seen = sorted({t for tags in tag_lists for t in tags if t != 'O'})
  if seen and all(is_tag(t) for t in seen):
    shown = ', '.join(seen[:4]) + (', ...' if len(seen) > 4 else '')
    warnings.warn(f"{where}: every tag is prefixed ({shown}), but it is read as IO "
                  "(data.tag_scheme='io'), where each whole tag is an entity type: 'B-PER "
                  "I-PER' would be two entities, of types 'B-PER' and 'I-PER'. Leave "
                  "data.tag_scheme empty for IOB, IOBES or BILOU files", stacklevel=3)
  return [from_io(t) for t in tag_lists]


def from_io(tags) -> list:
  """IO tags (an entity type, or `O`, a word) as the IOB2 tags of the same entities: a run
  of words with one type is one entity (IO cannot separate two adjacent entities of a type;
  Few-NERD's own scoring reads its files the same way)."""
  out, prev = [], 'O'
  for t in tags:
    out.append('O' if t == 'O' else ('I-' if t == prev else 'B-') + t)
    prev = t
  return out


def entity_spans(tags) -> set:
  """{(type, start, end_exclusive)} of the chunks in one tag sequence, chunked as
  seqeval's default mode (conlleval's rules, extended to IOBES; BILOU read as IOBES)
  chunks it."""
  spans, begin = set(), 0
  prev, prev_type = 'O', ''
  for i, label in enumerate(list(tags) + ['O']):
    tag, kind = ('O', '') if label == 'O' else (_BILOU.get(label[0], label[0]),
                                                label[2:] or '_')
    if (prev in ('E', 'S') or (prev in ('B', 'I') and tag in ('B', 'S', 'O'))
        or (prev != 'O' and prev_type != kind)):
      spans.add((prev_type, begin, i))
    if (tag in ('B', 'S') or (prev in ('E', 'S', 'O') and tag in ('E', 'I'))
        or (tag != 'O' and prev_type != kind)):
      begin = i
    prev, prev_type = tag, kind
  return spans


SCHEMES = ('iob2', 'iobes', 'bilou', 'io')
_LETTERS = {'iob2': ('B', 'I', 'I', 'B'), 'iobes': ('B', 'I', 'E', 'S'),   # begin, inside,
            'bilou': ('B', 'I', 'L', 'U')}                                # last, single


def tag_scheme(tag_lists) -> str:
  """'bilou' when a tag has an L-/U- prefix, 'iobes' when one has E-/S-, else 'iob2' (IOB1
  files are read as the spans IOB2 writes)."""
  prefixes = {t.split('-', 1)[0] for tags in tag_lists for t in tags if t != 'O'}
  return 'bilou' if prefixes & {'L', 'U'} else 'iobes' if prefixes & {'E', 'S'} else 'iob2'


def convert_tags(tags, scheme: str) -> list:
  """`tags` rewritten in `scheme` ('iob2', 'iobes', 'bilou', 'io') with the same
  `entity_spans`: a tag sequence well- or ill-formed in any scheme becomes the well-formed
  sequence of its chunks (one entity type written with bare prefixes stays bare). 'io'
  writes each word of an entity as its type (adjacent entities of one type merge)."""
  if scheme == 'io':
    out = ['O'] * len(tags)
    for kind, lo, hi in entity_spans(tags):
      out[lo:hi] = [kind] * (hi - lo)
    return out
  begin, inside, last, single = _LETTERS[scheme]
  out = ['O'] * len(tags)
  for kind, lo, hi in entity_spans(tags):
    suffix = '' if kind == '_' else '-' + kind
    if hi - lo == 1:
      out[lo] = single + suffix
      continue
    out[lo], out[hi - 1] = begin + suffix, last + suffix
    for i in range(lo + 1, hi - 1):
      out[i] = inside + suffix
  return out


def _prf(tp: int, n_gold: int, n_pred: int) -> dict:
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_gold if n_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'precision': precision, 'recall': recall, 'f1': f1, 'gold': n_gold, 'pred': n_pred}


def span_scores(gold: list, pred: list) -> dict:
  """{'micro': span_f1's scores, 'types': {entity type: the same over its spans}}."""
  if len(gold) != len(pred):
    raise ValueError(f'{len(gold)} gold but {len(pred)} predicted sequences')
  counts: dict[str, list[int]] = {}       # type -> [tp, gold, pred]
  for g, p in zip(gold, pred):
    if len(g) != len(p):
      raise ValueError(f'gold and predicted sequences differ in length: {len(g)} vs {len(p)}')
    gs, ps = entity_spans(g), entity_spans(p)
    for spans, k in ((gs & ps, 0), (gs, 1), (ps, 2)):
      for span in spans:
        counts.setdefault(span[0], [0, 0, 0])[k] += 1
  total = [sum(c[k] for c in counts.values()) for k in range(3)]
  return {'micro': _prf(*total), 'types': {t: _prf(*c) for t, c in sorted(counts.items())}}


def span_f1(gold: list, pred: list) -> dict:
  """Micro precision/recall/F1 over entity spans (conlleval convention)."""
  return span_scores(gold, pred)['micro']
