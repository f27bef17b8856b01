"""Skip-gram and CBOW with negative sampling (Mikolov et al., 2013).

The model works on *token blocks* rather than on a host-made list of
(center, context) pairs: a batch is a `(B, L)` array of consecutive, already
subsampled token ids with, per position,

* `segment`: sentence/document id; pairs never cross segments; -1 is padding;
* `window`: the reduced window drawn uniformly from `1..window` (word2vec's
  dynamic window);
* `negatives`: `K` ids drawn from the unigram^0.75 table, `(B, L, K)`; with
  `negative_share=G`, one draw for each group of `G` consecutive positions of a row,
  `(B, L/G, K)`, which every position of the group scores (see below).

The `2·window` context ids of every position are formed on the device by
shifting the block against itself; a pair `(i, i+o)` is valid when
`1 <= |o| <= window_i`, both tokens are real and both lie in one segment.

Skip-gram: center `i` (input row) scores its valid context words (output
rows) as positives and its `K` negatives, shared by all `c_i` of its pairs and
weighted by `c_i`:

    loss_i = sum_{o valid} -log σ(h_i·u_{i+o}) + c_i · sum_k -log σ(-h_i·n_ik)

whose expectation over negatives equals word2vec's (which draws `K` fresh
negatives for each of the `c_i` pairs); `pair_negatives=True` draws them per pair
as word2vec does (`2·window·K` negatives a position, each of weight 1 when its
pair is valid); `negative_draws=M` draws `M` shared ones, each weighted by
`c_i·K/M` (same expectation, less noise: at M = 3K the vectors score as word2vec's
per-pair draws do, README). The context words' output rows are slices of the
block's own output rows (`_skipgram_step`), so only the negatives are gathered per
position. CBOW: the mean of the valid context
input rows scores the center's output row and `K` negatives, exactly as in
word2vec; following word2vec.c and gensim (`cbow_mean=1`) the error is added to
every context row without the 1/c factor.

Negatives shared by a group (`negative_share=G`, both modes): the `G` positions of a group
score the same drawn rows, so a step gathers and scatter-adds `L/G` draws a row instead of
`L`, and scores them as small matrix products (positions × draws) rather than one dot
product a row. Each position's loss keeps its expectation (each of its scores is a draw
from the same unigram^0.75 table, weighted as before); what changes is that the positions
of a group see correlated negatives within one step, as in the shared-negative matrix
formulation of word2vec for throughput (Ji et al., 2016, "Parallelizing Word2Vec in
Shared and Distributed Memory"). CBOW with `negative_draws=M`: `M` draws a position or
group, each weighted `K/M`, as skip-gram's shared draws are.

Training is sparse SGD (`sparse_sgd_step`): the gradient is taken with
respect to the gathered rows only and `-lr * grad` is scatter-added into the
two tables, so a step reads and writes only the rows of its batch — never a
dense vocab×dim gradient. The gradient is written out by hand (word2vec's
`g = label - σ(score)`), which avoids the transcendental-heavy autodiff of
`log_sigmoid` that dominates on CPU; `Word2Vec.__call__` computes the same loss
from the full tables with ordinary autodiff-able ops, and the tests check that
one sparse step equals one dense SGD step on that loss.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

SKIPGRAM = 'skipgram'
CBOW = 'cbow'
CURVATURE = 'curvature'
BATCH_KEYS = ('tokens', 'segment', 'window', 'negatives')
MODES = (SKIPGRAM, CBOW)
ROW_CAP_MODES = ('count', 'norm', 'curvature')
SUMMED, SEQUENTIAL = 'summed', 'sequential'
PAIR_ORDERS = (SUMMED, SEQUENTIAL)
AUTO_KERNEL, XLA_KERNEL, CPU_KERNEL = 'auto', 'xla', 'cpu'
STEP_KERNELS = (AUTO_KERNEL, XLA_KERNEL, CPU_KERNEL)


def choices(names) -> str:
  """A field's allowed values as error messages name them: `'a', 'b' or 'c'`."""
  return ', '.join(map(repr, names[:-1])) + f' or {names[-1]!r}'


MODE_CHOICES, ROW_CAP_CHOICES, PAIR_ORDER_CHOICES, STEP_KERNEL_CHOICES = map(
    choices, (MODES, ROW_CAP_MODES, PAIR_ORDERS, STEP_KERNELS))


