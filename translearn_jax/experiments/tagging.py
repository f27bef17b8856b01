"""Sequence tagging (NER) with transfer: `train_and_evaluate(config, workdir)`.

Trains `downstream.tagging.Setup`'s token tagger over a pretrained LM body
with `config.transfer.strategy`, or (`compare_scratch=True`) scratch and every
strategy of `config.transfer.strategies` over `config.seeds` seeds, resumably
(`experiments.runs`); each run trains on the shared loop
(`experiments.finetune`). Reports entity span F1 at the best dev epoch, whose
model is saved (`config.save_models`, see `experiments.runs`) as
`workdir/model/` or, in a comparison, `workdir/models/<strategy>/`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections

from translearn_jax.downstream.tagging import TaggingTask, truncated_words
from translearn_jax.evaluation import plots
from translearn_jax.experiments import finetune
from translearn_jax.experiments import runs as runs_lib
from translearn_jax.training.metrics import info, write_json


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  save = runs_lib.save_policy(config) != 'none'
  task = TaggingTask(config)
  truncated = truncated_words(task.inputs['test'][2], task.corpora['test'])
  info('CoNLL: %d/%d/%d sentences, %d tags; %d test words beyond model.max_tokens',
       *(len(task.corpora[k].sentences) for k in ('train', 'dev', 'test')),
       len(task.tag_names), truncated)
  results = runs_lib.run_all(
      config, workdir,
      lambda st, seed, run_dir: finetune.finetune(task, st, seed, config, run_dir, save),
      higher_is_better=task.higher_is_better)
  rows = runs_lib.summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0, 'metric': 'span F1',
             'truncated_test_words': truncated, 'pretrained': dict(config.init),
             'seeds': sorted({seed for _, seed in runs_lib.run_list(config)}),
             'test_digest': runs_lib.test_digest(task.corpora['test'].sentences,
                                                 task.corpora['test'].tags),
             'stopped_by_signal': runs_lib.stopped_by_signal(results)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(runs_lib.format_table(rows, metric='test span F1'))
    types = runs_lib.format_types(rows)
    if types:
      print(types)
    plots.gain_plot(rows, os.path.join(workdir, 'gains.png'),
                    f'{os.path.basename(os.path.dirname(os.path.abspath(config.data.train_path)))}'
                    ': transfer vs scratch', metric='span F1')
  return summary
