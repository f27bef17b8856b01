"""Sequence tagging (NER) over a pretrained LM body: `train_and_evaluate(config, workdir)`.

Words are split into the LM's sentencepiece pieces (each word encoded on its
own, so piece boundaries follow word boundaries); the tag of a word is
predicted at its last piece — with a causal (left-to-right) LM body that is the
first position that has seen the whole word — and the other pieces carry no
loss. Predictions are
decoded to BIO tags and scored with entity-level span F1 (conlleval
convention; `translearn_jax.data.conll.span_f1`, checked against seqeval in the
tests). Words cut off by `model.max_tokens` are predicted 'O' and counted.
Seeds, strategies and the scratch comparison work as in classification,
including its length-grouped batches trimmed to their longest sentence (exact:
the causal body never lets a real position see the padding after it).
"""

from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import conll
from translearn_jax.data.tokenizer import EOS
from translearn_jax.downstream import classification
from translearn_jax.downstream import runs as runs_lib
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.models import layers, lstm_lm, transformer_lm
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import strategies


class TokenTagger(nn.Module):
  lm_config: object
  num_tags: int
  dropout: float = 0.1

  @nn.compact
  def __call__(self, tokens, mask, deterministic: bool = True):
    del mask  # causal LM body: padding after the sentence never reaches real positions
    cfg = self.lm_config.replace(deterministic=deterministic)
    if isinstance(cfg, transformer_lm.TransformerConfig):
      h = transformer_lm.TransformerLM(cfg, name='backbone')(tokens, return_hidden=True)
    else:
      h, _ = lstm_lm.LSTMLM(cfg, name='backbone')(tokens, return_hidden=True)
    h = nn.Dropout(self.dropout)(h.astype(jnp.float32), deterministic=deterministic)
    return layers.Dense(self.num_tags, name='head')(h)


def encode_tagged(corpus: conll.TaggedCorpus, tokenizer, tag_index: dict, max_tokens: int):
  """(tokens, mask, last-piece positions (-1: truncated), tag ids) arrays."""
  flat = [w for s in corpus.sentences for w in s]
  pieces = tokenizer.encode_batch(flat)
  n, w_max = len(corpus.sentences), max(len(s) for s in corpus.sentences)
  toks = np.zeros((n, max_tokens), np.int32)
  mask = np.zeros((n, max_tokens), bool)
  pos = np.full((n, w_max), -1, np.int32)
  tags = np.full((n, w_max), -1, np.int32)
  k = 0
  for r, (words, labels) in enumerate(zip(corpus.sentences, corpus.tags)):
    seq = [EOS]
    for j, (word, label) in enumerate(zip(words, labels)):
      p = pieces[k] or [tokenizer.unk_id]
      k += 1
      if label not in tag_index:
        raise DataError(f'{corpus.path}: tag {label!r} does not occur in the training data')
      tags[r, j] = tag_index[label]
      seq.extend(p)
      if len(seq) <= max_tokens:
        pos[r, j] = len(seq) - 1
    seq = seq[:max_tokens]
    toks[r, :len(seq)] = seq
    mask[r, :len(seq)] = True
  return toks, mask, pos, tags


class Setup:

  def __init__(self, config):
    self.config = config
    d = config.data
    self.corpora = {'train': conll.read_conll(d.train_path), 'dev': conll.read_conll(d.dev_path),
                    'test': conll.read_conll(d.test_path)}
    names = sorted({t for s in self.corpora['train'].tags for t in s})
    self.tag_names = ['O'] + [t for t in names if t != 'O']
    self.tag_index = {t: i for i, t in enumerate(self.tag_names)}
    self.source = classification.load_source(config)
    if 'lm_config' not in self.source:
      raise ConfigError("tagging needs pretrained.kind='lm' (the LM run gives the "
                        'architecture and tokenizer; scratch runs use the same)')
    lm_cfg = self.source['lm_config']
    max_len = getattr(lm_cfg, 'max_len', None)
    if max_len is not None and config.model.max_tokens > max_len:
      raise ConfigError(f'config.model.max_tokens={config.model.max_tokens} exceeds the '
                        f'pretrained LM context (its model.max_len={max_len})')
    self.model = TokenTagger(lm_cfg, len(self.tag_names), config.model.dropout)
    self.inputs = {k: encode_tagged(c, self.source['tokenizer'], self.tag_index,
                                    config.model.max_tokens) for k, c in self.corpora.items()}
    self.rules = graft_lib.parse_rules(config.graft.rules)
    self.groups = strategies.parse_groups(config.transfer.groups)
    self._eval = jax.jit(lambda p, t, m: jnp.argmax(self.model.apply({'params': p}, t, m), -1))

  def init_params(self, seed: int, strategy: str):
    toks, mask = self.inputs['train'][:2]
    params = self.model.init(jax.random.key(seed), toks[:2], mask[:2])['params']
    if strategy == 'scratch':
      return params, None
    return graft_lib.graft(params, self.source['params'], self.rules, seed=seed)

  def predict(self, params, split: str, batch: int = 256) -> list:
    """BIO tags per sentence, in corpus order (batches of similar length, trimmed)."""
    toks, mask, pos, _ = self.inputs[split]
    order = np.argsort(mask.sum(1), kind='stable')
    out = [None] * len(toks)
    for lo in range(0, len(toks), batch):
      idx = order[lo:lo + batch]
      w = classification.trimmed_width(mask[idx])
      pred = np.asarray(self._eval(params, toks[idx, :w], mask[idx, :w]))
      for r, i in enumerate(idx):
        p = pos[i, :len(self.corpora[split].sentences[i])]
        out[i] = [self.tag_names[pred[r, q]] if q >= 0 else 'O' for q in p]
    return out

  def f1(self, params, split: str) -> float:
    return conll.span_f1(self.corpora[split].tags, self.predict(params, split))['f1']


