"""sentencepiece tokenizers: train from any corpus the data layer reads, save, load.

Ids: 0 = <pad>, 1 = <unk>, 2 = <bos>, 3 = <eos>, then any `special_pieces`
asked for at training (a masked-LM run adds `<mask>` as id 4; its rows read
`<bos> … <eos>`, BERT's [CLS] … [SEP]). `special_ids()` counts `<mask>`,
`<cls>` and `<sep>` as special; sentencepiece matches a user-defined piece
inside text too, so a literal "<mask>" in a corpus encodes to the mask id. Training feeds the trainer
lines (documents are split at newlines, and at `max_sentence_length`), so
whole-file documents such as novels are not skipped by sentencepiece's
sentence-length limit. Encoding is batched (`encode_batch`, sentencepiece's
C++ batch encoder with threads), not a Python loop per line.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np

from translearn_jax.data import readers
from translearn_jax.errors import ConfigError, DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
MASK_PIECE = '<mask>'
SPECIAL_PIECES = (MASK_PIECE, '<cls>', '<sep>')   # user-defined pieces that are not text
SENTINEL_RE = re.compile(r'<extra_id_\d+>')      # T5 sentinels (span corruption), not text
_MAX_SENTENCE_BYTES = 4192


def _training_lines(documents: Iterable[str]) -> Iterator[str]:
  for doc in documents:
    for line in doc.split('\n'):
      line = line.strip()
      while line:
        if len(line.encode('utf-8')) <= _MAX_SENTENCE_BYTES:
          yield line
          break
        limit = _MAX_SENTENCE_BYTES // 4  # characters: at most 4 bytes each
        cut = line.rfind(' ', 0, limit)
        cut = cut if cut > 0 else limit
        yield line[:cut]
        line = line[cut:].strip()



# sentencepiece trainer threads (its own default): the pieces depend on the thread count,
# so it is fixed rather than the machine's (README, "Tokenizers")
TRAIN_THREADS = 16

class Tokenizer:
  """A loaded sentencepiece model.

  The tokenizer interface every family uses (`hf_tokenizer.HFTokenizer` has the
  same): `vocab_size`, `pad_id`/`unk_id`/`bos_id`/`eos_id`/`mask_id`,
  `special_ids()`, `id_to_piece`, `word_start_flags()`, `encode`,
  `encode_batch`, `encode_words`, `decode`, `save`, `file_name`.
  """

  file_name = 'tokenizer.model'

  def __init__(self, model_proto: bytes, path: str = '<memory>'):
    import sentencepiece as spm
    self.path = path
    self.proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  pad_id, unk_id, bos_id, eos_id = PAD, UNK, BOS, EOS

  @property
  def bare_space_id(self) -> int:
    """The id of the lone word-boundary piece '▁' (-1 if the model has none): words encoded
    on their own often start with it, before the piece that carries the word."""
    i = self.sp.piece_to_id('\u2581')
    return -1 if i == self.unk_id else i

  @property
  def mask_id(self) -> int:
    i = self.sp.piece_to_id(MASK_PIECE)
    if i == self.unk_id:
      raise DataError(f'{self.path}: the tokenizer has no {MASK_PIECE} piece (train it with '
                      f'special_pieces=({MASK_PIECE!r},), as a masked-LM run does)')
    return i

  def id_to_piece(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))

  def piece_id(self, piece: str) -> int:
    """The id of `piece`, -1 if the vocabulary lacks it."""
    i = self.sp.piece_to_id(piece)
    return -1 if i == self.unk_id and piece != self.sp.id_to_piece(self.unk_id) else i

  def word_start_flags(self) -> np.ndarray:
    """(V,) True for pieces that begin a word ('▁' prefix) and for special pieces."""
    from translearn_jax.data.masking import word_start_table
    return word_start_table([self.sp.id_to_piece(i) for i in range(self.vocab_size)],
                            self.special_ids())

  def special_ids(self) -> list[int]:
    """Ids of pieces that never stand for text: pad, unk, bos, eos, user-defined specials."""
    sp = self.sp
    return [i for i in range(self.vocab_size)
            if sp.is_control(i) or sp.is_unknown(i) or sp.id_to_piece(i) in SPECIAL_PIECES
            or SENTINEL_RE.fullmatch(sp.id_to_piece(i))]

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def encode_batch(self, texts: Sequence[str], num_threads: int = 0) -> list[list[int]]:
    return self.sp.encode(list(texts), num_threads=num_threads or os.cpu_count() or 1)

  def encode_words(self, words: Sequence[str]) -> list[list[int]]:
    """The pieces of each word (encoded on its own: piece boundaries follow word boundaries)."""
    return self.encode_batch(words)

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    return self.sp.decode([i for i in ids if i != PAD])

  def save(self, path: str) -> None:
    readers.write_file(path, self.proto)

  @classmethod
  def load(cls, path: str) -> 'Tokenizer':
    if not os.path.isfile(path):
      raise DataError(f'tokenizer model not found: {path}')
    with open(path, 'rb') as f:
      proto = f.read()
    try:
      return cls(proto, path)
    except Exception as e:
      raise DataError(f'{path}: not a sentencepiece model ({e})') from None

  @classmethod
  def train(cls, documents: Iterable[str], vocab_size: int, model_type: str = 'unigram',
            character_coverage: float = 0.9995, max_lines: int = 2_000_000,
            seed: int = 0, normalization: str = 'nmt_nfkc',
            special_pieces: Sequence[str] = (), threads: int = TRAIN_THREADS) -> 'Tokenizer':
    """Trains on `documents`; `vocab_size` is an upper bound on tiny corpora.

    Unseen characters fall back to UTF-8 byte pieces, so any text round-trips
    up to `normalization` ('nmt_nfkc' folds compatibility characters such as
    'ǅ' -> 'Dž'; 'identity' keeps every character as is). `threads`: sentencepiece's
    trainer threads, which decide the pieces (its sums are split by thread): a fixed
    number, not the machine's cores, so one config trains one tokenizer everywhere.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
      raise DataError(f'tokenizer.train_threads must be an integer >= 1, got {threads!r}')
    import sentencepiece as spm
    if model_type not in ('unigram', 'bpe'):
      raise DataError(f"tokenizer.model_type must be 'unigram' or 'bpe', got {model_type!r}")
    lines = list(_training_lines(documents))
    if not lines:
      raise DataError('cannot train a tokenizer on an empty corpus')
    if len(lines) > max_lines:  # deterministic subsample
      keep = np.random.default_rng(seed).choice(len(lines), max_lines, replace=False)
      lines = [lines[i] for i in np.sort(keep)]
    out = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
          model_type=model_type, character_coverage=character_coverage,
          pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
          num_threads=threads, minloglevel=2, byte_fallback=True,
          normalization_rule_name=normalization,
          max_sentence_length=_MAX_SENTENCE_BYTES * 4, hard_vocab_limit=False,
          **({'user_defined_symbols': list(special_pieces)} if special_pieces else {}))
    except RuntimeError as e:
      msg = ' '.join(str(e).split())
      need = re.search(r'smaller than required_chars\. \d+ vs (\d+)', msg)
      if need:    # its advice names a flag the configs do not have
        raise DataError(f'tokenizer.vocab_size={vocab_size} is below the {need.group(1)} '
                        'pieces this corpus needs at least (its characters, 256 byte pieces '
                        f'and the special pieces): set tokenizer.vocab_size >= {need.group(1)}'
                        ) from None
      raise DataError(f'sentencepiece training failed: {msg}') from None
    return cls(out.getvalue())


