"""Saved models: a fine-tuned classifier or tagger, or a seq2seq model, as one directory.

A saved model is a directory holding
* `model.json` (strict JSON): `format` ("translearn_jax.saved_model"),
  `format_version` (1), `task` ('classification' | 'tagging' | 'seq2seq'),
  `model` (the Flax module: its class and fields; an LM body's or the
  seq2seq model's architecture config as `{'arch': name, field: value, ...}`,
  dtypes by name, rebuilt through `models.lm.ARCHS[arch].config_class` or
  `models.seq2seq.Seq2SeqConfig`), `inputs` (how text becomes model input:
  labels, encoding 'words' or 'pieces', `max_tokens`, causal framing; seq2seq:
  source/target lengths and the decoding defaults `beam`, `length_penalty`),
  the names of the files below, `provenance` (strategy, seed, scores and
  epoch, init kind and path, graft summary, the run's full config), the
  package `version` and the UTC time it was `created`;
* `params.safetensors`: the parameter tree, one tensor per '/'-joined path;
* the tokenizer (`tokenizer.model`, sentencepiece; or `tokenizer.json` +
  `tokenizer_config.json`, Hugging Face), or for a bag-of-embeddings model
  its word vocabulary `vocab.txt` (one word a line, row order).

Neither the training data nor the pretrained source is needed to use it:
`load(dir)` rebuilds the module from `model.json`, checks every parameter's
path and shape against the module's own (`jax.eval_shape` of its init; a
missing, extra or misshapen tensor is a `DataError` naming the path) and
loads the tokenizer. Weights are read with safetensors only, never pickle.

Writing is atomic (`save`, `swap_in`): the directory is staged in a hidden
sibling (`model.json` written last), then swapped in — the old directory
renamed aside, the new one renamed in, the old one deleted — so a crash
leaves the old model or the new one, never half of one; a later save puts
back an old model left aside by a crash, and removes stale staging folders.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import shutil
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import translearn_jax
from translearn_jax.data import conll
from translearn_jax.data.tokenizer import load_tokenizer
from translearn_jax.downstream import models as task_models
from translearn_jax.errors import DataError
from translearn_jax.generation.seq2seq_decode import PENALTY_FORMS, STOPPING
from translearn_jax.models import lm as lm_models
from translearn_jax.models import seq2seq as s2s_models
from translearn_jax.training import state as state_lib
from translearn_jax.training.files import fsync_dir
from translearn_jax.training.metrics import info, write_json
from translearn_jax.transfer import graft as graft_lib

FORMAT = 'translearn_jax.saved_model'
FORMAT_VERSION = 1
TASKS = ('classification', 'tagging', 'seq2seq')
MODEL_JSON, PARAMS, VOCAB = 'model.json', 'params.safetensors', 'vocab.txt'
TOKENIZER_FILES = ('tokenizer.model', 'tokenizer.json')
MODULES = {'BagOfEmbeddings': task_models.BagOfEmbeddings,
           'EncoderClassifier': task_models.EncoderClassifier,
           'TokenTagger': task_models.TokenTagger,
           'Seq2Seq': s2s_models.Seq2Seq}
DTYPE_FIELDS = ('dtype', 'param_dtype')


@dataclasses.dataclass
class SavedModel:
  path: str
  meta: dict                      # model.json
  module: Any                     # the Flax module (deterministic)
  params: Any                     # tree of numpy arrays, checked against the module
  tokenizer: Any = None
  vocab: Optional[list] = None

  @property
  def task(self) -> str:
    return self.meta['task']

  @property
  def inputs(self) -> dict:
    return self.meta['inputs']


# -- architecture configs and modules as JSON ------------------------------------------

def arch_to_json(cfg) -> dict:
  """A `models.lm` or `models.seq2seq` config dataclass as {'arch': name, field: value}."""
  arch = 'seq2seq' if isinstance(cfg, s2s_models.Seq2SeqConfig) else type(cfg).arch
  out: dict[str, Any] = {'arch': arch}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    out[f.name] = (jnp.dtype(v).name if f.name in DTYPE_FIELDS else
                   list(v) if isinstance(v, tuple) else v)
  return out


def arch_from_json(d: dict, where: str):
  """The config dataclass `arch_to_json` wrote; anything unknown is a `DataError` at `where`."""
  d = dict(d)
  arch = d.pop('arch', None)
  if arch == 'seq2seq':
    cls = s2s_models.Seq2SeqConfig
  elif arch in lm_models.ARCHS:
    cls = lm_models.ARCHS[arch].config_class
  else:
    raise DataError(f'{where}: unknown architecture {arch!r} (known: '
                    f'{sorted(lm_models.ARCHS) + ["seq2seq"]})')
  unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
  if unknown:
    raise DataError(f'{where}: unknown {arch} config field(s) {unknown} (written by a newer '
                    'version?)')
  for k in DTYPE_FIELDS:
    if k in d:
      if d[k] not in lm_models.DTYPES:
        raise DataError(f'{where}: {k} {d[k]!r} is not one of {sorted(lm_models.DTYPES)}')
      d[k] = lm_models.DTYPES[d[k]]
  d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
  try:
    return cls(**d)
  except (TypeError, ValueError) as e:
    raise DataError(f'{where}: bad {arch} config ({e})') from None


def module_to_json(module) -> dict:
  """{'class': name, field: value} of a task or seq2seq module (configs via `arch_to_json`)."""
  name = type(module).__name__
  if name not in MODULES:
    raise TypeError(f'cannot save a {name} module (saved modules: {sorted(MODULES)})')
  out: dict[str, Any] = {'class': name}
  for f in dataclasses.fields(module):
    if f.name not in ('parent', 'name'):
      v = getattr(module, f.name)
      out[f.name] = arch_to_json(v) if dataclasses.is_dataclass(v) else v
  return out


def module_from_json(d, where: str):
  if not isinstance(d, dict) or d.get('class') not in MODULES:
    got = d.get('class') if isinstance(d, dict) else d
    raise DataError(f'{where}: model class {got!r} is not one of {sorted(MODULES)}')
  cls = MODULES[d['class']]
  names = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  unknown = sorted(set(d) - names - {'class'})
  if unknown:
    raise DataError(f'{where}: unknown {d["class"]} field(s) {unknown}')
  kw = {k: arch_from_json(v, where) if isinstance(v, dict) and 'arch' in v else v
        for k, v in d.items() if k != 'class'}
  try:
    return cls(**kw)
  except TypeError as e:
    raise DataError(f'{where}: bad {d["class"]} fields ({e})') from None


def abstract_params(module, task: str, inputs: dict):
  """The module's parameter shapes and dtypes (`jax.eval_shape` of its init: no compute)."""
  if task == 'seq2seq':
    n = min(8, module.config.max_len)
    args = (jnp.zeros((1, n), jnp.int32), jnp.zeros((1, n), jnp.int32))
  else:
    n = max(1, min(8, int(inputs['max_tokens'])))
    args = (jnp.zeros((1, n), jnp.int32), jnp.ones((1, n), bool))
  return state_lib.abstract_params(module, *args)


