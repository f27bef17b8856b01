"""Masked-LM encoder training throughput: ours vs PyTorch eager, same run.

  pip install -e '.[bench]'     # torch==2.13.0 (CPU wheel)
  python benchmarks/mlm_vs_pytorch.py [--rounds 6] [--steps 5] [--json out.json]

Model (both): the README's encoder — 4 post-LN layers, d_model 256, 4 heads,
d_ff 1024, exact GELU, learned positions, LayerNorm on the embeddings, MLM head
(dense → GELU → LayerNorm → decoder tied to the embeddings + bias), vocab
8000, rows of 128, batch 32, fp32, dropout 0.1, AdamW (lr 1e-3, wd 0.01) with
global-norm clipping 1.0. PyTorch: `nn.TransformerEncoder` of
`nn.TransformerEncoderLayer(norm_first=False, activation='gelu')`.

Both mask dynamically every step (15% of pieces, 80/10/10) and run the
vocabulary projection only where it is needed: ours at K = 39 prediction slots
per row (`data.masking`), PyTorch at the selected positions (boolean
indexing, as Hugging Face's BERT loss does with -100 labels, but without
computing the other logits). Ours also applies the packed-row segment mask
(one segment per row here); PyTorch gets no attention mask, its fastest path.
Each side is timed twice: the 32 rows as one batch, and as 4 micro-batches
of 8 with gradient accumulation (ours: `train.grad_accum=4`,
`train.batch_size=8`, scanned inside the step; PyTorch: four backward passes
before one optimiser step) — the same optimiser step on the same rows. The
ratios are against PyTorch's faster variant. Tokens/s counts all row positions. They take turns in short rounds
(`common.interleaved`) and the ratio is the median of per-round ratios. Also
printed: the machine's fp32 matmul peak (2048³ in XLA) and each side's model
FLOPs utilisation against it.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import interleaved, matmul_peak, optim_config  # noqa: E402
from translearn_jax.data import masking  # noqa: E402
from translearn_jax.models import encoder  # noqa: E402
from translearn_jax.pretraining import mlm  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics, optimizers  # noqa: E402
from translearn_jax.training.state import init_train_state  # noqa: E402

V, D, H, L, F, T, B = 8000, 256, 4, 4, 1024, 128, 32
SPECIAL, MASK = [0, 1, 2, 3, 4], 4
RATE = 0.15


def config(deterministic=False):
  return encoder.EncoderConfig(vocab_size=V, d_model=D, num_heads=H, num_layers=L, d_ff=F,
                               max_len=T, dropout=0.1, attention_dropout=0.1,
                               deterministic=deterministic)


def rows(n: int) -> np.ndarray:
  """(n, B, 3, T) batches of one document per row: tokens, segments, positions."""
  rng = np.random.default_rng(0)
  out = np.zeros((n, B, 3, T), np.int32)
  out[:, :, 0] = rng.integers(5, V, (n, B, T))
  out[:, :, 0, 0], out[:, :, 0, -1] = 2, 3
  out[:, :, 1] = 1
  out[:, :, 2] = np.arange(T)
  return out


def ours(data: np.ndarray, micro: int = 1):
  """Our step on `data` batches of B rows, scanned as `micro` micro-batches of B / micro
  rows (gradient accumulation: the same optimiser step on the same 32 rows)."""
  model = encoder.Encoder(config())
  mesh = mesh_lib.make_mesh(1)
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.key(0), jnp.zeros((1, T), jnp.int32))['params']))
  tx, sched = optimizers.adamw(optim_config(), 10 ** 6, abstract)
  masker = masking.Masker(V, SPECIAL, MASK, RATE, masking.num_slots(T, RATE))
  box = {'state': init_train_state(model, tx, 0, mesh, jnp.zeros((1, T), jnp.int32))}
  fn = mlm.make_train_fn(model, tx, sched, mesh, masker)
  batches = [mesh_lib.shard_batch({'tokens': d.reshape(micro, B // micro, *d.shape[1:])}, mesh, 1)
             for d in data]

  def step(i):
    box['state'], box['m'] = fn(box['state'], batches[i % len(batches)])

  def sync():
    jax.block_until_ready(box['state'])
  return step, sync, box


def torch_mlm(data: np.ndarray, micro: int = 1):
  """PyTorch's step; with `micro` > 1 the batch's gradient is accumulated over `micro`
  micro-batches (each loss scaled by its share of the selected positions)."""
  import torch
  from torch import nn
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(V, D)
      nn.init.normal_(self.embed.weight, std=0.02)   # as ours (and BERT): the decoder is tied
      self.pos = nn.Parameter(torch.randn(T, D) * 0.02)
      self.embed_ln = nn.LayerNorm(D, eps=1e-12)
      self.drop = nn.Dropout(0.1)
      layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.1, activation='gelu',
                                         batch_first=True, norm_first=False,
                                         layer_norm_eps=1e-12)
      self.blocks = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
      self.dense, self.ln = nn.Linear(D, D), nn.LayerNorm(D, eps=1e-12)
      self.bias = nn.Parameter(torch.zeros(V))

    def forward(self, x, selected):
      h = self.drop(self.embed_ln(self.embed(x) + self.pos[:x.shape[1]]))
      h = self.blocks(h)[selected]                       # (n_selected, D)
      h = self.ln(nn.functional.gelu(self.dense(h)))
      return h @ self.embed.weight.T + self.bias

  model = Model()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9,
                          weight_decay=0.01)
  tokens = [torch.from_numpy(d[:, 0].astype(np.int64)) for d in data]
  special = torch.tensor(SPECIAL)
  box = {}

  def step(i):
    x = tokens[i % len(tokens)]
    eligible = ~torch.isin(x, special)
    selected = (torch.rand(x.shape) < RATE) & eligible
    u = torch.rand(x.shape)
    inputs = torch.where(selected & (u < 0.8), torch.full_like(x, MASK), x)
    inputs = torch.where(selected & (u >= 0.8) & (u < 0.9),
                         torch.randint(5, V, x.shape), inputs)
    opt.zero_grad(set_to_none=True)
    total = selected.sum()
    for part in range(micro):
      rows = slice(part * B // micro, (part + 1) * B // micro)
      loss = nn.functional.cross_entropy(model(inputs[rows], selected[rows]), x[rows][selected[rows]],
                                         reduction='sum') / total
      loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    box['loss'] = float(loss) * micro
  return step, (lambda: None), box


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--rounds', type=int, default=6)
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--warmup', type=int, default=3)
  ap.add_argument('--json', default='')
  ap.add_argument('--skip-torch', action='store_true')
  ap.add_argument('--micro', type=int, default=4,
                  help='also time ours with the batch as this many micro-batches (1: off)')
  args = ap.parse_args()
  data = rows(4)
  peak = matmul_peak()
  o_step, o_sync, o_box = ours(data)
  runners = {'ours': (o_step, o_sync)}
  if args.micro > 1:
    m_step, m_sync, _ = ours(data, args.micro)
    runners[f'ours_{args.micro}x{B // args.micro}'] = (m_step, m_sync)
  if not args.skip_torch:
    t_step, t_sync, t_box = torch_mlm(data)
    runners['torch'] = (t_step, t_sync)
    if args.micro > 1:
      tm_step, tm_sync, _ = torch_mlm(data, args.micro)
      runners[f'torch_{args.micro}x{B // args.micro}'] = (tm_step, tm_sync)
  times = interleaved(runners, args.warmup, args.rounds, args.steps)
  # FLOPs: layers on all positions, the MLM head on the ~15% predicted (both sides)
  fpt = encoder.flops_per_token(config(), T, predicted_fraction=RATE)
  tps = {k: [args.steps * B * T / s for s in v] for k, v in times.items()}
  med = {k: float(np.median(v)) for k, v in tps.items()}
  print(f'\nmodel: {L} post-LN layers, d_model {D}, {H} heads, d_ff {F}, vocab {V}, rows of {T}, '
        f'batch {B}, fp32, AdamW, dropout 0.1; {args.rounds} rounds × {args.steps} steps; '
        f'{os.cpu_count()} CPU cores')
  print(f'fp32 matmul peak (XLA, 2048^3): {peak / 1e9:.0f} GFLOP/s; model FLOPs/token '
        f'{fpt / 1e6:.1f}M (MLM head on {RATE:.0%} of positions)')
  print(f'{"":<8} {"tokens/s (median)":>18} {"GFLOP/s":>8} {"MFU":>6}')
  for k, v in med.items():
    print(f'{k:<8} {v:>18,.0f} {fpt * v / 1e9:>8.0f} {fpt * v / peak:>6.1%}')
  out = {'ours_tokens_per_s': med['ours'], 'matmul_peak_flops': peak,
         'ours_mfu': fpt * med['ours'] / peak,
         'ours_final_loss': float(o_box['m']['loss_sum'] / o_box['m']['loss_count'])}
  if 'torch' in med:
    out.update(torch_tokens_per_s=med['torch'], torch_final_loss=t_box['loss'])
    best_torch = max((k for k in med if k.startswith('torch')), key=med.get)
    out['best_torch'] = best_torch
    for name in [k for k in med if k.startswith('ours')]:
      ratios = [a / b for a, b in zip(times[best_torch], times[name])]
      out[f'{name}_tokens_per_s'] = med[name]
      out[f'ratio_{name}'] = float(np.median(ratios))
      out[f'ratio_{name}_range'] = [float(min(ratios)), float(max(ratios))]
      print(f'ratio {name}/{best_torch} tokens/s: {np.median(ratios):.3f} (median of per-round '
            f'ratios, range {min(ratios):.2f}–{max(ratios):.2f})')
    print(f'final loss ours {out["ours_final_loss"]:.3f}, torch {t_box["loss"]:.3f}')
  if args.json:
    metrics.write_json(args.json, out)


if __name__ == '__main__':
  main()
