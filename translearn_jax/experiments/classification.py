"""Text classification with transfer: `train_and_evaluate(config, workdir)`.

One run trains the downstream model with `config.transfer.strategy` from the
pretrained tree named by `config.init`. With
`config.compare_scratch=True` it trains, for each of `config.seeds` seeds, the
same model from scratch and with every strategy in
`config.transfer.strategies`, and prints test accuracy mean ± 95% CI per
strategy (and the gain over scratch). Model selection: the epoch with the best
dev accuracy; its test accuracy is reported. Each fine-tuning run trains on the
shared loop (`experiments.finetune`) in `workdir/runs/<strategy>-seed<k>/`
(checkpoints, metrics, exact resume); finished runs go to `runs.jsonl`. The
best-dev model is saved (`config.save_models`, see `experiments.runs`): a
single run's as `workdir/model/`, a comparison's per strategy as
`workdir/models/<strategy>/` (`serving.predict_file` runs them).

Pretrained sources (`config.init.kind`):
* `word2vec`: a vectors file (word2vec text or binary, GloVe, fastText
  `.vec`); rows are remapped by word into
  the downstream vocabulary (words of the training split);
* `lm`: an LM run directory (its config.json, tokenizer.model, newest
  checkpoint); the classifier reuses its tokenizer and architecture;
* `none`: scratch only.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections

from translearn_jax.downstream.classification import ClassificationTask, class_scores
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation import plots
from translearn_jax.experiments import finetune
from translearn_jax.experiments import runs as runs_lib
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import probes


PROBES = {'linear_probe_logistic': 'logistic', 'linear_probe_svm': 'svm'}
METRIC_LABEL = {'accuracy': 'acc', 'macro_f1': 'macro-F1'}


def run_probe(task: ClassificationTask, strategy: str, seed: int, config=None,
              run_dir: str = '', save: bool = False) -> dict:
  """A linear probe on the frozen pretrained backbone's pooled features.

  The chosen probe and the feature standardisation are folded into the model's
  head (`probes.fold`), and dev/test accuracy are measured through the task
  model with those parameters, so its saved model (`save`: `run_dir/best_model`)
  predicts exactly what is reported."""
  params, report = task.init_params(seed, strategy)
  if report is None:
    raise ConfigError(f'{strategy} needs a pretrained source (init.kind)')
  report.frozen = [p for p in graft_lib.flatten(params) if p.startswith('backbone/')]
  report.refuse_frozen_random(params, strategy)
  features = {split: task.features(params, split) for split in task.inputs}
  labels = {split: y for split, (_, _, y) in task.inputs.items()}
  names = task.splits['train'].label_names
  chosen = probes.probe(features, labels, task.num_classes, PROBES[strategy],
                        score=lambda pred, gold: class_scores(pred, gold, names)[task.metric])
  kernel, bias = probes.fold(chosen['w'], chosen['b'], chosen['mu'], chosen['sd'])
  head = params['head']
  params = {**params, 'head': {**head, 'kernel': kernel.astype(head['kernel'].dtype),
                               'bias': bias.astype(head['bias'].dtype)}}
  test, details = task.evaluate_with_details(params, 'test')
  best = {'dev': task.evaluate(params, 'dev'), 'test': test, 'details': details,
          'l2': chosen['l2'], 'epoch': 0}
  if save:
    finetune.save_best(run_dir, task, params, config, strategy, seed, best, report)
  best.update(strategy=strategy, seed=seed, params=params, report=report, plan={})
  return best


def run_once(task: ClassificationTask, strategy: str, seed: int, config, run_dir: str,
             save: bool = False) -> dict:
  """One run: a linear probe, or fine-tuning on the shared loop (`experiments.finetune`);
  `save`: its best model is saved as `run_dir/best_model`."""
  if strategy in PROBES:
    return run_probe(task, strategy, seed, config, run_dir, save)
  return finetune.finetune(task, strategy, seed, config, run_dir, save)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  save = runs_lib.save_policy(config) != 'none'
  task = ClassificationTask(config)
  info('%s: %d train / %d dev / %d test examples, %d classes', config.data.path,
       *(len(task.splits[k].labels) for k in ('train', 'dev', 'test')), task.num_classes)

  def on_result(r):
    if r['report'] is not None and not config.compare_scratch and jax.process_index() == 0:
      print(r['report'].summary())

  results = runs_lib.run_all(
      config, workdir, lambda st, seed, run_dir: run_once(task, st, seed, config, run_dir, save),
      on_result, higher_is_better=task.higher_is_better)
  rows = runs_lib.summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0, 'metric': task.metric,
             'data': {k: len(v.labels) for k, v in task.splits.items()},
             'seeds': sorted({seed for _, seed in runs_lib.run_list(config)}),
             'test_digest': runs_lib.test_digest(task.splits['test'].texts,
                                                 task.splits['test'].labels.tolist()),
             'pretrained': dict(config.init),
             'stopped_by_signal': runs_lib.stopped_by_signal(results)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(runs_lib.format_table(rows, metric=f'test {METRIC_LABEL[task.metric]}'))
    classes = runs_lib.format_types(rows, 'classes')
    if classes:
      print(classes)
    plots.gain_plot(rows, os.path.join(workdir, 'gains.png'),
                    f'{os.path.basename(os.path.normpath(config.data.path))}: transfer vs scratch')
  return summary
