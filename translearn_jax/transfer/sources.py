"""The one loader of pretrained sources: a word-vectors file or any run directory of this project.

`load(kind, path)` returns a `Source`: the parameters (a tree of numpy arrays),
what is needed to use them — the vocabulary (token strings by row) and the
tokenizer — and the model config of the architecture that made them.

Kinds:
* `word2vec`: a word-vectors file: word2vec text, fastText `.vec` or GloVe
  (told apart by line 1: a `<count> <dim>` header or not), or word2vec binary
  with `binary=True` (`export.word2vec_format.load_vectors`; a word repeated
  in the file keeps its first row); params `{'embedding': (V, D)}`;
* `run` (or `lm`, `mlm`, `seq2seq`, `word2vec_run`, which also check the family):
  a run directory of this project (`config.json`, its tokenizer or vocabulary,
  `checkpoints/`). Only the parameters of the newest checkpoint are read
  (orbax partial restore of `state/params`, shapes and dtypes taken from the
  checkpoint's own metadata): no model, optimiser or template is built. A
  restored tree holding NaN/Inf is an error naming the leaves.
* `none`: nothing (scratch).

Errors name the pretrained-path field given as `field` (default `init.path`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from translearn_jax.data.tokenizer import Tokenizer, load_tokenizer
from translearn_jax.data.vocab import Vocabulary
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.export.word2vec_format import (UNICODE_ERRORS, is_fasttext_bin,
                                                    load_fasttext_model, load_vectors)
from translearn_jax.models import lm as lm_models
from translearn_jax.models import row_sharded
from translearn_jax.models import seq2seq as s2s_models
from translearn_jax.training.checkpoint import Checkpointer
from translearn_jax.training.optimizers import param_paths

KINDS = ('none', 'word2vec', 'run', 'lm', 'mlm', 'seq2seq', 'word2vec_run')
RUN_FAMILIES = {'lm': 'lm', 'mlm': 'mlm', 'seq2seq': 'seq2seq', 'word2vec_run': 'word2vec'}
BACKBONE_KINDS = ('lm', 'mlm')               # sources a task model can use as its body
TOKENIZER_FILES = ('tokenizer.model', 'tokenizer.json')   # sentencepiece, Hugging Face


@dataclasses.dataclass
class Source:
  kind: str                       # 'none', 'word2vec', 'lm', 'mlm', 'seq2seq', 'word2vec_run'
  path: str = ''
  params: Any = None                         # tree of numpy arrays (None: scratch)
  vocab: Optional[list[str]] = None          # token string of each embedding row
  tokenizer: Optional[Tokenizer] = None      # the run's tokenizer (sentencepiece or HF)
  model_config: Any = None                   # architecture config dataclass (runs)
  run_config: Optional[ml_collections.ConfigDict] = None   # the run's config.json
  subword: Optional[Callable[[list[str]], np.ndarray]] = None   # fastText .bin: any word's
                                                                # vector from its n-grams

  @property
  def is_backbone(self) -> bool:
    """A contextual body for task models: a causal LM or a masked-LM encoder run."""
    return self.kind in BACKBONE_KINDS


def load(kind: str, path: str = '', *, binary: bool = False, field: str = 'init.path',
         unicode_errors: str = 'strict') -> Source:
  if kind == 'none':
    return Source('none')
  if kind not in KINDS:
    raise ConfigError(f'{field.rsplit(".", 1)[0]}.kind: must be one of {KINDS}, got {kind!r}')
  if not path:
    raise ConfigError(f'config.{field}: empty; set it to a {kind} '
                      f'{"file" if kind == "word2vec" else "run directory"}')
  if kind == 'word2vec':
    if not os.path.exists(path):          # named by its field, as a missing run is
      raise DataError(f'config.{field}: {path}: no such vectors file (a word2vec text or '
                      'binary file, or a fastText .bin model)')
    if is_fasttext_bin(path):            # a fastText model: also vectors of unseen words
      kv = load_fasttext_model(path)
      subword = (lambda words: np.stack([kv.get_vector(w) for w in words])) \
          if kv.bucket > 0 else None       # a model trained without n-grams has none
      return Source('word2vec', path, {'embedding': np.asarray(kv.vectors, np.float32)},
                    vocab=list(kv.index_to_key), subword=subword)
    group = field.rsplit('.', 1)[0]
    if unicode_errors not in UNICODE_ERRORS:
      raise ConfigError(f'config.{group}.unicode_errors must be one of {UNICODE_ERRORS}, got '
                        f'{unicode_errors!r}')
    words, vecs = load_vectors(path, 'word2vec_binary' if binary else 'auto',
                               option=f'config.{group}.binary', unicode_errors=unicode_errors)
    return Source('word2vec', path, {'embedding': vecs}, vocab=words)
  src = load_run(path, field=field)
  want = RUN_FAMILIES.get(kind)
  if want and RUN_FAMILIES[src.kind] != want:
    raise ConfigError(f'config.{field}: {path} is a {RUN_FAMILIES[src.kind]} run, not a '
                      f'{want} run')
  return src


def run_config(path: str, field: str = 'init.path') -> ml_collections.ConfigDict:
  cfg_path = os.path.join(path, 'config.json')
  if not os.path.isdir(path):
    raise DataError(f'config.{field}: {path} is not a run directory')
  if not os.path.exists(cfg_path):
    raise DataError(f'config.{field}: {cfg_path} not found (not a run directory of this '
                    'project)')
  try:
    with open(cfg_path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise DataError(f'config.{field}: cannot read {cfg_path}: {e}') from None


def run_tokenizer(path: str, config):
  """The run's tokenizer: its `tokenizer.model` (sentencepiece) or `tokenizer.json` (Hugging
  Face, e.g. an imported checkpoint's). A run given `tokenizer.path` keeps a copy of that
  file in its directory (`keep_tokenizer`), which is read first: the file at the path may
  have changed or gone since; a run made before the copies were kept reads the path."""
  tok_path = (config.get('tokenizer', {}) or {}).get('path')
  if tok_path:
    kept = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(path, n))]
    if len(kept) > 1:   # a run made before `keep_tokenizer` removed the other: by the name
      kept = [tokenizer_file_name(tok_path)]
    return load_tokenizer(os.path.join(path, kept[0]) if kept else tok_path)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(path, name)):
      return load_tokenizer(os.path.join(path, name))
  raise DataError(f'{path}: no tokenizer ({" or ".join(TOKENIZER_FILES)}) in the run directory')


def tokenizer_file_name(tok_path: str) -> str:
  """The name a run keeps the tokenizer at `tok_path` under (`TOKENIZER_FILES`)."""
  is_json = tok_path.endswith('.json') or os.path.isdir(tok_path)
  return TOKENIZER_FILES[1] if is_json else TOKENIZER_FILES[0]


def keep_tokenizer(tok, workdir: str) -> None:
  """A copy of the run's tokenizer (`tokenizer.path`, or a continued source's) in its
  directory (process 0), so the run stands alone (`run_tokenizer` reads it first). A
  tokenizer file of the other kind there was left by an earlier run in this directory that
  never checkpointed (a resume keeps its tokenizer), and is removed: read first, it would
  have served this run's users another tokenizer."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tok.save(os.path.join(workdir, tok.file_name))
    for name in TOKENIZER_FILES:
      if name != tok.file_name and os.path.isfile(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))


