"""Hugging Face model directories ⇄ run directories of this project.

  python -m translearn_jax.convert import-hf HF_DIR RUN_DIR [--drop_pooler]
  python -m translearn_jax.convert export-hf RUN_DIR HF_DIR

`import_hf` writes a run directory that every consumer of runs accepts (the
sampler, transfer configs with `init.kind='lm'|'mlm'`, multi-task, zero-shot,
continued pretraining; seq2seq runs: `transfer.sources.load('seq2seq', ...)`
and `generation.seq2seq_decode`): `config.json` (family, `model` fields —
seq2seq runs also `max_source_len`/`max_target_len` —, where it came from),
the checkpoint's own tokenizer (`tokenizer.json` + its special tokens; built from
`vocab.txt` or `vocab.json` + `merges.txt` when a checkpoint has only those),
`checkpoints/0` (the parameters, orbax) and `import_report.json` (tensors
imported, optional groups absent, tensors unused). `export_hf` writes
`config.json`, `model.safetensors` and the tokenizer (seq2seq runs also
`generation_config.json`: start/end/pad ids and the never-generated ids as
`bad_words_ids`), which `transformers` loads with `from_pretrained`:
Transformer LM runs as GPT-2 (learned positions) or GPT-NeoX (rotary), encoder
runs as BERT (or RoBERTa when positions are offset), seq2seq runs as BART
(post-LN), mBART (pre-LN) or Marian (sinusoidal positions). Importing reads
`bad_words_ids`/`suppress_tokens` from `generation_config.json` as well.
Both write into a temporary directory renamed into place at the end, and
refuse an existing non-empty target, so nothing already written is lost or
left half-written. Supported architectures and their options: `convert.hf`,
`convert.hf_seq2seq`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import ml_collections
import numpy as np

from translearn_jax.convert import hf, hf_seq2seq, safetensors_io
from translearn_jax.data import hf_tokenizer, readers
from translearn_jax.data.hf_tokenizer import HFTokenizer, from_sentencepiece
from translearn_jax.data.tokenizer import Tokenizer
from translearn_jax.errors import DataError
from translearn_jax.models import lm as lm_models
from translearn_jax.models import seq2seq as s2s_models
from translearn_jax.training.checkpoint import Checkpointer
from translearn_jax.training import state as state_lib
from translearn_jax.training.metrics import write_json
from translearn_jax.transfer import graft, sources


GENERATION_CONFIG = 'generation_config.json'
BANNED_KEYS = ('bad_words_ids', 'suppress_tokens')   # read from generation_config.json too
# generation_config.json keys an imported seq2seq run takes over config.json's, as `generate`
# does (the start id and its `bos_token_id` fallback, the forced first token, banned ids)
GENERATE_READS = BANNED_KEYS + ('forced_bos_token_id', 'decoder_start_token_id', 'bos_token_id')
# generate()'s search settings with a counterpart here, and the ones it would apply that
# this project's search does not (reported by an import, not silently dropped)
SEARCH_KEYS = ('num_beams', 'length_penalty', 'min_length', 'no_repeat_ngram_size',
               'early_stopping')
UNAPPLIED_SEARCH = {'min_new_tokens': None,
                    'repetition_penalty': 1.0, 'encoder_no_repeat_ngram_size': 0,
                    'do_sample': False, 'num_beam_groups': 1, 'diversity_penalty': 0.0,
                    'forced_eos_token_id': None,
                    'encoder_repetition_penalty': 1.0, 'exponential_decay_length_penalty': None,
                    'sequence_bias': None, 'begin_suppress_tokens': None, 'guidance_scale': 1.0,
                    'renormalize_logits': False, 'max_time': None, 'stop_strings': None}
# transformers' early_stopping values and this project's `eval.early_stopping` for them
HF_STOPPING = {False: 'heuristic', True: 'k_finished', 'never': 'never'}
# generate()'s output length limit, applied even when neither is set (20 new tokens);
# translate's is its --max_len (default: the run's max_target_len)
LENGTH_KEYS = ('max_length', 'max_new_tokens')
GENERATION_KEYS = ('bos_token_id', 'eos_token_id', 'pad_token_id', 'decoder_start_token_id',
                   'forced_eos_token_id', 'forced_bos_token_id') + BANNED_KEYS


@contextlib.contextmanager
def _staged(path: str, what: str) -> Iterator[str]:
  """A temporary directory beside `path`, renamed to `path` when the block succeeds and
  removed when it fails; an existing non-empty `path` is refused, never overwritten."""
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise DataError(f'{what} {path} already exists and is not empty; choose a new directory '
                    '(nothing was overwritten)')
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.{os.path.basename(os.path.abspath(path))}.tmp{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
    if os.path.isdir(path):
      os.rmdir(path)          # empty (checked above)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    raise DataError(f'{path} not found (not a Hugging Face model directory)')
  return readers.json_object(path)


def _hf_tokenizer(hf_dir: str, model_type: str) -> HFTokenizer:
  path = os.path.join(hf_dir, HFTokenizer.file_name)
  if not os.path.isfile(path) and model_type == 'marian':
    raise DataError(f'{hf_dir}: no {HFTokenizer.file_name}; Marian checkpoints tokenize with '
                    'two sentencepiece models (source.spm, target.spm) numbered by vocab.json, '
                    'which have no tokenizer.json form and which a run (one tokenizer) cannot '
                    'hold, so nothing was converted')
  if not os.path.isfile(path):
    if any(os.path.isfile(os.path.join(hf_dir, n)) for n in hf_tokenizer.SLOW_FILES):
      return hf_tokenizer.from_vocab_files(hf_dir, model_type)
    slow = [n for n in ('spiece.model', 'sentencepiece.bpe.model')
            if os.path.isfile(os.path.join(hf_dir, n))]
    hint = (f' (it has {", ".join(slow)}: write tokenizer.json with transformers: '
            "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))") if slow else ''
    raise DataError(f'{hf_dir}: no {HFTokenizer.file_name}{hint}')
  return HFTokenizer.load(path)


def _expected_shapes(cfg) -> dict[str, tuple]:
  tokens = np.zeros((1, 4), np.int32)
  if isinstance(cfg, s2s_models.Seq2SeqConfig):
    model, args = s2s_models.Seq2Seq(cfg), (tokens, tokens)
  else:
    model, args = lm_models.make(cfg), (tokens,)
  shapes = state_lib.abstract_params(model, *args)
  return {k: tuple(v.shape) for k, v in graft.flatten(shapes).items()}


def _with_generate_reads(conf: dict, gen: dict, family: str, gen_present: bool) -> dict:
  """`conf` with the ids `generate()` reads (`GENERATE_READS`) as it reads them: a seq2seq
  checkpoint's from generation_config.json alone when it has one (a key the file leaves out
  is unset there: the start id falls back to the file's `bos_token_id`, nothing is forced
  or banned), from config.json when it has none. Only when the file names neither a start
  id nor a `bos_token_id` (generate() could not start) are config.json's kept."""
  reads = {k: gen[k] for k in GENERATE_READS if k in gen}
  if family != 'seq2seq' or not gen_present:
    return {**conf, **reads}
  starts = ('decoder_start_token_id', 'bos_token_id')
  if all(reads.get(k) is None for k in starts):
    reads.update({k: conf[k] for k in starts if k in conf})
  return {**{k: v for k, v in conf.items() if k not in GENERATE_READS}, **reads}


