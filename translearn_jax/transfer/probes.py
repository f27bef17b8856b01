"""Linear probes on frozen features: logistic regression and a linear SVM.

Features are standardised with the training split's mean/std; the probe is a
linear layer trained full-batch with L-BFGS (optax) on softmax cross-entropy
(`logistic`) or the multi-class hinge loss of Crammer & Singer (`svm`), each
with an L2 penalty. The penalty is chosen on the dev split from `l2_grid`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.errors import ConfigError

LOSSES = ('logistic', 'svm')


def _loss(w, b, x, y, l2, kind):
  scores = x @ w + b
  if kind == 'logistic':
    data = optax.softmax_cross_entropy_with_integer_labels(scores, y).mean()
  else:
    true = jnp.take_along_axis(scores, y[:, None], 1)
    margins = scores - true + 1.0
    margins = jnp.where(jax.nn.one_hot(y, scores.shape[1], dtype=bool), 0.0, margins)
    data = jnp.maximum(margins.max(1), 0.0).mean()
  return data + l2 * jnp.sum(w * w)


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, kind: str = 'logistic',
        l2: float = 1e-3, steps: int = 200):
  """(W, b) minimising the regularised loss on standardised `x`."""
  if kind not in LOSSES:
    raise ConfigError(f'linear probe loss must be one of {LOSSES}, got {kind!r}')
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros((num_classes,)))
  f = lambda p: _loss(p[0], p[1], x, y, l2, kind)
  opt = optax.lbfgs()
  state = opt.init(params)
  value_and_grad = optax.value_and_grad_from_state(f)

  @jax.jit
  def step(params, state):
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params


def standardise(train: np.ndarray, *others: np.ndarray):
  mu, sd = train.mean(0), train.std(0) + 1e-6
  return [(a - mu) / sd for a in (train, *others)]


def probe(features: dict, labels: dict, num_classes: int, kind: str,
          l2_grid=(1e-4, 1e-3, 1e-2, 1e-1)) -> dict:
  """Fits on train for each L2, picks by dev accuracy; returns dev/test accuracy."""
  tr, dv, te = standardise(features['train'], features['dev'], features['test'])
  best = {'dev': -1.0}
  for l2 in l2_grid:
    w, b = fit(tr, labels['train'], num_classes, kind, l2)
    acc = lambda x, y: float((np.argmax(np.asarray(x @ w + b), 1) == y).mean())
    dev = acc(dv, labels['dev'])
    if dev > best['dev']:
      best = {'dev': dev, 'test': acc(te, labels['test']), 'l2': l2}
  return best