@dataclasses.dataclass(frozen=True)
class Word2VecConfig:
  """Hyperparameters of the embedding model."""
  vocab_size: int
  dim: int = 100
  window: int = 5
  negatives: int = 5
  mode: str = SKIPGRAM  # 'skipgram' or 'cbow'
  # Rows updated more than `row_cap` times in one step get their summed update scaled by
  # row_cap / count (0: word2vec's plain sum). See `apply_rows`.
  row_cap: float = 0.0
  # 'count': the cap counts contributions (above). 'norm': a row's summed update is
  # scaled to at most row_cap × its contributions' mean norm (see `norm_cap_scale`).
  # 'curvature': scaled so that α × the row's summed curvature stays <= row_cap
  # (see `curvature_scale`).
  row_cap_mode: str = 'count'
  # With the curvature cap: each contribution also adds this × α·|σ(s) − label| to its
  # row's total (0: off): the bilinear loss's cross term between a row and its partners,
  # which the Gauss-Newton curvature leaves out (see `cross_term`).
  row_cap_cross: float = 0.0
  # Skip-gram: K negatives for every (center, context) pair, as word2vec draws them,
  # instead of K per center shared by its pairs and weighted by their count. The
  # batch's `negatives` are then (B, L, 2·window·K): the pairs' in offset order.
  pair_negatives: bool = False
  # Skip-gram with shared negatives: draw this many per center (0: `negatives`), each
  # weighted by c_i·negatives/negative_draws, so the expected loss stays word2vec's while
  # one noisy draw weighs less (word2vec's per-pair draws are the limit of many draws).
  negative_draws: int = 0
  # Positions of a row (consecutive groups of this many) that share one draw of negatives
  # (1: each position draws its own). The batch's `negatives` are then (B, L/G, M).
  negative_share: int = 1
  # word2vec.c and gensim skip a drawn negative that is the pair's own target word (the
  # context word in skip-gram's orientation here, the center in CBOW's); False scores it
  # as a negative, pulling against the pair's positive.
  skip_target_negatives: bool = False
  # > 0: a score s with |s| >= max_score gives no gradient, as gensim's word2vec skips
  # every score outside its sigmoid table's ±6 (0: every score trains, as word2vec.c's
  # clipped gradient and the exact sigmoid do). The loss still counts it.
  max_score: float = 0.0
  # Skip-gram with `pair_negatives`: 'summed' scores all of a step's pairs against the same
  # tables and adds their updates; 'sequential' takes the context offsets one at a time
  # (2·window sub-steps a step), so a center's input row has moved by one pair's update
  # before its next pair is scored, as word2vec's pair-by-pair updates have
  # (`_sequential_pair_step`).
  pair_order: str = SUMMED
  # 'xla': the step as a JAX program (any device, any layout). 'cpu': the step as one
  # hand-written XLA:CPU custom call (`kernels/word2vec_cpu.cc`, built at first use with the
  # machine's C++ compiler): the same update up to float summation order, with the next
  # position's rows prefetched (the step is bound by random row reads) and a step's
  # positions scored on two threads; one CPU device, replicated tables, negative_share=1,
  # and for skip-gram shared negatives with no row cap or pair_order='sequential' (with or
  # without the curvature cap; CBOW takes no row cap). 'auto':
  # 'cpu' where the run allows it and a compiler is found, else 'xla' (resolved by the runner,
  # `pretraining.word2vec.resolve_step_kernel`; `sparse_sgd_step` reads 'auto' as 'xla').
  step_kernel: str = XLA_KERNEL

  @property
  def negatives_per_position(self) -> int:
    """The last dimension of a batch's `negatives`."""
    if self.pair_negatives:
      return self.negatives * 2 * self.window
    return self.negative_draws or self.negatives

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'model.mode must be {MODE_CHOICES}, got {self.mode!r}')
    if self.pair_negatives and self.mode != SKIPGRAM:
      raise ValueError('model.pair_negatives is for skip-gram (CBOW has one pair a '
                       'position and draws its negatives per position already)')
    if self.negative_draws and self.pair_negatives:
      raise ValueError('model.negative_draws is for shared negatives (not with '
                       'model.pair_negatives, which draws K for every pair)')
    if self.negative_share < 1:
      raise ValueError(f'model.negative_share must be >= 1 (1: negatives per position), got '
                       f'{self.negative_share}')
    if self.negative_share > 1 and self.pair_negatives:
      raise ValueError('model.negative_share shares one draw among positions; '
                       'model.pair_negatives draws per pair: choose one')
    if self.negative_draws < 0:
      raise ValueError(f'model.negative_draws must be >= 0 (0: model.negatives), got '
                       f'{self.negative_draws}')
    if self.row_cap < 0:
      raise ValueError(f'optim.row_cap must be >= 0 (0: off), got {self.row_cap}')
    if self.pair_order not in PAIR_ORDERS:
      raise ValueError(f'model.pair_order must be {PAIR_ORDER_CHOICES}, got '
                       f'{self.pair_order!r}')
    if self.pair_order == SEQUENTIAL and not (self.mode == SKIPGRAM and self.pair_negatives):
      raise ValueError("model.pair_order='sequential' is for skip-gram with "
                       'model.pair_negatives=True')
    if self.pair_order == SEQUENTIAL and self.row_cap and self.row_cap_mode != CURVATURE:
      raise ValueError(SEQUENTIAL_CAP)
    if self.step_kernel not in STEP_KERNELS:
      raise ValueError(f'model.step_kernel must be {STEP_KERNEL_CHOICES}, got '
                       f'{self.step_kernel!r}')
    if self.step_kernel == CPU_KERNEL and not cpu_kernel_in_scope(self):
      raise ValueError(CPU_KERNEL_SCOPE)
    if not self.max_score >= 0:
      raise ValueError(f'model.max_score must be >= 0 (0: off), got {self.max_score}')
    if self.row_cap_mode not in ROW_CAP_MODES:
      raise ValueError(f'optim.row_cap_mode must be {ROW_CAP_CHOICES}, got '
                       f'{self.row_cap_mode!r}')
    if self.row_cap_cross < 0 or (self.row_cap_cross and not (
        self.row_cap > 0 and self.row_cap_mode == CURVATURE)):
      raise ValueError(f'optim.row_cap_cross must be >= 0, and only with optim.row_cap > 0 '
                       f"and optim.row_cap_mode='curvature', got {self.row_cap_cross}")
    for name in ('vocab_size', 'dim', 'window', 'negatives'):
      if getattr(self, name) < 1:
        raise ValueError(f'model.{name} must be >= 1, got {getattr(self, name)}')


def cpu_kernel_in_scope(cfg: Word2VecConfig) -> bool:
  """Whether the CPU kernel computes this config's step (the layout, not the devices)."""
  return cpu_kernel_computes(cfg.negative_share, cfg.row_cap, cfg.pair_negatives,
                             cfg.pair_order)


def cpu_kernel_computes(negative_share: int, row_cap: float, pair_negatives: bool,
                        pair_order: str) -> bool:
  """`cpu_kernel_in_scope` from the fields themselves (the runner checks a config's before
  a vocabulary, and so a `Word2VecConfig`, exists)."""
  sequential = pair_negatives and pair_order == SEQUENTIAL
  return (negative_share == 1 and (not pair_negatives or sequential)
          and (row_cap == 0 or sequential))


CPU_KERNEL_SCOPE = ("model.step_kernel='cpu' is the step with model.negative_share=1 and, "
                    'for skip-gram, shared negatives (model.pair_negatives=False) with no '
                    "optim.row_cap, or per-pair ones in model.pair_order='sequential' (with "
                    'or without the curvature cap); CBOW takes no optim.row_cap')

