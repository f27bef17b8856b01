"""Text classification as a task: inputs, model, initialisation from a source, loss, scores.

`ClassificationTask(config)` (a `downstream.task.Task`) reads the labelled splits (`config.data`), loads the pretrained
source (`config.init`, through `transfer.sources`), builds the model and
encodes every split; runners (`experiments.classification`, learning curves,
strategy search, multi-task) train it. Pretrained sources:
* `word2vec`: a vectors file (word2vec text or binary, GloVe, fastText
  `.vec`); rows are remapped by word into
  the downstream vocabulary (words of the training split);
* `lm` / `mlm`: an LM or masked-LM encoder run directory; the classifier
  reuses its tokenizer and architecture (`model.type='lm_encoder'`);
* `none`: scratch only.

The metric (`config.eval.metric`; accuracy when the config has none) is 'accuracy' or
'macro_f1' (F1 averaged over the classes that occur in the gold labels or the
predictions, as scikit-learn's `f1_score(average='macro')`; the choice for unbalanced
classes). It picks the best dev epoch and the probes' penalty; the test details of
every run hold both, and each class's precision, recall and F1 (`class_scores`).
"""

from __future__ import annotations

import functools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax

from translearn_jax.data import labelled
from translearn_jax.data.vocab import tokenize
from translearn_jax.downstream import models
from translearn_jax.downstream.task import Task, length_grouped_batches, trimmed_width
from translearn_jax.errors import ConfigError
from translearn_jax.models import lm as lm_models
from translearn_jax.training import memo
from translearn_jax.training.state import init_params
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import sources
from translearn_jax.transfer import strategies

UNK = 1
METRICS = ('accuracy', 'macro_f1')


def metric_name(config) -> str:
  """`config.eval.metric` for a classifier ('accuracy' when the config has none), checked."""
  ev = config.get('eval', None)
  metric = ev.get('metric', 'accuracy') if ev is not None else 'accuracy'
  if metric not in METRICS:
    raise ConfigError(f'config.eval.metric: a classifier is scored by one of {METRICS}, '
                      f'got {metric!r}')
  return metric


def require_accuracy(config, runner: str) -> None:
  """Raises unless `config.eval.metric` is accuracy: for runners that score only accuracy."""
  if metric_name(config) != 'accuracy':
    raise ConfigError(f"config.eval.metric={metric_name(config)!r}: the {runner} runner scores "
                      "accuracy only; use eval.metric='accuracy'")


def class_scores(pred: np.ndarray, gold: np.ndarray, names) -> dict:
  """Accuracy, macro-F1 and each class's precision / recall / F1 / gold / predicted counts.
  A class with no prediction (or no gold example) has precision (recall) 0; macro-F1
  averages the classes that occur in `gold` or `pred` (scikit-learn's convention)."""
  pred, gold = np.asarray(pred), np.asarray(gold)
  classes, f1s = {}, []
  for i, name in enumerate(names):
    tp = int(((pred == i) & (gold == i)).sum())
    n_pred, n_gold = int((pred == i).sum()), int((gold == i).sum())
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    classes[str(name)] = {'precision': p, 'recall': r, 'f1': f1, 'gold': n_gold, 'pred': n_pred}
    if n_pred or n_gold:
      f1s.append(f1)
  return {'accuracy': float((pred == gold).mean()) if len(gold) else 0.0,
          'macro_f1': float(np.mean(f1s)) if f1s else 0.0, 'classes': classes}


# -- inputs ------------------------------------------------------------------------

def word_vocab(texts, min_count: int = 1) -> list[str]:
  counts = Counter(w for t in texts for w in tokenize(t))
  return ['<pad>', '<unk>'] + sorted((w for w, c in counts.items() if c >= min_count),
                                     key=lambda w: (-counts[w], w))


def encode_words(texts, vocab: list[str], max_tokens: int):
  index = {w: i for i, w in enumerate(vocab)}
  toks = np.zeros((len(texts), max_tokens), np.int32)
  for r, t in enumerate(texts):
    ids = [index.get(w, UNK) for w in tokenize(t)][:max_tokens]
    toks[r, :len(ids)] = ids
  return toks, (toks != 0)


