"""GPT-2-small training throughput, model FLOPs utilisation and memory on whatever devices exist.

  python benchmarks/accelerator_mfu.py [--steps 20] [--batch 8] [--seq 1024]
      [--attention cudnn|dot_product|xla|einsum] [--dtype bfloat16] [--loss_chunk 1024]
      [--tiny] [--peer none|torch|torch_compile] [--trace DIR] [--json out.json]

The model is `configs/gpt2_small.py`'s (12 layers, d 768, 12 heads, 124M
parameters, learned positions, tied 50,257-row table), trained with the LM
pretraining step of this project (`pretraining.lm.make_train_fn`: AdamW, bf16
compute with fp32 master weights, the chunked cross-entropy) on random tokens,
data-parallel over every device. Prints tokens/s, MFU against the device's
dense peak for the compute dtype (`training.flops.PEAK_FLOPS`; unknown on
CPUs) and the compiled step's memory per device (XLA's memory analysis:
arguments + outputs + temporaries). Without an accelerator it runs a tiny
model (`--tiny` is implied) so that `tests/test_benchmarks_smoke.py` keeps the
script working; CPU figures mean nothing for the accelerator target.

`--peer torch` also trains the same model in the same run with PyTorch: Hugging
Face `transformers`' GPT2LMHeadModel (SDPA attention, dropout 0), bf16 autocast
over fp32 weights, fused AdamW with the same settings and global-norm clipping
1.0, on the same random tokens; `--peer torch_compile` compiles the model with
`torch.compile` (as nanoGPT does). Prints ours / peer tokens/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import optim_config  # noqa: E402
from translearn_jax.models import transformer_lm  # noqa: E402
from translearn_jax.pretraining import lm  # noqa: E402
from translearn_jax.training import flops as flops_lib  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics, optimizers  # noqa: E402

GPT2_SMALL = dict(vocab_size=50257, d_model=768, num_heads=12, num_layers=12, d_ff=3072)
TINY = dict(vocab_size=1000, d_model=64, num_heads=4, num_layers=2, d_ff=256)


def run(steps: int, batch: int, seq: int, attention: str, dtype: str, loss_chunk: int,
        tiny: bool, trace: str = '') -> dict:
  mesh = mesh_lib.make_mesh()
  n_dev = mesh.devices.size
  batch = max(batch, n_dev) // n_dev * n_dev
  dims = TINY if tiny else GPT2_SMALL
  cfg = transformer_lm.TransformerConfig(
      **dims, max_len=seq, dropout=0.0, positions='learned', layer_norm_eps=1e-5,
      attention_impl=attention, dtype=lm.DTYPES[dtype], deterministic=False)
  model = transformer_lm.TransformerLM(cfg)
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0),
                                                       jnp.zeros((1, 8), jnp.int32))['params']))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
  tx, sched = optimizers.adamw(optim_config(6e-4), 10 ** 6, abstract)
  state = lm.init_state(model, tx, 0, 8, mesh)
  fn = lm.make_train_fn(model, tx, sched, mesh, mesh_lib.shardings_of(state), loss_chunk)
  rng = np.random.default_rng(0)
  batches = [mesh_lib.shard_batch({'tokens': rng.integers(
      0, dims['vocab_size'], (1, batch, seq + 1)).astype(np.int32)}, mesh, 1) for _ in range(2)]
  t0 = time.perf_counter()
  compiled = fn.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  mem_bytes = None
  if mem is not None:
    mem_bytes = int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
                    mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  state, m = fn(state, batches[0])                     # warm-up
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = fn(state, batches[i % 2])
  jax.block_until_ready(state)
  dt = time.perf_counter() - t0
  if trace:                                             # a few more steps, profiled
    with jax.profiler.trace(trace):
      for i in range(3):
        state, m = fn(state, batches[i % 2])
      jax.block_until_ready(state)
  tokens_per_s = steps * batch * seq / dt
  fpt = transformer_lm.flops_per_token(cfg, seq)
  peak = flops_lib.peak_flops(jax.devices()[0], dtype)
  mfu = flops_lib.mfu(fpt, tokens_per_s, n_dev, peak)
  return {'device': jax.devices()[0].device_kind, 'devices': n_dev, 'params': n_params,
          'batch': batch, 'seq': seq, 'dtype': dtype, 'attention': attention,
          'loss_chunk': loss_chunk, 'steps': steps, 'compile_s': round(compile_s, 2),
          'tokens_per_s': round(tokens_per_s, 1), 'step_s': round(dt / steps, 4),
          'mfu': None if mfu is None else round(mfu, 4),
          'peak_flops_per_device': peak, 'memory_per_device_bytes': mem_bytes,
          'final_loss': float(m['loss_sum']) / float(m['loss_count'])}


def torch_peer(steps: int, batch: int, seq: int, dims: dict, compile_step: bool) -> dict:
  """The same model and step in PyTorch (transformers' GPT-2), timed as ours is."""
  import torch
  import transformers
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  cfg = transformers.GPT2Config(
      vocab_size=dims['vocab_size'], n_positions=seq, n_embd=dims['d_model'],
      n_layer=dims['num_layers'], n_head=dims['num_heads'], n_inner=dims['d_ff'],
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
      activation_function='gelu_new', tie_word_embeddings=True, bos_token_id=0,
      eos_token_id=0)
  model = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation='sdpa')
  model = model.to(dev).train()
  n_params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.98), eps=1e-9,
                          weight_decay=0.01, fused=dev == 'cuda')
  amp = torch.bfloat16 if dev == 'cuda' else torch.float32

  forward = torch.compile(model) if compile_step else model   # nanoGPT's way: the model

  def step(x):
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=amp, enabled=dev == 'cuda'):
      logits = forward(x[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             x[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.detach()

  rng = np.random.default_rng(0)
  data = [torch.from_numpy(rng.integers(0, dims['vocab_size'], (batch, seq + 1))).to(dev)
          for _ in range(2)]
  sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
  t0 = time.perf_counter()
  loss = step(data[0])                             # warm-up (and compilation)
  float(loss)
  sync()
  warm_s = time.perf_counter() - t0
  if dev == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  for i in range(steps):
    loss = step(data[i % 2])
  sync()
  dt = time.perf_counter() - t0
  return {'peer': 'torch.compile' if compile_step else 'torch eager',
          'torch': torch.__version__, 'transformers': transformers.__version__,
          'params': n_params, 'warmup_s': round(warm_s, 2),
          'tokens_per_s': round(steps * batch * seq / dt, 1), 'step_s': round(dt / steps, 4),
          'peak_memory_bytes': torch.cuda.max_memory_allocated() if dev == 'cuda' else None,
          'final_loss': float(loss)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--batch', type=int, default=8, help='global batch (sequences)')
  p.add_argument('--seq', type=int, default=1024)
  p.add_argument('--attention', default=None,
                 help="model.attention_impl (default: cudnn on GPU, dot_product elsewhere)")
  p.add_argument('--dtype', default='bfloat16', choices=sorted(lm.DTYPES))
  p.add_argument('--loss_chunk', type=int, default=1024)
  p.add_argument('--tiny', action='store_true', help='a tiny model (implied on CPU)')
  p.add_argument('--peer', default='none', choices=['none', 'torch', 'torch_compile'],
                 help='also train the same model with PyTorch (transformers GPT-2) in this run')
  p.add_argument('--trace', default='', help='a directory: 3 more steps under jax.profiler')
  p.add_argument('--json', default='')
  a = p.parse_args(argv)
  platform = jax.devices()[0].platform
  tiny = a.tiny or platform == 'cpu'
  attention = a.attention or ('cudnn' if platform == 'gpu' else 'dot_product')
  seq = min(a.seq, 128) if tiny else a.seq
  out = run(a.steps, a.batch, seq, attention, a.dtype, a.loss_chunk, tiny, a.trace)
  mem = out['memory_per_device_bytes']
  print(f"{out['device']} x{out['devices']}: {out['params'] / 1e6:.1f}M parameters, batch "
        f"{out['batch']} x {out['seq']}, {out['dtype']}, attention {out['attention']}, "
        f"compile {out['compile_s']}s")
  mfu = 'unknown (no peak for this device)' if out['mfu'] is None else f"{out['mfu']:.1%}"
  memory = 'n/a' if mem is None else f'{mem / 2 ** 30:.2f} GiB'
  print(f"  {out['tokens_per_s']:,.0f} tokens/s ({out['step_s'] * 1e3:.1f} ms/step), "
        f'MFU {mfu}, memory/device {memory}')
  if a.peer != 'none':
    dims = TINY if tiny else GPT2_SMALL
    peer = torch_peer(a.steps, out['batch'], seq, dims, a.peer == 'torch_compile')
    out['peer'] = peer
    pmem = peer['peak_memory_bytes']
    print(f"  {peer['peer']} (torch {peer['torch']}, transformers {peer['transformers']}, "
          f"{peer['params'] / 1e6:.1f}M parameters): {peer['tokens_per_s']:,.0f} tokens/s "
          f"({peer['step_s'] * 1e3:.1f} ms/step), peak memory "
          f"{'n/a' if pmem is None else format(pmem / 2 ** 30, '.2f') + ' GiB'}; "
          f"ours / peer tokens/s {out['tokens_per_s'] / peer['tokens_per_s']:.3f}")
  if a.json:
    metrics.write_json(a.json, out)
  return out


if __name__ == '__main__':
  main()
