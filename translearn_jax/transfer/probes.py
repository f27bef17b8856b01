"""Linear probes on frozen features: logistic regression and a linear SVM.

Features are standardised with the training split's mean/std; the probe is a
linear layer trained full-batch with L-BFGS (optax) on softmax cross-entropy
(`logistic`) or the multi-class hinge loss of Crammer & Singer (`svm`), each
with an L2 penalty. The penalty is chosen on the dev split from `l2_grid`.
`fold` turns the chosen probe and the standardisation into one linear layer
on the raw features (a classifier head).
"""

from __future__ import annotations

import functools

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


_LBFGS = optax.lbfgs()


@functools.partial(jax.jit, static_argnames='kind')
def _lbfgs_step(params, state, x, y, l2, kind):
  """One L-BFGS step; compiled once per shape and loss (the L2 weight is an argument)."""
  f = lambda p: _loss(p[0], p[1], x, y, l2, kind)
  value, grad = optax.value_and_grad_from_state(f)(params, state=state)
  updates, state = _LBFGS.update(grad, state, params, value=value, grad=grad, value_fn=f)
  return optax.apply_updates(params, updates), state


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, kind: str = 'logistic',
        l2: float = 1e-3, steps: int = 200):
  """(W, b) minimising the regularised loss on standardised `x`."""
  if kind not in LOSSES:
    raise ConfigError(f'linear probe loss must be one of {LOSSES}, got {kind!r}')
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros((num_classes,)))
  state = _LBFGS.init(params)
  l2 = jnp.asarray(l2, jnp.float32)
  for _ in range(steps):
    params, state = _lbfgs_step(params, state, x, y, l2, kind)
  return params


def moments(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std + 1e-6) of each feature over the training split."""
  return train.mean(0), train.std(0) + 1e-6


def standardise(train: np.ndarray, *others: np.ndarray):
  mu, sd = moments(train)
  return [(a - mu) / sd for a in (train, *others)]


def fold(w, b, mu, sd) -> tuple[np.ndarray, np.ndarray]:
  """(kernel, bias) of one linear layer on raw features that computes the probe `(w, b)`
  on standardised ones: `((x - mu) / sd) @ w + b = x @ (w / sd[:, None]) + (b - (mu / sd) @ w)`
  (a task model's head then makes the probe's predictions)."""
  w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
  mu, sd = np.asarray(mu, np.float64), np.asarray(sd, np.float64)
  return (w / sd[:, None]).astype(np.float32), (b - (mu / sd) @ w).astype(np.float32)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
  return float((np.asarray(pred) == np.asarray(gold)).mean())


def probe(features: dict, labels: dict, num_classes: int, kind: str,
          l2_grid=(1e-4, 1e-3, 1e-2, 1e-1), score=accuracy) -> dict:
  """Fits on train for each L2, picks by the dev `score(predicted, gold)` (accuracy by
  default; higher is better); returns dev/test scores, the L2, and the chosen probe: `w`,
  `b` over features standardised with `mu`, `sd` (`fold`)."""
  mu, sd = moments(features['train'])
  tr, dv, te = ((features[k] - mu) / sd for k in ('train', 'dev', 'test'))
  best = {'dev': -1.0}
  for l2 in l2_grid:
    w, b = fit(tr, labels['train'], num_classes, kind, l2)
    scored = lambda x, y: score(np.argmax(np.asarray(x @ w + b), 1), y)
    dev = scored(dv, labels['dev'])
    if dev > best['dev']:
      best = {'dev': dev, 'test': scored(te, labels['test']), 'l2': l2, 'w': np.asarray(w),
              'b': np.asarray(b), 'mu': mu, 'sd': sd}
  return best