def encode_pieces(texts, tokenizer, max_tokens: int, causal: bool = True):
  """sentencepiece ids of each text, framed as the body was pretrained: a causal LM's
  `<eos> text` (a document start), a masked-LM encoder's `<bos> text <eos>` ([CLS] … [SEP])."""
  toks = np.zeros((len(texts), max_tokens), np.int32)
  mask = np.zeros((len(texts), max_tokens), bool)
  bos, eos = tokenizer.bos_id, tokenizer.eos_id
  for r, ids in enumerate(tokenizer.encode_batch(list(texts))):
    ids = ([eos] + ids)[:max_tokens] if causal else [bos] + ids[:max_tokens - 2] + [eos]
    toks[r, :len(ids)] = ids
    mask[r, :len(ids)] = True
  return toks, mask


def check_transferred(report, init, strategy: str) -> None:
  """A transfer run whose graft moved nothing, or whose vocabulary remap found no task word
  in the source, would train from random (or constant) embeddings and report it as transfer:
  one `GraftError` naming `init.path` / `init.rules` instead."""
  if not report.grafted:
    raise graft_lib.GraftError(
        f'config.init.rules: nothing of {init.path} was grafted into the {strategy!r} model '
        f'(rules matched nothing: {report.unmatched_rules}; the source has '
        f'{report.unused_source[:6]}); fix init.rules or init.kind')
  for target, st in report.remapped.items():
    if st['found'] == 0:
      raise graft_lib.GraftError(
          f'config.init.path: {init.path} holds none of the task\'s {st["target_rows"]} words '
          f'({target}): another language or tokenisation? Every row would be initialised '
          f'({st["init"]}), nothing transferred')


