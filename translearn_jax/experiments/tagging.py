"""Sequence tagging (NER) with transfer: `train_and_evaluate(config, workdir)`.

Trains `downstream.tagging.Setup`'s token tagger over a pretrained LM body
with `config.transfer.strategy`, or (`compare_scratch=True`) scratch and every
strategy of `config.transfer.strategies` over `config.seeds` seeds, resumably
(`experiments.runs`); reports entity span F1 at the best dev epoch.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from translearn_jax.downstream import classification as clf_task
from translearn_jax.downstream import tagging as task
from translearn_jax.errors import DataError
from translearn_jax.experiments import classification
from translearn_jax.experiments import runs as runs_lib
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import strategies


def run_once(setup: task.Setup, strategy: str, seed: int) -> dict:
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
      lambda params, t, m, p, y, rng: task.tagging_loss(model, params, t, m, p, y, rng), tx,
      strategies.frozen_mask(params, setup.groups, plan)), donate_argnums=(0, 1))

  rng = jax.random.key(seed + 2000)
  best = {'dev': -1.0}
  lengths = mask.sum(1)
  for epoch in range(config.train.epochs):
    batches = clf_task.length_grouped_batches(lengths, bs,
                                                    np.random.default_rng([seed, epoch]))
    for i, idx in enumerate(batches):
      w = clf_task.trimmed_width(mask[idx])
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
  setup = task.Setup(config)
  truncated = int(((setup.inputs['test'][2] < 0) & (setup.inputs['test'][3] >= 0)).sum())
  info('CoNLL: %d/%d/%d sentences, %d tags; %d test words beyond model.max_tokens',
       *(len(setup.corpora[k].sentences) for k in ('train', 'dev', 'test')),
       len(setup.tag_names), truncated)
  results = runs_lib.run_all(config, workdir, lambda st, seed: run_once(setup, st, seed))
  rows = runs_lib.summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0, 'metric': 'span F1',
             'truncated_test_words': truncated, 'pretrained': dict(config.pretrained)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(runs_lib.format_table(rows, metric='test span F1'))
  return summary
