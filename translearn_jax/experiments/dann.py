"""Adversarial domain adaptation (DANN, Ganin et al. 2016) for text classification.

Labelled *source-domain* examples train the classifier; unlabelled
*target-domain* texts only feed a domain classifier that sits on the pooled
features behind a gradient-reversal layer, so the shared features are pushed
to be uninformative about the domain. The target's labels are used only to
score the result (its test split).

Parameters are two plain trees, `{'task': classifier, 'domain': domain head}`;
the classifier is the bag-of-embeddings model of `downstream.models`
initialised from pretrained word vectors by the usual graft (vocabulary:
source and target-train texts). Each step draws one labelled source batch and
one target batch: loss = CE(source labels) + CE(domain of both batches), with
the reversal weight `lambda` following Ganin et al.'s schedule up to
`dann.lambda_max`. `no adaptation` is the same program with `lambda = 0`
(the domain head still trains, but nothing flows back into the features), so
the two differ only in the reversal. Both run over the same seeds; the
report gives target test accuracy (mean ± 95% CI) and the paired gain.
"""

from __future__ import annotations

import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import labelled
from translearn_jax.downstream import classification, models
from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.fusion.gradient_reversal import dann_lambda, grad_reverse
from translearn_jax.downstream.task import trimmed_width
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import optimizers
from translearn_jax.training.loop import Run
from translearn_jax.training.state import TrainState, init_params
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer import sources


class DomainHead(nn.Module):
  hidden: int = 64

  @nn.compact
  def __call__(self, features):
    h = nn.relu(nn.Dense(self.hidden, name='hidden')(features))
    return nn.Dense(2, name='out')(h)


class DannSetup:
  def __init__(self, config):
    self.config = config
    src = labelled.read_labelled(config.source_data)
    self.target = labelled.read_splits(config.data)
    tgt = self.target['train']
    if src.keys != tgt.keys:
      mapping = parse_label_mapping(config.dann.label_mapping, src.label_names, tgt.label_names)
      src = labelled.LabelledText(src.texts, np.asarray([mapping[i] for i in src.labels],
                                                        np.int32), tgt.label_names, src.source)
    self.source = src
    self.num_classes = len(tgt.label_names)
    self.vocab = classification.word_vocab(src.texts + self.target['train'].texts)
    m = config.model
    self.model = models.BagOfEmbeddings(len(self.vocab), m.dim, self.num_classes, m.dropout)
    self.domain = DomainHead(config.dann.hidden)
    enc = lambda texts, n: classification.encode_words(texts, self.vocab, n)
    self.src_inputs = (*enc(src.texts, m.source_max_tokens), src.labels)
    self.tgt_inputs = {k: (*enc(v.texts, m.max_tokens), v.labels)
                       for k, v in self.target.items()}
    src = sources.load('word2vec', config.init.path, binary=config.init.binary,
                       unicode_errors=config.init.get('unicode_errors', 'strict'),
                       field='init.path')
    self.pretrained = src.params
    self.remap = {'backbone/embed/embedding': (src.vocab, self.vocab, src.subword)}
    self.rules = graft_lib.parse_rules(config.init.rules)
    self._logits = jax.jit(lambda p, t, m: self.model.apply({'params': p}, t, m))

  def init(self, seed: int):
    toks, mask, _ = self.src_inputs
    task = init_params(self.model, jax.random.key(seed), toks[:2, :8], mask[:2, :8])
    task, report = graft_lib.graft(task, self.pretrained, self.rules, vocab_remap=self.remap,
                                   remap_init=self.config.init.remap_init, seed=seed)
    dom = init_params(self.domain, jax.random.key(seed + 7), jnp.zeros((1, self.config.model.dim)))
    return {'task': task, 'domain': dom}, report

  def accuracy(self, params, split: str, batch: int = 512) -> float:
    toks, mask, labels = self.tgt_inputs[split]
    correct = 0
    for lo in range(0, len(labels), batch):
      pred = np.asarray(jnp.argmax(self._logits(params['task'], toks[lo:lo + batch],
                                                mask[lo:lo + batch]), -1))
      correct += int((pred == labels[lo:lo + batch]).sum())
    return correct / len(labels)


def parse_label_mapping(spec: str, src_names, tgt_names) -> dict[int, int]:
  """'neg=negative,pos=positive' -> {source id: target id}."""
  pairs = dict(p.split('=', 1) for p in spec.split(',') if '=' in p)
  pairs = {k.strip(): v.strip() for k, v in pairs.items()}
  bad = [s for s in src_names if pairs.get(s) not in tgt_names]
  if bad:
    raise ConfigError(f'dann.label_mapping {spec!r} must map every source label {src_names} '
                      f'to a target label {tgt_names}; unmapped: {bad}')
  return {i: tgt_names.index(pairs[s]) for i, s in enumerate(src_names)}