# the sequential order's sub-steps take the curvature cap (each sums one pair a center, so a
# count or norm cap would bound the wrong sum)
SEQUENTIAL_CAP = ("optim.row_cap with model.pair_order='sequential' needs "
                  "optim.row_cap_mode='curvature' (each sub-step's rows are bounded by their "
                  'own step curvature)')


def offsets(window: int) -> list[int]:
  return [o for o in range(-window, window + 1) if o != 0]


def _shift(x: Array, o: int, fill) -> Array:
  """y[:, i] = x[:, i + o] along axis 1, `fill` where i + o falls outside."""
  length = x.shape[1]
  if abs(o) >= length:
    return jnp.full_like(x, fill)
  pad = [(0, 0)] * x.ndim
  if o > 0:
    pad[1] = (0, o)
    return jnp.pad(x[:, o:], pad, constant_values=fill)
  pad[1] = (-o, 0)
  return jnp.pad(x[:, :length + o], pad, constant_values=fill)


def context(batch: Mapping[str, Array], window: int) -> tuple[Array, Array]:
  """Context ids `(B, L, 2W)` of every position and their 0/1 float mask."""
  tok, seg, win = batch['tokens'], batch['segment'], batch['window']
  ids, masks = [], []
  for o in offsets(window):
    ids.append(_shift(tok, o, 0))
    masks.append((seg >= 0) & (_shift(seg, o, -1) == seg) & (abs(o) <= win))
  return jnp.stack(ids, -1), jnp.stack(masks, -1).astype(jnp.float32)


def negative_weights(mask: Array, drawn: int, negatives: int, pair_negatives: bool,
                     ctx_ids: Array | None = None, neg: Array | None = None) -> Array:
  """Skip-gram: the weight of each of a position's `drawn` negatives, `(B, L, drawn)`,
  from its `(B, L, 2W)` valid-pair mask. Per pair (`pair_negatives`): the pairs' `K`
  each in offset order, weighted by their pair's validity; shared: each weighted by the
  pair count c_i times `negatives / drawn` (word2vec's expected loss whatever is drawn).
  Given the context ids `(B, L, 2W)` and the position's negatives `(B, L, drawn)`, a
  negative counts only for the pairs whose context word it is not (word2vec.c skips a
  negative equal to the pair's target).
  """
  if pair_negatives:
    w = jnp.repeat(mask, negatives, axis=-1)
    return w if ctx_ids is None else w * (jnp.repeat(ctx_ids, negatives, axis=-1) != neg)
  if ctx_ids is None:
    count = mask.sum(-1, keepdims=True)
    return jnp.broadcast_to((negatives / drawn) * count, mask.shape[:-1] + (drawn,))
  differs = (ctx_ids[..., :, None] != neg[..., None, :]).astype(mask.dtype)
  return (negatives / drawn) * jnp.einsum('blo,blom->blm', mask, differs)


def _targets(batch, window, mode, pair_negatives=False, negatives=0, skip_targets=False):
  """What each position scores: output-row ids, per-score weight and label.

  Returns (in_ids, in_weight, out_ids, weight, label, pairs):
  skip-gram: in_ids (B,L) are the centers; out_ids (B,L,2W+K) = contexts then
  negatives (each weighted by the center's pair count c_i, times `negatives` / the
  number drawn when `negatives` is given), or with `pair_negatives`
  (B,L,2W+2W·K): each pair's own K negatives, weighted by that pair's validity.
  CBOW: in_ids (B,L,2W) are the contexts (averaged by in_weight); out_ids (B,L,1+K) =
  the center then negatives.
  """
  ctx, mask = context(batch, window)
  count = mask.sum(-1)
  neg = expand_negatives(batch['negatives'], ctx.shape[1])
  k = neg.shape[-1]
  if mode == SKIPGRAM:
    out_ids = jnp.concatenate([ctx, neg], -1)
    per_pair = k // mask.shape[-1] if pair_negatives else 0
    neg_weight = negative_weights(mask, k, per_pair or negatives or k, pair_negatives,
                                  *((ctx, neg) if skip_targets else ()))
    weight = jnp.concatenate([mask, neg_weight], -1)
    label = jnp.concatenate([jnp.ones_like(mask), jnp.zeros(neg.shape, mask.dtype)], -1)
    return batch['tokens'], None, out_ids, weight, label, count.sum()
  has_ctx = (count > 0).astype(jnp.float32)
  out_ids = jnp.concatenate([batch['tokens'][..., None], neg], -1)
  neg_weight = jnp.broadcast_to(
      (negatives / k if negatives else 1.0) * has_ctx[..., None], neg.shape)
  if skip_targets:
    neg_weight = neg_weight * (neg != batch['tokens'][..., None])
  weight = jnp.concatenate([has_ctx[..., None], neg_weight], -1)
  label = jnp.concatenate([jnp.ones_like(has_ctx)[..., None],
                           jnp.zeros(has_ctx.shape + (k,), has_ctx.dtype)], -1)
  in_weight = mask / jnp.maximum(count, 1.0)[..., None]
  return ctx, in_weight, out_ids, weight, label, has_ctx.sum()


def trains(scores: Array, max_score: float) -> Array | float:
  """1 where a score gives a gradient, 0 where |score| >= `max_score` (> 0; gensim's
  table bound), as a float array; 1.0 when `max_score` is 0."""
  if max_score <= 0:
    return 1.0
  return (jnp.abs(scores) < max_score).astype(scores.dtype)


