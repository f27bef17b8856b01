"""A diverging downstream run stops with `NonFiniteLossError` (train.py: exit 3) naming the run."""

import pytest

import train
from test_classification import base_config, topic_task, vectors  # noqa: F401 (fixtures)
from translearn_jax.errors import NonFiniteLossError


def diverging(task, vecs):
  c = base_config(task, vecs[0])
  c.optim.learning_rate = 1e30   # Adam moves every weight by ~1e30: the loss overflows
  c.optim.grad_clip = 0.0
  c.train.epochs = 1
  return c


def test_finetune_comparison_names_strategy_and_seed(tmp_path, topic_task, vectors):  # noqa: F811
  c = diverging(topic_task, vectors)
  c.compare_scratch, c.seeds, c.transfer.strategies = True, 1, 'finetune'
  with pytest.raises(NonFiniteLossError, match=r'^scratch seed 0: loss is (nan|inf)'):
    train.run(c, str(tmp_path / 'cmp'))


def test_learning_curve_names_strategy_budget_and_seeds(tmp_path, topic_task, vectors):  # noqa: F811
  c = diverging(topic_task, vectors)
  c.family, c.seeds = 'curves', 2
  c.curve = dict(budgets='64', strategies='finetune', epochs=1, min_steps=4,
                 time_sequential=False, title='t')
  with pytest.raises(NonFiniteLossError,
                     match=r'^learning curve scratch, 64 labels: the loss became non-finite '
                           r'for seed\(s\) \[0, 1\]'):
    train.run(c, str(tmp_path / 'curves'))
