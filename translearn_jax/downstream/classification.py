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
from collections import Counter

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import labelled
from translearn_jax.data.tokenizer import EOS
from translearn_jax.data.vocab import tokenize
from translearn_jax.downstream import models
from translearn_jax.downstream import runs as runs_lib
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.evaluation.stats import mean_ci
from translearn_jax.export.word2vec_format import load_word2vec
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import probes
from translearn_jax.transfer import strategies

UNK = 1


# -- pretrained sources and inputs -----------------------------------------------------

def load_source(config) -> dict:
  """{'params', 'vocab' (token strings or None), 'lm_config', 'tokenizer'}."""
  p = config.pretrained
  if p.kind == 'none':
    return {'params': None}
  if p.kind == 'word2vec':
    words, vecs = load_word2vec(p.path, binary=p.binary)
    return {'params': {'embedding': vecs}, 'vocab': words}
  if p.kind == 'lm':
    from translearn_jax.generation.sample import load_run
    lm_config, tok, mcfg, params = load_run(p.path)
    return {'params': jax.device_get(params), 'lm_config': mcfg, 'tokenizer': tok,
            'vocab': [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]}
  raise ConfigError(f"pretrained.kind must be 'word2vec', 'lm' or 'none', got {p.kind!r}")


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


def encode_pieces(texts, tokenizer, max_tokens: int):
  """sentencepiece ids, each text prefixed with EOS (a document start, as in LM training)."""
  toks = np.zeros((len(texts), max_tokens), np.int32)
  mask = np.zeros((len(texts), max_tokens), bool)
  for r, ids in enumerate(tokenizer.encode_batch(list(texts))):
    ids = ([EOS] + ids)[:max_tokens]
    toks[r, :len(ids)] = ids
    mask[r, :len(ids)] = True
  return toks, mask


class Setup:
  """Data, model and pretrained source shared by every (strategy, seed) run."""

  def __init__(self, config):
    self.config = config
    self.splits = labelled.read_splits(config.data)
    self.num_classes = len(self.splits['train'].label_names)
    self.source = load_source(config)
    m = config.model
    if m.type == 'bag_of_embeddings':
      self.vocab = word_vocab(self.splits['train'].texts)
      self.model = models.BagOfEmbeddings(len(self.vocab), m.dim, self.num_classes, m.dropout)
      enc = lambda t: encode_words(t, self.vocab, m.max_tokens)
      self.vocab_remap = ({'backbone/embed/embedding': (self.source['vocab'], self.vocab)}
                          if self.source['params'] is not None else {})
    elif m.type == 'lm_encoder':
      if 'lm_config' not in self.source:
        raise ConfigError("model.type='lm_encoder' needs pretrained.kind='lm' (its "
                          'architecture and tokenizer)')
      max_len = getattr(self.source['lm_config'], 'max_len', None)
      if max_len is not None and m.max_tokens > max_len:
        raise ConfigError(f'config.model.max_tokens={m.max_tokens} exceeds the pretrained '
                          f'LM context (its model.max_len={max_len})')
      lm_cfg = self.source['lm_config']
      if m.get('lora_rank', 0):
        if not hasattr(lm_cfg, 'lora_rank'):
          raise ConfigError('config.model.lora_rank: LoRA adapters exist for Transformer '
                            'backbones only')
        lm_cfg = lm_cfg.replace(lora_rank=m.lora_rank)
      self.source['lm_config'] = lm_cfg
      self.model = models.EncoderClassifier(lm_cfg, self.num_classes,
                                            m.pooling, m.dropout)
      enc = lambda t: encode_pieces(t, self.source['tokenizer'], m.max_tokens)
      self.vocab_remap = {}
    else:
      raise ConfigError(f"model.type must be 'bag_of_embeddings' or 'lm_encoder', got {m.type!r}")
    self.inputs = {k: (*enc(v.texts), v.labels) for k, v in self.splits.items()}
    self.rules = graft_lib.parse_rules(config.graft.rules)
    self.groups = strategies.parse_groups(config.transfer.groups)
    self._eval = jax.jit(lambda p, t, m: self.model.apply({'params': p}, t, m))

  def init_params(self, seed: int, strategy: str):
    toks, mask, _ = self.inputs['train']
    params = self.model.init(jax.random.key(seed), toks[:2], mask[:2])['params']
    if strategy == 'scratch' or self.source['params'] is None:
      return params, None
    params, report = graft_lib.graft(params, self.source['params'], self.rules,
                                     vocab_remap=self.vocab_remap,
                                     remap_init=self.config.pretrained.remap_init, seed=seed)
    return params, report

  def accuracy(self, params, split: str, batch: int = 512) -> float:
    toks, mask, labels = self.inputs[split]
    order = np.argsort(mask.sum(1), kind='stable')
    correct = 0
    for lo in range(0, len(labels), batch):
      idx = order[lo:lo + batch]
      w = trimmed_width(mask[idx])
      logits = self._eval(params, toks[idx, :w], mask[idx, :w])
      correct += int((np.asarray(jnp.argmax(logits, -1)) == labels[idx]).sum())
    return correct / len(labels)