def import_hf(hf_dir: str, run_dir: str, drop_pooler: bool = False) -> dict:
  """Converts the Hugging Face model in `hf_dir` into the run directory `run_dir`;
  returns the import report."""
  if not os.path.isdir(hf_dir):
    raise DataError(f'{hf_dir} is not a directory')
  cfg_path = os.path.join(hf_dir, 'config.json')
  conf = _read_json(cfg_path)
  arch = hf.arch_for(conf, cfg_path)
  tensors = safetensors_io.read_weights(hf_dir)
  tok = _hf_tokenizer(hf_dir, arch.model_type)
  gen_path = os.path.join(hf_dir, GENERATION_CONFIG)
  gen_present = os.path.isfile(gen_path)
  gen = _read_json(gen_path) if gen_present else {}
  try:
    fields = arch.model_fields(_with_generate_reads(conf, gen, arch.family, gen_present))
  except DataError as e:       # the field readers name 'config.json': name the file itself
    msg = str(e)
    raise DataError(cfg_path + msg[len('config.json'):] if msg.startswith('config.json:')
                    else f'{cfg_path}: {msg}') from None
  if (arch.model_type == 'roberta' and tok.pad_id is not None
      and tok.pad_id != fields.get('pad_id')):
    raise DataError(f"{cfg_path}: pad_token_id={fields.get('pad_id')} but the tokenizer pads "
                    f'with id {tok.pad_id}: RoBERTa numbers positions from the config\'s pad id '
                    'and gives every token of that id the padding position, so the two must '
                    'agree (fix pad_token_id)')
  if int(fields.get('vocab_size', 0)) < tok.vocab_size:
    raise DataError(f"{cfg_path}: vocab_size={fields['vocab_size']} is smaller than the "
                    f"tokenizer's {tok.vocab_size} ids (added tokens beyond the embedding rows?)")
  model_cd = ml_collections.ConfigDict(fields)
  lengths = {}                 # seq2seq runs: max_source_len, max_target_len
  if arch.family == 'seq2seq':
    n = hf_seq2seq.max_len(conf)
    lengths = {'max_source_len': n, 'max_target_len': n}
    cfg = s2s_models.config_from(ml_collections.ConfigDict({'model': fields, **lengths}),
                                 tok.vocab_size)
  else:
    cfg = lm_models.config_from(model_cd, tok.vocab_size)
  expected = _expected_shapes(cfg)
  flat, report = hf.import_tensors(arch, cfg, tensors, expected, hf_dir,
                                   drop=('pooler',) if drop_pooler else ())
  for group in ('pooler', 'final_logits_bias'):   # optional groups that are model fields
    if group in report['absent_groups']:
      model_cd[group] = False
  absent = report['absent_groups']
  lacking = sorted(k for k in expected if k not in flat and k.split('/')[0] not in absent)
  if lacking:
    raise DataError(f'{hf_dir}: no tensor maps onto parameters {lacking[:5]}')
  report.update({'from': os.path.abspath(hf_dir), 'model_type': arch.model_type,
                 'family': arch.family, 'parameters': int(sum(x.size for x in flat.values()))})
  search = (_search_settings(conf, gen, cfg_path, gen_path, gen_present)
            if arch.family == 'seq2seq' else {})
  if search:
    report['generation'] = search.pop('report')
  run_config = {
      'family': arch.family, 'model': model_cd.to_dict(), **lengths, 'dtype': 'float32',
      'tokenizer': {'path': ''}, **search,
      'imported': {'format': 'huggingface', 'model_type': arch.model_type,
                   'architectures': conf.get('architectures', []),
                   'from': os.path.abspath(hf_dir)}}
  with _staged(run_dir, 'RUN_DIR') as tmp:
    write_json(os.path.join(tmp, 'config.json'), run_config)
    tok.save(os.path.join(tmp, tok.file_name))
    write_json(os.path.join(tmp, 'import_report.json'), report)
    ckpt = Checkpointer(tmp)
    try:
      ckpt.save(0, {'params': graft.unflatten(flat)}, {})
    finally:
      ckpt.close()
  return report