# -- parameters ---------------------------------------------------------------------------

def host_params(params):
  """`params` as numpy arrays on the host (gathered across processes when sharded over
  several; every process must call it)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    params = multihost_utils.process_allgather(params, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(params))


def _storable(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype.name == 'bfloat16':      # numpy-safetensors has no bfloat16; `load` casts back
    x = x.astype(np.float32)
  return np.ascontiguousarray(x)


def write_params(path: str, flat: dict[str, np.ndarray]) -> None:
  """One safetensors file of '/'-joined parameter paths."""
  from safetensors.numpy import save_file
  save_file(flat, path, metadata={'format': FORMAT})


def read_params(path: str, abstract):
  """The tree in `path`, each tensor checked against `abstract` (path, shape) and cast to
  its dtype."""
  if not os.path.isfile(path):
    raise DataError(f'{path}: missing (the saved model\'s parameters)')
  from safetensors.numpy import load_file
  try:
    flat = load_file(path)
  except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
    raise DataError(f'{path}: cannot read safetensors file ({" ".join(str(e).split())})'
                    ) from None
  want = graft_lib.flatten(abstract)
  for p, s in want.items():
    if p not in flat:
      raise DataError(f'{path}: no tensor {p!r} (the model needs shape {tuple(s.shape)})')
    if tuple(flat[p].shape) != tuple(s.shape):
      raise DataError(f'{path}: tensor {p!r} has shape {tuple(flat[p].shape)}, the model '
                      f'needs {tuple(s.shape)}')
    x = flat[p]
    if jnp.issubdtype(s.dtype, jnp.floating):
      if x.dtype.kind != 'f':
        raise DataError(f'{path}: tensor {p!r} is {x.dtype}, the model needs floating point')
      if not np.isfinite(x).all():
        raise DataError(f'{path}: tensor {p!r} holds NaN or Inf')
  extra = sorted(set(flat) - set(want))
  if extra:
    raise DataError(f'{path}: tensor {extra[0]!r} is not a parameter of the model'
                    f'{f" ({len(extra) - 1} more)" if len(extra) > 1 else ""}')
  return graft_lib.unflatten({p: flat[p].astype(s.dtype, copy=False) for p, s in want.items()})


# -- atomic directories -------------------------------------------------------------------

def _siblings(directory: str, tag: str) -> list[str]:
  parent, base = os.path.split(os.path.abspath(directory))
  return sorted(glob.glob(os.path.join(parent, f'.{glob.escape(base)}.{tag}*')),
                key=os.path.getmtime)


def recover(directory: str, keep: str = '') -> None:
  """After a crash inside `swap_in`: puts back the old model left aside if `directory` is
  missing, and removes stale staging and aside folders (but `keep`)."""
  olds = _siblings(directory, 'old')
  if olds and not os.path.exists(directory):
    os.rename(olds.pop(), directory)
    info('%s: restored the model a crashed save had moved aside', directory)
  for d in olds + _siblings(directory, 'tmp'):
    if os.path.abspath(d) != os.path.abspath(keep):
      shutil.rmtree(d, ignore_errors=True)


def swap_in(new: str, directory: str) -> None:
  """Replaces `directory` by the complete directory `new` (same file system): the old one
  renamed aside, the new one renamed in, the old one deleted."""
  parent, base = os.path.split(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  recover(directory, keep=new)
  old = None
  if os.path.exists(directory):
    old = os.path.join(parent, f'.{base}.old{os.getpid()}')
    os.rename(directory, old)
  try:
    os.rename(new, directory)
  except BaseException:
    if old is not None:
      os.rename(old, directory)
    raise
  fsync_dir(parent)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def staged(directory: str, write) -> str:
  """Calls `write(stage)` on an empty hidden sibling of `directory`, then swaps it in; on
  any error the stage is removed and `directory` is left as it was."""
  parent, base = os.path.split(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  stage = tempfile.mkdtemp(prefix=f'.{base}.tmp', dir=parent)
  try:
    write(stage)
    swap_in(stage, directory)
  except BaseException:
    shutil.rmtree(stage, ignore_errors=True)
    raise
  return directory


# -- save / load --------------------------------------------------------------------------

def save(directory: str, module, params, *, task: str, inputs: dict, tokenizer=None,
         vocab: Optional[list] = None, provenance: Optional[dict] = None) -> str:
  """Writes a saved model (see the module docstring) atomically; returns `directory`.

  Every process must call it (parameters sharded over processes are gathered);
  process 0 writes."""
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}')
  flat = {k: _storable(v) for k, v in graft_lib.flatten(host_params(params)).items()}
  if jax.process_index() != 0:
    return directory
  if vocab is not None and any('\n' in w or '\r' in w for w in vocab):
    raise DataError(f'{directory}: a vocabulary word holds a line break; cannot write '
                    f'{VOCAB}')
  meta = {'format': FORMAT, 'format_version': FORMAT_VERSION, 'task': task,
          'model': module_to_json(module), 'inputs': inputs, 'params': PARAMS,
          'tokenizer': tokenizer.file_name if tokenizer is not None else None,
          'vocab': VOCAB if vocab is not None else None,
          'provenance': provenance or {}, 'version': translearn_jax.__version__,
          'created': datetime.datetime.now(datetime.timezone.utc).strftime(
              '%Y-%m-%dT%H:%M:%SZ')}

  def write(stage: str) -> None:
    write_params(os.path.join(stage, PARAMS), flat)
    if tokenizer is not None:
      tokenizer.save(os.path.join(stage, tokenizer.file_name))
    if vocab is not None:
      with open(os.path.join(stage, VOCAB), 'w', encoding='utf-8', newline='\n') as f:
        f.write(''.join(w + '\n' for w in vocab))
    write_json(os.path.join(stage, MODEL_JSON), meta)   # last: marks the directory complete
  return staged(directory, write)


def save_task_model(directory: str, task, params, provenance: dict) -> str:
  """Saves a downstream task's model (`Task.inference_spec` says how it reads inputs)."""
  spec = dict(task.inference_spec())
  tokenizer, vocab, kind = spec.pop('tokenizer'), spec.pop('vocab'), spec.pop('task')
  return save(directory, task.model, params, task=kind, inputs=spec, tokenizer=tokenizer,
              vocab=vocab, provenance=provenance)


