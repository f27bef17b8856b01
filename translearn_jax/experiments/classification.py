"""Text classification with transfer: `train_and_evaluate(config, workdir)`.

One run trains the downstream model with `config.transfer.strategy` from the
pretrained tree named by `config.pretrained`. With
`config.compare_scratch=True` it trains, for each of `config.seeds` seeds, the
same model from scratch and with every strategy in
`config.transfer.strategies`, and prints test accuracy mean ± 95% CI per
strategy (and the gain over scratch). Model selection: the epoch with the best
dev accuracy; its test accuracy is reported.

Pretrained sources (`config.pretrained.kind`):
* `word2vec`: a vector file (text or binary); rows are remapped by word into
  the downstream vocabulary (words of the training split);
* `lm`: an LM run directory (its config.json, tokenizer.model, newest
  checkpoint); the classifier reuses its tokenizer and architecture;
* `none`: scratch only.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translearn_jax.downstream import classification as task
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.experiments import runs as runs_lib
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import probes
from translearn_jax.transfer import strategies


def strategy_config(config, strategy: str) -> strategies.StrategyConfig:
  t = config.transfer
  return strategies.StrategyConfig(
      strategy='finetune' if strategy == 'scratch' else strategy,
      learning_rate=t.learning_rate, schedule=t.schedule, warmup_steps=t.warmup_steps,
      factor=t.factor, unfreeze_every=t.unfreeze_every,
      freeze_bottom=t.get('freeze_bottom', 0), weight_decay=t.weight_decay,
      grad_clip=t.grad_clip)


PROBES = {'linear_probe_logistic': 'logistic', 'linear_probe_svm': 'svm'}


def run_probe(setup: task.Setup, strategy: str, seed: int) -> dict:
  """A linear probe on the frozen pretrained backbone's pooled features."""
  params, report = setup.init_params(seed, strategy)
  if report is None:
    raise ConfigError(f'{strategy} needs a pretrained source (pretrained.kind)')
  report.frozen = [p for p in graft_lib.flatten(params) if p.startswith('backbone/')]
  feats = jax.jit(lambda p, t, m: setup.model.apply({'params': p}, t, m,
                                                     return_features=True))
  features, labels = {}, {}
  for split, (toks, mask, y) in setup.inputs.items():
    features[split] = np.concatenate([np.asarray(feats(params, toks[i:i + 512], mask[i:i + 512]))
                                      for i in range(0, len(y), 512)])
    labels[split] = y
  best = probes.probe(features, labels, setup.num_classes, PROBES[strategy])
  best.update(strategy=strategy, seed=seed, params=params, report=report, plan={}, epoch=0)
  return best


def make_step(model, tx, frozen=None):
  """`(params, opt_state, tokens, mask, labels, rng) -> (params, opt_state, loss)`, not jitted
  (callers jit it, or vmap it over seeds first). `frozen`: `strategies.frozen_mask`, whose
  leaves get no gradient computed."""
  return strategies.make_train_step(
      lambda p, t, m, y, rng: task.classification_loss(model, p, t, m, y, rng), tx, frozen)


def run_once(setup: task.Setup, strategy: str, seed: int) -> dict:
  """Trains one model; returns dev/test accuracy at the best dev epoch."""
  if strategy in PROBES:
    return run_probe(setup, strategy, seed)
  config = setup.config
  params, report = setup.init_params(seed, strategy)
  toks, mask, labels = setup.inputs['train']
  bs = config.train.batch_size
  steps_per_epoch = len(labels) // bs
  if steps_per_epoch < 1:
    raise DataError(f'{len(labels)} training examples cannot fill one batch of {bs}')
  total = steps_per_epoch * config.train.epochs
  tx, plan = strategies.build(strategy_config(config, strategy), params, setup.groups, total)
  if report is not None:
    report.frozen = strategies.frozen_paths(params, setup.groups, plan)
  params = jax.tree.map(jnp.copy, params)  # own buffers: the step donates (updates in place)
  opt_state = tx.init(params)
  step = jax.jit(make_step(setup.model, tx, strategies.frozen_mask(params, setup.groups, plan)),
                 donate_argnums=(0, 1))

  rng = jax.random.key(seed + 1000)
  best = {'dev': -1.0}
  lengths = mask.sum(1)
  for epoch in range(config.train.epochs):
    batches = task.length_grouped_batches(lengths, bs, np.random.default_rng([seed, epoch]))
    for i, idx in enumerate(batches):
      w = task.trimmed_width(mask[idx])
      params, opt_state, loss = step(params, opt_state, toks[idx, :w], mask[idx, :w],
                                     labels[idx],
                                     jax.random.fold_in(rng, epoch * steps_per_epoch + i))
    if not np.isfinite(float(loss)):
      raise DataError(f'{strategy} seed {seed}: loss became {float(loss)} in epoch {epoch}')
    dev = setup.accuracy(params, 'dev')
    info('%-20s seed %d epoch %d/%d: last loss %.4f, dev accuracy %.4f',
         strategy, seed, epoch + 1, config.train.epochs, float(loss), dev)
    if dev > best['dev']:
      best = {'dev': dev, 'test': setup.accuracy(params, 'test'), 'epoch': epoch + 1}
  best.update(strategy=strategy, seed=seed, params=params, report=report, plan=plan)
  return best


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  setup = task.Setup(config)
  info('%s: %d train / %d dev / %d test examples, %d classes', config.data.path,
       *(len(setup.splits[k].labels) for k in ('train', 'dev', 'test')), setup.num_classes)

  def on_result(r):
    if r['report'] is not None and not config.compare_scratch and jax.process_index() == 0:
      print(r['report'].summary())

  results = runs_lib.run_all(config, workdir, lambda st, seed: run_once(setup, st, seed),
                             on_result)
  rows = runs_lib.summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0,
             'data': {k: len(v.labels) for k, v in setup.splits.items()},
             'pretrained': dict(config.pretrained)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(runs_lib.format_table(rows))
  return summary
