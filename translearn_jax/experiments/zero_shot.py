"""Zero-shot classification (no labelled training example): `train_and_evaluate(config, workdir)`.

Runs the method of `fusion.zero_shot` that the source (`init.kind`) supports —
`word2vec`: embedding similarity; `lm`: verbalisation scoring — on the configured split
(`eval_split`) and reports accuracy with its 95% Wilson score interval over the split's
examples, next to the majority-class baseline, in `zero_shot.json`. The majority class is
the training split's (the evaluated split's labels are never read but to score): the
baseline, and what embedding similarity answers for a text without a known word.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from translearn_jax.data import labelled
from translearn_jax.downstream import classification
from translearn_jax.errors import ConfigError
from translearn_jax.evaluation.stats import wilson_interval
from translearn_jax.fusion import zero_shot as zs
from translearn_jax.models import lm as lm_models
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import sources


# -- entry point -----------------------------------------------------------------

def accuracy_row(name: str, pred: np.ndarray, labels: np.ndarray, **extra) -> dict:
  correct = int(np.sum(pred == labels))
  low, high = wilson_interval(correct, len(labels))
  return {'method': name, 'accuracy': correct / len(labels), 'ci95_low': low,
          'ci95_high': high, 'examples': len(labels),
          'predicted_counts': np.bincount(pred, minlength=labels.max() + 1).tolist(), **extra}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  classification.require_accuracy(config, 'zero-shot')
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  names = ('train', 'dev', 'test')
  if config.eval_split != 'all' and config.eval_split not in names:
    raise ConfigError(f"config.eval_split must be 'all' or one of {names}, got "
                      f'{config.eval_split!r}')
  splits = labelled.read_splits(config.data)
  label_names = splits['train'].label_names
  if config.eval_split == 'all':
    texts = [t for n in names for t in splits[n].texts]
    labels = np.concatenate([splits[n].labels for n in names])
  else:
    texts, labels = splits[config.eval_split].texts, splits[config.eval_split].labels
  counts = np.bincount(labels, minlength=len(label_names))
  majority = int(np.argmax(np.bincount(splits['train'].labels, minlength=len(label_names))))
  rows = [accuracy_row('majority class', np.full_like(labels, majority), labels)]
  kind = config.init.kind
  if kind == 'word2vec':
    src = sources.load('word2vec', config.init.path, binary=config.init.binary,
                       unicode_errors=config.init.get('unicode_errors', 'strict'))
    desc = zs.parse_label_map(config.zero_shot.descriptions, label_names,
                              'zero_shot.descriptions')
    pred, unknown = zs.embedding_predict(texts, desc, src.vocab, src.params['embedding'],
                                         fallback=majority)
    rows.append(accuracy_row('embedding similarity', pred, labels,
                             texts_without_known_words=unknown))
  elif kind == 'lm':
    src = sources.load('lm', config.init.path)
    verbs = zs.parse_label_map(config.zero_shot.verbalisations, label_names,
                               'zero_shot.verbalisations')
    max_len = min(lm_models.context_len(src.model_config) or config.zero_shot.max_tokens,
                  config.zero_shot.max_tokens)
    scores, prior = zs.lm_scores(lm_models.make(src.model_config), src.params, src.tokenizer,
                                 texts, verbs, max_len)
    rows.append(accuracy_row('LM verbalisation', np.argmax(scores, 1), labels,
                             verbalisations=verbs))
    rows.append(accuracy_row('LM verbalisation, calibrated', np.argmax(scores - prior, 1),
                             labels, verbalisations=verbs, prior=prior.tolist()))
  else:
    raise ConfigError(f"config.init.kind: zero-shot reads 'word2vec' (embedding similarity) "
                      f"or 'lm' (verbalisations), got {kind!r}")
  summary = {'rows': rows, 'label_names': label_names, 'eval_split': config.eval_split,
             'class_counts': counts.tolist(), 'majority_class': label_names[majority],
             'seconds': time.perf_counter() - t0}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'zero_shot.json'), summary)
    print(format_rows(rows))
  info('zero-shot done in %.0f s', summary['seconds'])
  return summary


def format_rows(rows: list[dict]) -> str:
  out = [f'{"method":<32} {"accuracy % [95% Wilson CI]":>28} {"examples":>9}']
  for r in rows:
    acc = (f'{100 * r["accuracy"]:.2f} [{100 * r["ci95_low"]:.2f}, '
           f'{100 * r["ci95_high"]:.2f}]')
    out.append(f'{r["method"]:<32} {acc:>28} {r["examples"]:>9}')
  return '\n'.join(out)
