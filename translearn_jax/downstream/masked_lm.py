"""Masked language modelling as a task: the MLM objective on a corpus, through an encoder body.

`mlm_sums` is the objective itself (masked-piece NLL and accuracy of a packed
row batch), shared with MLM pretraining (`pretraining.mlm`). `MaskedLMTask`
makes it a `Task`, so an encoder can keep (or adapt with) its pretraining
objective beside classification and tagging heads in multi-task learning —
the bidirectional counterpart of `LanguageModelTask`. Its parameters are
`{'backbone': encoder body, 'head': the MLM head (`mlm/`)}`: the head is the
task's own, the body is shared. Metric: masked-piece accuracy on held-out
documents, masked with fixed keys (the same positions at every evaluation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.data import masking, readers
from translearn_jax.data.lm_data import split_documents
from translearn_jax.data.mlm_data import pack_documents
from translearn_jax.downstream.task import Task, shuffled_batches
from translearn_jax.errors import ConfigError
from translearn_jax.models import lm as lm_models
from translearn_jax.training.state import init_params

HEAD = 'mlm'                      # the encoder's MLM head subtree (models.encoder)


def mlm_sums(model, params, rows, masker, mask_rng, rngs=None):
  """(summed NLL, (correct, count)) of one (B, 3, T) row batch masked with `mask_rng`."""
  tokens, segments, positions = rows[:, 0], rows[:, 1], rows[:, 2]
  inputs, slots, targets, weights = masker(mask_rng, tokens, segments)
  logits = model.apply({'params': params}, inputs, segments=segments, positions=positions,
                       predict_at=slots, rngs=rngs)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
  return jnp.sum(nll * weights), (correct, jnp.sum(weights))


class MaskedLMTask(Task):
  name = 'masked_lm'
  metric = 'accuracy'              # masked-piece accuracy
  eval_split = 'valid'
  dropout_seed_offset = 4000

  def __init__(self, data_config, source, seq_len: int, eval_rows: int = 0,
               mask_rate: float | None = None):
    """`mask_rate` None: the source run's `mlm.mask_rate` (its `mlm.whole_word` always)."""
    if source.model_config is None or source.kind != 'mlm' or \
        lm_models.is_causal(source.model_config):
      raise ConfigError('the masked-LM task needs a masked-LM encoder source (an mlm run, '
                        f"init.kind='mlm'), got a {source.kind!r} source")
    self.source = source
    docs = list(readers.read_documents(readers.TextSpec.from_config(data_config)))
    train, valid = split_documents(docs, data_config.valid_fraction, 0)
    self.rows = {'train': pack_documents(source.tokenizer, train, seq_len)[0]}
    if valid:
      self.rows['valid'] = pack_documents(source.tokenizer, valid, seq_len)[0]
    self.eval_rows = eval_rows
    run_mlm = (source.run_config or {}).get('mlm', {}) or {}
    rate = run_mlm.get('mask_rate', 0.15) if mask_rate is None else mask_rate
    self.masker = masking.Masker.for_tokenizer(source.tokenizer, seq_len, rate,
                                               bool(run_mlm.get('whole_word', False)))
    self.model = lm_models.make(source.model_config.replace(deterministic=False))
    eval_model = lm_models.make(source.model_config.replace(deterministic=True))
    self.groups = [('head', '^head/'), ('backbone', '^backbone/')]
    self._sums = jax.jit(lambda p, r, k: mlm_sums(eval_model, p, r, self.masker, k)[1])

  @staticmethod
  def split(params):
    """Encoder parameters -> {'backbone': body, 'head': MLM head}."""
    params = dict(params)
    return {'backbone': {k: v for k, v in params.items() if k != HEAD}, 'head': params[HEAD]}

  @staticmethod
  def join(params):
    return {**params['backbone'], HEAD: params['head']}

  def num_examples(self, split: str = 'train') -> int:
    return len(self.rows.get(split, ()))

  def init_params(self, seed: int, strategy: str):
    fresh = init_params(self.model, jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))
    if strategy == 'scratch':
      full = fresh
    else:   # a source imported without its MLM head (BertModel) takes a fresh one
      full = {**fresh, **jax.tree.map(jnp.asarray, self.source.params)}
    return self.split(full), None

  def epoch_batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    return shuffled_batches(len(self.rows['train']), batch_size, seed, epoch)

  def batch(self, idx: np.ndarray, split: str = 'train') -> dict[str, np.ndarray]:
    return {'rows': self.rows[split][idx]}

  def loss(self, params, batch: dict, rng):
    k_mask, k_drop = jax.random.split(rng)
    total, (_, count) = mlm_sums(self.model, self.join(params), batch['rows'], self.masker,
                                 k_mask, {'dropout': k_drop})
    return total / jnp.maximum(count, 1.0)

  def evaluate(self, params, split: str = 'valid') -> float:
    if split not in self.rows:
      raise ConfigError('the masked-LM task has no held-out documents (valid_fraction is 0)')
    rows = self.rows[split][:self.eval_rows or None]
    full, base = self.join(params), jax.random.key(17)
    correct = count = 0.0
    for b, lo in enumerate(range(0, len(rows), 32)):
      c, n = self._sums(full, rows[lo:lo + 32], jax.random.fold_in(base, b))
      correct, count = correct + float(c), count + float(n)
    return correct / max(count, 1.0)
