"""The one optimiser builder (`training.optimizers.make`) and strategies as its group tables."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from translearn_jax.errors import ConfigError
from translearn_jax.training import optimizers as opt
from translearn_jax.transfer import strategies as st

PARAMS = {'head': {'kernel': jnp.ones((3, 2)), 'bias': jnp.zeros(2)},
          'backbone': {'embed': jnp.ones((5, 3)), 'block': {'kernel': jnp.ones((3, 3))}}}
OPTIM = {'learning_rate': 0.1, 'schedule': 'constant', 'grad_clip': 0.0}


def grads(seed=0):
  leaves, treedef = jax.tree.flatten(PARAMS)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def run(tx, steps=3):
  update = jax.jit(tx.update)   # one program a transform, not one per operation
  p, s = PARAMS, tx.init(PARAMS)
  for i in range(steps):
    u, s = update(grads(i), s, p)
    p = optax.apply_updates(p, u)
  return p, s


def test_without_groups_equals_plain_clipped_adamw():
  o = {'learning_rate': 3e-3, 'schedule': 'cosine', 'warmup_steps': 2, 'end_lr_ratio': 0.1,
       'b1': 0.9, 'b2': 0.98, 'eps': 1e-9, 'weight_decay': 0.01, 'grad_clip': 1.0,
       'no_decay': 'bias,embed'}
  tx, sched = opt.make(o, PARAMS, 10)
  ref_sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 2, 10, 3e-4)
  mask = {'head': {'kernel': True, 'bias': False}, 'backbone': {'embed': False,
                                                                'block': {'kernel': True}}}
  ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      ref_sched, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.01, mask=mask))
  ours, theirs = run(tx, 4)[0], run(ref, 4)[0]
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  assert float(sched(5)) == float(ref_sched(5))


def test_frozen_group_has_no_state_and_does_not_move():
  groups = [opt.Group('head', '^head/'), opt.Group('body', '^backbone/', None)]
  tx, _ = opt.make(OPTIM, PARAMS, 10, groups)
  p, state = run(tx)
  jax.tree.map(np.testing.assert_array_equal, p['backbone'], PARAMS['backbone'])
  assert not np.allclose(p['head']['kernel'], PARAMS['head']['kernel'])
  # Adam moments exist for the head's 2 leaves only (x2: mu and nu)
  sizes = [x.size for x in jax.tree.leaves(state) if hasattr(x, 'size') and x.ndim > 0]
  assert sorted(sizes) == sorted([6, 2] * 2)
  frozen = opt.frozen_mask(PARAMS, groups)
  assert frozen == {'head': {'kernel': False, 'bias': False},
                    'backbone': {'embed': True, 'block': {'kernel': True}}}


def test_lr_multiplier_scales_the_first_adam_step():
  groups = [opt.Group('head', '^head/', 1.0), opt.Group('body', '^backbone/', 0.25)]
  tx, _ = opt.make(OPTIM, PARAMS, 10, groups)
  p, _ = run(tx, 1)
  # first Adam step: |update| = lr * |g| / (|g| + eps) ~= lr * mult for every element
  head = np.abs(np.asarray(p['head']['kernel'] - PARAMS['head']['kernel']))
  body = np.abs(np.asarray(p['backbone']['embed'] - PARAMS['backbone']['embed']))
  np.testing.assert_allclose(head, 0.1, rtol=1e-4)
  np.testing.assert_allclose(body, 0.025, rtol=1e-4)


def test_group_starting_late_waits_with_a_fresh_adam_count():
  groups = [opt.Group('head', '^head/'), opt.Group('body', '^backbone/', 1.0, start=2)]
  tx, _ = opt.make(OPTIM, PARAMS, 10, groups)
  p, state = run(tx, 2)
  jax.tree.map(np.testing.assert_array_equal, p['backbone'], PARAMS['backbone'])
  p3, _ = run(tx, 3)
  assert not np.allclose(p3['backbone']['embed'], PARAMS['backbone']['embed'])
  counts = [int(x) for x in jax.tree.leaves(state) if getattr(x, 'dtype', None) == jnp.int32]
  assert 0 in counts and 2 in counts   # the waiting group's Adam has not counted a step


def test_uncovered_parameter_and_bad_pattern_are_errors():
  with pytest.raises(ConfigError, match=r"transfer.groups: no pattern matches \['backbone/"):
    opt.make(OPTIM, PARAMS, 10, [opt.Group('head', '^head/')], field='transfer.groups')
  with pytest.raises(ConfigError, match=r"optim.no_decay: bad regular expression '\('"):
    opt.make({**OPTIM, 'no_decay': '('}, PARAMS, 10)
  with pytest.raises(ConfigError, match='optim.schedule must be one of'):
    opt.make({**OPTIM, 'schedule': 'step'}, PARAMS, 10)


def test_strategies_are_group_tables():
  groups = [('head', '^head/'), ('top', '^backbone/block'), ('embed', '^backbone/embed')]
  cfg = lambda s, **kw: st.StrategyConfig(strategy=s, learning_rate=1.0, factor=0.5,
                                          unfreeze_every=7, **kw)
  table, plan = st.rules(cfg('discriminative'), PARAMS, groups, 100)
  assert [(g.name, g.lr_mult, g.start) for g in table] == [
      ('head', 1.0, 0), ('top', 0.5, 0), ('embed', 0.25, 0)]
  table, _ = st.rules(cfg('gradual_unfreezing'), PARAMS, groups, 100)
  assert [g.start for g in table] == [0, 7, 14]
  table, plan = st.rules(cfg('feature_extraction'), PARAMS, groups, 100)
  assert [g.lr_mult for g in table] == [1.0, None, None]
  assert sorted(st.frozen_paths(PARAMS, groups, plan)) == ['backbone/block/kernel',
                                                          'backbone/embed']
  table, _ = st.rules(cfg('finetune', freeze_bottom=1), PARAMS, groups, 100)
  assert [g.lr_mult for g in table] == [1.0, 1.0, None]


def test_a_zero_learning_rate_is_an_evaluation_of_the_start_and_a_negative_one_is_refused():
  """0 leaves the parameters as they are (the README's "before stage 2" perplexity is the
  stage-2 command with it); below 0 trains away from the data, silently, so it is refused."""
  params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
  tx, _ = opt.make({**OPTIM, "learning_rate": 0.0, "weight_decay": 0.01}, params, 10)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert all(not np.asarray(u).any() for u in jax.tree.leaves(updates))
  with pytest.raises(ConfigError, match=r'config\.optim\.learning_rate: must be a finite '
                                        r'number >= 0 \(0: no change\), got -0\.1'):
    opt.make({**OPTIM, "learning_rate": -0.1}, params, 10)