# sentencepiece's normalisation rules (its `normalization_rule_name`)
NORMALIZATIONS = ('nmt_nfkc', 'nfkc', 'nmt_nfkc_cf', 'nfkc_cf', 'identity')


def check_fields(tok) -> None:
  """A run's `config.tokenizer` when the run trains its tokenizer (no `path`): a vocabulary
  size >= 1 and one of sentencepiece's normalisation rules, refused by name before any text
  is read (sentencepiece's own errors name neither)."""
  if not tok or tok.get('path', ''):
    return
  size = tok.get('vocab_size', 1)
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ConfigError(f'config.tokenizer.vocab_size: must be an integer >= 1, got {size!r}')
  norm = tok.get('normalization', 'nmt_nfkc')
  if norm not in NORMALIZATIONS:
    raise ConfigError(f"config.tokenizer.normalization: must be one of sentencepiece's rules "
                      f'{NORMALIZATIONS}, got {norm!r}')


def load_tokenizer(path: str):
  """A sentencepiece `.model` file, or a Hugging Face `tokenizer.json` (or a directory with one)."""
  if path.endswith('.json') or (os.path.isdir(path) and
                                os.path.isfile(os.path.join(path, 'tokenizer.json'))):
    from translearn_jax.data.hf_tokenizer import HFTokenizer
    return HFTokenizer.load(path)
  return Tokenizer.load(path)


def encode_documents(tok: Tokenizer, documents: Sequence[str], batch: int = 4096,
                     append_eos: bool = True) -> np.ndarray:
  """Documents -> one flat int32 stream, each document followed by the tokenizer's EOS."""
  parts = []
  for lo in range(0, len(documents), batch):
    for ids in tok.encode_batch(documents[lo:lo + batch]):
      parts.append(np.asarray(ids, np.int32))
      if append_eos:
        parts.append(np.array([tok.eos_id], np.int32))
  return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def check_round_trip(tok, refs, where: str, sample: int = 500) -> float:
  """The share of (up to `sample`) texts the tokenizer does not give back as written
  (whitespace runs aside); from 1% on, a warning: a model can only write what the
  tokenizer decodes, so references it changes cap BLEU/chrF below 100 however good the
  model is, and an LM learns the changed text (sentencepiece's nmt_nfkc turns '，' into
  ',', no-break spaces and Persian's zero-width non-joiner into spaces)."""
  refs = [r for r in refs[:sample] if r.strip()]
  if not refs:
    return 0.0
  back = [tok.decode(ids) for ids in tok.encode_batch(refs)]
  changed = [(r, b) for r, b in zip(refs, back) if ' '.join(r.split()) != ' '.join(b.split())]
  share = len(changed) / len(refs)
  if share >= 0.01:
    r, b = changed[0]
    warnings.warn(f'{where}: the tokenizer changes {len(changed)} of {len(refs)} texts '
                  f'(e.g. {r[:60]!r} comes back as {b[:60]!r}), so no output can match them '
                  'exactly; tokenizer.normalization=identity keeps every character',
                  stacklevel=2)
  return share