def expand_negatives(neg: Array, length: int) -> Array:
  """`(B, L/G, M)` group-shared negatives as `(B, L, M)`: each position's draw."""
  return neg if neg.shape[1] == length else jnp.repeat(neg, length // neg.shape[1], axis=1)


def _grouped(x: Array, groups: int) -> Array:
  """`(B, L, ...)` as `(B, groups, L/groups, ...)`."""
  return x.reshape(x.shape[:1] + (groups, x.shape[1] // groups) + x.shape[2:])


def negative_scores(h: Array, n_rows: Array) -> Array:
  """Scores `(B, L, M)` of every position's hidden vector `h (B, L, D)` against its group's
  drawn rows `n_rows (B, L/G, M, D)` (G = 1: its own)."""
  groups = n_rows.shape[1]
  s = jnp.einsum('bgtd,bgmd->bgtm', _grouped(h, groups), n_rows)
  return s.reshape(h.shape[:2] + s.shape[-1:])


def negative_grads(g_n: Array, h: Array, n_rows: Array) -> tuple[Array, Array]:
  """From d(loss)/d(score) `g_n (B, L, M)`: the gradient for `h (B, L, D)` and for each
  drawn row `(B, L/G, M, D)`, summed over the positions of its group."""
  groups = n_rows.shape[1]
  gg = _grouped(g_n, groups)
  dh = jnp.einsum('bgtm,bgmd->bgtd', gg, n_rows).reshape(h.shape)
  dn = jnp.einsum('bgtm,bgtd->bgmd', gg, _grouped(h, groups))
  return dh, dn


def _hidden(in_rows, in_weight):
  if in_weight is None:
    return in_rows
  return jnp.einsum('blc,blcd->bld', in_weight, in_rows)


class Word2Vec(nn.Module):
  """Two embedding tables; `__call__(batch)` returns (summed loss, pairs)."""
  config: Word2VecConfig

  @nn.compact
  def __call__(self, batch: Mapping[str, Array]):
    cfg = self.config
    # word2vec.c's and gensim's initialisation (a training run draws the same distribution
    # on the host: `pretraining.word2vec.init_state`)
    in_embed = self.param('in_embed', _uniform(init_bound(cfg.dim)), (cfg.vocab_size, cfg.dim))
    out_embed = self.param('out_embed', nn.initializers.zeros, (cfg.vocab_size, cfg.dim))
    in_ids, in_w, out_ids, weight, label, pairs = _targets(batch, cfg.window, cfg.mode,
                                                           cfg.pair_negatives, cfg.negatives,
                                                           cfg.skip_target_negatives)
    h = _hidden(in_embed[in_ids], in_w)
    if in_w is not None:  # CBOW: word2vec's unscaled error for the context rows
      plain = jnp.einsum('blc,blcd->bld', (in_w > 0).astype(h.dtype), in_embed[in_ids])
      h = plain + jax.lax.stop_gradient(h - plain)
    scores = jnp.einsum('bld,blmd->blm', h, out_embed[out_ids])
    sign = 2.0 * label - 1.0
    terms = weight * jax.nn.log_sigmoid(sign * scores)
    live = trains(scores, cfg.max_score)
    terms = live * terms + (1.0 - live) * jax.lax.stop_gradient(terms)
    return -jnp.sum(terms), pairs


def init_bound(dim: int) -> float:
  """The input table's initial values are uniform in ±this (word2vec.c, gensim)."""
  return 0.5 / dim


def _uniform(bound):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _padded(x: Array, w: int, fill=0) -> Array:
  """`x` padded with `w` positions of `fill` on both sides of axis 1."""
  pad = [(0, 0)] * x.ndim
  pad[1] = (w, w)
  return jnp.pad(x, pad, constant_values=fill)


def _window(xp: Array, w: int, o: int, length: int) -> Array:
  """y[:, i] = x[:, i + o] from `xp = _padded(x, w)` (a slice: no per-offset pad)."""
  return xp[:, w + o:w + o + length]


def context_mask(batch: Mapping[str, Array], window: int) -> Array:
  """`(B, L, 2W)` float mask of the valid context offsets of every position (`offsets`)."""
  seg, win = batch['segment'], batch['window']
  length = seg.shape[1]
  segp = _padded(seg, window, -1)
  return jnp.stack([(seg >= 0) & (_window(segp, window, o, length) == seg) & (abs(o) <= win)
                    for o in offsets(window)], -1).astype(jnp.float32)


def apply_rows(table: Array, ids: Array, updates: Array, cfg: Word2VecConfig,
               constrain=lambda x: x, curvature: Array | None = None) -> Array:
  """`table.at[ids].add(updates)`: a step's row updates, scatter-added.

  With `cfg.row_cap > 0`, a row that receives more than `row_cap` (non-zero)
  contributions in this step gets their sum scaled by `row_cap / count`. word2vec
  applies its updates one at a time (Hogwild threads), so a frequent word's row moves
  and its later gradients shrink as its scores saturate; a batch sums them all from the
  same stale value, which for the hottest rows (frequent words as contexts and
  negatives) grows with the batch and makes large batches diverge. Capping bounds each
  row's step at `row_cap` contributions' worth, whatever the batch, and leaves every
  rarer row's update unchanged. `cfg.row_cap_mode='norm'` caps the sum's norm instead
  (`norm_cap_scale`); `'curvature'` bounds α × the row's summed curvature, one entry of
  `curvature` per update (`curvature_scale`).
  """
  ids, updates = constrain(ids), constrain(updates)
  if cfg.row_cap > 0 and cfg.row_cap_mode == CURVATURE:
    total = jnp.zeros((table.shape[0],), jnp.float32).at[ids].add(constrain(curvature))
    scale = curvature_scale(total, cfg.row_cap)
    return table.at[ids].add((updates * scale[ids][:, None]).astype(table.dtype))
  if cfg.row_cap > 0 and cfg.row_cap_mode == 'norm':
    return _norm_capped(table, ids, updates, cfg.row_cap)
  if cfg.row_cap > 0:
    used = jnp.any(updates != 0, axis=-1).astype(jnp.float32)
    count = jnp.zeros((table.shape[0],), jnp.float32).at[ids].add(used)
    updates = updates * count_scale(count, cfg.row_cap)[ids][:, None]
  return table.at[ids].add(updates.astype(table.dtype))


def count_scale(counts: Array, cap: float) -> Array:
  """Per row: min(1, cap / count), `count` the row's non-zero contributions in the step
  (the count cap of `apply_rows`)."""
  return 1.0 / jnp.maximum(1.0, counts / cap)


def curvature_scale(total: Array, cap: float) -> Array:
  """Per row: min(1, cap / total), `total` the row's step curvature α·Σ σ'(s)·|x|² over
  its contributions in the step (s a score the row takes part in, x the vector it is
  scored against: the trace of the Gauss-Newton Hessian of the row's loss terms).

  Applied one at a time (word2vec's threads), a row's updates stop growing as its scores
  saturate; summed from one stale value, a hot row's update is a step of α on a loss whose
  curvature along it is up to that trace, and past α·trace = 2 such a step overshoots
  the minimum of the row's local quadratic model (the other rows held fixed). Bounding
  α·trace by `cap` (1: at most the Newton step of that model, measured with the trace,
  which bounds the largest eigenvalue from above) keeps every row whose step is already
  safe at word2vec's exact update, whatever its count, and shrinks only the rows whose
  summed step could overshoot. It bounds each row's own step, not the joint move of two
  rows updated together. CBOW charges a context row h's curvature / the context count:
  the row takes h's full (unscaled) error but moves the mean h by 1/count of its step.
  Unlike the count cap, a contribution whose score has saturated (σ' ≈ 0) or whose
  partner vector is short barely counts.
  """
  return jnp.minimum(1.0, cap / jnp.maximum(total, jnp.finfo(total.dtype).tiny))


def norm_cap_scale(sums: Array, norm_sums: Array, counts: Array, cap: float) -> Array:
  """Per row: min(1, cap × mean contribution norm / norm of the summed update).

  A row's `k` contributions that point the same way (the overshoot a large batch risks:
  one word's many occurrences pulling its row one way from the same stale value) sum to
  `k` times their mean norm and are scaled by `cap / k`, as the count cap does; `k`
  contributions in unrelated directions sum to about `sqrt(k)` times it and keep their
  sum up to `k = cap²`. So a hot row's step is bounded by `cap` contributions' worth of
  movement, without shrinking the diverse updates of frequent words that carry their
  meaning (measured on large batches: README, "Skip-gram / CBOW design").
  """
  mean = norm_sums / jnp.maximum(counts, 1.0)
  norm = jnp.linalg.norm(sums, axis=-1)
  return jnp.minimum(1.0, cap * mean / jnp.maximum(norm, jnp.finfo(sums.dtype).tiny))


def sum_by_row(ids: Array, fill: int, *values: Array) -> tuple[Array, Array, list[Array]]:
  """Each of `values` (leading axis: one entry per id) summed per distinct id: (the
  distinct ids, ascending, padded with `fill` to `len(ids)`; each id's position among
  them; the sums, one per value array, in that order)."""
  size = ids.shape[0]
  uniq, inverse = jnp.unique(ids, size=size, fill_value=fill, return_inverse=True)
  inverse = inverse.reshape(-1)
  return uniq, inverse, [jax.ops.segment_sum(v, inverse, size) for v in values]


def _norm_capped(table, ids, updates, cap):
  norms = jnp.linalg.norm(updates, axis=-1)
  uniq, _, (sums, norm_sums, counts) = sum_by_row(ids, table.shape[0], updates, norms,
                                                  (norms > 0).astype(updates.dtype))
  scaled = sums * norm_cap_scale(sums, norm_sums, counts, cap)[:, None]
  return table.at[uniq].add(scaled.astype(table.dtype), mode='drop')


class ReplicatedTables:
  """A step's row reads and writes on whole tables (every device holds all rows).

  `gather(name, *ids)` returns each id array's rows; `add(name, ids, updates)`
  scatter-adds one update array per id array (`apply_rows`) and returns the new table.
  `models.row_sharded.RowShardedTables` is the same interface on row-sharded tables.
  """

  def __init__(self, params: Mapping[str, Array], cfg: Word2VecConfig,
               constrain=lambda x: x):
    self.blocks, self.cfg, self.constrain = dict(params), cfg, constrain

  def gather(self, name: str, *ids: Array) -> tuple[Array, ...]:
    return tuple(self.blocks[name][i] for i in ids)

  def add(self, name: str, ids, updates, curvature=None) -> Array:
    table = self.blocks[name]
    dim = table.shape[1]
    flat_ids = jnp.concatenate([i.reshape(-1) for i in ids])
    flat = jnp.concatenate([u.reshape(-1, dim) for u in updates])
    if curvature is not None:
      curvature = jnp.concatenate([c.reshape(-1) for c in curvature])
    self.blocks[name] = apply_rows(table, flat_ids, flat, self.cfg, self.constrain, curvature)
    return self.blocks[name]


def _cbow_step(tables, batch, lr, cfg):
  """CBOW's sparse step (see `sparse_sgd_step`).

  Laid out for CPU and accelerator alike (2.3x the step speed of gathering or padding
  once per offset, measured): every token's input row and output row is gathered once;
  the context means are slices of the block's padded input rows; the error of each
  context row is summed back to its token through slices of padded arrays; the center's
  output row and its negatives' are gathered separately (no per-element index concat).
  """
  w = cfg.window
  tok, neg = batch['tokens'], batch['negatives']
  length = tok.shape[1]
  curved = _curvature_capped(cfg)
  if cfg.row_cap > 0 and not curved:
    # the cap counts (or norms) each position's contribution to a drawn row, as it does
    # with per-position draws: no summing over a group's positions before the scatter
    neg = expand_negatives(neg, length)
  offs = offsets(w)
  mask = context_mask(batch, w)                              # (B, L, 2W)
  count = mask.sum(-1)
  has_ctx = (count > 0).astype(jnp.float32)                  # (B, L)
  mean_w = mask / jnp.maximum(count, 1.0)[..., None]
  tok_rows, = tables.gather('in_embed', tok)
  rows_p = _padded(tok_rows, w)                              # (B, L + 2W, D)
  h = sum(mean_w[..., j:j + 1] * _window(rows_p, w, o, length) for j, o in enumerate(offs))
  c_rows, n_rows = tables.gather('out_embed', tok, neg)      # (B, L, D), (B, L/G, M, D)
  s_c = jnp.sum(h * c_rows, -1)
  s_n = negative_scores(h, n_rows)                           # (B, L, M)
  neg_w = (cfg.negatives / neg.shape[-1]) * has_ctx[..., None]
  if cfg.skip_target_negatives:
    neg_w = neg_w * (expand_negatives(neg, length) != tok[..., None])
  sig_c, sig_n = jax.nn.sigmoid(s_c), jax.nn.sigmoid(s_n)
  # d(loss)/d(score) for -log σ(±score): σ(score) - label, for positions with a context
  live_c, live_n = trains(s_c, cfg.max_score), trains(s_n, cfg.max_score)
  g_c = live_c * has_ctx * (sig_c - 1.0)
  g_n = live_n * neg_w * sig_n
  # -log σ(±score), exact (no clamping): a diverged run shows as inf/NaN.
  loss = (jnp.sum(has_ctx * jnp.logaddexp(0.0, -s_c))
          + jnp.sum(neg_w * jnp.logaddexp(0.0, s_n)))
  dh_n, d_neg = negative_grads(g_n, h, n_rows)
  dh = g_c[..., None] * c_rows + dh_n
  # every valid context row receives the full error (word2vec): position i collects the
  # errors of the centers i - o whose offset o it served
  mask_p, dh_p = _padded(mask, w), _padded(dh, w)
  d_in = sum(_window(mask_p, w, -o, length)[..., j:j + 1] * _window(dh_p, w, -o, length)
             for j, o in enumerate(offs))
  cur_in = cur_c = cur_neg = None
  if curved:
    # σ'(s) of every score; h's curvature (its rows c and n). A context row takes h's
    # full error but moves h by 1/count of its step (h is the mean): along its update,
    # its step curvature is h's divided by the count, summed over the centers it serves
    sp_c = live_c * has_ctx * sig_c * (1.0 - sig_c)
    sp_n = live_n * neg_w * sig_n * (1.0 - sig_n)
    hh = jnp.sum(h * h, -1)
    c_hn, c_neg = negative_curvature(sp_n, hh, n_rows)
    c_h = _padded(sp_c * jnp.sum(c_rows * c_rows, -1) + c_hn, w)
    mean_p = _padded(mean_w, w)
    cur_in = lr * sum(_window(mean_p, w, -o, length)[..., j] * _window(c_h, w, -o, length)
                      for j, o in enumerate(offs))
    cur_c, cur_neg = lr * sp_c * hh, lr * c_neg
    if cfg.row_cap_cross:
      # a context row takes h's errors in full: each center's, for every center it serves
      x_h, x_c, x_neg = cross_term(g_c, g_n, n_rows.shape[1])
      x_h = _padded(x_h, w)
      x_in = sum(_window(mask_p, w, -o, length)[..., j] * _window(x_h, w, -o, length)
                 for j, o in enumerate(offs))
      k = lr * cfg.row_cap_cross
      cur_in, cur_c, cur_neg = cur_in + k * x_in, cur_c + k * x_c, cur_neg + k * x_neg
    cur_in = (cur_in,)
  new_in = tables.add('in_embed', (tok,), (-lr * d_in,), cur_in)
  new_out = tables.add('out_embed', (tok, neg), (-lr * g_c[..., None] * h, -lr * d_neg),
                       None if cur_c is None else (cur_c, cur_neg))
  return {'in_embed': new_in, 'out_embed': new_out}, loss, has_ctx.sum()


def _curvature_capped(cfg: Word2VecConfig) -> bool:
  return cfg.row_cap > 0 and cfg.row_cap_mode == CURVATURE


def cross_term(g_c: Array, g_n: Array, groups: int) -> tuple[Array, Array, Array]:
  """|σ(s) − label| summed per row, from a step's errors: the positive scores' `g_c (B, L)`
  or `(B, L, 2W)` and the negatives' `g_n (B, L, M)` (weights included). Returns each
  position's total over its scores (its center's or h's row), each positive score's own
  `|g_c|` (its context or center output row), and each drawn row's total over its group's
  positions `(B, L/G, M)`.

  A row r scored against partners x takes, in the Hessian of the bilinear loss, the block
  σ'(s)·x·xᵀ (the curvature `curvature_scale` bounds) and, between r and each partner,
  σ'(s)·x·rᵀ + (σ(s) − label)·I. While the output rows are near zero (a run's first steps)
  the second is all there is: a hot row and its many partners, updated together, move
  along each other by α·Σ|σ(s) − label|, which grows with the batch. Gershgorin's bound puts
  that sum beside the curvature in the row's part of the largest eigenvalue."""
  a_c, a_n = jnp.abs(g_c), jnp.abs(g_n)
  per_pos = a_n.sum(-1) + (a_c.sum(-1) if a_c.ndim == 3 else a_c)
  return per_pos, a_c, _grouped(a_n, groups).sum(2)


def negative_curvature(sp_n: Array, hh: Array, n_rows: Array) -> tuple[Array, Array]:
  """The curvature terms of the negatives, as `negative_grads` gives their gradients:
  from `sp_n (B, L, M)` (each negative score's weight × σ'(s)) and `hh (B, L)` (|h|²),
  each position's Σ σ'(s)·|n|² over its drawn rows `n_rows (B, L/G, M, D)`, and each
  drawn row's σ'(s)·|h|² summed over its group's positions `(B, L/G, M)`."""
  groups = n_rows.shape[1]
  nn = expand_negatives(jnp.sum(n_rows * n_rows, -1), sp_n.shape[1])
  return (jnp.sum(sp_n * nn, -1),
          jnp.einsum('bgtm,bgt->bgm', _grouped(sp_n, groups), _grouped(hh, groups)))


def sparse_sgd_step(params: Mapping[str, Array], batch: Mapping[str, Array],
                    lr: Array, cfg: Word2VecConfig, constrain=lambda x: x):
  """One sparse SGD step on `{'in_embed', 'out_embed'}`.

  Returns (new params, summed loss, number of positive pairs). Only the rows
  named by the batch are read and written (gathers and scatter-adds).
  `constrain` is applied to the row ids and row updates before the scatter;
  data-parallel training passes a replicating sharding constraint so that the
  devices exchange the sparse updates rather than dense tables.
  """
  if cfg.step_kernel == CPU_KERNEL:
    from translearn_jax.kernels import cpu
    mode = 'skipgram_sequential' if cfg.pair_order == SEQUENTIAL else cfg.mode
    new_in, new_out, loss, pairs = cpu.word2vec_step(
        mode, params['in_embed'], params['out_embed'], batch['tokens'], batch['segment'],
        batch['window'], batch['negatives'], lr, window=cfg.window,
        negative_weight_k=cfg.negatives, max_score=cfg.max_score,
        skip_target=cfg.skip_target_negatives, row_cap=cfg.row_cap,
        row_cap_cross=cfg.row_cap_cross)
    return {'in_embed': new_in, 'out_embed': new_out}, loss, pairs
  return table_step(ReplicatedTables(params, cfg, constrain), batch, lr, cfg)


def _skipgram_step(tables, batch, lr, cfg):
  """Skip-gram's sparse step, laid out as `_cbow_step` is (see `sparse_sgd_step`).

  A position's context words are its neighbours in the block, so their output rows are
  slices of the block's own output rows, gathered once per token: the context scores
  are dot products with shifted slices, and the error each token's output row collects
  as the context of the centers around it is summed back through slices of padded
  arrays. Only the negatives are gathered and scattered per score: 1 + M output rows a
  position instead of 2·window + M. Same loss and update as the pair-by-pair layout
  (`_pair_step`), up to float summation order.
  """
  w = cfg.window
  tok, neg = batch['tokens'], batch['negatives']
  length = tok.shape[1]
  offs = offsets(w)
  mask = context_mask(batch, w)                              # (B, L, 2W)
  targets = ()
  if cfg.skip_target_negatives:
    tok_p = _padded(tok, w)
    targets = (jnp.stack([_window(tok_p, w, o, length) for o in offs], -1),
               expand_negatives(neg, length))
  neg_w = negative_weights(mask, neg.shape[-1], cfg.negatives, cfg.pair_negatives, *targets)
  h, = tables.gather('in_embed', tok)                        # (B, L, D)
  o_rows, n_rows = tables.gather('out_embed', tok, neg)      # (B, L, D), (B, L/G, M, D)
  o_p = _padded(o_rows, w)
  ctx = [_window(o_p, w, o, length) for o in offs]           # 2W × (B, L, D)
  s_c = jnp.stack([jnp.sum(h * c, -1) for c in ctx], -1)     # (B, L, 2W)
  s_n = negative_scores(h, n_rows)                           # (B, L, M)
  sig_c, sig_n = jax.nn.sigmoid(s_c), jax.nn.sigmoid(s_n)
  # d(loss)/d(score) for -log σ(±score): σ(score) - label
  live_c, live_n = trains(s_c, cfg.max_score), trains(s_n, cfg.max_score)
  g_c = live_c * mask * (sig_c - 1.0)
  g_n = live_n * neg_w * sig_n
  # -log σ(±score), exact (no clamping): a diverged run shows as inf/NaN.
  loss = (jnp.sum(mask * jnp.logaddexp(0.0, -s_c))
          + jnp.sum(neg_w * jnp.logaddexp(0.0, s_n)))
  dh_n, d_neg = negative_grads(g_n, h, n_rows)
  dh = sum(g_c[..., j:j + 1] * c for j, c in enumerate(ctx)) + dh_n
  # token t's output row served as the context at offset o of the center t - o
  g_p, h_p = _padded(g_c, w), _padded(h, w)
  d_o = sum(_window(g_p, w, -o, length)[..., j:j + 1] * _window(h_p, w, -o, length)
            for j, o in enumerate(offs))
  cur_in = cur_out = None
  if _curvature_capped(cfg):
    # σ'(s) of every score; a center's row is scored against its contexts' and negatives'
    # rows, a token's output row against the centers it is the context of, a negative's
    # against its group's centers
    sp_c = live_c * mask * sig_c * (1.0 - sig_c)
    sp_n = live_n * neg_w * sig_n * (1.0 - sig_n)
    hh, oo = jnp.sum(h * h, -1), _padded(jnp.sum(o_rows * o_rows, -1), w)
    c_hn, c_neg = negative_curvature(sp_n, hh, n_rows)
    cur_h = lr * (sum(sp_c[..., j] * _window(oo, w, o, length) for j, o in enumerate(offs))
                  + c_hn)
    sp_p, hh_p = _padded(sp_c, w), _padded(hh, w)
    cur_o = lr * sum(_window(sp_p, w, -o, length)[..., j] * _window(hh_p, w, -o, length)
                     for j, o in enumerate(offs))
    cur_neg = lr * c_neg
    if cfg.row_cap_cross:
      # a token's output row, as the context at offset o of the center t - o, takes that
      # score's error; the center's input row all of its scores'
      x_h, x_c, x_neg = cross_term(g_c, g_n, n_rows.shape[1])
      x_p = _padded(x_c, w)
      x_o = sum(_window(x_p, w, -o, length)[..., j] for j, o in enumerate(offs))
      k = lr * cfg.row_cap_cross
      cur_h, cur_o, cur_neg = cur_h + k * x_h, cur_o + k * x_o, cur_neg + k * x_neg
    cur_in, cur_out = (cur_h,), (cur_o, cur_neg)
  new_in = tables.add('in_embed', (tok,), (-lr * dh,), cur_in)
  new_out = tables.add('out_embed', (tok, neg), (-lr * d_o, -lr * d_neg), cur_out)
  return {'in_embed': new_in, 'out_embed': new_out}, loss, mask.sum()


def table_step(tables, batch: Mapping[str, Array], lr: Array, cfg: Word2VecConfig):
  """`sparse_sgd_step` on a tables object (`ReplicatedTables`, or
  `row_sharded.RowShardedTables` inside a `shard_map`): (new tables, loss, pairs).

  Skip-gram with a count or norm cap keeps the pair-by-pair layout (`_pair_step`): the
  cap counts (or norms) each pair's contribution to a context row separately, whereas
  `_skipgram_step` sums a token's contributions as a context before the scatter; CBOW
  with such a cap scatters a group-shared draw (`negative_share`) once per position. The
  curvature cap sees only each row's summed curvature, which the fast layouts sum as
  they sum the updates, so it keeps them."""
  if cfg.mode == CBOW:
    return _cbow_step(tables, batch, lr, cfg)
  if cfg.pair_order == SEQUENTIAL:
    return _sequential_pair_step(tables, batch, lr, cfg)
  if cfg.row_cap == 0 or _curvature_capped(cfg):
    return _skipgram_step(tables, batch, lr, cfg)
  return _pair_step(tables, batch, lr, cfg)


def _sequential_pair_step(tables, batch, lr, cfg):
  """Skip-gram with per-pair negatives, one context offset at a time: for each offset `o`
  in `offsets` order, every center scores its pair `(i, i+o)` (when valid) and that pair's
  `K` negatives against the tables as the earlier offsets left them, and the sub-step's
  updates are added before the next offset is scored. A center's input row thus takes its
  pairs' updates one after another, as in word2vec, instead of their sum from one stale
  value; the positions of a sub-step are still updated together. Same loss as
  `_pair_step` when `lr` is 0. Under the curvature cap each sub-step bounds the rows it
  moves by that sub-step's own step curvature (and cross term): a large batch's hot rows
  are bounded 2·window times a step, each time against what the last sub-step left."""
  w, k = cfg.window, cfg.negatives
  tok, neg = batch['tokens'], batch['negatives']
  length = tok.shape[1]
  mask = context_mask(batch, w)                              # (B, L, 2W)
  tok_p = _padded(tok, w)
  loss = 0.0
  new = {}
  for j, o in enumerate(offsets(w)):
    valid = mask[..., j]                                     # (B, L)
    ctx = _window(tok_p, w, o, length)                       # (B, L) context ids
    n_ids = neg[..., j * k:(j + 1) * k]                      # (B, L, K) this pair's draws
    n_w = valid[..., None]
    if cfg.skip_target_negatives:
      n_w = n_w * (n_ids != ctx[..., None])
    h, = tables.gather('in_embed', tok)
    u, n_rows = tables.gather('out_embed', ctx, n_ids)
    s_c = jnp.sum(h * u, -1)
    s_n = jnp.einsum('bld,blkd->blk', h, n_rows)
    sig_c, sig_n = jax.nn.sigmoid(s_c), jax.nn.sigmoid(s_n)
    live_c, live_n = trains(s_c, cfg.max_score), trains(s_n, cfg.max_score)
    g_c = live_c * valid * (sig_c - 1.0)
    g_n = live_n * n_w * sig_n
    loss = loss + (jnp.sum(valid * jnp.logaddexp(0.0, -s_c))
                   + jnp.sum(n_w * jnp.logaddexp(0.0, s_n)))
    dh = g_c[..., None] * u + jnp.einsum('blk,blkd->bld', g_n, n_rows)
    cur_in = cur_out = None
    if _curvature_capped(cfg):
      # the sub-step's own step curvature: a center's row is scored against its pair's
      # context row and K negatives, the context row and each negative against the center
      sp_c = live_c * valid * sig_c * (1.0 - sig_c)
      sp_n = live_n * n_w * sig_n * (1.0 - sig_n)
      hh = jnp.sum(h * h, -1)
      c_hn, c_neg = negative_curvature(sp_n, hh, n_rows)
      cur_h, cur_c, cur_n = lr * (sp_c * jnp.sum(u * u, -1) + c_hn), lr * sp_c * hh, lr * c_neg
      if cfg.row_cap_cross:
        x_h, x_c, x_n = cross_term(g_c, g_n, n_rows.shape[1])
        kx = lr * cfg.row_cap_cross
        cur_h, cur_c, cur_n = cur_h + kx * x_h, cur_c + kx * x_c, cur_n + kx * x_n
      cur_in, cur_out = (cur_h,), (cur_c, cur_n)
    new['in_embed'] = tables.add('in_embed', (tok,), (-lr * dh,), cur_in)
    new['out_embed'] = tables.add('out_embed', (ctx, n_ids),
                                  (-lr * g_c[..., None] * h,
                                   -lr * g_n[..., None] * h[:, :, None, :]), cur_out)
  return new, loss, mask.sum()


def _pair_step(tables, batch, lr, cfg):
  """Skip-gram's step with every (center, output row) score gathered and scattered on
  its own: `2·window + M` output rows a position."""
  in_ids, _, out_ids, weight, label, pairs = _targets(batch, cfg.window, cfg.mode,
                                                      cfg.pair_negatives, cfg.negatives,
                                                      cfg.skip_target_negatives)
  out_rows, = tables.gather('out_embed', out_ids)    # (B, L, M, D)
  h, = tables.gather('in_embed', in_ids)             # (B, L, D)
  scores = jnp.einsum('bld,blmd->blm', h, out_rows)
  prob = jax.nn.sigmoid(scores)
  # d(loss)/d(score) for -log σ(±score): σ(score) - label.
  g = trains(scores, cfg.max_score) * weight * (prob - label)
  # -log σ(±score), exact (no clamping): a diverged run shows as inf/NaN.
  loss = jnp.sum(weight * jnp.logaddexp(0.0, (1.0 - 2.0 * label) * scores))
  dh = jnp.einsum('blm,blmd->bld', g, out_rows)
  d_out = g[..., None] * h[:, :, None, :]
  new_in = tables.add('in_embed', (in_ids,), (-lr * dh,))
  new_out = tables.add('out_embed', (out_ids,), (-lr * d_out,))
  return {'in_embed': new_in, 'out_embed': new_out}, loss, pairs
