"""Encoder-decoder training throughput: ours vs `torch.nn.Transformer`, same run; beam search.

  pip install -e '.[bench]'     # torch==2.13.0 (CPU wheel)
  python benchmarks/seq2seq_throughput.py [--rounds 8 --steps 4] [--json out.json] [--skip-torch]

Model (both): 3 encoder + 3 decoder pre-norm layers, d_model 256, 4 heads,
d_ff 1024, GELU, learned positions, one embedding shared by source, target and
output, vocab 8000, dropout 0, fp32; AdamW (lr 1e-3, wd 0.01), global-norm
clipping 1.0, label-smoothed (0.1) cross-entropy over real target tokens.
Batch 32 pairs padded to 32 source / 32 target positions with random real
lengths 8..32 (padding masked in both: `src_key_padding_mask` /
`memory_key_padding_mask` and a causal `tgt_mask` in PyTorch). Throughput is
real (non-padding) target tokens per second; timed steps exclude warm-up and
compilation. Both use all cores. The two take turns in short rounds and the
ratio is the median of the per-round ratios (this machine's speed drifts by
±20% over a minute; back-to-back runs gave ratios from 0.88 to 1.20).

`ours_packed` trains on the same pairs packed (`data.packing`) into batches of
the same shape (32 rows of 32/32 positions), several pairs a row, attention kept
within each pair: the same FLOPs per step as the padded batch, more of them on
real tokens. `ratio` in the JSON is ours_packed / torch (our training pipeline's
throughput); `ratio_padded` is ours on the identical padded batches / torch
(model for model). Throughputs count the real target tokens of the steps each
runner timed.

Decoding (ours): sentences/s of greedy and beam-4 search (length penalty 0.6)
over 64 sources, max 32 target tokens. The weights are random, so hypotheses
rarely end early: these are close to worst-case (every step runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import interleaved, optim_config  # noqa: E402
from translearn_jax.data.packing import PackStream  # noqa: E402
from translearn_jax.data.tokenizer import BOS, EOS  # noqa: E402
from translearn_jax.generation import seq2seq_decode  # noqa: E402
from translearn_jax.models import seq2seq as s2s  # noqa: E402
from translearn_jax.pretraining import seq2seq  # noqa: E402
from translearn_jax.training import mesh as mesh_lib  # noqa: E402
from translearn_jax.training import metrics, optimizers  # noqa: E402

V, D, H, L, F, S, T, B = 8000, 256, 4, 3, 1024, 32, 32, 32
SMOOTHING = 0.1


def make_batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    src = np.zeros((B, S), np.int32)
    tin = np.zeros((B, T), np.int32)
    tout = np.zeros((B, T), np.int32)
    for r in range(B):
      ls, lt = rng.integers(8, S + 1), rng.integers(8, T)
      src[r, :ls] = rng.integers(4, V, ls)
      tgt = rng.integers(4, V, lt)
      tin[r, :lt + 1] = np.concatenate([[BOS], tgt])
      tout[r, :lt + 1] = np.concatenate([tgt, [EOS]])
    out.append({'source': src, 'target_in': tin, 'target_out': tout})
  return out


def model_config(**kw) -> s2s.Seq2SeqConfig:
  return s2s.Seq2SeqConfig(vocab_size=V, d_model=D, num_heads=H, encoder_layers=L,
                           decoder_layers=L, d_ff=F, max_len=max(S, T), dropout=0.0,
                           share_embeddings=True, **kw)


def packed_batches(batches) -> list[dict[str, np.ndarray]]:
  """The same pairs packed into (B, S)/(B, T) rows (`data.packing`), last partial batch dropped."""
  cat = lambda k: np.concatenate([b[k] for b in batches])
  stream = PackStream(cat('source'), cat('target_in'), cat('target_out'), rows=B, epochs=1,
                      seed=0)
  return [{k: v[0] for k, v in stream.make_batch(0, i).items()}
          for i in range(len(stream.plans[0]) - 1)]


def ours(batches):
  """(step(i), sync(), last loss) of our model, compiled and ready."""
  model = s2s.Seq2Seq(model_config(deterministic=False))
  mesh = mesh_lib.make_mesh(1)
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.key(0), jnp.zeros((1, S), jnp.int32), jnp.zeros((1, T), jnp.int32))['params']))
  tx, sched = optimizers.adamw(optim_config(), 10 ** 6, abstract)
  state = seq2seq.init_state(model, tx, 0, mesh, S, T)
  fn = seq2seq.make_train_fn(model, tx, sched, mesh, SMOOTHING)
  dev = [mesh_lib.shard_batch({k: v[None] for k, v in b.items()}, mesh, 1) for b in batches]
  box = {'state': state, 'm': None}

  def step(i):
    box['state'], box['m'] = fn(box['state'], dev[i % len(dev)])

  def loss():
    return float(box['m']['loss_sum']) / float(box['m']['loss_count'])
  return step, lambda: jax.block_until_ready(box['state']), loss


def torch_s2s(batches):
  """(step(i), sync(), last loss) of the equivalent torch.nn.Transformer model."""
  import torch
  from torch import nn
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  warnings.filterwarnings('ignore', message='enable_nested_tensor')

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(V, D)
      nn.init.normal_(self.embed.weight, std=0.02)  # as ours (tied output: N(0, 1) blows up)
      self.src_pos = nn.Parameter(torch.randn(S, D) * 0.02)
      self.tgt_pos = nn.Parameter(torch.randn(T, D) * 0.02)
      self.tf = nn.Transformer(D, H, L, L, F, dropout=0.0, activation='gelu', batch_first=True,
                               norm_first=True)
      self.register_buffer('causal', nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, src, tin):
      pad = src == 0
      h = self.tf(self.embed(src) + self.src_pos[:src.shape[1]],
                  self.embed(tin) + self.tgt_pos[:tin.shape[1]],
                  tgt_mask=self.causal, src_key_padding_mask=pad, memory_key_padding_mask=pad,
                  tgt_is_causal=True)
      return h @ self.embed.weight.T

  model = Model()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9,
                          weight_decay=0.01)
  loss_fn = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=SMOOTHING)
  data = [{k: torch.from_numpy(v.astype(np.int64)) for k, v in b.items()} for b in batches]
  box = {}

  def step(i):
    b = data[i % len(data)]
    opt.zero_grad(set_to_none=True)
    logits = model(b['source'], b['target_in'])
    loss = loss_fn(logits.reshape(-1, V), b['target_out'].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    box['loss'] = loss.detach()
  return step, lambda: None, lambda: float(box['loss'])


def decoding(n: int = 64, beam: int = 4) -> dict[str, float]:
  cfg = model_config()
  src = jnp.asarray(make_batches(2, seed=1)[0]['source'].repeat(2, 0)[:n])
  params = nn.unbox(s2s.Seq2Seq(cfg).init(jax.random.key(0), src[:1],
                                          jnp.zeros((1, T), jnp.int32))['params'])
  dm = s2s.Seq2Seq(cfg.replace(decode=True))
  runs = {'greedy': lambda: seq2seq_decode.greedy(dm, params, src, T),
          f'beam{beam}': lambda: seq2seq_decode.beam_search(dm, params, src, T, beam=beam,
                                                             alpha=0.6)}
  out = {}
  for name, run in runs.items():
    run().block_until_ready()
    t0 = time.perf_counter()
    run().block_until_ready()
    out[name] = n / (time.perf_counter() - t0)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--rounds', type=int, default=8)
  ap.add_argument('--steps', type=int, default=4, help='steps per round')
  ap.add_argument('--warmup', type=int, default=3)
  ap.add_argument('--json', default='')
  ap.add_argument('--skip-torch', action='store_true')
  args = ap.parse_args()
  batches = make_batches(12)
  data = {'ours': batches, 'ours_packed': packed_batches(batches), 'torch': batches}
  runners = {'ours': ours(batches), 'ours_packed': ours(data['ours_packed'])}
  if not args.skip_torch:
    runners['torch'] = torch_s2s(batches)
  times = interleaved({k: v[:2] for k, v in runners.items()}, args.warmup, args.rounds,
                      args.steps)
  # real target tokens of the steps each runner timed (it cycles over its batches)
  tokens = {k: np.array([sum((data[k][i % len(data[k])]['target_out'] > 0).sum()
                              for i in range(args.warmup + r * args.steps,
                                             args.warmup + (r + 1) * args.steps))
                          for r in range(args.rounds)], np.float64) for k in runners}
  tps = {k: tokens[k].sum() / sum(t) for k, t in times.items()}
  dec = decoding()
  print(f'\nmodel: {L}+{L} layers, d_model {D}, {H} heads, d_ff {F}, vocab {V}, '
        f'src/tgt {S}/{T} (real lengths 8..32), batch {B}, fp32, AdamW, label smoothing '
        f'{SMOOTHING}; {args.rounds} interleaved rounds of {args.steps} steps; '
        f'{os.cpu_count()} CPU cores')
  fill = np.mean([(b['target_out'] > 0).mean() for b in data['ours_packed']])
  print(f'packed: the same pairs in {B}-row batches, {fill:.0%} of target positions real '
        f'(padded: {np.mean([(b["target_out"] > 0).mean() for b in batches]):.0%})')
  print(f'{"":<12} {"target tokens/s":>16} {"loss":>7}')
  for k in runners:
    print(f'{k:<12} {tps[k]:>16,.0f} {runners[k][2]():>7.3f}')
  out = {'ours_tokens_per_s': tps['ours_packed'], 'ours_padded_tokens_per_s': tps['ours'],
         **{f'{k}_sentences_per_s': v for k, v in dec.items()}}
  if 'torch' in tps:
    for k, key in (('ours', 'ratio_padded'), ('ours_packed', 'ratio')):
      per_round = (tokens[k] / np.array(times[k])) / (tokens['torch'] / np.array(times['torch']))
      ratio = float(np.median(per_round))
      print(f'ratio {k}/torch target tokens/s: {ratio:.3f} (median of {args.rounds} rounds; '
            f'range {per_round.min():.2f}-{per_round.max():.2f})')
      out.update({key: ratio, f'{key}_per_round': per_round.tolist()})
    out['torch_tokens_per_s'] = tps['torch']
  print('decoding (ours, 64 sources, max 32 tokens): ' +
        ', '.join(f'{k} {v:,.1f} sentences/s' for k, v in dec.items()))
  if args.json:
    metrics.write_json(args.json, out)


if __name__ == '__main__':
  main()