def provenance(config, *, strategy: Optional[str] = None, seed: Optional[int] = None,
               scores: Optional[dict] = None, report=None) -> dict:
  """Where a saved model came from: strategy, seed, scores (dev/test/epoch/metric...),
  `init` (kind, path), the graft summary (counts; created and frozen paths) and the run's
  full config."""
  init = config.get('init') or {}
  graft = None
  if report is not None:
    graft = {'grafted': len(report.grafted), 'created': len(report.created),
             'frozen': len(report.frozen), 'unused_source': len(report.unused_source),
             'dropped': len(report.dropped), 'created_paths': list(report.created),
             'frozen_paths': list(report.frozen)}
  return {'strategy': strategy, 'seed': seed, **(scores or {}),
          'init': {'kind': init.get('kind', 'none'), 'path': init.get('path', '')},
          'graft': graft, 'config': json.loads(config.to_json_best_effort())}


def trained_data_config(meta: dict) -> dict:
  """The `data` group of the config a saved model was trained with (its provenance), or {}
  when the model does not say (older or hand-made models)."""
  cfg = (meta.get('provenance') or {}).get('config') or {}
  data = cfg.get('data') if isinstance(cfg, dict) else None
  return data if isinstance(data, dict) else {}


def read_meta(directory: str) -> dict:
  """`directory`'s model.json, checked: the format, its version and the task."""
  if not directory or not os.path.isdir(directory):
    aside = _siblings(directory, 'old') if directory else []
    hint = f' (a crashed save left the previous model at {aside[-1]})' if aside else ''
    what = 'is not a directory' if directory and os.path.exists(directory) else 'does not exist'
    raise DataError(f'saved model {directory!r} {what}{hint}')
  path = os.path.join(directory, MODEL_JSON)
  if not os.path.isfile(path):
    inside = [os.path.join(directory, d) for d in ('model', 'models')
              if os.path.isdir(os.path.join(directory, d))]
    hint = f'; the run keeps its saved model(s) in {inside[0]}' if inside else ''
    raise DataError(f'{path}: not found ({directory} is not a saved model{hint})')
  try:
    with open(path, encoding='utf-8') as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: cannot read it ({" ".join(str(e).split())})') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    got = meta.get('format') if isinstance(meta, dict) else type(meta).__name__
    raise DataError(f'{path}: format {got!r} is not {FORMAT!r} (not a saved model)')
  if meta.get('format_version') != FORMAT_VERSION:
    raise DataError(f'{path}: format_version {meta.get("format_version")!r} is not supported '
                    f'(this version reads {FORMAT_VERSION}; a newer translearn_jax wrote it?)')
  if meta.get('task') not in TASKS:
    raise DataError(f'{path}: task {meta.get("task")!r} is not one of {TASKS}')
  if not isinstance(meta.get('inputs'), dict):
    raise DataError(f'{path}: no inputs object')
  _check_inputs(meta['task'], meta['inputs'], path)
  return meta


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


