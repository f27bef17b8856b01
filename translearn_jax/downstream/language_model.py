"""Language modelling as a downstream task: next-token prediction on a corpus, through the
backbone's own (tied) output; metric: held-out perplexity (lower is better).

The task's parameters are `{'backbone': LM parameters}` (no head of its own), so
it shares a backbone with classification and tagging heads in multi-task
learning. Documents are held out whole (`valid_fraction`), encoded with the
backbone's tokenizer (EOS before each document, as in LM pretraining) and
packed into rows of `seq_len + 1` tokens.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.data import readers
from translearn_jax.data.lm_data import pack, split_documents
from translearn_jax.downstream.task import Task, shuffled_batches
from translearn_jax.errors import ConfigError
from translearn_jax.models import lm as lm_models
from translearn_jax.training.state import init_params


class LanguageModelTask(Task):
  name = 'language_model'
  metric = 'perplexity'
  higher_is_better = False
  scale = 1.0
  eval_split = 'valid'
  dropout_seed_offset = 3000

  def __init__(self, data_config, source, seq_len: int, eval_rows: int = 0):
    if source.model_config is None or source.kind != 'lm' or \
        not lm_models.is_causal(source.model_config):
      raise ConfigError('the language-modelling task needs a causal LM source (an LM run, '
                        f"init.kind='lm'), got a {source.kind!r} source")
    self.source = source
    docs = list(readers.read_documents(readers.TextSpec.from_config(data_config)))
    train, valid = split_documents(docs, data_config.valid_fraction, 0)
    tok = source.tokenizer
    enc = lambda ds: np.concatenate([np.asarray([tok.eos_id] + ids, np.int32)
                                     for ids in tok.encode_batch(ds)])
    self.rows = {'train': np.asarray(pack(enc(train), seq_len))}
    if valid:
      self.rows['valid'] = np.asarray(pack(enc(valid), seq_len, 'held-out'))
    self.eval_rows = eval_rows
    self.model = lm_models.make(source.model_config.replace(deterministic=False))
    eval_model = lm_models.make(source.model_config.replace(deterministic=True))
    self.groups = [('backbone', '^backbone/')]
    self._nll = jax.jit(lambda b, r: optax.softmax_cross_entropy_with_integer_labels(
        lm_models.logits(eval_model, b, r[:, :-1]).astype(jnp.float32), r[:, 1:]).sum())

  def num_examples(self, split: str = 'train') -> int:
    return len(self.rows.get(split, ()))

  def init_params(self, seed: int, strategy: str):
    if strategy == 'scratch':
      backbone = init_params(self.model, jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))
    else:
      backbone = jax.tree.map(jnp.asarray, self.source.params)
    return {'backbone': backbone}, None

  def epoch_batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    return shuffled_batches(len(self.rows['train']), batch_size, seed, epoch)

  def batch(self, idx: np.ndarray, split: str = 'train') -> dict[str, np.ndarray]:
    return {'tokens': self.rows[split][idx]}

  def loss(self, params, batch: dict, rng):
    rows = batch['tokens']
    logits = lm_models.logits(self.model, params['backbone'], rows[:, :-1],
                              rngs={'dropout': rng})
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), rows[:, 1:]).mean()

  def evaluate(self, params, split: str = 'valid') -> float:
    if split not in self.rows:
      raise ConfigError('the language-modelling task has no held-out documents '
                        '(valid_fraction is 0)')
    rows = self.rows[split][:self.eval_rows or None]
    total = sum(float(self._nll(params['backbone'], rows[i:i + 32]))
                for i in range(0, len(rows), 32))
    return math.exp(total / (len(rows) * (rows.shape[1] - 1)))
