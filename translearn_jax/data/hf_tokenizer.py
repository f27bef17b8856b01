"""Hugging Face `tokenizer.json` tokenizers (byte-level BPE, WordPiece, Unigram) behind the
interface of this project's sentencepiece `Tokenizer`.

An imported checkpoint (GPT-2, BERT, RoBERTa, ...) keeps its own tokenizer: the
`tokenizers` library runs `tokenizer.json` exactly as `transformers`' fast
tokenizers do, and the special tokens come from the `tokenizer_config.json` /
`special_tokens_map.json` beside it, else from the post-processor's template,
else from the usual names. Roles map onto this project's ids:

* `bos_id`: the row opener — `[CLS]`/`<s>` (`cls_token`), else `bos_token`;
* `eos_id`: the document/row end — `[SEP]`/`</s>` (`sep_token`), else `eos_token`;
* `pad_id`: `pad_token`, else `eos_id` (GPT-2 has no padding token; padded
  positions are always masked here, so any id serves);
* `unk_id`: `unk_token`, else `eos_id` (byte-level BPE never needs one);
* `mask_id`: `mask_token` (an error naming the file when there is none).

A checkpoint without `tokenizer.json` is read from its older vocabulary files
(`from_vocab_files`: BERT's `vocab.txt`, byte-level `vocab.json` + `merges.txt`) as
`transformers`' tokenizer classes build them; options that `tokenizer_config.json`
states (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`, `add_prefix_space`)
apply to a `tokenizer.json` too (`apply_options`).

`encode*` never add special tokens: callers frame rows themselves (`<bos> text
<eos>` for encoders, `<eos> text` for causal LMs), as they do with sentencepiece.
`encode_words` encodes words as they appear inside running text (byte-level BPE:
with the leading space, RoBERTa's `add_prefix_space` convention).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Optional, Sequence

import numpy as np

from translearn_jax.data import readers
from translearn_jax.data.masking import UNSPACED_LEAD_BYTE, starts_unspaced
from translearn_jax.errors import ConfigError, DataError

ROLES = ('bos', 'eos', 'unk', 'pad', 'cls', 'sep', 'mask')
CONFIG_FILES = ('tokenizer_config.json', 'special_tokens_map.json')
_USUAL = {'pad': ('[PAD]', '<pad>'), 'unk': ('[UNK]', '<unk>'), 'cls': ('[CLS]', '<s>'),
          'sep': ('[SEP]', '</s>'), 'mask': ('[MASK]', '<mask>'),
          'bos': ('<s>', '<|endoftext|>'), 'eos': ('</s>', '<|endoftext|>')}


# language-code tokens of multilingual checkpoints: mBART's `en_XX`, NLLB's `eng_Latn`,
# M2M100's `__en__`
LANGUAGE_CODE = re.compile(r'^(?:__)?[a-z]{2,3}(?:_[A-Za-z]{2,4})?(?:__)?$')


def setting_name(field: str) -> str:
  """How an error names a setting: a config field (`config.tokenizer.source_lang`) or a
  command-line flag given as such (`--source_lang`)."""
  return field if field.startswith('-') else f'config.{field}'


def _content(v) -> Optional[str]:
  if isinstance(v, dict):
    v = v.get('content')
  return v if isinstance(v, str) and v else None


def _template_specials(post: Optional[dict]) -> dict[str, str]:
  """cls/sep from a post-processor (BertProcessing, RobertaProcessing, TemplateProcessing)."""
  if not post:
    return {}
  kind = post.get('type')
  if kind in ('BertProcessing', 'RobertaProcessing'):
    return {'cls': post['cls'][0], 'sep': post['sep'][0]}
  if kind == 'TemplateProcessing':
    single = [p for p in post.get('single', [])]
    toks = [p['SpecialToken']['id'] for p in single if 'SpecialToken' in p]
    seq_at = next((i for i, p in enumerate(single) if 'Sequence' in p), None)
    out = {}
    if seq_at is not None:     # a language code (mBART's `text </s> en_XX`) is neither
      before = [p['SpecialToken']['id'] for p in single[:seq_at] if 'SpecialToken' in p
                and not LANGUAGE_CODE.match(p['SpecialToken']['id'])]
      after = [p['SpecialToken']['id'] for p in single[seq_at + 1:] if 'SpecialToken' in p
               and not LANGUAGE_CODE.match(p['SpecialToken']['id'])]
      if before:
        out['cls'] = before[0]
      if after:
        out['sep'] = after[-1]
    return out if toks else {}
  if kind == 'Sequence':
    out = {}
    for p in post.get('processors', []):
      out.update(_template_specials(p))
    return out
  return {}



def _byte_unicode_table() -> dict[str, int]:
  """GPT-2's byte-level alphabet, character -> byte (the inverse of its `bytes_to_unicode`:
  printable Latin-1 bytes stand for themselves, the others for chr(256 + k))."""
  keep = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('\xa1'), ord('\xac') + 1))
          + list(range(ord('\xae'), ord('\xff') + 1)))
  out, k = {}, 0
  for b in range(256):
    if b in keep:
      out[chr(b)] = b
    else:
      out[chr(256 + k)] = b
      k += 1
  return out


_BYTE_OF = _byte_unicode_table()


def _byte_piece_raw(piece: str) -> bytes:
  """The bytes a byte-level piece stands for (b'' when it is not of that alphabet)."""
  raw = bytes(_BYTE_OF[c] for c in piece if c in _BYTE_OF)
  return raw if len(raw) == len(piece) else b''


def _byte_piece_text(piece: str) -> str:
  """The text a byte-level piece stands for, '' when it does not begin on a character
  boundary (a UTF-8 continuation byte first) or is not of that alphabet."""
  raw = _byte_piece_raw(piece)
  if not raw or 0x80 <= raw[0] < 0xC0:
    return ''
  return raw.decode('utf-8', errors='ignore')


def _leads_unspaced_character(piece: str) -> bool:
  """Whether a byte-level piece begins (after a space byte, if any) with the lead byte of a
  character in U+3000-U+9FFF (kana, CJK symbols and ideographs), as sentencepiece's
  byte-fallback rule (`masking.UNSPACED_LEAD_BYTE`): a character split over several byte
  pieces is still a word of its own."""
  raw = _byte_piece_raw(piece).lstrip(b' ')
  return bool(raw) and 0xE3 <= raw[0] <= 0xE9

class HFTokenizer:
  """A `tokenizers.Tokenizer` loaded from `tokenizer.json`, with its special-token roles."""

  file_name = 'tokenizer.json'

  def __init__(self, tokenizer_json: str, specials: dict[str, str], path: str = '<memory>'):
    import tokenizers
    self.path = path
    self.json = tokenizer_json
    try:
      self.tk = tokenizers.Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # the Rust side raises a bare Exception
      raise DataError(f'{path}: not a Hugging Face tokenizer.json ({e})') from None
    # a file may carry padding/truncation settings (sentence-embedding models ship
    # max_length 128): transformers applies them only when asked, callers here never want them
    self.tk.no_padding()
    self.tk.no_truncation()
    self.spec = json.loads(tokenizer_json)
    self.specials = {}
    for role, piece in specials.items():
      i = self.tk.token_to_id(piece)
      if i is None:
        raise DataError(f'{path}: special token {role}_token={piece!r} is not in the vocabulary')
      self.specials[role] = piece
    self._ids = {r: self.tk.token_to_id(p) for r, p in self.specials.items()}

  # -- ids ------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.tk.get_vocab_size(with_added_tokens=True)

  def _role(self, *roles) -> Optional[int]:
    return next((self._ids[r] for r in roles if r in self._ids), None)

  @property
  def bos_id(self) -> int:
    i = self._role('cls', 'bos', 'eos')
    if i is None:
      raise DataError(f'{self.path}: the tokenizer names no cls/bos/eos token')
    return i

  @property
  def eos_id(self) -> int:
    i = self._role('sep', 'eos', 'bos')
    if i is None:
      raise DataError(f'{self.path}: the tokenizer names no sep/eos/bos token')
    return i

  @property
  def pad_id(self) -> int:
    i = self._role('pad')
    return self.eos_id if i is None else i

  @property
  def unk_id(self) -> int:
    i = self._role('unk')
    return self.eos_id if i is None else i

  @property
  def mask_id(self) -> int:
    i = self._role('mask')
    if i is None:
      raise DataError(f'{self.path}: the tokenizer has no mask token (mask_token)')
    return i

  bare_space_id = -1              # no lone word-boundary piece

  def special_ids(self) -> list[int]:
    """Ids of special added tokens and of every role token: never text."""
    ids = {i for i, t in self.tk.get_added_tokens_decoder().items() if t.special}
    ids.update(self._ids.values())
    return sorted(ids)

  def piece_id(self, piece: str) -> int:
    """The id of `piece`, -1 if the vocabulary lacks it."""
    i = self.tk.token_to_id(piece)
    return -1 if i is None else i

  def id_to_piece(self, i: int) -> str:
    return self.tk.id_to_token(int(i))

  def _byte_level(self) -> bool:
    def has(node):
      if not node:
        return False
      if node.get('type') == 'ByteLevel':
        return True
      return any(has(p) for p in node.get('pretokenizers', []) or [])
    return has(self.spec.get('pre_tokenizer'))

  def word_start_flags(self) -> np.ndarray:
    """(V,) True for pieces that begin a word (whole-word masking) and for special pieces."""
    model = self.spec.get('model', {})
    pieces = [self.id_to_piece(i) or '' for i in range(self.vocab_size)]
    if model.get('type') == 'WordPiece':
      prefix = model.get('continuing_subword_prefix') or '##'
      flags = np.array([not p.startswith(prefix) for p in pieces], bool)
    elif self._byte_level():
      flags = np.array([p.startswith('\u0120') for p in pieces], bool)   # 'Ġ': a space byte
      text = [_byte_piece_text(p) for p in pieces]
      flags |= np.array([starts_unspaced(t) for t in text], bool)
      flags |= np.array([_leads_unspaced_character(p) for p in pieces], bool)
    else:   # Metaspace '▁'; byte-fallback pieces as sentencepiece's (masking.word_start_table)
      flags = np.array([p.startswith('\u2581') or UNSPACED_LEAD_BYTE.fullmatch(p) is not None
                        for p in pieces], bool)
    # a character of a script written without spaces starts a word of its own
    flags |= np.array([starts_unspaced(p) for p in pieces], bool)
    flags[self.special_ids()] = True
    return flags

  # -- text -----------------------------------------------------------------------

  def encode(self, text: str) -> list[int]:
    return self.tk.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
    return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

  def encode_batch_framed(self, texts: Sequence[str], lang: str = '',
                          field: str = 'tokenizer.source_lang') -> list[list[int]]:
    """Ids of each text framed as the checkpoint's model reads a sequence: by the
    tokenizer's post-processor (BART: `<s> text </s>`, mBART: `text </s> en_XX`), or,
    without one (Marian's), followed by `eos_id`. `lang`: a language-code token put in
    the frame's language slot (`lang_slot`; mBART's `en_XX` → `ro_RO`, as transformers'
    `src_lang`/`tgt_lang` do); `field` names the setting in errors."""
    if lang:
      prefix, suffix = self.frame()
      where, i = self.lang_slot(field)
      lid = self.tk.token_to_id(lang)
      if lid is None:
        raise ConfigError(f'{setting_name(field)}={lang!r} is not a token of {self.path} (its '
                          f'language codes: {", ".join(self.language_codes()[:12]) or "none"})')
      (prefix if where == 'prefix' else suffix)[i] = lid
      return [prefix + ids + suffix for ids in self.encode_batch(texts)]
    if self.spec.get('post_processor'):
      return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=True)]
    eos = self.eos_id
    return [ids + [eos] for ids in self.encode_batch(texts)]

  def frame(self) -> tuple[list[int], list[int]]:
    """(ids before, ids after) a text framed as `encode_batch_framed` frames it (new lists
    each call; found once per tokenizer, which never changes)."""
    if not hasattr(self, '_frame'):
      if not self.spec.get('post_processor'):
        self._frame = ((), (self.eos_id,))
      else:
        probe = 'a b c 1 2 3 the of'
        bare = self.tk.encode(probe, add_special_tokens=False).ids
        full = self.tk.encode(probe, add_special_tokens=True).ids
        at = next((k for k in range(len(full) - len(bare) + 1)
                   if full[k:k + len(bare)] == bare), None)
        if not bare or at is None:
          raise DataError(f'{self.path}: cannot tell where its post-processor puts the text')
        self._frame = (tuple(full[:at]), tuple(full[at + len(bare):]))
    return list(self._frame[0]), list(self._frame[1])

  def lang_slot(self, field: str = 'tokenizer.source_lang') -> tuple[str, int]:
    """('prefix' | 'suffix', index) of the one frame token that is not a special role
    (bos/eos/cls/sep/pad/unk/mask): mBART's language code (`text </s> en_XX`; mBART-50:
    `en_XX text </s>`). A frame without exactly one such token is an error naming `field`."""
    prefix, suffix = self.frame()
    roles = set(self._ids.values())
    slots = ([('prefix', i) for i, t in enumerate(prefix) if t not in roles]
             + [('suffix', i) for i, t in enumerate(suffix) if t not in roles])
    if len(slots) != 1:
      shown = self.tk.decode(prefix, skip_special_tokens=False) + ' TEXT ' + \
          self.tk.decode(suffix, skip_special_tokens=False)
      raise ConfigError(f'{setting_name(field)}: {self.path} frames a text as {shown.strip()!r}, with '
                        f'{len(slots)} language-code slots (a language code needs exactly one, '
                        "as mBART's `TEXT </s> en_XX`)")
    return slots[0]

  def language_codes(self) -> list[str]:
    """Added special tokens shaped like language codes (mBART's `en_XX`, NLLB's `eng_Latn`)."""
    return [t.content for t in self.tk.get_added_tokens_decoder().values()
            if t.special and LANGUAGE_CODE.match(t.content)]

  def encode_words(self, words: Sequence[str]) -> list[list[int]]:
    """The pieces of each word as inside running text (byte-level BPE: after a space)."""
    if self._byte_level():
      return self.encode_batch([' ' + w for w in words])
    return self.encode_batch(words)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids` up to the first `eos_id` (a leading one is a row opener, skipped)."""
    ids = [int(i) for i in ids]
    eos = self.eos_id
    if ids and ids[0] == eos:
      ids = ids[1:]
    if eos in ids:
      ids = ids[:ids.index(eos)]
    return self.tk.decode(ids, skip_special_tokens=True)

  # -- files ----------------------------------------------------------------------

  def save(self, path: str) -> None:
    """Writes `tokenizer.json` at `path` and the special-token roles beside it
    (`tokenizer_config.json`), each to a temporary name first."""
    readers.write_file(path, self.json.encode('utf-8'))
    roles = {f'{r}_token': p for r, p in self.specials.items()}
    readers.write_file(os.path.join(os.path.dirname(path) or '.', 'tokenizer_config.json'),
               json.dumps(roles, indent=1).encode('utf-8'))

  @classmethod
  def load(cls, path: str) -> 'HFTokenizer':
    """`path`: a `tokenizer.json` file, or a directory holding one."""
    if os.path.isdir(path):
      path = os.path.join(path, cls.file_name)
    if not os.path.isfile(path):
      raise DataError(f'tokenizer file not found: {path}')
    with open(path, encoding='utf-8') as f:
      text = f.read()
    try:
      spec = json.loads(text)
    except ValueError as e:
      raise DataError(f'{path}: not JSON ({e})') from None
    directory = os.path.dirname(path)
    if apply_options(spec, tokenizer_options(directory)):
      text = json.dumps(spec, ensure_ascii=False)
    return cls(text, special_tokens(directory, spec), path)