# inputs fields by task: (name, check, what a valid value is)
_POSITIVE = (lambda v: _is_int(v) and v >= 1, 'an integer >= 1')
_INPUTS = {
    'classification': {'labels': (lambda v: isinstance(v, list) and len(v) >= 1 and all(
                           isinstance(x, str) for x in v), 'a non-empty list of strings'),
                       'encoding': (lambda v: v in ('words', 'pieces'), "'words' or 'pieces'"),
                       'max_tokens': _POSITIVE},
    'seq2seq': {'beam': _POSITIVE, 'max_source_len': _POSITIVE, 'max_target_len': _POSITIVE,
                'length_penalty': (lambda v: isinstance(v, (int, float))
                                   and not isinstance(v, bool) and 0 <= v < float('inf'),
                                   'a finite number >= 0')},
}
_INPUTS['tagging'] = dict(_INPUTS['classification'],
                          encoding=(lambda v: v == 'pieces', "'pieces'"))


def _one_of(values) -> str:
  """"'a', 'b' or 'c'": what an inputs field with these values must be."""
  return ', '.join(map(repr, values[:-1])) + ' or ' + repr(values[-1])


def _check_inputs(task: str, inputs: dict, where: str) -> None:
  """Every `inputs` field the task reads is present and well typed (a hand-edited or
  damaged model.json is one error naming the field, not a traceback at predict time)."""
  fields = dict(_INPUTS[task])
  if task != 'seq2seq' and inputs.get('encoding') == 'pieces':
    fields['causal'] = (lambda v: isinstance(v, bool), 'true or false')
  if task == 'seq2seq' and 'length_penalty_form' in inputs:   # older models: GNMT's
    fields['length_penalty_form'] = (lambda v: v in PENALTY_FORMS, _one_of(PENALTY_FORMS))
  for name in ('min_length', 'no_repeat_ngram_size'):          # older models: off
    if task == 'seq2seq' and name in inputs:
      fields[name] = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                      'an integer >= 0')
  if task == 'seq2seq' and 'early_stopping' in inputs:         # older models: 'never'
    fields['early_stopping'] = (lambda v: v in STOPPING, _one_of(STOPPING))
  if task == 'tagging' and 'tag_scheme' in inputs:   # older models have none: tags as labelled
    written = ('',) + tuple(s for s in conll.SCHEMES if s != 'iob2')   # '': as labelled
    fields['tag_scheme'] = (lambda v: v in written, _one_of(written))
  for name, (ok, what) in fields.items():
    if name not in inputs:
      raise DataError(f'{where}: inputs.{name} is missing')
    if not ok(inputs[name]):
      raise DataError(f'{where}: inputs.{name} must be {what}, got {inputs[name]!r}')


