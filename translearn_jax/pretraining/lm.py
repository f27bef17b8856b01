"""Autoregressive LM pretraining (Transformer or LSTM): `train_and_evaluate(config, workdir)`.

Run through `train.py --config configs/lm_transformer.py` (or `lm_lstm.py`).
Writes to `workdir`: `tokenizer.model` (sentencepiece), `config.json`,
`checkpoints/`, `metrics.jsonl`, `tb/`, and `eval.json` (held-out loss and
perplexity). Sample from a finished run with
`python -m translearn_jax.generation.sample --workdir DIR --prompt "..."`.

`data.kind='pretokenized'` with `data.path` a directory made by
`python -m translearn_jax.data.pretokenized` (issue #19): nothing is read or
tokenised at start-up; each process memory-maps its own shards
(`data.pretokenized.ShardedTokenStream`, resumable like `LMStream`) and the
held-out rows are the directory's `valid.bin`; the tokenizer is the
directory's (or `tokenizer.path`, which must be the same file by sha256).

Over 300 lines because it is the whole LM family in one place — validation, data
(tokenizer, packing, held-out documents), the jitted train/eval steps with
gradient accumulation, continued pretraining and the run — each piece used only
here; the model and its factory live in `models/`.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from translearn_jax.data import pretokenized, readers
from translearn_jax.data import tokenizer as tokenizer_lib
from translearn_jax.data.lm_data import EpochBatches, LMState, LMStream, pack, split_documents
from translearn_jax.data.tokenizer import TRAIN_THREADS, Tokenizer, encode_documents, load_tokenizer
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.models import lm as lm_models
from translearn_jax.training import flops as flops_lib
from translearn_jax.training import memo
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import losses
from translearn_jax.training import optimizers
from translearn_jax.training import workdir as workdir_lib
from translearn_jax.training.files import atomic_write
from translearn_jax.training.loop import Every, Run
from translearn_jax.training.metrics import info, write_json
from translearn_jax.training.state import TrainState, abstract_params, init_train_state
from translearn_jax.transfer import piece_counts, sources

DTYPES = lm_models.DTYPES


def _require(cond, field, msg):
  if not cond:
    raise ConfigError(f'config.{field}: {msg}')


def validate_rows(config, archs) -> None:
  """Checks a row family (LM, masked LM) shares: train.*, the architecture among `archs`,
  dtype, sequence length within a bounded model's `max_len`, data.valid_fraction."""
  _require(config.train.steps >= 0, 'train.steps', f'must be >= 0, got {config.train.steps}')
  for f in ('batch_size', 'seq_length', 'grad_accum', 'epochs', 'checkpoint_every_steps',
            'log_every_steps', 'keep_checkpoints', 'eval_every_steps'):
    _require(int(config.train[f]) >= 1, f'train.{f}', f'must be >= 1, got {config.train[f]}')
  _require(config.model.arch in archs, 'model.arch',
           f'must be one of {archs} for a {config.family} run, got {config.model.arch!r}')
  _require(config.dtype in DTYPES, 'dtype', f'must be one of {sorted(DTYPES)}')
  if lm_models.ARCHS[config.model.arch].bounded_context:
    _require(config.train.seq_length <= config.model.max_len, 'train.seq_length',
             f'{config.train.seq_length} is larger than the model maximum '
             f'model.max_len={config.model.max_len}')
  _require(0 <= config.data.valid_fraction < 1, 'data.valid_fraction', 'must be in [0, 1)')
  rows = config.train.get('eval_max_rows', 0)
  _require(rows >= 0, 'train.eval_max_rows', f'must be >= 0 (0: every row), got {rows}')
  optimizers.check(config.optim)             # before any data is read
  tokenizer_lib.check_fields(config.get('tokenizer'))
  chunk = config.train.get('loss_chunk', 0)
  _require(chunk >= 0, 'train.loss_chunk', f'must be >= 0 (0: plain), got {chunk}')
  _require(not chunk or config.model.arch == 'transformer', 'train.loss_chunk',
           f"the chunked loss exists for model.arch='transformer', not {config.model.arch!r}")
  lm_models.config_from(config.model, 8, config.dtype)   # bad model fields: before any data


DATA_KINDS = readers.TEXT_KINDS + ('pretokenized',)