def restore_params(path: str, field: str = 'init.path'):
  """The newest checkpoint's parameters of the run `path`, as numpy arrays."""
  return _restore(path, field)[0]


def _restore(path: str, field: str) -> tuple[Any, dict]:
  """(parameters, the data saved beside them) of the newest checkpoint of the run `path`."""
  ckpt = Checkpointer(path)
  try:
    if ckpt.latest_step() is None:
      raise DataError(f'config.{field}: no checkpoint in {path}/checkpoints')
    params, data = ckpt.restore_params(), ckpt.saved_data()
  finally:
    ckpt.close()
  bad = [p for p, x in zip(param_paths(params), jax.tree.leaves(params))
         if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all()]
  if bad:
    raise DataError(f'config.{field}: {path} holds non-finite parameters in {bad[:5]}'
                    f'{" and more" if len(bad) > 5 else ""}')
  return params, data


def load_run(path: str, field: str = 'init.path') -> Source:
  if os.path.isdir(path) and not os.path.exists(os.path.join(path, 'config.json')) and \
      os.path.exists(os.path.join(path, 'vocab.tsv')):
    config, family = ml_collections.ConfigDict({'family': 'word2vec'}), 'word2vec'
  else:
    config = run_config(path, field)
    family = config.get('family')
  if family in BACKBONE_KINDS:
    tok = run_tokenizer(path, config)
    mcfg = lm_models.config_from(config.model, tok.vocab_size, config.get('dtype', 'float32'))
    return Source(family, path, restore_params(path, field), tokenizer=tok, model_config=mcfg,
                  vocab=[tok.id_to_piece(i) for i in range(tok.vocab_size)],
                  run_config=config)
  if family == 'seq2seq':
    tok = run_tokenizer(path, config)
    mcfg = s2s_models.config_from(config, tok.vocab_size)
    return Source('seq2seq', path, restore_params(path, field), tokenizer=tok,
                  model_config=mcfg, vocab=[tok.id_to_piece(i) for i in range(tok.vocab_size)],
                  run_config=config)
  if family == 'word2vec':
    vocab_path = os.path.join(path, 'vocab.tsv')
    if not os.path.exists(vocab_path):
      raise DataError(f'config.{field}: {vocab_path} not found (a word2vec run saves it)')
    vocab = Vocabulary.load(vocab_path)
    params, data = _restore(path, field)
    shards = int(data.get(row_sharded.TABLE_SHARDS, 0) or 0)
    if shards:   # a run with model.table_sharding='rows' saves its tables interleaved
      try:
        params = {k: np.asarray(row_sharded.from_sharded_layout(np.asarray(v), shards,
                                                                len(vocab)))
                  for k, v in params.items()}
      except ValueError as e:
        raise DataError(f'config.{field}: {path}: {e} (its vocab.tsv has {len(vocab)} '
                        'words)') from None
    return Source('word2vec_run', path, params, vocab=list(vocab.words), run_config=config)
  raise DataError(f'config.{field}: {path} is a run of family {family!r}; transfer reads '
                  "'lm', 'mlm', 'seq2seq' and 'word2vec' runs")