def _search_settings(conf: dict, gen: dict, cfg_path: str, gen_path: str,
                     gen_present: bool) -> dict:
  """An imported seq2seq run's `eval` group: the beam search `generate()` runs for this
  checkpoint by default (`num_beams`, `length_penalty` as len ** alpha: form 'length',
  `min_length`, `no_repeat_ngram_size`, `early_stopping` as `eval.early_stopping`
  (`HF_STOPPING`); from generation_config.json when the checkpoint has one, else
  config.json; a key left out: transformers' defaults 1, 1.0, 0, 0, False), so
  `translate` of the run decodes as its own tool does; plus the report of the settings
  generate() would also apply that this project's search does not (`repetition_penalty`,
  `forced_eos_token_id`, ...; its output length limit, `max_new_tokens` or
  `max_length`, 20 new tokens when neither is set, which generate() always applies)."""
  # generate() takes them from generation_config.json alone when the checkpoint has one
  # (GenerationConfig.from_pretrained; a key it leaves out is transformers' default), from
  # config.json only when it has none
  source, where_path = (gen, gen_path) if gen_present else (conf, cfg_path)
  # a null value is transformers' default, as a key left out
  merged = {k: source[k] for k in (*SEARCH_KEYS, *UNAPPLIED_SEARCH, *LENGTH_KEYS)
            if source.get(k) is not None}
  where = lambda k: where_path                               # noqa: E731
  beam = merged.get('num_beams', 1)
  if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
    raise DataError(f'{where("num_beams")}: num_beams must be an integer >= 1, got {beam!r}')
  alpha = merged.get('length_penalty', 1.0)
  if (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha)
      or alpha < 0):   # transformers also takes alpha < 0; our search (and translate) do not
    raise DataError(f'{where("length_penalty")}: length_penalty must be a finite number >= 0 '
                    f"(this project's search), got {alpha!r}")
  unapplied = {k: merged[k] for k, default in UNAPPLIED_SEARCH.items()
               if merged.get(k, default) not in (default, None)}
  stopping = merged.get('early_stopping', False)   # transformers' default: its heuristic
  if not (isinstance(stopping, bool) or stopping == 'never'):
    raise DataError(f"{where('early_stopping')}: early_stopping must be true, false or "
                    f"'never', got {stopping!r}")
  limits = {}
  for key in ('min_length', 'no_repeat_ngram_size'):
    value = merged.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise DataError(f'{where(key)}: {key} must be an integer >= 0, got {value!r}')
    limits[key] = value
  if merged.get('max_new_tokens') is not None:     # generate() stops there, whatever is set
    unapplied['max_new_tokens'] = merged['max_new_tokens']
  elif merged.get('max_length') is not None:       # the decoder's start token included
    unapplied['max_length'] = merged['max_length']
  else:                                            # neither set: 20 new tokens
    unapplied['max_new_tokens'] = 20
  search = {'beam': beam, 'length_penalty': float(alpha), 'length_penalty_form': 'length',
            **limits, 'early_stopping': HF_STOPPING[stopping]}
  return {'eval': search, 'report': {**search, 'not_applied': unapplied}}


