"""Multi-task learning: one shared LM backbone, one head per task, a task-mixing sampler.

Tasks (any subset, `multitask.tasks`):
* `mr`: sentence classification (`downstream.classification`, `lm_encoder` model);
* `ner`: CoNLL tagging (`downstream.tagging`);
* `lm`: next-token prediction on a text corpus (the backbone's own tied output).

Parameters: `{'backbone': shared LM body, 'heads': {'mr': ..., 'ner': ...}}`
(the LM task has no head of its own). The backbone is grafted from the
pretrained LM run (`pretrained.path`) or, with `multitask.init='scratch'`,
freshly initialised. At every step `fusion.mixing.TaskSampler` picks one task
(proportional / temperature / equal mixing over the tasks' training sizes);
that task's batch updates the backbone and its own head. The backbone has one
AdamW; each head has its own AdamW that only steps when its task is drawn
(so an idle head is not moved by stale momentum, as in PyTorch where a
parameter without a gradient is skipped). One jitted step per task.

Logged every `log_every_steps` (metrics.jsonl / TensorBoard): per-task mean
loss and how many steps each task got. At the end: MR test accuracy, NER test
span F1, LM held-out perplexity, written to `multitask.json`.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import readers
from translearn_jax.data.lm_data import pack, split_documents
from translearn_jax.data.tokenizer import EOS
from translearn_jax.downstream import classification, tagging
from translearn_jax.errors import ConfigError
from translearn_jax.fusion.mixing import TaskSampler
from translearn_jax.models import transformer_lm
from translearn_jax.training.metrics import MetricWriter, info, write_json
from translearn_jax.transfer import strategies

TASKS = ('mr', 'ner', 'lm')


class LMTask:
  """Packed rows of a text corpus in the backbone's tokenizer, with held-out documents."""

  def __init__(self, config, tokenizer, seq_len: int):
    spec = readers.TextSpec.from_config(config)
    docs = list(readers.read_documents(spec))
    train, valid = split_documents(docs, config.valid_fraction, 0)
    enc = lambda ds: np.concatenate([np.asarray([EOS] + ids, np.int32)
                                     for ids in tokenizer.encode_batch(ds)])
    self.rows = np.asarray(pack(enc(train), seq_len))
    self.valid_rows = np.asarray(pack(enc(valid), seq_len, 'held-out')) if valid else None