def tagging_loss(model, params, tokens, mask, positions, tags, rng):
  """Mean cross-entropy of the tags predicted at each word's last piece (-1: no loss)."""
  logits = model.apply({'params': params}, tokens, mask, deterministic=False,
                       rngs={'dropout': rng})
  at = jnp.take_along_axis(logits, jnp.maximum(positions, 0)[..., None], axis=1)
  valid = (positions >= 0) & (tags >= 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(at, jnp.maximum(tags, 0))
  return jnp.sum(nll * valid) / jnp.maximum(valid.sum(), 1)


def run_once(setup: Setup, strategy: str, seed: int) -> dict:
  config = setup.config
  params, report = setup.init_params(seed, strategy)
  toks, mask, pos, tags = setup.inputs['train']
  bs = config.train.batch_size
  steps_per_epoch = len(toks) // bs
  if steps_per_epoch < 1:
    raise DataError(f'{len(toks)} training sentences cannot fill one batch of {bs}')
  total = steps_per_epoch * config.train.epochs
  tx, plan = strategies.build(classification.strategy_config(config, strategy), params,
                              setup.groups, total)
  if report is not None:
    report.frozen = strategies.frozen_paths(params, setup.groups, plan)
  params = jax.tree.map(jnp.copy, params)  # own buffers: the step donates (updates in place)
  opt_state = tx.init(params)
  model = setup.model
  step = jax.jit(strategies.make_train_step(
      lambda params, t, m, p, y, rng: tagging_loss(model, params, t, m, p, y, rng), tx,
      strategies.frozen_mask(params, setup.groups, plan)), donate_argnums=(0, 1))

  rng = jax.random.key(seed + 2000)
  best = {'dev': -1.0}
  lengths = mask.sum(1)
  for epoch in range(config.train.epochs):
    batches = classification.length_grouped_batches(lengths, bs,
                                                    np.random.default_rng([seed, epoch]))
    for i, idx in enumerate(batches):
      w = classification.trimmed_width(mask[idx])
      params, opt_state, loss = step(params, opt_state, toks[idx, :w], mask[idx, :w], pos[idx],
                                     tags[idx], jax.random.fold_in(rng, epoch * 10**6 + i))
    if not np.isfinite(float(loss)):
      raise DataError(f'{strategy} seed {seed}: loss became {float(loss)} in epoch {epoch}')
    dev = setup.f1(params, 'dev')
    info('%-20s seed %d epoch %d/%d: last loss %.4f, dev span F1 %.4f',
         strategy, seed, epoch + 1, config.train.epochs, float(loss), dev)
    if dev > best['dev']:
      best = {'dev': dev, 'test': setup.f1(params, 'test'), 'epoch': epoch + 1}
  best.update(strategy=strategy, seed=seed, params=params, report=report, plan=plan)
  return best


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  setup = Setup(config)
  truncated = int(((setup.inputs['test'][2] < 0) & (setup.inputs['test'][3] >= 0)).sum())
  info('CoNLL: %d/%d/%d sentences, %d tags; %d test words beyond model.max_tokens',
       *(len(setup.corpora[k].sentences) for k in ('train', 'dev', 'test')),
       len(setup.tag_names), truncated)
  results = runs_lib.run_all(config, workdir, lambda st, seed: run_once(setup, st, seed))
  rows = classification.summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0, 'metric': 'span F1',
             'truncated_test_words': truncated, 'pretrained': dict(config.pretrained)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(classification.format_table(rows, metric='test span F1'))
  return summary