def export_hf(run_dir: str, hf_dir: str) -> dict:
  """Writes the LM, encoder or seq2seq run `run_dir` as a Hugging Face model directory
  `hf_dir`; returns {'model_type', 'architectures', 'tensors'}."""
  src = sources.load_run(run_dir, field='run_dir')
  if src.kind not in ('lm', 'mlm', 'seq2seq'):
    raise DataError(f'{run_dir}: a {src.kind} run; export-hf writes LM, encoder and seq2seq '
                    'runs')
  cfg = src.model_config
  flat = {k: np.asarray(v, np.float32) for k, v in graft.flatten(src.params).items()}
  if src.kind == 'seq2seq':
    arch = hf_seq2seq.arch_of(cfg)
    conf = arch.hf_config(cfg, src.tokenizer)
    cfg, flat = hf_seq2seq.export_flat(cfg, flat)
    return _write_hf(hf_dir, conf, hf.export_tensors(arch, cfg, flat), src.tokenizer,
                     cfg.max_len, arch)
  kind = type(cfg).arch
  if kind == 'transformer':
    arch = hf.GPT2 if cfg.positions == 'learned' else hf.GPT_NEOX
  elif kind == 'encoder':
    arch = hf.BERT if cfg.position_offset == 0 else hf.ROBERTA
  else:
    raise DataError(f'{run_dir}: model.arch={kind!r} has no Hugging Face counterpart here '
                    '(export-hf writes Transformer LMs as GPT-2/GPT-NeoX, encoders as BERT/RoBERTa)')
  if kind == 'encoder' and not cfg.type_vocab_size:   # BERT always adds a token-type row
    flat['type_embed/embedding'] = np.zeros((1, cfg.d_model), np.float32)
    cfg = cfg.replace(type_vocab_size=1)
  conf = arch.hf_config(cfg, src.tokenizer)
  base_model = kind == 'encoder' and not any(k.startswith('mlm/') for k in flat)
  tensors = hf.export_tensors(arch, cfg, flat)
  if base_model:   # no MLM head: the bare encoder (BertModel), names without the prefix
    tensors = {k[len(arch.prefix):]: v for k, v in tensors.items()}
    conf['architectures'] = [{'bert': 'BertModel', 'roberta': 'RobertaModel'}[arch.model_type]]
  return _write_hf(hf_dir, conf, tensors, src.tokenizer, lm_models.context_len(cfg), arch,
                   encoder=not lm_models.is_causal(cfg))


def _write_hf(hf_dir: str, conf: dict, tensors: dict, tok, max_length, arch,
              encoder: bool = False) -> dict:
  """Writes config.json, the weights, the tokenizer (`encoder`: with masked-LM row
  framing) and, for encoder-decoders, generation_config.json, atomically."""
  with _staged(hf_dir, 'HF_DIR') as tmp:
    write_json(os.path.join(tmp, 'config.json'),
               {k: v for k, v in conf.items() if k not in BANNED_KEYS})
    safetensors_io.write_weights(os.path.join(tmp, safetensors_io.WEIGHTS), tensors)
    _export_tokenizer(tok, tmp, max_length, encoder)
    if conf.get('is_encoder_decoder'):   # what generate() reads (transformers 5: only there)
      write_json(os.path.join(tmp, GENERATION_CONFIG),
                 {k: conf[k] for k in GENERATION_KEYS if k in conf})
  return {'model_type': arch.model_type, 'architectures': conf['architectures'],
          'tensors': len(tensors)}


def _export_tokenizer(tok, directory: str, max_length, encoder: bool) -> None:
  if isinstance(tok, HFTokenizer):
    tok.save(os.path.join(directory, tok.file_name))
    conf = {f'{r}_token': p for r, p in tok.specials.items()}
  elif isinstance(tok, Tokenizer):   # sentencepiece: its tokenizer.json twin + the model
    tok.save(os.path.join(directory, tok.file_name))
    twin = from_sentencepiece(tok, encoder=encoder)
    twin.save(os.path.join(directory, twin.file_name))
    conf = {f'{r}_token': p for r, p in twin.specials.items()}
  else:
    raise DataError(f'cannot export a tokenizer of type {type(tok).__name__}')
  conf.update({'tokenizer_class': 'PreTrainedTokenizerFast',
               'model_max_length': max_length or 1_000_000})
  write_json(os.path.join(directory, 'tokenizer_config.json'), conf)
