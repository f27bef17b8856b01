"""Sequence tagging (NER) over a pretrained LM body, as a task: inputs, model, loss, span F1.

Words are split into the body's sentencepiece pieces (each word encoded on its
own, so piece boundaries follow word boundaries). With a causal (left-to-right)
LM body the tag of a word is predicted at its last piece, the first position
that has seen the whole word (rows `<eos> pieces…`); with a bidirectional
masked-LM encoder it is predicted at the word's first piece (its second when
the first is a lone '▁'), as BERT taggers do, with the whole sentence in view (rows `<bos> pieces… <eos>`). The other
pieces carry no loss. Predictions are
decoded to the training data's tags (IOB, IOBES or BILOU; a causal body learns IOBES/BILOU
data as the IOB2 tags of its spans, as it cannot see whether the next word ends an entity,
and its predictions are rewritten in the data's scheme) and scored with entity-level span
F1 (seqeval's default chunking; `translearn_jax.data.conll.span_f1`, checked against
seqeval in the tests). Words cut off by `model.max_tokens` are predicted 'O' and counted.
Runners (`experiments.tagging`, multi-task) train it in length-grouped batches
trimmed to their longest sentence (exact: a causal body never lets a real
position see the padding after it, an encoder attends only to real positions).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.data import conll, readers
from translearn_jax.downstream import models
from translearn_jax.downstream.task import Task, length_grouped_batches, trimmed_width
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.models import lm as lm_models
from translearn_jax.training import memo
from translearn_jax.training.state import init_params
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import sources
from translearn_jax.transfer import strategies


def encode_sentences(sentences, tokenizer, max_tokens: int, causal: bool = True):
  """(tokens, mask, predicting position of each word (-1: truncated)) arrays of word lists.

  causal: `<eos>` + pieces, each word at its last piece; otherwise `<bos>` +
  pieces + `<eos>`, each word at its first piece — its second when the first is
  a lone '▁', which carries no word — and the `<eos>` always kept. Training,
  evaluation (`encode_tagged`) and a saved tagger's predictions
  (`serving.predict_file`) all encode through this function."""
  bos, eos = tokenizer.bos_id, tokenizer.eos_id
  bare = getattr(tokenizer, 'bare_space_id', -1)
  flat = [w for s in sentences for w in s]
  pieces = tokenizer.encode_words(flat) if flat else []
  n, w_max = len(sentences), max((len(s) for s in sentences), default=0)
  toks = np.zeros((n, max_tokens), np.int32)
  mask = np.zeros((n, max_tokens), bool)
  pos = np.full((n, w_max), -1, np.int32)
  k = 0
  for r, words in enumerate(sentences):
    seq = [eos] if causal else [bos]
    room = max_tokens if causal else max_tokens - 1
    for j in range(len(words)):
      p = pieces[k] or [tokenizer.unk_id]
      k += 1
      at = len(seq) + len(p) - 1 if causal else len(seq) + int(len(p) > 1 and p[0] == bare)
      seq.extend(p)
      if at < room:
        pos[r, j] = at
    seq = seq[:room] + ([] if causal else [eos])
    toks[r, :len(seq)] = seq
    mask[r, :len(seq)] = True
  return toks, mask, pos


def encode_tagged(corpus: conll.TaggedCorpus, tokenizer, tag_index: dict, max_tokens: int,
                  causal: bool = True):
  """(tokens, mask, predicting position of each word (-1: truncated), tag ids) arrays
  (`encode_sentences`, plus each word's tag id; -1 past a sentence's end, and for a tag
  `tag_index` lacks: a dev/test tag that training never has, warned about, scored as a
  gold entity the model cannot find, as seqeval scores it)."""
  toks, mask, pos = encode_sentences(corpus.sentences, tokenizer, max_tokens, causal)
  tags = np.full(pos.shape, -1, np.int32)
  unknown = collections.Counter()
  for r, labels in enumerate(corpus.tags):
    for j, label in enumerate(labels):
      if label in tag_index:
        tags[r, j] = tag_index[label]
      else:                     # a dev/test tag training never has: scored, never predicted
        unknown[label] += 1
  if unknown:
    warnings.warn(f'{corpus.path}: {sum(unknown.values())} word(s) carry tags the training '
                  f'data never has ({", ".join(sorted(unknown))}): the model cannot predict '
                  'them, so their entities count as missed', stacklevel=2)
  return toks, mask, pos, tags


def truncated_words(pos: np.ndarray, corpus: conll.TaggedCorpus) -> int:
  """Words of `corpus` beyond `max_tokens` (no predicting position: tagged 'O')."""
  return int(sum((pos[i, :len(s)] < 0).sum() for i, s in enumerate(corpus.sentences)))


class TaggingTask(Task):
  """CoNLL sentences → one IOB/IOBES/BILOU tag per word; metric: entity span F1."""
  name = 'tagging'
  metric = 'f1'                            # entity span F1
  eval_split = 'test'
  dropout_seed_offset = 2000

  def __init__(self, config):
    self.config = config
    d = config.data
    io = d.get('tag_scheme', '')           # how the files write tags: '' prefixed, 'io'
    try:
      conll.check_input_scheme(io)
    except ValueError as e:
      raise ConfigError(f'config.data.tag_scheme: {e}') from None
    if d.get('kind', 'conll') == 'tfds':   # data.path: the dataset; *_path: its split names
      read = lambda split: conll.read_tfds(d.path, split, d.get('tokens_field', 'tokens'),
                                           d.get('tags_field', 'ner_tags'),
                                           d.get('data_dir') or None, io)
    elif d.get('kind', 'conll') == 'conll':
      read = lambda path: conll.read_conll(path, *readers.config_encodings(d),
                                           d.get('token_column', 0), d.get('tag_column', -1),
                                           io)
    else:
      raise ConfigError(f"config.data.kind: 'conll' (files) or 'tfds', got {d.kind!r}")
    self.corpora = {'train': read(d.train_path), 'dev': read(d.dev_path),
                    'test': read(d.test_path)}
    if {t for s in self.corpora['train'].tags for t in s} <= {'O'}:
      raise DataError(f"{self.corpora['train'].path}: the training sentences carry no entity "
                      "tag (every word 'O'): nothing to learn or score (span F1 needs entities)")
    p = config.init
    self.source = sources.load(p.kind, p.path, field='init.path')
    lm_cfg = models.lm_backbone_config(self.source, config.model)
    causal = lm_models.is_causal(lm_cfg)
    # A causal body tags a word before it sees the next one, and IOBES's E-/S- (BILOU's L-/U-)
    # say whether the next word goes on with the entity: it learns the IOB2 tags of the same
    # spans, which need only the words so far, and writes its predictions in the data's scheme.
    # IO files are read as IOB2 (`conll.from_io`): the model learns and is scored on those,
    # and a saved tagger writes IO back.
    scheme = conll.tag_scheme(self.corpora['train'].tags)
    self.output_scheme = 'io' if io else scheme if causal and scheme != 'iob2' else ''
    targets = {k: dataclasses.replace(c, tags=[conll.convert_tags(t, 'iob2') for t in c.tags])
               if self.output_scheme else c for k, c in self.corpora.items()}
    names = sorted({t for s in targets['train'].tags for t in s} - {'O'})
    self.tag_names = ['O'] + names
    self.tag_index = {t: i for i, t in enumerate(self.tag_names)}
    self.model = models.TokenTagger(lm_cfg, len(self.tag_names), config.model.dropout)
    self.inputs = {k: encode_tagged(c, self.source.tokenizer, self.tag_index,
                                    config.model.max_tokens, causal)
                   for k, c in targets.items()}
    self.rules = graft_lib.parse_rules(config.init.rules)
    self.groups = strategies.parse_groups(config.transfer.groups)
    self._eval = jitted_predictions(self.model)

  def inference_spec(self) -> dict:
    """How a saved tagger reads new sentences (`serving`): its tags, `encode_sentences`
    with the body's tokenizer, `max_tokens` and the framing (causal or not)."""
    return {'task': self.name, 'labels': list(self.tag_names), 'encoding': 'pieces',
            'tag_scheme': self.output_scheme,
            'max_tokens': self.config.model.max_tokens,
            'token_column': int(self.config.data.get('token_column', 0)),
            'causal': lm_models.is_causal(self.model.lm_config),
            'tokenizer': self.source.tokenizer, 'vocab': None}

  def abstract_params(self):
    toks, mask = self.inputs['train'][:2]
    return jax.eval_shape(lambda: self.model.init(jax.random.key(0), toks[:2], mask[:2])['params'])

  def init_params(self, seed: int, strategy: str):
    toks, mask = self.inputs['train'][:2]
    params = init_params(self.model, jax.random.key(seed), toks[:2], mask[:2])
    if strategy == 'scratch':
      return params, None
    return graft_lib.graft(params, self.source.params, self.rules, seed=seed)

  def num_examples(self, split: str = 'train') -> int:
    return len(self.inputs[split][0])

  def epoch_batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    lengths = self.inputs['train'][1].sum(1)
    return length_grouped_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))

  def batch(self, idx: np.ndarray, split: str = 'train') -> dict[str, np.ndarray]:
    toks, mask, pos, tags = self.inputs[split]
    w = trimmed_width(mask[idx])
    return {'tokens': toks[idx, :w], 'mask': mask[idx, :w], 'positions': pos[idx],
            'tags': tags[idx]}

  def loss(self, params, batch: dict, rng):
    return tagging_batch_loss(self.model, params, batch, rng)

  def loss_fn(self):
    return ('tagging', self.model), functools.partial(tagging_batch_loss, self.model)

  def evaluate(self, params, split: str) -> float:
    return self.f1(params, split)

  def predict(self, params, split: str, batch: int = 256) -> list:
    """Predicted tags per sentence, in corpus order (batches of similar length, trimmed)."""
    toks, mask, pos, _ = self.inputs[split]
    order = np.argsort(mask.sum(1), kind='stable')
    out = [None] * len(toks)
    for lo in range(0, len(toks), batch):
      idx = order[lo:lo + batch]
      w = trimmed_width(mask[idx])
      pred = np.asarray(self._eval(params, toks[idx, :w], mask[idx, :w])[0])
      for r, i in enumerate(idx):
        p = pos[i, :len(self.corpora[split].sentences[i])]
        out[i] = [self.tag_names[pred[r, q]] if q >= 0 else 'O' for q in p]
        if self.output_scheme == 'io':     # what IO output means (adjacent entities of a
          out[i] = conll.from_io(conll.convert_tags(out[i], 'io'))   # type merge), as IOB2
        elif self.output_scheme:
          out[i] = conll.convert_tags(out[i], self.output_scheme)
    return out

  def f1(self, params, split: str) -> float:
    return conll.span_f1(self.corpora[split].tags, self.predict(params, split))['f1']

  def evaluate_with_details(self, params, split: str) -> tuple[float, dict]:
    """(span F1, {'entity_types': precision/recall/F1/support per entity type})."""
    scores = conll.span_scores(self.corpora[split].tags, self.predict(params, split))
    return scores['micro']['f1'], {'entity_types': scores['types']}