def tokenizer_options(directory: str) -> dict:
  """`tokenizer_config.json` in `directory` as a dict ({} when absent)."""
  return readers.json_object(os.path.join(directory, CONFIG_FILES[0]))


def _option(conf: dict, key: str, kind: type, default=None):
  v = conf.get(key, default)
  if v is not None and not isinstance(v, kind):
    raise DataError(f'{CONFIG_FILES[0]}: {key} must be {kind.__name__}, got {v!r}')
  return v


def apply_options(spec: dict, conf: dict) -> bool:
  """Applies the options `tokenizer_config.json` states explicitly to a `tokenizer.json` spec,
  as `transformers` does when it loads the pair: `do_lower_case`, `strip_accents` and
  `tokenize_chinese_chars` set a `BertNormalizer`, `add_prefix_space` a `ByteLevel`
  pre-tokenizer (and RoBERTa's post-processor). Returns whether anything changed."""
  changed = False

  def nodes(node, kinds):
    if isinstance(node, dict):
      if node.get('type') in kinds:
        yield node
      for key in ('normalizers', 'pretokenizers', 'processors'):
        for child in node.get(key) or []:
          yield from nodes(child, kinds)

  def put(node, key, value):
    nonlocal changed
    if value is not None and node.get(key) != value:
      node[key] = value
      changed = True

  for norm in nodes(spec.get('normalizer'), ('BertNormalizer',)):
    put(norm, 'lowercase', _option(conf, 'do_lower_case', bool))
    if 'strip_accents' in conf:             # null too: accents follow lowercasing
      v = _option(conf, 'strip_accents', bool)
      if norm.get('strip_accents') != v:
        norm['strip_accents'] = v
        changed = True
    put(norm, 'handle_chinese_chars', _option(conf, 'tokenize_chinese_chars', bool))
  prefix = _option(conf, 'add_prefix_space', bool)
  for node in nodes(spec.get('pre_tokenizer'), ('ByteLevel',)):
    put(node, 'add_prefix_space', prefix)
  for node in nodes(spec.get('post_processor'), ('RobertaProcessing',)):
    put(node, 'add_prefix_space', prefix)
  return changed