def make_step(setup: DannSetup, tx, lambda_max: float, total_steps: int):
  model, domain = setup.model, setup.domain

  def step(params, opt_state, src, tgt, t, rng):
    lam = lambda_max * dann_lambda(t / max(total_steps, 1))

    def loss_fn(p):
      logits, f_src = model.apply({'params': p['task']}, src[0], src[1], deterministic=False,
                                  with_features=True, rngs={'dropout': rng})
      f_tgt = model.apply({'params': p['task']}, tgt[0], tgt[1], return_features=True)
      task_loss = optax.softmax_cross_entropy_with_integer_labels(logits, src[2]).mean()
      f = jnp.concatenate([f_src, f_tgt])
      d_logits = domain.apply({'params': p['domain']}, grad_reverse(f, lam))
      d_labels = jnp.concatenate([jnp.zeros(len(f_src), jnp.int32),
                                  jnp.ones(len(f_tgt), jnp.int32)])
      d_loss = optax.softmax_cross_entropy_with_integer_labels(d_logits, d_labels).mean()
      d_acc = (jnp.argmax(d_logits, -1) == d_labels).mean()
      return task_loss + d_loss, (task_loss, d_loss, d_acc)

    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux
  return step


RESULT = 'result.json'


def run_once(setup: DannSetup, seed: int, lambda_max: float, run_dir: str) -> dict:
  """One DANN (or, with `lambda_max=0`, no-adaptation) run on the shared loop in `run_dir`;
  a finished run's result (`run_dir/result.json`, of the same `train.steps`) is read back,
  not trained again (a rerun of the workdir; a changed config is refused before this)."""
  config = setup.config
  done = os.path.join(run_dir, RESULT)
  if os.path.exists(done):
    with open(done, encoding='utf-8') as f:
      rec = json.load(f)
    if rec.get('steps') == config.train.steps:
      return rec['result']
  params, report = setup.init(seed)
  bs = config.train.batch_size
  s_toks, s_mask, s_lab = setup.src_inputs
  t_toks, t_mask, _ = setup.tgt_inputs['train']
  steps = config.train.steps
  tx, _ = optimizers.make({'learning_rate': config.optim.learning_rate, 'schedule': 'linear',
                           'grad_clip': 1.0, 'no_decay': ''}, None, steps)
  params = jax.tree.map(jnp.copy, params)  # own buffers: the step donates (updates in place)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.key(seed + 1000))
  inner = make_step(setup, tx, lambda_max, steps)
  mesh = mesh_lib.mesh_from_config(config)
  shardings = None
  if mesh.devices.size > 1:   # data parallel: the model names no logical axes (replicated)
    mesh_lib.require_batch_split(bs, mesh, 'config.train.batch_size')
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    state = jax.device_put(state, shardings)

  def step(state, batch):
    params, opt_state, (task_loss, d_loss, d_acc) = inner(
        state.params, state.opt_state, batch['source'], batch['target'], state.step,
        jax.random.fold_in(state.rng, state.step))
    return (state.replace(step=state.step + 1, params=params, opt_state=opt_state),
            {'loss_sum': task_loss + d_loss, 'loss_count': jnp.ones(()), 'task_loss': task_loss,
             'domain_loss': d_loss, 'domain_accuracy': d_acc})
  step = mesh_lib.jit_step(step, mesh, shardings)

  def trim(toks, mask, idx):
    w = trimmed_width(mask[idx])
    return toks[idx, :w], mask[idx, :w]

  def stream(position):
    rng = np.random.default_rng([seed, 23])
    for t in range(steps):
      si = rng.choice(len(s_lab), bs, replace=False)
      ti = rng.choice(len(t_toks), bs, replace=False)
      if t >= position.get('step', 0):   # resumed: the draws before it are replayed, unused
        yield {'step': t + 1}, {'source': (*trim(s_toks, s_mask, si), s_lab[si]),
                                'target': trim(t_toks, t_mask, ti)}

  with Run(run_dir, keep=2, label=f'{"DANN" if lambda_max else "no adaptation"} seed {seed}'
           ) as run:
    state, position = run.restore(state)
    result = run.train(
        state=state, stream=stream(position), step_fn=step,
        to_device=(lambda b: b) if shardings is None else functools.partial(
            mesh_lib.shard_global_batch, mesh=mesh),
        total_steps=steps, steps_per_call=1, checkpoint_every=max(steps // 4, 1),
        log_every=config.get('log_every_steps', 0) or steps, units_per_step=bs,
        units_name='examples', data_state=position, progress=config.get('progress', False))
  m = result.last_metrics
  params = result.state.params
  out = {'seed': seed, 'lambda_max': lambda_max, 'test': setup.accuracy(params, 'test'),
         'dev': setup.accuracy(params, 'dev'), 'final_task_loss': m.get('task_loss'),
         'final_domain_loss': m.get('domain_loss'),
         'final_domain_accuracy': m.get('domain_accuracy'), 'report': report,
         'stopped': result.stopped_by_signal}
  if not result.stopped_by_signal and jax.process_index() == 0:
    write_json(done, {'steps': steps, 'result': out})
  return out


def _mean_known(values):
  known = [v for v in values if v is not None]
  return float(np.mean(known)) if known else None


def validate(config: ml_collections.ConfigDict) -> None:
  """DANN's settings that need no data, refused by name (`train.run` calls this before the
  workdir is taken): a domain head of no units divided by zero, a negative reversal weight
  trained the features to tell the domains apart while the report said DANN."""
  d = config.dann
  if not (isinstance(d.hidden, int) and d.hidden >= 1):
    raise ConfigError(f'config.dann.hidden: the domain classifier\'s hidden units must be an '
                      f'integer >= 1, got {d.hidden!r}')
  if not 0 < d.lambda_max < float('inf'):       # NaN fails too
    raise ConfigError(f'config.dann.lambda_max: the reversal weight reached at the end must '
                      f'be a finite number > 0 (no adaptation is the run with 0, made '
                      f'beside it), got {d.lambda_max!r}')
  for field in ('steps', 'batch_size'):
    v = config.train[field]
    if not (isinstance(v, int) and v >= 1):
      raise ConfigError(f'config.train.{field}: must be an integer >= 1, got {v!r}')
  optimizers.check({'learning_rate': config.optim.learning_rate})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  classification.require_accuracy(config, 'DANN')
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  setup = DannSetup(config)
  info('DANN: %d labelled source texts, %d unlabelled target texts, vocab %d',
       len(setup.source.labels), len(setup.target['train'].labels), len(setup.vocab))
  bs = config.train.batch_size
  for what, n, field in (('labelled source texts', len(setup.source.labels), 'source_data'),
                         ('target training texts', len(setup.target['train'].labels), 'data')):
    if n < bs:            # each step draws a batch of each without replacement
      raise DataError(f'config.train.batch_size={bs}: config.{field} has only {n} {what} '
                      '(a step draws a batch of each without replacement)')
  conditions = {'no adaptation': 0.0, 'DANN': config.dann.lambda_max}
  results = {name: [] for name in conditions}
  for seed in range(config.seeds):
    for name, lam in conditions.items():
      r = run_once(setup, seed, lam,
                   os.path.join(workdir, 'runs', f'{name.replace(" ", "_")}-seed{seed}'))
      if r['stopped']:
        return {'stopped_by_signal': True}
      results[name].append(r)
      acc = r['final_domain_accuracy']        # None: resumed at its last step, none logged
      info('%-14s seed %d: target test %.4f, domain acc %s', name, seed, r['test'],
           'n/a' if acc is None else f'{acc:.3f}')
  rows = []
  base = [r['test'] for r in results['no adaptation']]
  for name, rs in results.items():
    acc = [r['test'] for r in rs]
    m, h = mean_ci(acc)
    row = {'condition': name, 'seeds': len(rs), 'test_mean': m, 'test_ci95': h, 'test': acc,
           'final_domain_accuracy': _mean_known([r['final_domain_accuracy'] for r in rs])}
    if name != 'no adaptation':
      row['gain_mean'], row['gain_ci95'] = mean_ci(np.subtract(acc, base).tolist())
    rows.append(row)
  summary = {'rows': rows, 'seconds': time.perf_counter() - t0,
             'source_examples': len(setup.source.labels),
             'target_unlabelled': len(setup.target['train'].labels),
             'target_test': len(setup.target['test'].labels)}
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'dann.json'), summary)
    print(f'{"condition":<14} {"target test acc % (95% CI)":>28} {"gain (paired)":>16} '
          f'{"domain acc":>10}')
    for r in rows:
      gain = fmt(r['gain_mean'], r['gain_ci95'], sign=True) if 'gain_mean' in r else ''
      dom = r['final_domain_accuracy']
      print(f'{r["condition"]:<14} {fmt(r["test_mean"], r["test_ci95"]):>28} '
            f'{gain:>16} {"n/a" if dom is None else format(dom, ".3f"):>10}')
  return summary