class ClassificationTask(Task):
  """Labelled texts → one class each; metric: accuracy or macro-F1 (`config.eval.metric`).
  Shared by every (strategy, seed) run."""
  name = 'classification'
  metric = 'accuracy'
  eval_split = 'test'
  dropout_seed_offset = 1000

  def __init__(self, config):
    self.config = config
    self.metric = metric_name(config)
    self.splits = labelled.read_splits(config.data)
    self.num_classes = len(self.splits['train'].label_names)
    p = config.init
    self.source = sources.load(p.kind, p.path, binary=p.get('binary', False),
                               unicode_errors=p.get('unicode_errors', 'strict'),
                               field='init.path')
    m = config.model
    if m.type == 'bag_of_embeddings':
      self.vocab = word_vocab(self.splits['train'].texts)
      self.model = models.BagOfEmbeddings(len(self.vocab), m.dim, self.num_classes, m.dropout)
      enc = lambda t: encode_words(t, self.vocab, m.max_tokens)
      self.vocab_remap = ({'backbone/embed/embedding': (self.source.vocab, self.vocab,
                                                        self.source.subword)}
                          if self.source.params is not None else {})
    elif m.type == 'lm_encoder':
      lm_cfg = models.lm_backbone_config(self.source, m)
      self.source.model_config = lm_cfg
      self.model = models.EncoderClassifier(lm_cfg, self.num_classes,
                                            m.pooling, m.dropout)
      causal = lm_models.is_causal(lm_cfg)
      if not causal and m.max_tokens < 3:
        raise ConfigError(f'config.model.max_tokens={m.max_tokens}: an encoder reads '
                          '<bos> text <eos>, so at least 3 (one text piece)')
      enc = lambda t: encode_pieces(t, self.source.tokenizer, m.max_tokens, causal)
      self.vocab_remap = {}
    else:
      raise ConfigError(f"model.type must be 'bag_of_embeddings' or 'lm_encoder', got {m.type!r}")
    self.inputs = {k: (*enc(v.texts), v.labels) for k, v in self.splits.items()}
    self.rules = graft_lib.parse_rules(config.init.rules)
    self.groups = strategies.parse_groups(config.transfer.groups)
    self._eval = jitted_apply(self.model)
    self._features = jitted_apply(self.model, return_features=True)

  def inference_spec(self) -> dict:
    """How a saved model of this task reads new text (`serving`): its labels, the
    encoding ('words': `encode_words` over `vocab`; 'pieces': `encode_pieces` with the
    tokenizer), `max_tokens` and the framing; `tokenizer` / `vocab` are saved beside it.
    `text_field`: the field(s) training read its text from (TSV/CSV/JSONL/TFDS; '' for
    MR files), which predictions read by default when a file has them; `header`: 'yes'
    when training skipped a header row above columns given by number."""
    m, d = self.config.model, self.config.data
    words = m.type == 'bag_of_embeddings'
    return {'task': self.name, 'labels': list(self.splits['train'].label_names),
            'encoding': 'words' if words else 'pieces', 'max_tokens': m.max_tokens,
            'causal': None if words else lm_models.is_causal(self.model.lm_config),
            'text_field': d.get('text_field', '') if d.kind != 'mr' else '',
            'header': 'yes' if d.kind in ('tsv', 'csv') and d.get('header') == 'yes' else 'no',
            'tokenizer': None if words else self.source.tokenizer,
            'vocab': list(self.vocab) if words else None}

  def abstract_params(self):
    toks, mask, _ = self.inputs['train']
    return jax.eval_shape(lambda: self.model.init(jax.random.key(0), toks[:2], mask[:2])['params'])

  def init_params(self, seed: int, strategy: str):
    toks, mask, _ = self.inputs['train']
    params = init_params(self.model, jax.random.key(seed), toks[:2], mask[:2])
    if strategy == 'scratch' or self.source.params is None:
      return params, None
    params, report = graft_lib.graft(params, self.source_params(), self.rules,
                                     vocab_remap=self.vocab_remap,
                                     remap_init=self.config.init.remap_init, seed=seed)
    check_transferred(report, self.config.init, strategy)
    return params, report

  def source_params(self):
    """The source's parameter tree as the rules read it: a word2vec run's input table is
    also its `embedding` (what a vectors file gives), so the default rule grafts it."""
    params = self.source.params
    if self.source.kind == 'word2vec_run' and 'embedding' not in params:
      params = {'embedding': params['in_embed'], **params}
    return params

  def num_examples(self, split: str = 'train') -> int:
    return len(self.inputs[split][2])

  def epoch_batches(self, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    lengths = self.inputs['train'][1].sum(1)
    return length_grouped_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))

  def batch(self, idx: np.ndarray, split: str = 'train') -> dict[str, np.ndarray]:
    toks, mask, labels = self.inputs[split]
    w = trimmed_width(mask[idx])
    return {'tokens': toks[idx, :w], 'mask': mask[idx, :w], 'labels': labels[idx]}

  def loss(self, params, batch: dict, rng):
    return classification_batch_loss(self.model, params, batch, rng)

  def loss_fn(self):
    return ('classification', self.model), functools.partial(classification_batch_loss,
                                                             self.model)

  def evaluate(self, params, split: str) -> float:
    return self.scores(params, split)[self.metric]

  def evaluate_with_details(self, params, split: str) -> tuple[float, dict]:
    """The metric, and (details) accuracy, macro-F1 and the scores of each class."""
    scores = self.scores(params, split)
    return scores[self.metric], scores

  def scores(self, params, split: str) -> dict:
    """`class_scores` of the predictions on `split`."""
    return class_scores(self.predictions(params, split), self.inputs[split][2],
                        self.splits['train'].label_names)

  def features(self, params, split: str, batch: int = 512) -> np.ndarray:
    """Pooled backbone features of every example of `split` (linear probes)."""
    toks, mask, _ = self.inputs[split]
    return np.concatenate([np.asarray(self._features(params, toks[i:i + batch],
                                                     mask[i:i + batch]))
                           for i in range(0, len(toks), batch)])

  def predictions(self, params, split: str, batch: int = 512) -> np.ndarray:
    """The predicted class of every example of `split`, in order (computed in batches of
    similar length)."""
    toks, mask, labels = self.inputs[split]
    order = np.argsort(mask.sum(1), kind='stable')
    out = np.zeros(len(labels), np.int32)
    for lo in range(0, len(labels), batch):
      idx = order[lo:lo + batch]
      w = trimmed_width(mask[idx])
      logits = self._eval(params, toks[idx, :w], mask[idx, :w])
      out[idx] = np.asarray(jnp.argmax(logits, -1))
    return out

  def accuracy(self, params, split: str, batch: int = 512) -> float:
    return float((self.predictions(params, split, batch) == self.inputs[split][2]).mean())


@memo.memoized(maxsize=32)
def jitted_apply(model, **kwargs):
  """Jitted `(params, tokens, mask) -> model.apply(...)`, one per model and keywords in a
  process (the runs of a comparison reuse its programs)."""
  return jax.jit(lambda p, t, m: model.apply({'params': p}, t, m, **kwargs))


def classification_batch_loss(model, params, batch: dict, rng):
  return classification_loss(model, params, batch['tokens'], batch['mask'], batch['labels'], rng)


def classification_loss(model, params, tokens, mask, labels, rng):
  logits = model.apply({'params': params}, tokens, mask, deterministic=False,
                       rngs={'dropout': rng})
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