# The roles' tokens of each family's tokenizer class in transformers, when the config omits them
_SLOW_DEFAULTS = {
    'wordpiece': {'unk': '[UNK]', 'sep': '[SEP]', 'pad': '[PAD]', 'cls': '[CLS]',
                  'mask': '[MASK]'},
    'gpt2': {'unk': '<|endoftext|>', 'bos': '<|endoftext|>', 'eos': '<|endoftext|>'},
    'roberta': {'bos': '<s>', 'eos': '</s>', 'sep': '</s>', 'cls': '<s>', 'unk': '<unk>',
                'pad': '<pad>', 'mask': '<mask>'},
}
_SLOW_KIND = {'bert': 'wordpiece', 'gpt2': 'gpt2', 'gpt_neox': 'gpt2', 'roberta': 'roberta',
              'bart': 'roberta'}
SLOW_FILES = ('vocab.txt', 'vocab.json', 'merges.txt')


def from_vocab_files(directory: str, model_type: str) -> HFTokenizer:
  """The tokenizer of a checkpoint that ships the older vocabulary files instead of
  `tokenizer.json`, built as `transformers`' tokenizer classes build it: `vocab.txt` is
  BERT's WordPiece (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars` from
  `tokenizer_config.json`, lowercasing by default); `vocab.json` + `merges.txt` are
  byte-level BPE (GPT-2, GPT-NeoX with NFC, RoBERTa and BART with their framing;
  `add_prefix_space`). Tokens of `added_tokens.json` are added at their recorded ids."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
  from tokenizers import pre_tokenizers, processors
  kind = _SLOW_KIND.get(model_type)
  have = [n for n in SLOW_FILES if os.path.isfile(os.path.join(directory, n))]
  if kind is None:
    raise DataError(f'{directory}: no {HFTokenizer.file_name}, and {model_type!r} checkpoints '
                    'have no vocabulary-file reader here (BERT, GPT-2, GPT-NeoX, RoBERTa and '
                    'BART do); write tokenizer.json with transformers: '
                    'AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)')
  confs = {name: readers.json_object(os.path.join(directory, name)) for name in CONFIG_FILES}
  conf = confs[CONFIG_FILES[0]]             # tokenizer_config.json
  specials = dict(_SLOW_DEFAULTS[kind])
  if model_type == 'gpt_neox':              # GPTNeoXTokenizer's own padding token
    specials['pad'] = '<|padding|>'
  strips: dict[str, dict] = {}          # a token written as a dict: its lstrip/rstrip flags
  for name in reversed(CONFIG_FILES):      # tokenizer_config.json wins, as in special_tokens()
    file_conf = confs[name]
    for role in ROLES:
      entry = file_conf.get(f'{role}_token')
      if _content(entry):
        specials[role] = _content(entry)
        if isinstance(entry, dict):
          strips[specials[role]] = {k: bool(entry[k]) for k in ('lstrip', 'rstrip') if k in entry}
  need = ('vocab.txt',) if kind == 'wordpiece' else ('vocab.json', 'merges.txt')
  missing = [n for n in need if n not in have]
  if missing:
    raise DataError(f'{directory}: no {HFTokenizer.file_name} and no {" + ".join(missing)} '
                    f'(a {model_type} tokenizer needs {" + ".join(need)})')
  if kind == 'wordpiece':
    path = os.path.join(directory, 'vocab.txt')
    with open(path, encoding='utf-8') as f:        # one token a line, as transformers reads it
      lines = [line.rstrip('\n') for line in f.readlines()]
    vocab = {t: i for i, t in enumerate(lines)}      # a repeated token: its last line's id
    if len(vocab) < len(lines):
      first = next(i for i, t in enumerate(lines) if vocab[t] != i)
      warnings.warn(f'{path}:{first + 1}: {lines[first]!r} appears again at line '
                    f'{vocab[lines[first]] + 1}; as in transformers the later line\'s id is '
                    f'used and id {first} is never produced ({len(lines) - len(vocab)} '
                    'repeated lines)')
    if specials['unk'] not in vocab:
      raise DataError(f'{path}: the unknown token {specials["unk"]!r} is not in the vocabulary')
    tk = Tokenizer(models.WordPiece(vocab, unk_token=specials['unk']))
    strip = _option(conf, 'strip_accents', bool)
    tk.normalizer = normalizers.BertNormalizer(
        clean_text=True, strip_accents=strip,
        handle_chinese_chars=_option(conf, 'tokenize_chinese_chars', bool, True),
        lowercase=_option(conf, 'do_lower_case', bool, True))
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece(prefix='##')
  else:
    path = os.path.join(directory, 'vocab.json')
    try:
      vocab, merges = models.BPE.read_file(path, os.path.join(directory, 'merges.txt'))
    except Exception as e:      # the Rust side raises a bare Exception
      raise DataError(f'{directory}: vocab.json / merges.txt not readable as byte-level BPE '
                      f'({e})') from None
    prefix = _option(conf, 'add_prefix_space', bool, False)
    tk = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix='',
                              end_of_word_suffix='', fuse_unk=False))
    if model_type == 'gpt_neox':
      tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tk.decoder = decoders.ByteLevel()
  # tokens added after training: added_tokens.json {token: id}, tokenizer_config.json's
  # added_tokens_decoder {id: {content, special, lstrip, ...}}; added in id order. Tokens
  # the configs list as special (the decoder's `special`, `additional_special_tokens`)
  # are special even when the vocabulary has them: matched in raw text, with their flags.
  extra: dict[int, dict] = {}
  added_path = os.path.join(directory, 'added_tokens.json')
  for token, i in readers.json_object(added_path).items():
    extra[int(i)] = {'content': token}
  for i, entry in (conf.get('added_tokens_decoder') or {}).items():
    if isinstance(entry, dict) and _content(entry):
      extra[int(i)] = entry
  listed = set()
  for file_conf in confs.values():
    for key in ('additional_special_tokens', 'extra_special_tokens'):
      v = file_conf.get(key)
      items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else []
      listed |= {_content(x) for x in items if _content(x)}
  flags = ('single_word', 'lstrip', 'rstrip', 'normalized', 'special')
  special: dict[str, dict] = {}             # token -> AddedToken options
  for i, entry in sorted(extra.items()):
    token = entry['content']
    opts = {k: bool(entry[k]) for k in flags if k in entry}
    opts['special'] = opts.get('special', False) or token in listed
    opts.setdefault('normalized', not opts['special'])
    if tk.token_to_id(token) is None:
      tk.add_tokens([AddedToken(token, **opts)])
    elif opts['special']:
      special[token] = opts
    elif any(opts.get(k) for k in ('lstrip', 'rstrip', 'single_word')):
      tk.add_tokens([AddedToken(token, **opts)])          # keeps its id, gains its flags
    if tk.token_to_id(token) != i:
      raise DataError(f'{directory}: added token {token!r} is recorded at id {i} but lands at '
                      f'{tk.token_to_id(token)} after the vocabulary\'s {len(vocab)} tokens')
  used = {r: t for r, t in specials.items() if tk.token_to_id(t) is not None}
  # role tokens and listed ones are special, matched in raw text; a role token written as a
  # dict in a config keeps its lstrip/rstrip (RoBERTa's <mask> takes the space before it)
  for t in sorted(set(used.values()) | {t for t in listed if tk.token_to_id(t) is not None}):
    special.setdefault(t, {'special': True, 'normalized': False, **strips.get(t, {})})
  tk.add_special_tokens([AddedToken(t, **opts) for t, opts in sorted(special.items())])
  if kind == 'wordpiece' and {'cls', 'sep'} <= set(used):
    tk.post_processor = processors.TemplateProcessing(
        single=f'{used["cls"]}:0 $A:0 {used["sep"]}:0',
        pair=f'{used["cls"]}:0 $A:0 {used["sep"]}:0 $B:1 {used["sep"]}:1',
        special_tokens=[(used['cls'], tk.token_to_id(used['cls'])),
                        (used['sep'], tk.token_to_id(used['sep']))])
  elif kind == 'roberta' and {'cls', 'sep'} <= set(used):
    tk.post_processor = processors.RobertaProcessing(
        (used['sep'], tk.token_to_id(used['sep'])), (used['cls'], tk.token_to_id(used['cls'])),
        trim_offsets=True, add_prefix_space=_option(conf, 'add_prefix_space', bool, False))
  return HFTokenizer(tk.to_str(), used, os.path.join(directory, need[0]))


def from_sentencepiece(tok, encoder: bool = False) -> HFTokenizer:
  """The `tokenizer.json` equivalent of a sentencepiece `Tokenizer` (an exported run's, so
  that `transformers` loads it): the model's own pieces and scores (Unigram, or BPE with
  merges ranked by piece score), normalisation (its precompiled charsmap, whitespace
  rules, dummy prefix), byte fallback and user-defined pieces, following
  `transformers`' SpmConverter; `encoder` adds the `<bos> $A <eos>` framing of
  masked-LM rows as the post-processor."""
  import re
  from sentencepiece import sentencepiece_model_pb2
  from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                          pre_tokenizers, processors)
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(tok.proto)
  spec, trainer = proto.normalizer_spec, proto.trainer_spec
  pieces = [(p.piece, p.score) for p in proto.pieces]
  user_defined = [p.piece for p in proto.pieces if p.type == 4]
  if trainer.model_type == 1:          # unigram
    tk = Tokenizer(models.Unigram(pieces, unk_id=trainer.unk_id,
                                  byte_fallback=trainer.byte_fallback))
  elif trainer.model_type == 2:        # bpe
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == 1}
    ranked = sorted((-normal[t][0], normal[t][1], t[:k], t[k:]) for t in normal
                    for k in range(1, len(t)) if t[:k] in normal and t[k:] in normal)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _, _, a, b in ranked],
                              unk_token=trainer.unk_piece, fuse_unk=True,
                              byte_fallback=trainer.byte_fallback,
                              ignore_merges=bool(user_defined)))
  else:
    raise DataError(f'{tok.path}: sentencepiece model type {trainer.model_type} has no '
                    'tokenizer.json equivalent here (unigram and bpe do)')
  norm = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap \
      else []
  if spec.remove_extra_whitespaces:
    norm += [normalizers.Replace(Regex(r'\A +| +\z'), ''),
             normalizers.Replace(Regex(' {2,}'), ' ')]
  if spec.escape_whitespaces:
    norm.append(normalizers.Replace(' ', '\u2581'))
  if spec.add_dummy_prefix:   # text that starts with '▁' keeps its own and gets the prefix
    norm.append(normalizers.Replace(Regex('\\A\u2581'), '\u2581\u2581'))
  tk.normalizer = normalizers.Sequence(norm)
  pre = []
  if spec.add_dummy_prefix:
    pre.append(pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always',
                                        split=False))
  if user_defined:
    pattern = '|'.join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
    pre.append(pre_tokenizers.Split(Regex(pattern), behavior='isolated'))
  if pre:
    tk.pre_tokenizer = pre_tokenizers.Sequence(pre)
  dec = [decoders.Replace('\u2581', ' ')]
  if trainer.byte_fallback:
    dec.append(decoders.ByteFallback())
  if spec.add_dummy_prefix:
    dec += [decoders.Fuse(), decoders.Strip(content=' ', left=1)]
  elif trainer.byte_fallback:
    dec.append(decoders.Fuse())
  tk.decoder = decoders.Sequence(dec)
  piece = tok.id_to_piece
  specials = {'pad': piece(tok.pad_id), 'unk': piece(tok.unk_id), 'bos': piece(tok.bos_id),
              'eos': piece(tok.eos_id)}
  try:
    specials['mask'] = piece(tok.mask_id)
  except DataError:
    pass
  # control pieces only: user-defined ones (<mask>) stay in the model, matched by the Split
  # above inside text as sentencepiece does
  tk.add_special_tokens([AddedToken(piece(i), special=True, normalized=False)
                         for i in tok.special_ids() if piece(i) not in user_defined])
  if encoder:
    specials.update(cls=specials['bos'], sep=specials['eos'])
    tk.post_processor = processors.TemplateProcessing(
        single=f'{specials["bos"]} $A {specials["eos"]}',
        pair=f'{specials["bos"]} $A {specials["eos"]} $B:1 {specials["eos"]}:1',
        special_tokens=[(specials['bos'], tok.bos_id), (specials['eos'], tok.eos_id)])
  return HFTokenizer(tk.to_str(), specials, tok.path)


def special_tokens(directory: str, spec: dict) -> dict[str, str]:
  """{role: token} from the tokenizer config files in `directory`, else the tokenizer's
  post-processor, else the usual names among its added tokens."""
  found: dict[str, str] = {}
  for name in CONFIG_FILES:
    conf = readers.json_object(os.path.join(directory, name))
    for role in ROLES:
      v = _content(conf.get(f'{role}_token'))
      if v and role not in found:
        found[role] = v
  for role, v in _template_specials(spec.get('post_processor')).items():
    found.setdefault(role, v)
  if not found:
    added = {t['content'] for t in spec.get('added_tokens', [])}
    for role, names in _USUAL.items():
      v = next((n for n in names if n in added), None)
      if v:
        found[role] = v
  return found