def validate(config) -> None:
  validate_rows(config, ('transformer', 'lstm'))
  _require(config.data.kind in DATA_KINDS, 'data.kind',
           f'must be one of {DATA_KINDS}, got {config.data.kind!r}')
  _require(config.data.kind != 'pretokenized' or not config.data.valid_path, 'data.valid_path',
           "a pretokenized directory holds its own held-out documents (valid.bin, chosen "
           "when it was made): leave data.valid_path ''")
  mesh_lib.rules_from_config(config)
  mesh = mesh_lib.mesh_from_config(config)     # bad mesh.* fields: before any data
  mesh_lib.process_rows(config.train.batch_size, mesh)


def model_config(config, vocab_size: int, deterministic: bool = True, decode: bool = False):
  """The LM architecture config of this run's `config.model` (see `models.lm`)."""
  return lm_models.config_from(config.model, vocab_size, config.dtype, deterministic, decode)


# -- data --------------------------------------------------------------------

def get_tokenizer(config, train_docs, workdir: str, special_pieces=()) -> Tokenizer:
  """Explicit path (sentencepiece `.model` or HF `tokenizer.json`) > the run's own saved
  tokenizer, when the run resumes (its config was checked against this one; a tokenizer
  left by a run that stopped before its first checkpoint is made again, as this config
  says) > the continued source's > train a new sentencepiece model (saved)."""
  saved = os.path.join(workdir, 'tokenizer.model')
  if config.tokenizer.path:
    tok = load_tokenizer(config.tokenizer.path)
    sources.keep_tokenizer(tok, workdir)
    return tok
  for name in sources.TOKENIZER_FILES:
    if os.path.exists(os.path.join(workdir, name)) and workdir_lib.is_resume(workdir):
      return load_tokenizer(os.path.join(workdir, name))
  if config.init.path:  # continued pretraining keeps the source's pieces
    tok = sources.run_tokenizer(config.init.path, sources.run_config(config.init.path,
                                                                     'init.path'))
    sources.keep_tokenizer(tok, workdir)
    return tok
  t0 = time.perf_counter()
  tok = Tokenizer.train(train_docs, config.tokenizer.vocab_size, config.tokenizer.model_type,
                        seed=config.seed, normalization=config.tokenizer.normalization,
                        special_pieces=special_pieces,
                        threads=config.tokenizer.get('train_threads', TRAIN_THREADS))
  info('trained %s tokenizer (%d pieces) in %.1fs', config.tokenizer.model_type,
       tok.vocab_size, time.perf_counter() - t0)
  lines = [ln for d in train_docs[:2000] for ln in d.split('\n')[:5] if ln.strip()]
  tokenizer_lib.check_round_trip(tok, lines[::max(1, len(lines) // 500)],
                                 'the training text')
  if jax.process_index() == 0:
    tok.save(saved)
  return tok


def read_documents(config) -> tuple[list[str], list[str]]:
  """(training, held-out) documents: `data.valid_path`'s, or whole documents held out by
  `data.valid_fraction` with the seed."""
  spec = readers.TextSpec.from_config(config.data)
  docs = list(readers.read_documents(spec))
  if config.data.valid_path:
    train_docs = [d for d in docs if d.strip()]
    vspec = readers.TextSpec.from_config({**dict(config.data), 'path': config.data.valid_path})
    valid_docs = [d for d in readers.read_documents(vspec) if d.strip()]
  else:
    train_docs, valid_docs = split_documents(docs, config.data.valid_fraction, config.seed)
  if not train_docs:
    raise DataError(f'{spec.path}: no non-empty documents')
  return train_docs, valid_docs


def load_data(config, workdir: str):
  train_docs, valid_docs = read_documents(config)
  tok = get_tokenizer(config, train_docs, workdir)
  t0 = time.perf_counter()
  train_stream = encode_documents(tok, train_docs)
  valid_stream = encode_documents(tok, valid_docs) if valid_docs else None
  info('tokenised %d train / %d held-out documents: %d / %d tokens in %.1fs',
       len(train_docs), len(valid_docs), len(train_stream),
       0 if valid_stream is None else len(valid_stream), time.perf_counter() - t0)
  train_rows = pack(train_stream, config.train.seq_length, 'training')
  valid_rows = (pack(valid_stream, config.train.seq_length, 'held-out')
                if valid_stream is not None else None)
  stats = {'train_documents': len(train_docs), 'valid_documents': len(valid_docs),
           'train_tokens': int(len(train_stream)),
           'valid_tokens': 0 if valid_stream is None else int(len(valid_stream)),
           'train_words': sum(len(d.split()) for d in train_docs)}
  return tok, train_rows, valid_rows, stats


# -- pretokenised data (data.kind='pretokenized', issue #19) -----------------

def pretokenized_tokenizer(config, workdir: str):
  """(tokenizer, index) of the pretokenised directory `data.path`. `tokenizer.path`, the
  run's saved tokenizer (a resume) or the continued source's (`init.path`) when there is
  one, else the directory's own (saved into `workdir`); whichever it is must be the one
  the directory was made with (sha256 in its index.json)."""
  index = pretokenized.read_index(config.data.path)
  saved = [os.path.join(workdir, n) for n in sources.TOKENIZER_FILES
           if os.path.exists(os.path.join(workdir, n))]
  if config.tokenizer.path:
    tok = load_tokenizer(config.tokenizer.path)
    sources.keep_tokenizer(tok, workdir)
  elif saved:
    tok = load_tokenizer(saved[0])
  elif config.init.path:
    tok = sources.run_tokenizer(config.init.path,
                                sources.run_config(config.init.path, 'init.path'))
  else:
    tok = pretokenized.directory_tokenizer(config.data.path, index)
  pretokenized.check_tokenizer(tok, config.data.path, index)
  if not config.tokenizer.path and not saved and jax.process_index() == 0:
    tok.save(os.path.join(workdir, tok.file_name))
  return tok, index


def load_pretokenized(config, workdir: str, row_start: int, row_stop: int):
  """(tokenizer, this process's `ShardedTokenStream`, held-out rows or None, stats) of the
  pretokenised directory `data.path`: no corpus is read or tokenised; this process
  memory-maps its own shards only, and reads the (small) held-out file whole."""
  tok, index = pretokenized_tokenizer(config, workdir)
  t = config.train
  if config.data.valid_fraction:
    info('data.kind=pretokenized: the held-out documents are %s/valid.bin (%d); '
         'data.valid_fraction is not used', config.data.path, index['valid_documents'])
  stream = pretokenized.ShardedTokenStream(
      config.data.path, t.seq_length, t.batch_size, t.grad_accum, t.epochs, config.seed,
      jax.process_index(), jax.process_count(), row_start, row_stop)
  valid_rows = pretokenized.valid_rows(config.data.path, t.seq_length)
  stats = {k: int(index[k]) for k in ('train_documents', 'valid_documents', 'train_tokens',
                                      'valid_tokens', 'train_words')}
  info('pretokenised %s: %d shards, %d train / %d held-out tokens; this process reads '
       'shards %s', config.data.path, len(index['shards']), stats['train_tokens'],
       stats['valid_tokens'], stream.mine)
  return tok, stream, valid_rows, stats


# -- steps -------------------------------------------------------------------

def token_nll(logits, targets):
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def init_state(model, tx, seed: int, seq_len: int, mesh, rules=None) -> TrainState:
  """A fresh state placed over `mesh` by the logical-axis `rules` (see `training/mesh.py`)."""
  return init_train_state(model, tx, seed, mesh, jnp.zeros((1, seq_len), jnp.int32),
                          rules=rules)


@memo.memoized()
def make_train_fn(model, tx, schedule, mesh, shardings=None, loss_chunk: int = 0):
  """Jitted `(state, {'tokens': (A, B, T+1)}) -> (state, metric sums)`.

  The A micro-batches are scanned; their summed gradients are divided by the
  total token count, so accumulation equals one large batch. `shardings` is the
  state's (`mesh_lib.shardings_of(state)`; None: replicated): the state keeps it
  and gradients are placed as their parameters. `loss_chunk` > 0: the
  cross-entropy is computed that many positions at a time from the final states
  (`training.losses.chunked_softmax_xent`), never holding all B·T·V logits.
  """
  repl = mesh_lib.replicated(mesh)
  state_sh = repl if shardings is None else shardings
  grad_sh = None if shardings is None else shardings.params

  def train_fn(state: TrainState, batch):
    tokens = batch['tokens']
    step_rng = jax.random.fold_in(state.rng, state.step)

    def micro(carry, xs):
      i, toks = xs
      def loss_fn(params):
        rngs = {'dropout': jax.random.fold_in(step_rng, i)}
        if loss_chunk:
          hidden = lm_models.hidden_states(model, params, toks[:, :-1], rngs=rngs)
          kernel, bias = lm_models.output_projection(model.config, params)
          return losses.chunked_softmax_xent(hidden, kernel, toks[:, 1:], bias=bias,
                                             chunk=loss_chunk)
        logits = lm_models.logits(model, params, toks[:, :-1], rngs=rngs)
        return jnp.sum(token_nll(logits, toks[:, 1:]))
      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      if grad_sh is not None:
        grads = jax.lax.with_sharding_constraint(grads, grad_sh)
      g_acc, l_acc = carry
      return (jax.tree.map(jnp.add, g_acc, grads), l_acc + loss), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    if grad_sh is not None:
      zeros = jax.lax.with_sharding_constraint(zeros, grad_sh)
    accum = tokens.shape[0]
    (grads, loss), _ = jax.lax.scan(micro, (zeros, jnp.zeros(())),
                                    (jnp.arange(accum), tokens))
    count = tokens.shape[0] * tokens.shape[1] * (tokens.shape[2] - 1)
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new, {'loss_sum': loss, 'loss_count': jnp.asarray(count, jnp.float32),
                 'learning_rate': schedule(state.step), 'grad_norm': optax.tree.norm(grads)}

  return jax.jit(train_fn, donate_argnums=0,
                 in_shardings=(state_sh, mesh_lib.batch_sharding(mesh, 1)),
                 out_shardings=(state_sh, repl))


@memo.memoized()
def make_eval_fn(model, mesh, param_shardings=None):
  """Jitted `(params, tokens, weights) -> (nll sum, token count)`; params placed as
  `param_shardings` (None: replicated)."""
  repl = mesh_lib.replicated(mesh)

  def eval_fn(params, tokens, weights):
    logits = lm_models.logits(model, params, tokens[:, :-1])
    nll = token_nll(logits, tokens[:, 1:])
    return jnp.sum(nll * weights[:, None]), jnp.sum(weights) * nll.shape[1]

  p_sh = repl if param_shardings is None else param_shardings
  return jax.jit(eval_fn, in_shardings=(p_sh, mesh_lib.batch_sharding(mesh),
                                        mesh_lib.batch_sharding(mesh)),
                 out_shardings=(repl, repl))


def evaluate_rows(eval_fn, params, rows: np.ndarray, batch: int, mesh,
                  max_rows: int = 0) -> dict:
  """Mean token NLL and perplexity over `rows` (padded to whole batches)."""
  if max_rows:
    rows = rows[:max_rows]
  total, count = 0.0, 0.0
  for lo in range(0, len(rows), batch):
    chunk = np.asarray(rows[lo:lo + batch])
    w = np.ones(len(chunk), np.float32)
    if len(chunk) < batch:
      pad = batch - len(chunk)
      chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
      w = np.concatenate([w, np.zeros(pad, np.float32)])
    dev = mesh_lib.shard_global_batch({'t': chunk, 'w': w}, mesh)
    s, c = eval_fn(params, dev['t'], dev['w'])
    total += float(s)
    count += float(c)
  if not count:                 # no token scored: no loss (not 0, perplexity 1)
    return {'loss': float('nan'), 'perplexity': float('nan'), 'tokens': 0}
  loss = total / count
  return {'loss': loss, 'perplexity': math.exp(min(loss, 700.0)), 'tokens': int(count)}


# -- run ---------------------------------------------------------------------

def build(config, workdir: str):
  """Everything a run, a resume, or the sampler needs, from config + workdir."""
  tok, train_rows, valid_rows, stats = load_data(config, workdir)
  mesh = mesh_lib.mesh_from_config(config)
  return tok, train_rows, valid_rows, stats, mesh


def throughput_metrics(config, fpt: float, mesh, perplexity: bool = True):
  """(peak FLOP/s per device or None, a metrics postprocessor adding model TFLOP/s, MFU
  and, with `perplexity`, exp(loss))."""
  peak = flops_lib.peak_flops(dtype=config.dtype, override=config.peak_flops_per_device)
  if peak is None:
    info('peak FLOP/s of device kind %r (%s) unknown: MFU not reported '
         '(set config.peak_flops_per_device)', jax.devices()[0].device_kind, config.dtype)

  def add(metrics):
    if 'tokens_per_sec' in metrics:
      metrics['model_tflops_per_sec'] = fpt * metrics['tokens_per_sec'] / 1e12
      u = flops_lib.mfu(fpt, metrics['tokens_per_sec'], mesh.devices.size, peak)
      if u is not None:
        metrics['mfu'] = u
    if perplexity and 'loss' in metrics:
      metrics['perplexity'] = math.exp(min(metrics['loss'], 700.0))
    return metrics
  return peak, add


def run_rows(config, workdir: str, *, state: TrainState, stream: EpochBatches, total_steps: int,
             train_fn, mesh, hooks, fpt: float, init_fn, perplexity: bool):
  """A row family's run (LM, masked LM) on the shared loop: resume from `workdir`, or
  `init_fn(state)` when `config.init.path` names a source; `total_steps` steps of
  `train_fn` over `stream`; metrics with tokens/s, model TFLOP/s and MFU.
  Returns (loop result, summary)."""
  t = config.train
  tokens_per_step = t.batch_size * t.grad_accum * t.seq_length
  peak, add_metrics = throughput_metrics(config, fpt, mesh, perplexity)
  with Run(workdir, t.keep_checkpoints) as run:
    state, saved = run.restore(state)
    if not run.resuming and config.init.path:
      state = init_fn(state)
      info('initialised from %s (continued pretraining; fresh optimiser)', config.init.path)
    data_state = LMState(**saved)
    result = run.train(
        state=state,
        stream=itertools.islice(((s.to_dict(), b) for s, b in stream.iterate(data_state)),
                                max(total_steps - int(state.step), 0)),
        step_fn=train_fn, to_device=functools.partial(mesh_lib.shard_batch, mesh=mesh,
                                                     batch_axis=1),
        total_steps=total_steps, steps_per_call=1, checkpoint_every=t.checkpoint_every_steps,
        log_every=t.log_every_steps, units_per_step=tokens_per_step, units_name='tokens',
        data_state=data_state.to_dict(), progress=config.progress, hooks=hooks,
        postprocess=add_metrics)
  summary = {**run.summary(result), 'tokens_seen': result.steps * tokens_per_step,
             'flops_per_token': fpt}
  if summary['tokens_per_sec']:
    summary['mfu'] = flops_lib.mfu(fpt, summary['tokens_per_sec'], mesh.devices.size, peak)
  return result, summary


def check_source(config, family: str, what: str) -> None:
  """Continued pretraining: `config.init.path` is a run of `family` with this config's
  architecture (checked before any data is read)."""
  src_config = sources.run_config(config.init.path, 'init.path')
  if src_config.get('family') != family:
    raise ConfigError(f'config.init.path: {config.init.path} is not {what}')
  tok = sources.run_tokenizer(config.init.path, src_config)
  check_same_architecture(lm_models.config_from(src_config.model, tok.vocab_size),
                          lm_models.config_from(config.model, tok.vocab_size),
                          config.init.path)


def check_same_architecture(src_cfg, train_cfg, run_dir: str) -> None:
  diff = lm_models.architecture_diff(src_cfg, train_cfg)
  if diff:
    raise ConfigError(f'config.init.path: {run_dir} has a different architecture '
                      f'(source vs this config: {diff}); set config.model to match it')


def init_from_run(run_dir: str, state: TrainState, train_cfg, mesh, kind: str = 'lm'
                  ) -> TrainState:
  """`state` with the parameters of the LM run `run_dir` (same architecture required).

  The ULMFiT middle stage: an LM pretrained on general text continues training
  on target-domain text; the optimiser state and step count start fresh.
  """
  src = sources.load(kind, run_dir, field='init.path')
  check_same_architecture(src.model_config, train_cfg, run_dir)
  params = dict(state.params)
  extra = sorted(set(src.params) - set(params))
  if extra:
    raise DataError(f'config.init.path: {run_dir} holds parameter groups this model has not: '
                    f'{extra}')
  # an imported encoder without its MLM head (BertModel, BertFor*Classification) starts the
  # head afresh, as the run's own initialisation draws it
  fresh = sorted(set(params) - set(src.params))
  if fresh:
    info('init.path %s has no %s: initialised afresh', run_dir, ', '.join(fresh))
  shardings = mesh_lib.shardings_of(state.params)
  placed = jax.device_put(dict(src.params), {k: shardings[k] for k in src.params})
  params.update(placed)
  return state.replace(params=params)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(config)
  if config.init.path:  # fail before reading and tokenising the corpus
    check_source(config, 'lm', 'an LM run')
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    atomic_write(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
  t = config.train
  if config.data.kind == 'pretokenized':   # this process's shards, memory-mapped
    mesh = mesh_lib.mesh_from_config(config)
    row_start, row_stop = mesh_lib.process_rows(config.train.batch_size, mesh)
    tok, stream, valid_rows, stats = load_pretokenized(config, workdir, row_start, row_stop)
    if jax.process_index() == 0:       # the directory's counts (written by pretokenize)
      piece_counts.record(workdir, None, tok.vocab_size, config.init.path,
                          piece_counts.read(config.data.path, tok.vocab_size))
    # every process scores its own first rows (as many on each): a training sample
    train_rows = stream.sample_rows(max(len(valid_rows) if valid_rows is not None else 0,
                                        t.batch_size))
  else:
    tok, train_rows, valid_rows, stats, mesh = build(config, workdir)
    if jax.process_index() == 0:       # which pieces training saw (for grafts: piece_counts)
      piece_counts.record(workdir, train_rows, tok.vocab_size, config.init.path)
    row_start, row_stop = mesh_lib.process_rows(config.train.batch_size, mesh)
    stream = LMStream(train_rows, t.batch_size, t.grad_accum, t.epochs,
                      config.seed, row_start, row_stop)
  total_steps = stream.total_steps
  if config.train.steps:
    total_steps = min(total_steps, config.train.steps)
  train_cfg = model_config(config, tok.vocab_size, deterministic=False)
  eval_cfg = train_cfg.replace(deterministic=True)
  model, eval_model = lm_models.make(train_cfg), lm_models.make(eval_cfg)
  abstract = abstract_params(model, jnp.zeros((1, 8), jnp.int32))
  tx, schedule = optimizers.adamw(config, total_steps, abstract)
  state = init_state(model, tx, config.seed, 8, mesh, mesh_lib.rules_from_config(config))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  info('%s LM: %.2fM parameters, %d steps of %d tokens', config.model.arch, n_params / 1e6,
       total_steps, config.train.batch_size * config.train.grad_accum * config.train.seq_length)
  shardings = mesh_lib.shardings_of(state)
  train_fn = make_train_fn(model, tx, schedule, mesh, shardings,
                           config.train.get('loss_chunk', 0))
  eval_fn = make_eval_fn(eval_model, mesh, shardings.params)
  fpt = lm_models.flops_per_token(train_cfg, config.train.seq_length)

  def held_out(step: int, state) -> dict:
    r = evaluate_rows(eval_fn, state.params, valid_rows, config.train.batch_size, mesh,
                      config.train.eval_max_rows)
    return {'valid_loss': r['loss'], 'valid_perplexity': r['perplexity']}

  hooks = [Every(config.train.eval_every_steps, held_out, at_end=True)] if valid_rows is not None \
      else []
  result, summary = run_rows(
      config, workdir, state=state, stream=stream, total_steps=total_steps, train_fn=train_fn,
      mesh=mesh, hooks=hooks, fpt=fpt, perplexity=True,
      init_fn=lambda state: init_from_run(config.init.path, state, train_cfg, mesh))
  summary.update(parameters=n_params, **stats)
  if result.stopped_by_signal:
    return summary
  if valid_rows is not None:
    summary['valid'] = evaluate_rows(eval_fn, result.state.params, valid_rows,
                                     config.train.batch_size, mesh)
  train_eval = evaluate_rows(eval_fn, result.state.params, train_rows, config.train.batch_size,
                             mesh,
                             max_rows=max(len(valid_rows) if valid_rows is not None else 0,
                                          config.train.batch_size))
  summary['train_sample'] = train_eval
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, 'eval.json'), summary)
    v = summary.get('valid')
    print(f'{config.model.arch} LM: {result.steps} steps, '
          f'train-sample ppl {train_eval["perplexity"]:.2f}'
          + (f', held-out ppl {v["perplexity"]:.2f} over {v["tokens"]} tokens' if v else '')
          + (f', {summary["tokens_per_sec"]:.0f} tokens/s' if summary['tokens_per_sec'] else ''))
  return summary