def tag_predictions(model, params, tokens, mask):
  """(the best tag id, its softmax probability) at every position: what the task's
  evaluation and a saved tagger (`serving.predict_file`) both compute, jitted the same."""
  logits = model.apply({'params': params}, tokens, mask)
  return jnp.argmax(logits, -1), jnp.max(jax.nn.softmax(logits, -1), -1)


@memo.memoized(maxsize=32)
def jitted_predictions(model):
  """Jitted `tag_predictions(model, ...)`, one per model in a process."""
  return jax.jit(lambda p, t, m: tag_predictions(model, p, t, m))


def tagging_batch_loss(model, params, batch: dict, rng):
  return tagging_loss(model, params, batch['tokens'], batch['mask'], batch['positions'],
                      batch['tags'], rng)


def tagging_loss(model, params, tokens, mask, positions, tags, rng):
  """Mean cross-entropy of the tags predicted at each word's position (-1: no loss)."""
  logits = model.apply({'params': params}, tokens, mask, deterministic=False,
                       rngs={'dropout': rng})
  at = jnp.take_along_axis(logits, jnp.maximum(positions, 0)[..., None], axis=1)
  valid = (positions >= 0) & (tags >= 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(at, jnp.maximum(tags, 0))
  return jnp.sum(nll * valid) / jnp.maximum(valid.sum(), 1)
