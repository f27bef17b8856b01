"""What every downstream task is to a runner: data, model, initialisation, loss, evaluation.

A `Task` (classification, tagging, language modelling) owns its encoded
splits and its model (`{'backbone': ..., 'head': ...}` parameters), and
supplies
* `init_params(seed, strategy)`: fresh parameters, grafted from the task's
  pretrained source unless `strategy == 'scratch'` (with the graft report);
* `epoch_batches(seed, epoch, batch_size)`: the epoch's training batches as
  index arrays (deterministic in seed and epoch, so a run resumes exactly);
* `batch(idx, split)`: the arrays of those examples, trimmed to the columns
  they need;
* `loss(params, batch, rng)`: the mean training loss (pure, jit-able);
* `evaluate(params, split)`: the task's metric (`metric`, `higher_is_better`);
* `inference_spec()`: how a saved model reads new inputs (labels, encoding,
  tokenizer or word vocabulary), for `serving` (classification and tagging).

Runners (fine-tuning, multi-task, learning curves, strategy search) only use
this interface; nothing switches on which task it is.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class Task:
  name: str = 'task'
  metric: str = 'metric'
  higher_is_better: bool = True
  scale: float = 100.0                     # shown as metric × scale (100: a percentage)
  eval_split: str = 'test'                 # the split a finished model is scored on
  model: Any = None
  groups: Sequence[tuple[str, str]] = ()
  dropout_seed_offset: int = 1000          # dropout key of seed s: key(s + offset)

  def num_examples(self, split: str = 'train') -> int:
    raise NotImplementedError

  def init_params(self, seed: int, strategy: str):
    raise NotImplementedError

  def abstract_params(self):
    """`init_params`' tree as abstract boxed leaves (`nn.Partitioned` where the model names
    logical axes), for placing it by the mesh rules; None: the task's parameters are only
    ever replicated."""
    return None

  def epoch_batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    raise NotImplementedError

  def batch(self, idx: np.ndarray, split: str = 'train') -> dict[str, np.ndarray]:
    raise NotImplementedError

  def loss(self, params, batch: dict, rng):
    raise NotImplementedError

  def loss_fn(self):
    """(key, fn): `fn(params, batch, rng)` computes `loss` from its arguments alone (it
    holds no data of the task), and `key` (hashable) is equal for tasks whose `fn`
    computes the same -- the fine-tuning step is then built once for all of them in a
    process (`experiments.finetune.make_step`). (None, self.loss): steps built per task."""
    return None, self.loss

  def evaluate(self, params, split: str) -> float:
    raise NotImplementedError

  def inference_spec(self) -> dict:
    raise NotImplementedError


def trimmed_width(mask: np.ndarray, multiple: int = 16) -> int:
  """Columns a batch needs: its longest real row, rounded up (few distinct shapes to compile).

  Exact for every model here: padding is masked out of pooling, a causal LM
  body never lets a position see later (padded) ones, and an encoder body
  attends only to real positions.
  """
  need = max(int(mask.sum(1).max()), 1)
  return min(mask.shape[1], -(-need // multiple) * multiple)


def shuffled_batches(n: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
  """The full batches of a permutation of `n` examples, deterministic in (seed, epoch)."""
  order = np.random.default_rng([seed, epoch]).permutation(n)
  return [order[i:i + batch] for i in range(0, n // batch * batch, batch)]


def length_grouped_batches(lengths: np.ndarray, batch: int, rng: np.random.Generator,
                           chunk: int = 50) -> list[np.ndarray]:
  """Full batches of shuffled examples with similar lengths.

  The shuffled order is cut into chunks of `chunk` batches, each chunk is sorted
  by length and cut into batches, and the batch order is shuffled: batches stay
  random in content but need little padding.
  """
  order = rng.permutation(len(lengths))
  n = len(order) // batch * batch
  batches = []
  for lo in range(0, n, batch * chunk):
    part = order[lo:min(lo + batch * chunk, n)]
    part = part[np.argsort(lengths[part], kind='stable')]
    batches += [part[i:i + batch] for i in range(0, len(part), batch)]
  return [batches[i] for i in rng.permutation(len(batches))]