class MultiTask:
  def __init__(self, config):
    self.config = config
    names = [t.strip() for t in config.multitask.tasks.split(',') if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
      raise ConfigError(f'multitask.tasks: unknown {bad} (known: {TASKS})')
    self.names = names
    self.setups = {}
    if 'mr' in names:
      self.setups['mr'] = classification.Setup(config.mr)
    if 'ner' in names:
      self.setups['ner'] = tagging.Setup(config.ner)
    any_setup = next(iter(self.setups.values()), None)
    source = any_setup.source if any_setup else classification.load_source(config.mr)
    self.source = source
    self.lm_config = source['lm_config']
    if not isinstance(self.lm_config, transformer_lm.TransformerConfig):
      raise ConfigError('multi-task learning is implemented for Transformer LM backbones')
    self.lm_model = transformer_lm.TransformerLM(self.lm_config.replace(deterministic=False))
    if 'lm' in names:
      self.lm = LMTask(config.lm_data, source['tokenizer'], config.multitask.lm_seq_len)
    self.sizes = [self._size(t) for t in names]

  def _size(self, task: str) -> int:
    if task == 'mr':
      return len(self.setups['mr'].inputs['train'][2])
    if task == 'ner':
      return len(self.setups['ner'].inputs['train'][0])
    return len(self.lm.rows)

  def init_params(self, seed: int):
    strategy = 'scratch' if self.config.multitask.init == 'scratch' else 'finetune'
    heads, backbone = {}, None
    for t in self.names:
      if t == 'lm':
        continue
      p, _ = self.setups[t].init_params(seed, strategy)
      heads[t] = p['head']
      backbone = p['backbone'] if backbone is None else backbone
    if backbone is None:  # LM task only
      backbone = self.lm_model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params']
      if strategy != 'scratch':
        backbone = jax.tree.map(jnp.asarray, self.source['params'])
    return {'backbone': backbone, 'heads': heads}

  def loss_fn(self, task: str):
    if task == 'mr':
      model = self.setups['mr'].model
      return lambda b, h, batch, rng: classification.classification_loss(
          model, {'backbone': b, 'head': h}, batch['tokens'], batch['mask'], batch['labels'], rng)
    if task == 'ner':
      model = self.setups['ner'].model
      return lambda b, h, batch, rng: tagging.tagging_loss(
          model, {'backbone': b, 'head': h}, batch['tokens'], batch['mask'], batch['positions'],
          batch['tags'], rng)

    def lm_loss(b, h, batch, rng):
      del h
      rows = batch['tokens']
      logits = self.lm_model.apply({'params': b}, rows[:, :-1], rngs={'dropout': rng})
      return optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), rows[:, 1:]).mean()
    return lm_loss

  def batch(self, task: str, draw: int, bs: int, seed: int) -> dict:
    """The `draw`-th batch of `task` (epoch-wise reshuffled, deterministic)."""
    n = self._size(task)
    per_epoch = max(n // bs, 1)
    epoch, i = divmod(draw, per_epoch)
    idx = np.random.default_rng([seed, TASKS.index(task), epoch]).permutation(n)[i * bs:(i + 1) * bs]
    if task == 'mr':
      toks, mask, labels = self.setups['mr'].inputs['train']
      w = classification.trimmed_width(mask[idx])
      return {'tokens': toks[idx, :w], 'mask': mask[idx, :w], 'labels': labels[idx]}
    if task == 'ner':
      toks, mask, pos, tags = self.setups['ner'].inputs['train']
      return {'tokens': toks[idx], 'mask': mask[idx], 'positions': pos[idx], 'tags': tags[idx]}
    return {'tokens': self.lm.rows[idx]}

  def evaluate(self, params) -> dict:
    out = {}
    full = lambda t: {'backbone': params['backbone'], 'head': params['heads'][t]}
    if 'mr' in self.names:
      out['mr_test_accuracy'] = self.setups['mr'].accuracy(full('mr'), 'test')
    if 'ner' in self.names:
      out['ner_test_f1'] = self.setups['ner'].f1(full('ner'), 'test')
    if 'lm' in self.names and self.lm.valid_rows is not None:
      model = transformer_lm.TransformerLM(self.lm_config.replace(deterministic=True))
      f = jax.jit(lambda b, r: optax.softmax_cross_entropy_with_integer_labels(
          model.apply({'params': b}, r[:, :-1]).astype(jnp.float32), r[:, 1:]).sum())
      rows = self.lm.valid_rows[:self.config.multitask.lm_eval_rows or None]
      total = sum(float(f(params['backbone'], rows[i:i + 32])) for i in range(0, len(rows), 32))
      out['lm_valid_perplexity'] = math.exp(total / (len(rows) * (rows.shape[1] - 1)))
    return out


def train(mt: MultiTask, seed: int, steps: int, writer=None) -> tuple[dict, dict]:
  """(final params, per-task step counts)."""
  c = mt.config.multitask
  params = mt.init_params(seed)

  def adamw():
    sched = strategies.make_schedule(c.schedule, c.learning_rate, steps)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(sched, weight_decay=c.weight_decay))
  tx_b = adamw()
  tx_h = {t: adamw() for t in params['heads']}
  opt_b = tx_b.init(params['backbone'])
  opt_h = {t: tx_h[t].init(h) for t, h in params['heads'].items()}

  def make_step(task):
    loss = mt.loss_fn(task)
    has_head = task in tx_h

    @jax.jit
    def step(b, h, ob, oh, batch, rng):
      value, (gb, gh) = jax.value_and_grad(loss, argnums=(0, 1))(b, h, batch, rng)
      ub, ob = tx_b.update(gb, ob, b)
      b = optax.apply_updates(b, ub)
      if has_head:
        uh, oh = tx_h[task].update(gh, oh, h)
        h = optax.apply_updates(h, uh)
      return b, h, ob, oh, value
    return step

  steps_fn = {t: make_step(t) for t in mt.names}
  sampler = TaskSampler(mt.sizes, c.mixing, c.temperature, seed)
  draws = {t: 0 for t in mt.names}
  window = {t: [] for t in mt.names}
  key = jax.random.key(seed + 3000)
  for s in range(steps):
    task = mt.names[sampler.task_at(s)]
    bs = mt.config.multitask.batch_size
    batch = mt.batch(task, draws[task], bs, seed)
    draws[task] += 1
    h, oh = params['heads'].get(task, {}), opt_h.get(task, ())
    b, h, opt_b, oh, value = steps_fn[task](params['backbone'], h, opt_b, oh, batch,
                                             jax.random.fold_in(key, s))
    params = {'backbone': b, 'heads': {**params['heads'], **({task: h} if task in tx_h else {})}}
    if task in opt_h:
      opt_h[task] = oh
    window[task].append(float(value))
    if writer is not None and ((s + 1) % mt.config.log_every_steps == 0 or s + 1 == steps):
      metrics = {f'{t}_loss': float(np.mean(v)) for t, v in window.items() if v}
      metrics.update({f'{t}_steps': draws[t] for t in mt.names})
      writer.write(s + 1, metrics)
      window = {t: [] for t in mt.names}
  return params, draws


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  mt = MultiTask(config)
  c = config.multitask
  probs = TaskSampler(mt.sizes, c.mixing, c.temperature).probs
  info('multi-task: %s', ', '.join(f'{t} ({n} examples, p={p:.3f})'
                                   for t, n, p in zip(mt.names, mt.sizes, probs)))
  writer = MetricWriter(workdir)
  try:
    params, draws = train(mt, config.seed, c.steps, writer)
  finally:
    writer.close()
  results = mt.evaluate(params)
  summary = {'tasks': mt.names, 'sizes': mt.sizes, 'mixing': c.mixing,
             'probabilities': probs.tolist(), 'steps_per_task': draws, 'results': results,
             'seconds': time.perf_counter() - t0}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'multitask.json'), summary)
    print(' '.join(f'{k}={v:.4f}' for k, v in results.items()),
          '| steps per task:', draws)
  return summary
