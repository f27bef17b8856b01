"""Sample from a trained LM run.

  python -m translearn_jax.generation.sample --workdir /tmp/lm_tf \
      --prompt "The history of" --prompt "In 1900," --max_new_tokens 40 \
      [--temperature 0.8 --top_k 40 --top_p 0.95 | --temperature 0 (greedy)] [--no_cache]

Reads the run's `config.json`, tokenizer and newest checkpoint. Each
prompt is prefixed with EOS (a document boundary, as in training).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from translearn_jax.data.hf_tokenizer import HFTokenizer
from translearn_jax.data.tokenizer import Tokenizer
from translearn_jax.errors import ConfigError, DataError, TranslearnError
from translearn_jax.generation import sampling
from translearn_jax.models import lm as lm_models
from translearn_jax.transfer import sources

def load_run(workdir: str):
  """(config, tokenizer, model config, params) of an LM run directory."""
  src = sources.load('lm', workdir, field='workdir')
  return src.run_config, src.tokenizer, src.model_config, src.params


def encode_prompts(tok: Tokenizer, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
  for i, p in enumerate(prompts):
    try:
      p.encode('utf-8')
    except UnicodeEncodeError as e:     # bytes the command line could not decode as UTF-8
      code = ord(p[e.start])
      byte = f'byte 0x{code - 0xDC00:02x}' if 0xDC80 <= code <= 0xDCFF else f'U+{code:04X}'
      raise DataError(f'prompt {i + 1}: {byte} at character {e.start} is not UTF-8 text (a '
                      'Latin-1 terminal, or text cut inside a character); give the prompt '
                      'in UTF-8') from None
  ids = [[tok.eos_id] + tok.encode(p) for p in prompts]
  lengths = np.array([len(x) for x in ids], np.int32)
  out = np.zeros((len(ids), lengths.max()), np.int32)
  for i, x in enumerate(ids):
    out[i, :len(x)] = x
  return out, lengths


def never_generated(tok) -> tuple[int, ...]:
  """Ids the sampler never draws: this project's special pieces but EOS (pad, unk, bos and
  user-defined ones, which never stand for text); none for an imported checkpoint's
  `tokenizer.json`, as transformers' `generate()` bans none by default (Pythia's
  `<|padding|>`, chat markers: the model's logits decide)."""
  if isinstance(tok, HFTokenizer):
    return ()
  return tuple(i for i in tok.special_ids() if i != tok.eos_id)


def sample(mcfg, params, tok: Tokenizer, prompts: list[str], max_new_tokens: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
           cached: bool = True, with_prompt: bool = False) -> tuple[list[str], float]:
  """Continuations of `prompts` (`with_prompt`: each prompt and its continuation decoded
  together, as one text: no space is added where the continuation goes on inside a word
  or in a script written without spaces) and the generation time in seconds."""
  sampling.check_sampling(temperature, top_k, top_p)
  if max_new_tokens < 1:
    raise ConfigError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  if not prompts:
    raise ConfigError('no prompts to continue')
  toks, lengths = encode_prompts(tok, prompts)
  total = int(lengths.max()) + max_new_tokens
  context = lm_models.context_len(mcfg)
  if context is not None and lengths.max() > context:
    raise ConfigError(f'prompt of {lengths.max()} tokens is longer than the model context '
                      f'(model.max_len={context})')
  if context is not None and total > context:
    raise ConfigError(f'prompt ({lengths.max()} tokens) + max_new_tokens ({max_new_tokens}) '
                      f'exceeds the model context (model.max_len={context})')
  model = lm_models.make(mcfg.replace(decode=cached))
  step, init = sampling.STEPS[type(mcfg).arch](model, cached)
  state = init(params, len(prompts), total)
  t0 = time.perf_counter()
  out = sampling.generate(step, state, jnp.asarray(toks), jnp.asarray(lengths),
                          jax.random.key(seed), total_len=total, temperature=temperature,
                          top_k=top_k, top_p=top_p, eos_id=tok.eos_id,
                          suppress=never_generated(tok),
                          vocab_limit=tok.vocab_size)
  out = np.asarray(jax.device_get(out))
  dt = time.perf_counter() - t0
  texts = []
  for row, n in zip(out.tolist(), lengths.tolist()):
    # the continuation up to its EOS: the PAD ids after it can be text in an imported
    # vocabulary (GPT-2's id 0 is '!'), and an HF tokenizer's decode skips a leading EOS
    # (the batch runs until its longest prompt has max_new_tokens; each row keeps its own
    # max_new_tokens, as transformers' generate gives every row)
    new = row[n:n + max_new_tokens]
    new = new[:new.index(tok.eos_id)] if tok.eos_id in new else new
    texts.append(tok.decode((row[1:n] if with_prompt else []) + new))
  return texts, dt


def _define_flags():
  """CLI flags, defined only when run as a program (importers keep their own flags)."""
  flags.DEFINE_string('workdir', None, 'A finished (or checkpointed) LM run.')
  flags.DEFINE_multi_string('prompt', [''], 'Prompt text (repeat for a batch).')
  flags.DEFINE_integer('max_new_tokens', 50, 'Tokens to generate per prompt.')
  flags.DEFINE_float('temperature', 1.0, '0 = greedy.')
  flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens (0: all).')
  flags.DEFINE_float('top_p', 1.0, 'Nucleus mass (1: all).')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_bool('no_cache', False, 'Recompute the whole prefix every step.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:                  # a prompt given without --prompt is not ignored silently
    print(f'error: unexpected arguments {argv[1:]} (a prompt is --prompt TEXT, repeated for a '
          'batch)', file=sys.stderr)
    sys.exit(2)
  f = flags.FLAGS
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  try:
    config, tok, mcfg, params = load_run(f.workdir)
    texts, _ = sample(mcfg, params, tok, f.prompt, f.max_new_tokens, f.temperature, f.top_k,
                      f.top_p, f.seed, cached=not f.no_cache, with_prompt=True)
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for prompt, text in zip(f.prompt, texts):
    print(f'--- {prompt!r}\n{text}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
