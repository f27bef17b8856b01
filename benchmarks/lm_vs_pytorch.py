"""Decoder Transformer LM training throughput: ours vs PyTorch eager, same run.

  pip install -e '.[bench]'     # torch==2.13.0 (CPU wheel)
  python benchmarks/lm_vs_pytorch.py [--steps 30] [--json out.json]

Model (both): 4 pre-norm layers, d_model 256, 4 heads, d_ff 1024, GELU, learned
positions, tied embeddings, vocab 8000, seq 128, batch 16, fp32, dropout 0,
AdamW (lr 1e-3, wd 0.01) with global-norm clipping 1.0; PyTorch uses
`nn.TransformerEncoderLayer(norm_first=True)` with a causal mask. Both use all
cores (torch: `set_num_threads(os.cpu_count())`). Timed steps exclude warm-up /
compilation. Also measured: the machine's fp32 matmul peak (2048³ matmuls in
XLA), ours' model FLOPs utilisation against it, and generation tokens/s of our
KV-cache sampler against recomputing the prefix every step.
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

from benchmarks.common import matmul_peak, optim_config  # noqa: E402
from translearn_jax.generation import sampling  # noqa: E402
from translearn_jax.models import transformer_lm  # noqa: E402
from translearn_jax.pretraining import lm  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics, optimizers  # noqa: E402

V, D, H, L, F, T, B = 8000, 256, 4, 4, 1024, 128, 16


def ours(tokens: np.ndarray, warmup: int, steps: int) -> float:
  cfg = transformer_lm.TransformerConfig(vocab_size=V, d_model=D, num_heads=H, num_layers=L,
                                         d_ff=F, max_len=T, dropout=0.0, positions='learned',
                                         deterministic=False)
  model = transformer_lm.TransformerLM(cfg)
  mesh = mesh_lib.make_mesh(1)
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.key(0), jnp.zeros((1, T), jnp.int32))['params']))
  tx, sched = optimizers.adamw(optim_config(), 10 ** 6, abstract)
  state = lm.init_state(model, tx, 0, T, mesh)
  fn = lm.make_train_fn(model, tx, sched, mesh)
  batches = [mesh_lib.shard_batch({'tokens': tokens[i][None]}, mesh, 1)
             for i in range(len(tokens))]
  for i in range(warmup):
    state, m = fn(state, batches[i % len(batches)])
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = fn(state, batches[i % len(batches)])
  jax.block_until_ready(state)
  return steps * B * T / (time.perf_counter() - t0), float(m['loss_sum']) / (B * T)


def torch_lm(tokens: np.ndarray, warmup: int, steps: int) -> float:
  import torch
  from torch import nn
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(V, D)
      self.pos = nn.Parameter(torch.randn(T, D) * 0.02)
      layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation='gelu',
                                         batch_first=True, norm_first=True)
      self.blocks = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
      self.norm = nn.LayerNorm(D)
      self.register_buffer('mask', nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, x):
      h = self.embed(x) + self.pos[:x.shape[1]]
      h = self.blocks(h, mask=self.mask, is_causal=True)
      return self.norm(h) @ self.embed.weight.T

  model = Model()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9,
                          weight_decay=0.01)
  data = [torch.from_numpy(t.astype(np.int64)) for t in tokens]
  loss_fn = nn.CrossEntropyLoss()

  def step(x):
    opt.zero_grad(set_to_none=True)
    logits = model(x[:, :-1])
    loss = loss_fn(logits.reshape(-1, V), x[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  for i in range(warmup):
    step(data[i % len(data)])
  t0 = time.perf_counter()
  for i in range(steps):
    loss = step(data[i % len(data)])
  return steps * B * T / (time.perf_counter() - t0), float(loss)


def generation(new_tokens: int = 96, batch: int = 8) -> dict:
  cfg = transformer_lm.TransformerConfig(vocab_size=V, d_model=D, num_heads=H, num_layers=L,
                                         d_ff=F, max_len=T, dropout=0.0, positions='learned')
  params = nn.unbox(transformer_lm.TransformerLM(cfg).init(
      jax.random.key(0), jnp.zeros((1, T), jnp.int32))['params'])
  prompts = jnp.full((batch, 1), 3, jnp.int32)
  lengths = jnp.ones((batch,), jnp.int32)
  out = {}
  for cached in (True, False):
    model = transformer_lm.TransformerLM(cfg.replace(decode=cached))
    step, init = sampling.transformer_step(model, cached)
    run = lambda: sampling.generate(step, init(params, batch, 1 + new_tokens), prompts, lengths,
                                    jax.random.key(0), total_len=1 + new_tokens,
                                    temperature=1.0, top_k=40, eos_id=-1).block_until_ready()
    run()
    t0 = time.perf_counter()
    run()
    out['cached' if cached else 'uncached'] = batch * new_tokens / (time.perf_counter() - t0)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--steps', type=int, default=30)
  ap.add_argument('--warmup', type=int, default=5)
  ap.add_argument('--json', default='')
  ap.add_argument('--skip-torch', action='store_true')
  args = ap.parse_args()
  tokens = np.random.default_rng(0).integers(0, V, (8, B, T + 1)).astype(np.int32)
  peak = matmul_peak()
  ours_tps, ours_loss = ours(tokens, args.warmup, args.steps)
  fpt = transformer_lm.flops_per_token(
      transformer_lm.TransformerConfig(vocab_size=V, d_model=D, num_heads=H, num_layers=L,
                                       d_ff=F, max_len=T), T)
  torch_tps = torch_loss = None
  if not args.skip_torch:
    torch_tps, torch_loss = torch_lm(tokens, args.warmup, args.steps)
  gen = generation()
  print(f'\nmodel: {L} layers, d_model {D}, {H} heads, d_ff {F}, vocab {V}, seq {T}, batch {B}, '
        f'fp32, AdamW; {args.steps} timed steps; {os.cpu_count()} CPU cores')
  print(f'fp32 matmul peak (XLA, 2048^3): {peak / 1e9:.0f} GFLOP/s; '
        f'model FLOPs/token {fpt / 1e6:.1f}M')
  print(f'{"":<8} {"tokens/s":>10} {"GFLOP/s":>8} {"MFU":>6} {"loss":>7}')
  print(f'{"ours":<8} {ours_tps:>10,.0f} {fpt * ours_tps / 1e9:>8.0f} '
        f'{fpt * ours_tps / peak:>6.1%} {ours_loss:>7.3f}')
  if torch_tps:
    print(f'{"torch":<8} {torch_tps:>10,.0f} {fpt * torch_tps / 1e9:>8.0f} '
          f'{fpt * torch_tps / peak:>6.1%} {torch_loss:>7.3f}')
    print(f'ratio ours/torch tokens/s: {ours_tps / torch_tps:.3f}')
  print(f'generation (batch 8, 96 new tokens, top-k 40): KV cache {gen["cached"]:,.0f} tokens/s, '
        f'recompute {gen["uncached"]:,.0f} tokens/s ({gen["cached"] / gen["uncached"]:.1f}x)')
  out = {'ours_tokens_per_s': ours_tps, 'matmul_peak_flops': peak,
         'ours_mfu': fpt * ours_tps / peak, 'generation_cached_tokens_per_s': gen['cached'],
         'generation_uncached_tokens_per_s': gen['uncached']}
  if torch_tps:
    out.update(torch_tokens_per_s=torch_tps, ratio=ours_tps / torch_tps)
  if args.json:
    metrics.write_json(args.json, out)


if __name__ == '__main__':
  main()