def load(directory: str) -> SavedModel:
  """The saved model in `directory`: module, checked parameters, tokenizer or vocabulary."""
  meta = read_meta(directory)
  where = os.path.join(directory, MODEL_JSON)
  module = module_from_json(meta.get('model'), where)
  tokenizer = vocab = None
  name = meta.get('tokenizer')
  if name is not None:
    if name not in TOKENIZER_FILES:
      raise DataError(f'{where}: tokenizer {name!r} is not one of {TOKENIZER_FILES}')
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise DataError(f'{path}: missing (the saved model\'s tokenizer)')
    tokenizer = load_tokenizer(path)
  if meta.get('vocab') is not None:
    path = os.path.join(directory, VOCAB)
    if not os.path.isfile(path):
      raise DataError(f'{path}: missing (the saved model\'s vocabulary)')
    with open(path, encoding='utf-8', newline='') as f:
      vocab = f.read().split('\n')[:-1]
  if tokenizer is None and vocab is None:
    raise DataError(f'{where}: names neither a tokenizer nor a vocabulary')
  _check_module(module, meta, tokenizer, vocab, where)
  params = read_params(os.path.join(directory, PARAMS),
                       abstract_params(module, meta['task'], meta['inputs']))
  return SavedModel(directory, meta, module, params, tokenizer, vocab)


def _check_module(module, meta: dict, tokenizer, vocab, where: str) -> None:
  """The files of a saved model agree with its module: labels with the output classes,
  vocabulary and tokenizer with the embedding rows, lengths with the positions."""
  inputs, task = meta['inputs'], meta['task']
  if task == 'seq2seq':
    cfg = module.config
    rows, max_len = cfg.vocab_size, cfg.max_len
    lengths = {'max_source_len': inputs['max_source_len'],
               'max_target_len': inputs['max_target_len']}
  else:
    n_out = getattr(module, 'num_classes', None) or getattr(module, 'num_tags', None)
    if n_out is not None and n_out != len(inputs['labels']):
      raise DataError(f'{where}: {len(inputs["labels"])} labels for a model with {n_out} '
                      'outputs')
    lm = getattr(module, 'lm_config', None)
    rows = lm.vocab_size if lm is not None else getattr(module, 'vocab_size', None)
    max_len = getattr(lm, 'max_len', None) if lm is not None else None
    lengths = {'max_tokens': inputs['max_tokens']}
  if max_len is not None:
    for name, n in lengths.items():
      if n > max_len:
        raise DataError(f'{where}: inputs.{name}={n} exceeds the model\'s {max_len} positions')
  if vocab is not None and rows is not None and len(vocab) != rows:
    raise DataError(f'{os.path.join(os.path.dirname(where), VOCAB)}: {len(vocab)} words for '
                    f'{rows} embedding rows')
  if tokenizer is not None and rows is not None and tokenizer.vocab_size > rows:
    raise DataError(f'{where}: the tokenizer has {tokenizer.vocab_size} pieces, the model '
                    f'embeds {rows} (another model\'s tokenizer?)')