def trimmed_width(mask: np.ndarray, multiple: int = 16) -> int:
  """Columns a batch needs: its longest real row, rounded up (few distinct shapes to compile).

  Exact for every classifier here: padding is masked out of pooling, and the
  LM encoder's causal attention never lets a position see later (padded) ones.
  """
  need = max(int(mask.sum(1).max()), 1)
  return min(mask.shape[1], -(-need // multiple) * multiple)


def length_grouped_batches(lengths: np.ndarray, batch: int, rng: np.random.Generator,
                           chunk: int = 50) -> list[np.ndarray]:
  """Full batches of shuffled examples with similar lengths.

  The shuffled order is cut into chunks of `chunk` batches, each chunk is sorted
  by length and cut into batches, and the batch order is shuffled: batches stay
  random in content but need little padding.
  """
  order = rng.permutation(len(lengths))
  n = len(order) // batch * batch
  batches = []
  for lo in range(0, n, batch * chunk):
    part = order[lo:min(lo + batch * chunk, n)]
    part = part[np.argsort(lengths[part], kind='stable')]
    batches += [part[i:i + batch] for i in range(0, len(part), batch)]
  return [batches[i] for i in rng.permutation(len(batches))]


def strategy_config(config, strategy: str) -> strategies.StrategyConfig:
  t = config.transfer
  return strategies.StrategyConfig(
      strategy='finetune' if strategy == 'scratch' else strategy,
      learning_rate=t.learning_rate, schedule=t.schedule, warmup_steps=t.warmup_steps,
      factor=t.factor, unfreeze_every=t.unfreeze_every,
      freeze_bottom=t.get('freeze_bottom', 0), weight_decay=t.weight_decay,
      grad_clip=t.grad_clip)


PROBES = {'linear_probe_logistic': 'logistic', 'linear_probe_svm': 'svm'}


def run_probe(setup: Setup, strategy: str, seed: int) -> dict:
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


def classification_loss(model, params, tokens, mask, labels, rng):
  logits = model.apply({'params': params}, tokens, mask, deterministic=False,
                       rngs={'dropout': rng})
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_step(model, tx, frozen=None):
  """`(params, opt_state, tokens, mask, labels, rng) -> (params, opt_state, loss)`, not jitted
  (callers jit it, or vmap it over seeds first). `frozen`: `strategies.frozen_mask`, whose
  leaves get no gradient computed."""
  return strategies.make_train_step(
      lambda p, t, m, y, rng: classification_loss(model, p, t, m, y, rng), tx, frozen)


def run_once(setup: Setup, strategy: str, seed: int) -> dict:
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
    batches = length_grouped_batches(lengths, bs, np.random.default_rng([seed, epoch]))
    for i, idx in enumerate(batches):
      w = trimmed_width(mask[idx])
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


def summarise(results: list[dict]) -> list[dict]:
  by = {}
  for r in results:
    by.setdefault(r['strategy'], []).append(r)
  scratch = by.get('scratch')
  rows = []
  for strategy, rs in by.items():
    test = [r['test'] for r in rs]
    m, h = mean_ci(test)
    row = {'strategy': strategy, 'seeds': len(rs), 'test_mean': m, 'test_ci95': h,
           'dev_mean': mean_ci([r['dev'] for r in rs])[0], 'test': test}
    if scratch and strategy != 'scratch':
      paired = {r['seed']: r['test'] for r in scratch}
      gains = [r['test'] - paired[r['seed']] for r in rs if r['seed'] in paired]
      row['gain_mean'], row['gain_ci95'] = mean_ci(gains)
    rows.append(row)
  return rows


def format_table(rows: list[dict], metric: str = 'test acc') -> str:
  out = [f'{"strategy":<20} {"seeds":>5} {metric + " (mean ± 95% CI)":>26} '
         f'{"gain vs scratch (paired)":>26}']
  for r in rows:
    gain = (f'{100 * r["gain_mean"]:+.2f} ± {100 * r["gain_ci95"]:.2f}'
            if 'gain_mean' in r else '')
    out.append(f'{r["strategy"]:<20} {r["seeds"]:>5} '
               f'{100 * r["test_mean"]:>17.2f} ± {100 * r["test_ci95"]:.2f} {gain:>26}')
  return '\n'.join(out)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  setup = Setup(config)
  info('%s: %d train / %d dev / %d test examples, %d classes', config.data.path,
       *(len(setup.splits[k].labels) for k in ('train', 'dev', 'test')), setup.num_classes)

  def on_result(r):
    if r['report'] is not None and not config.compare_scratch and jax.process_index() == 0:
      print(r['report'].summary())

  results = runs_lib.run_all(config, workdir, lambda st, seed: run_once(setup, st, seed),
                             on_result)
  rows = summarise(results)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0,
             'data': {k: len(v.labels) for k, v in setup.splits.items()},
             'pretrained': dict(config.pretrained)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'results.json'), summary)
    print(format_table(rows))
  return summary
