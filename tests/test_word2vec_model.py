"""Skip-gram/CBOW model: pair masks, sparse update == dense gradient, learning."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from translearn_jax.models import word2vec as w2v

# jitted: one compiled program a configuration, not hundreds of eager one-op programs
step = jax.jit(w2v.sparse_sgd_step, static_argnums=3)
apply_rows = jax.jit(w2v.apply_rows, static_argnums=3, static_argnames='constrain')


def init_params(cfg, batch):
  return jax.jit(w2v.Word2Vec(cfg).init)(jax.random.key(0), batch)['params']


def random_batch(rng, vocab, b=3, length=12, k=4, window=3, segments=True):
  seg = np.zeros((b, length), np.int32)
  if segments:
    seg[:, length // 2:] = 1
    seg[0, -2:] = -1  # padding
  return {
      'tokens': rng.integers(0, vocab, (b, length)).astype(np.int32),
      'segment': seg,
      'window': rng.integers(1, window + 1, (b, length)).astype(np.int32),
      'negatives': rng.integers(0, vocab, (b, length, k)).astype(np.int32),
  }


def test_context_mask_equals_brute_force_enumeration():
  rng = np.random.default_rng(0)
  batch = random_batch(rng, 20, b=2, length=15, window=4)
  ids, mask = w2v.context(jax.tree.map(jnp.asarray, batch), 4)
  ids, mask = np.asarray(ids), np.asarray(mask)
  offs = w2v.offsets(4)
  for r, i in itertools.product(range(2), range(15)):
    for j, o in enumerate(offs):
      t = i + o
      valid = (0 <= t < 15 and batch['segment'][r, i] >= 0 and
               batch['segment'][r, t] == batch['segment'][r, i] and
               abs(o) <= batch['window'][r, i])
      assert mask[r, i, j] == valid, (r, i, o)
      if valid:
        assert ids[r, i, j] == batch['tokens'][r, t]


@pytest.mark.parametrize('mode, pair_negatives, skip', [
    ('skipgram', False, False), ('skipgram', True, False), ('cbow', False, False),
    ('skipgram', False, True), ('skipgram', True, True), ('cbow', False, True)])
def test_sparse_step_equals_dense_sgd_step(mode, pair_negatives, skip):
  cfg = w2v.Word2VecConfig(vocab_size=11, dim=6, window=3, negatives=4, mode=mode,
                           pair_negatives=pair_negatives, skip_target_negatives=skip)
  rng = np.random.default_rng(1)
  batch = jax.tree.map(jnp.asarray, random_batch(rng, 11, k=cfg.negatives_per_position))
  model = w2v.Word2Vec(cfg)
  params = init_params(cfg, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape),
                        params)
  lr = 0.05
  (loss, pairs), grads = jax.jit(jax.value_and_grad(
      lambda p: model.apply({'params': p}, batch), has_aux=True))(params)
  dense = jax.tree.map(lambda p, g: p - lr * g, params, grads)
  sparse, sloss, spairs = step(params, batch, lr, cfg)
  np.testing.assert_allclose(sloss, loss, rtol=1e-5)
  assert float(spairs) == float(pairs) > 0
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(sparse[name], dense[name], rtol=1e-5, atol=1e-6)
    changed = np.any(np.asarray(sparse[name]) != np.asarray(params[name]), axis=1)
    assert changed.any()


@pytest.mark.parametrize('mode, extra', [('skipgram', {}), ('skipgram', {'negative_draws': 6}),
                                         ('cbow', {}), ('cbow', {'negative_share': 2})])
def test_max_score_drops_the_gradient_of_scores_past_the_bound(mode, extra):
  """`max_score`: a score with |s| >= the bound trains nothing (gensim skips scores past its
  sigmoid table's ±6), the others train as before. The sparse step equals autodiff of the
  loss with those scores' terms held constant, and differs from the unbounded step."""
  bound = 0.25      # scores of the perturbed tables below spread on both sides of it
  cfg = w2v.Word2VecConfig(vocab_size=11, dim=6, window=3, negatives=4, mode=mode,
                           max_score=bound, **extra)
  rng = np.random.default_rng(4)
  batch = random_batch(rng, 11, k=cfg.negatives_per_position)
  batch['negatives'] = batch['negatives'][:, ::cfg.negative_share]
  batch = jax.tree.map(jnp.asarray, batch)
  model = w2v.Word2Vec(cfg)
  params = init_params(cfg, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape),
                        params)
  h = params['in_embed'][batch['tokens']]
  s = np.asarray(jnp.einsum('bld,vd->blv', h, params['out_embed']))
  assert (np.abs(s) >= bound).any() and (np.abs(s) < bound).any()
  lr = 0.05
  (loss, _), grads = jax.jit(jax.value_and_grad(
      lambda p: model.apply({'params': p}, batch), has_aux=True))(params)
  sparse, sloss, _ = step(params, batch, lr, cfg)
  unbounded, uloss, _ = step(params, batch, lr, dataclasses.replace(cfg, max_score=0.0))
  np.testing.assert_allclose(sloss, loss, rtol=1e-5)
  np.testing.assert_allclose(uloss, loss, rtol=1e-5)      # the loss counts every score
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(sparse[name], params[name] - lr * grads[name],
                               rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(sparse[name]) - np.asarray(unbounded[name])).max() > 1e-4
    assert np.any(np.asarray(sparse[name]) != np.asarray(params[name]))


@pytest.mark.parametrize('skip, cap, cross, bound', [
    (False, 0.0, 0.0, 0.0), (True, 0.0, 0.0, 0.0), (False, 0.25, 0.0, 0.0),
    (True, 0.25, 0.4, 0.5)])
def test_sequential_pair_order_applies_one_context_offset_at_a_time(skip, cap, cross, bound):
  """`pair_order='sequential'` equals a float64 NumPy step that, offset by offset, scores
  every center's pair at that offset and its own K negatives against the tables the earlier
  offsets left, then adds that offset's updates; with lr 0 it scores what the summed
  pair-by-pair step scores. Under the curvature cap (`cap` > 0) each sub-step's row sums
  are scaled by min(1, cap / the row's summed α·σ'(s)·|partner|² (+ cross·α·|σ(s) − label|))
  over that sub-step's scores, binding on some rows and not others; a score past `bound`
  (`max_score`) moves nothing and adds nothing to the totals."""
  window, k, vocab = 2, 2, 7       # 7 ids over 2 × 10 positions: rows repeat in a sub-step
  capped = {'row_cap': cap, 'row_cap_mode': 'curvature', 'row_cap_cross': cross} if cap else {}
  cfg = w2v.Word2VecConfig(vocab_size=vocab, dim=5, window=window, negatives=k,
                           pair_negatives=True, pair_order='sequential',
                           skip_target_negatives=skip, max_score=bound, **capped)
  rng = np.random.default_rng(9)
  batch = random_batch(rng, vocab, b=2, length=10, k=cfg.negatives_per_position, window=window)
  params = init_params(cfg, jax.tree.map(jnp.asarray, batch))
  params = jax.tree.map(lambda p: p + 0.4 * jax.random.normal(jax.random.key(3), p.shape),
                        params)
  lr = 0.3
  inp, out = (np.asarray(params[n], np.float64).copy() for n in ('in_embed', 'out_embed'))
  sig = lambda x: 1.0 / (1.0 + np.exp(-x))   # noqa: E731
  tok, seg, win, neg = (batch[key] for key in ('tokens', 'segment', 'window', 'negatives'))
  want_loss, pairs, scales, past = 0.0, 0, [], []
  for j, o in enumerate(w2v.offsets(window)):
    d_in, d_out = np.zeros_like(inp), np.zeros_like(out)
    c_in, c_out = np.zeros(vocab), np.zeros(vocab)     # the sub-step's curvature totals
    for r, i in itertools.product(range(2), range(10)):
      t = i + o
      if not (0 <= t < 10 and seg[r, i] >= 0 and seg[r, t] == seg[r, i] and abs(o) <= win[r, i]):
        continue
      pairs += 1
      h, c = inp[tok[r, i]], tok[r, t]
      for n, label in [(c, 1.0)] + [(n, 0.0) for n in neg[r, i, j * k:(j + 1) * k]]:
        if skip and label == 0.0 and n == c:
          continue
        s_ = h @ out[n]
        live = abs(s_) < bound if bound else True
        past.append(not live)
        g = live * (sig(s_) - label)
        want_loss += np.logaddexp(0.0, -s_ if label else s_)
        d_in[tok[r, i]] += g * out[n]
        d_out[n] += g * h
        sp = live * sig(s_) * (1.0 - sig(s_))
        c_in[tok[r, i]] += lr * (sp * out[n] @ out[n] + cross * abs(g))
        c_out[n] += lr * (sp * h @ h + cross * abs(g))
    s_in, s_out = ((np.minimum(1.0, cap / np.maximum(t_, 1e-300)) if cap else np.ones(vocab))
                   for t_ in (c_in, c_out))
    scales += [s_in[c_in > 0], s_out[c_out > 0]]     # the rows the sub-step moves
    inp, out = inp - lr * s_in[:, None] * d_in, out - lr * s_out[:, None] * d_out
  if bound:   # scores on both sides of the bound
    assert 0 < sum(past) < len(past), (sum(past), len(past))
  if cap:     # the cap binds on some moved rows and leaves others whole
    moved_scales = np.concatenate(scales)
    assert (moved_scales < 0.9).sum() >= 4 and (moved_scales == 1).sum() >= 4, moved_scales
  got, loss, got_pairs = step(params, jax.tree.map(jnp.asarray, batch), lr, cfg)
  assert float(got_pairs) == pairs > 0
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
  np.testing.assert_allclose(got['in_embed'], inp, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got['out_embed'], out, rtol=1e-4, atol=1e-6)
  summed = dataclasses.replace(cfg, pair_order='summed')
  _, summed_loss, _ = step(params, jax.tree.map(jnp.asarray, batch), 0.0, summed)
  _, zero_lr_loss, _ = step(params, jax.tree.map(jnp.asarray, batch), 0.0, cfg)
  np.testing.assert_allclose(float(zero_lr_loss), float(summed_loss), rtol=1e-5)
  moved, _, _ = step(params, jax.tree.map(jnp.asarray, batch), lr, summed)
  assert np.abs(np.asarray(moved['in_embed']) - inp).max() > 1e-3   # the order matters
  for bad, match in (({'pair_negatives': False}, 'pair_negatives=True'),
                     ({'row_cap': 2.0, 'row_cap_mode': 'count', 'row_cap_cross': 0.0},
                      "needs optim.row_cap_mode='curvature'"),
                     ({'row_cap': 2.0, 'row_cap_mode': 'norm', 'row_cap_cross': 0.0},
                      "needs optim.row_cap_mode='curvature'"),
                     ({'pair_order': 'shuffled'}, "'summed' or 'sequential'")):
    with pytest.raises(ValueError, match=match):
      dataclasses.replace(cfg, **bad)


def test_pair_negatives_score_each_pair_with_its_own_negatives():
  """The loss equals word2vec's, enumerated pair by pair: every valid (center, context)
  pair scores its context and its own K negatives (`pair_negatives`)."""
  window, k = 3, 2
  cfg = w2v.Word2VecConfig(vocab_size=13, dim=5, window=window, negatives=k,
                           pair_negatives=True)
  assert cfg.negatives_per_position == 2 * window * k
  rng = np.random.default_rng(5)
  batch = random_batch(rng, 13, b=2, length=9, k=cfg.negatives_per_position, window=window)
  model = w2v.Word2Vec(cfg)
  params = init_params(cfg, jax.tree.map(jnp.asarray, batch))
  params = jax.tree.map(lambda p: p + 0.4 * jax.random.normal(jax.random.key(1), p.shape),
                        params)
  loss, pairs = jax.jit(model.apply)({'params': params}, jax.tree.map(jnp.asarray, batch))
  inp, out = np.asarray(params['in_embed'], np.float64), np.asarray(params['out_embed'],
                                                                     np.float64)
  nll = lambda x: np.logaddexp(0.0, -x)   # -log sigmoid(x)  # noqa: E731
  want, n = 0.0, 0
  tok, seg, win, neg = (batch[key] for key in ('tokens', 'segment', 'window', 'negatives'))
  for r, i in itertools.product(range(2), range(9)):
    for j, o in enumerate(w2v.offsets(window)):
      t = i + o
      if not (0 <= t < 9 and seg[r, i] >= 0 and seg[r, t] == seg[r, i] and abs(o) <= win[r, i]):
        continue
      h = inp[tok[r, i]]
      want += nll(h @ out[tok[r, t]])
      want += sum(nll(-h @ out[neg[r, i, j * k + q]]) for q in range(k))
      n += 1
  assert float(pairs) == n > 0
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  with pytest.raises(ValueError, match='pair_negatives is for skip-gram'):
    w2v.Word2VecConfig(vocab_size=13, mode='cbow', pair_negatives=True)


@pytest.mark.parametrize('mode, extra', [('skipgram', {'negative_draws': 6}),
                                         ('skipgram', {'pair_negatives': True}),
                                         ('cbow', {'negative_draws': 6}),
                                         ('skipgram', {'negative_share': 3}),
                                         ('cbow', {'negative_share': 3})])
def test_skip_target_negatives_drop_each_negative_from_the_pairs_it_equals(mode, extra):
  """With `skip_target_negatives`, the loss is word2vec.c's enumerated pair by pair: a
  drawn negative equal to the pair's target word (skip-gram: the context word; CBOW: the
  center) is not scored for that pair, and still is for the center's other pairs."""
  window, k, vocab = 3, 2, 5       # 5 ids: many negatives equal a pair's target
  cfg = w2v.Word2VecConfig(vocab_size=vocab, dim=4, window=window, negatives=k, mode=mode,
                           skip_target_negatives=True, **extra)
  share = cfg.negative_share
  rng = np.random.default_rng(3)
  batch = random_batch(rng, vocab, b=2, length=9, k=cfg.negatives_per_position, window=window)
  batch['negatives'] = batch['negatives'][:, ::share]      # one draw per group
  params = init_params(cfg, jax.tree.map(jnp.asarray, batch))
  params = jax.tree.map(lambda p: p + 0.4 * jax.random.normal(jax.random.key(1), p.shape),
                        params)
  inp, out = (np.asarray(params[n], np.float64) for n in ('in_embed', 'out_embed'))
  nll = lambda x: np.logaddexp(0.0, -x)   # -log sigmoid(x)  # noqa: E731
  tok, seg, win, neg = (batch[key] for key in ('tokens', 'segment', 'window', 'negatives'))
  drawn = cfg.negatives_per_position
  want, skipped = 0.0, 0
  for r, i in itertools.product(range(2), range(9)):
    ctx = [i + o for o in w2v.offsets(window)
           if 0 <= i + o < 9 and seg[r, i] >= 0 and seg[r, i + o] == seg[r, i]
           and abs(o) <= win[r, i]]
    valid = [j for j, o in enumerate(w2v.offsets(window)) if i + o in ctx]
    negs = neg[r, i // share]
    if mode == 'cbow':
      if not ctx:
        continue
      h = inp[tok[r, ctx]].mean(0)
      want += nll(h @ out[tok[r, i]])
      for n in negs:
        skipped += n == tok[r, i]
        want += 0.0 if n == tok[r, i] else k / drawn * nll(-h @ out[n])
      continue
    h = inp[tok[r, i]]
    for j, t in zip(valid, ctx):
      want += nll(h @ out[tok[r, t]])
      own = negs[j * k:(j + 1) * k] if cfg.pair_negatives else negs
      for n in own:
        skipped += n == tok[r, t]
        want += 0.0 if n == tok[r, t] else k / len(own) * nll(-h @ out[n])
  assert skipped > 0
  loss, _ = jax.jit(w2v.Word2Vec(cfg).apply)({'params': params},
                                            jax.tree.map(jnp.asarray, batch))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  _, sloss, _ = step(params, jax.tree.map(jnp.asarray, batch), 0.05, cfg)
  np.testing.assert_allclose(float(sloss), want, rtol=1e-5)
  plain = dataclasses.replace(cfg, skip_target_negatives=False)
  _, ploss, _ = step(params, jax.tree.map(jnp.asarray, batch), 0.05, plain)
  assert float(ploss) > want * (1 + 1e-3)   # the skipped scores count without the flag


@pytest.mark.parametrize('extra', [{}, {'pair_negatives': True}, {'negative_draws': 7},
                                   {'negative_draws': 7, 'skip_target_negatives': True},
                                   {'pair_negatives': True, 'skip_target_negatives': True},
                                   {'negative_draws': 7, 'max_score': 0.2}])
def test_skipgram_step_layouts_agree(extra):
  """The slice layout (`_skipgram_step`: context output rows gathered once per token)
  and the pair-by-pair layout (`_pair_step`) give the same loss, pairs and tables."""
  cfg = w2v.Word2VecConfig(vocab_size=9, dim=4, window=3, negatives=2, **extra)
  rng = np.random.default_rng(11)   # 9 ids over 3 × 14 positions: rows repeat
  batch = jax.tree.map(jnp.asarray, random_batch(rng, 9, b=3, length=14,
                                                 k=cfg.negatives_per_position))
  params = init_params(cfg, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(5), p.shape),
                        params)
  run = lambda layout: jax.jit(  # noqa: E731
      lambda p, b: layout(w2v.ReplicatedTables(p, cfg), b, 0.05, cfg))(params, batch)
  fast, slow = run(w2v._skipgram_step), run(w2v._pair_step)
  np.testing.assert_allclose(fast[1], slow[1], rtol=1e-5)
  assert float(fast[2]) == float(slow[2]) > 0
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(fast[0][name], slow[0][name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('mode, seed', [('skipgram', 7), ('cbow', 8)])
def test_negative_draws_weigh_each_shared_draw_by_its_share(mode, seed):
  """`negative_draws=3K` drawing the same K negatives three times is the plain K-shared
  step (each copy weighs c_i/3 in skip-gram, 1/3 in CBOW), and the dense loss and the
  sparse step agree."""
  k = 2
  base = w2v.Word2VecConfig(vocab_size=13, dim=5, window=3, negatives=k, mode=mode)
  more = dataclasses.replace(base, negative_draws=3 * k)
  assert more.negatives_per_position == 3 * k
  batch = jax.tree.map(jnp.asarray, random_batch(np.random.default_rng(seed), 13, k=k))
  tripled = dict(batch, negatives=jnp.tile(batch['negatives'], (1, 1, 3)))
  params = init_params(base, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(4), p.shape),
                        params)
  want, want_loss, _ = step(params, batch, 0.05, base)
  got, got_loss, _ = step(params, tripled, 0.05, more)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  dense_loss, _ = jax.jit(w2v.Word2Vec(more).apply)({'params': params}, tripled)
  np.testing.assert_allclose(dense_loss, want_loss, rtol=1e-5)
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match='negative_draws is for shared negatives'):
    w2v.Word2VecConfig(vocab_size=13, negative_draws=4, pair_negatives=True)


@pytest.mark.parametrize('mode, draws', [('cbow', 0), ('cbow', 6), ('skipgram', 0),
                                         ('skipgram', 6)])
def test_group_shared_negatives_are_each_positions_draw(mode, draws):
  """`negative_share=G`: one draw of negatives `(B, L/G, M)` that the G positions of a
  group score is the per-position step with that draw repeated for each position — the
  same loss, pairs and tables (the fast step sums a group's updates to a drawn row before
  its scatter) — and one sparse step is one dense SGD step on the model's loss."""
  g, length = 4, 12
  shared = w2v.Word2VecConfig(vocab_size=9, dim=5, window=3, negatives=3, mode=mode,
                              negative_draws=draws, negative_share=g)
  each = dataclasses.replace(shared, negative_share=1)
  rng = np.random.default_rng(12)   # 9 ids: drawn rows repeat within and across groups
  batch = random_batch(rng, 9, length=length, k=shared.negatives_per_position)
  batch['negatives'] = batch['negatives'][:, ::g]          # (B, L/G, M)
  batch = jax.tree.map(jnp.asarray, batch)
  repeated = dict(batch, negatives=jnp.repeat(batch['negatives'], g, axis=1))
  model = w2v.Word2Vec(shared)
  params = init_params(shared, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(6), p.shape),
                        params)
  lr = 0.05
  got, got_loss, got_pairs = step(params, batch, lr, shared)
  want, want_loss, want_pairs = step(params, repeated, lr, each)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  assert float(got_pairs) == float(want_pairs) > 0
  (loss, _), grads = jax.jit(jax.value_and_grad(lambda p: model.apply({'params': p}, batch),
                                                has_aux=True))(params)
  np.testing.assert_allclose(loss, got_loss, rtol=1e-5)
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[name], params[name] - lr * grads[name], rtol=1e-5,
                               atol=1e-6)
  assert np.any(np.asarray(got['out_embed']) != np.asarray(params['out_embed']))
  with pytest.raises(ValueError, match='negative_share must be >= 1'):
    w2v.Word2VecConfig(vocab_size=9, negative_share=0)
  with pytest.raises(ValueError, match='negative_share shares one draw'):
    w2v.Word2VecConfig(vocab_size=9, negative_share=2, pair_negatives=True)


@pytest.mark.parametrize('mode, cap_mode', [('cbow', 'count'), ('cbow', 'norm'),
                                            ('skipgram', 'count'), ('skipgram', 'norm')])
def test_group_shared_negatives_under_a_row_cap_count_each_position(mode, cap_mode):
  """With `optim.row_cap`, a drawn row that the G positions of a group score receives G
  contributions, as in the per-position step with the draw repeated: the cap counts (or
  norms) each of them, not their sum as one."""
  g, length = 4, 12
  shared = w2v.Word2VecConfig(vocab_size=9, dim=5, window=3, negatives=3, mode=mode,
                              negative_share=g, row_cap=2.0, row_cap_mode=cap_mode)
  each = dataclasses.replace(shared, negative_share=1)
  rng = np.random.default_rng(12)
  batch = random_batch(rng, 9, length=length, k=shared.negatives_per_position)
  batch['negatives'] = batch['negatives'][:, ::g]          # (B, L/G, M)
  batch = jax.tree.map(jnp.asarray, batch)
  repeated = dict(batch, negatives=jnp.repeat(batch['negatives'], g, axis=1))
  params = init_params(shared, batch)
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(6), p.shape),
                        params)
  got, got_loss, _ = step(params, batch, 0.05, shared)
  want, want_loss, _ = step(params, repeated, 0.05, each)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_step_touches_only_batch_rows():
  cfg = w2v.Word2VecConfig(vocab_size=1000, dim=8, window=2, negatives=2)
  rng = np.random.default_rng(3)
  batch = random_batch(rng, 50, b=2, length=10, k=2, window=2)  # ids < 50
  params = init_params(cfg, jax.tree.map(jnp.asarray, batch))
  params['out_embed'] = params['out_embed'] + 0.1
  new, _, _ = step(params, jax.tree.map(jnp.asarray, batch), 0.1, cfg)
  for name in ('in_embed', 'out_embed'):
    np.testing.assert_array_equal(np.asarray(new[name])[50:], np.asarray(params[name])[50:])


def test_pairs_never_cross_segments():
  rng = np.random.default_rng(4)
  batch = random_batch(rng, 30, b=1, length=10, k=1, window=5)
  batch['segment'][:] = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]])
  batch['window'][:] = 5
  _, mask = w2v.context(jax.tree.map(jnp.asarray, batch), 5)
  # Each position pairs with the other 4 of its own 5-token segment only.
  np.testing.assert_array_equal(np.asarray(mask).sum(-1), np.full((1, 10), 4.0))


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match='model.mode'):
    w2v.Word2VecConfig(vocab_size=3, mode='glove')
  with pytest.raises(ValueError, match='model.dim'):
    w2v.Word2VecConfig(vocab_size=3, dim=0)


def test_row_cap_scales_only_rows_updated_more_often_than_the_cap():
  cfg = w2v.Word2VecConfig(vocab_size=6, dim=3, row_cap=2.0)
  table = jnp.zeros((6, 3))
  ids = jnp.array([1, 1, 1, 1, 2, 2, 3, 4])
  upd = jnp.ones((8, 3)).at[7].set(0.0)           # row 4's only update is zero: not counted
  got = np.asarray(apply_rows(table, ids, upd, cfg))
  np.testing.assert_allclose(got[1], 4 * 2 / 4)    # 4 updates > cap 2: their sum x 2/4
  np.testing.assert_allclose(got[2], 2.0)          # 2 updates = cap: the plain sum
  np.testing.assert_allclose(got[3], 1.0)
  np.testing.assert_allclose(got[[0, 4, 5]], 0.0)
  plain = np.asarray(apply_rows(table, ids, upd, w2v.Word2VecConfig(vocab_size=6, dim=3)))
  np.testing.assert_allclose(plain[1], 4.0)        # row_cap 0: word2vec's plain sum
  with pytest.raises(ValueError, match='row_cap'):
    w2v.Word2VecConfig(vocab_size=6, row_cap=-1.0)


def test_all_devices_means_the_most_that_split_the_batch():
  from configs import skipgram
  from translearn_jax.pretraining import word2vec as pw
  c = skipgram.get_config()                       # batch 2 rows; the suite has 8 CPU devices
  assert jax.device_count() == 8 and pw.device_count(c) == 2
  c.train.batch_size = 12
  assert pw.device_count(c) == 6                  # 6 of the 8 devices take 2 rows each
  c.train.batch_size, c.num_devices = 16, 0
  assert pw.device_count(c) == 8
  c.num_devices = 1                               # an explicit count is kept as given
  assert pw.device_count(c) == 1


def test_norm_cap_scales_aligned_sums_like_the_count_cap_and_keeps_diverse_ones():
  """`row_cap_mode='norm'`: 8 equal contributions to one row are scaled to `cap` of them
  (as the count cap does); 4 orthogonal ones (sum norm 2× the mean) are kept whole with
  cap 2; a row hit once is never scaled; other rows are untouched."""
  dim, cap = 4, 2.0
  cfg = w2v.Word2VecConfig(vocab_size=6, dim=dim, row_cap=cap, row_cap_mode='norm')
  table = jnp.zeros((6, dim))
  same = jnp.tile(jnp.array([[1.0, 2.0, 0.0, 0.0]]), (8, 1))
  ortho = 3.0 * jnp.eye(dim)
  once = jnp.array([[0.0, 0.0, 5.0, 5.0]])
  ids = jnp.array([1] * 8 + [3] * 4 + [4])
  out = apply_rows(table, ids, jnp.concatenate([same, ortho, once]), cfg)
  np.testing.assert_allclose(out[1], cap * same[0], rtol=1e-6)
  np.testing.assert_allclose(out[3], ortho.sum(0), rtol=1e-6)
  np.testing.assert_allclose(out[4], once[0], rtol=1e-6)
  assert not np.asarray(out)[[0, 2, 5]].any()
  # the count cap scales both hot rows by cap / count
  counted = apply_rows(table, ids, jnp.concatenate([same, ortho, once]),
                           w2v.Word2VecConfig(vocab_size=6, dim=dim, row_cap=cap))
  np.testing.assert_allclose(counted[3], ortho.sum(0) * cap / 4, rtol=1e-6)
  with pytest.raises(ValueError, match="row_cap_mode must be 'count', 'norm' or 'curvature'"):
    w2v.Word2VecConfig(vocab_size=6, row_cap_mode='rows')


def test_curvature_cap_scales_only_rows_whose_step_curvature_passes_the_cap():
  """`row_cap_mode='curvature'`: a row whose contributions' curvatures sum to at most the
  cap keeps its plain sum, however many they are; one summing to 4× the cap gets a
  quarter of it; a row hit once with a large curvature is scaled too."""
  cfg = w2v.Word2VecConfig(vocab_size=6, dim=2, row_cap=1.0, row_cap_mode='curvature')
  ids = jnp.array([1] * 8 + [2] * 4 + [3])
  upd = jnp.ones((13, 2))
  curv = jnp.array([0.1] * 8 + [1.0] * 4 + [2.0])   # row 1: 0.8, row 2: 4.0, row 3: 2.0
  got = np.asarray(apply_rows(jnp.zeros((6, 2)), ids, upd, cfg, curvature=curv))
  np.testing.assert_allclose(got[1], 8.0, rtol=1e-6)       # 8 contributions, under the cap
  np.testing.assert_allclose(got[2], 4.0 / 4.0, rtol=1e-6)
  np.testing.assert_allclose(got[3], 1.0 / 2.0, rtol=1e-6)
  assert not got[[0, 4, 5]].any()


def _pairwise_curvature_step(params, batch, lr, cfg):
  """The curvature-capped step written pair by pair from `_targets`: every score's
  σ'(s)·|x|² charged to both rows it reads (and `row_cap_cross`·|σ(s) − label| to each of
  them, in full to every context row of a CBOW h), the plain updates summed per row, each
  row scaled by min(1, cap / α·Σ).  Returns (new params, each table's per-row totals)."""
  in_ids, in_w, out_ids, weight, label, _ = w2v._targets(batch, cfg.window, cfg.mode,
                                                        cfg.pair_negatives, cfg.negatives)
  inp, out = params['in_embed'], params['out_embed']
  rows = out[out_ids]                                       # (B, L, M', D)
  h = inp[in_ids] if in_w is None else jnp.einsum('blc,blcd->bld', in_w, inp[in_ids])
  s = jnp.einsum('bld,blmd->blm', h, rows)
  sig = jax.nn.sigmoid(s)
  g, sp = weight * (sig - label), weight * sig * (1 - sig)
  dh = jnp.einsum('blm,blmd->bld', g, rows)
  c_h = jnp.sum(sp * jnp.sum(rows * rows, -1), -1)         # (B, L)
  cross = cfg.row_cap_cross * jnp.abs(g)                    # (B, L, M')
  c_out = sp * jnp.sum(h * h, -1)[..., None] + cross
  if in_w is None:                                          # skip-gram: the center's row
    ids_in, d_in = in_ids.reshape(-1), dh.reshape(-1, cfg.dim)
    c_in = (c_h + cross.sum(-1)).reshape(-1)
  else:   # CBOW: each valid context row takes h's full error and moves h by in_w of it
    used = (in_w > 0)[..., None]
    ids_in = in_ids.reshape(-1)
    d_in = (used * dh[:, :, None, :]).reshape(-1, cfg.dim)
    c_in = (in_w * c_h[..., None] + used[..., 0] * cross.sum(-1)[..., None]).reshape(-1)
  new, totals = {}, {}
  for name, table, ids, upd, cur in (
      ('in_embed', inp, ids_in, -lr * d_in, lr * c_in),
      ('out_embed', out, out_ids.reshape(-1), -lr * (g[..., None] * h[:, :, None]).reshape(
          -1, cfg.dim), lr * c_out.reshape(-1))):
    totals[name] = jnp.zeros(table.shape[0]).at[ids].add(cur)
    new[name] = w2v.apply_rows(table, ids, upd, cfg, curvature=cur)
  return new, totals


# jitted: one program a configuration instead of ~100 eager single-operation ones
pairwise_curvature_step = jax.jit(_pairwise_curvature_step, static_argnums=3)


@pytest.mark.parametrize('mode, share, extra', [
    ('skipgram', 1, {}), ('skipgram', 3, {}), ('cbow', 1, {}), ('cbow', 3, {}),
    ('skipgram', 1, {'pair_negatives': True}), ('skipgram', 2, {'negative_draws': 7}),
    ('cbow', 2, {'negative_draws': 5}), ('skipgram', 1, {'row_cap_cross': 0.3}),
    ('skipgram', 3, {'row_cap_cross': 0.3, 'negative_draws': 6}),
    ('cbow', 1, {'row_cap_cross': 0.3}), ('cbow', 3, {'row_cap_cross': 0.3})])
def test_curvature_cap_in_the_fast_layouts_equals_its_pairwise_definition(mode, share, extra):
  """The skip-gram and CBOW steps sum each row's curvature through the same slices as its
  update (a token's output row as the context of its neighbours, group-shared negatives
  once per group): the tables equal the pair-by-pair definition, with the cap binding on
  some rows and not on others."""
  cfg = w2v.Word2VecConfig(vocab_size=30, dim=6, window=3, negatives=3, mode=mode,
                           negative_share=share, row_cap=1.0, row_cap_mode='curvature',
                           **extra)
  rng = np.random.default_rng(21)
  batch = random_batch(rng, 30, b=2, length=12, k=cfg.negatives_per_position)
  batch['negatives'] = batch['negatives'][:, ::share]
  batch = jax.tree.map(jnp.asarray, batch)
  params = init_params(cfg, batch)
  params = jax.tree.map(lambda p: p + 0.4 * jax.random.normal(jax.random.key(3), p.shape),
                        params)
  lr = 0.05
  _, totals = pairwise_curvature_step(params, batch, lr, cfg)
  for binding in ('in_embed', 'out_embed'):
    # a cap at the median of one table's row totals: it binds on half of its rows
    t = np.asarray(totals[binding])
    cfg = dataclasses.replace(cfg, row_cap=float(np.median(t[t > 0])))
    assert (t > cfg.row_cap).any() and ((t > 0) & (t < cfg.row_cap)).any(), (binding, t)
    got, _, _ = step(params, batch, lr, cfg)
    want, _ = pairwise_curvature_step(params, batch, lr, cfg)
    for name in ('in_embed', 'out_embed'):
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
  plain, _, _ = step(params, batch, lr, dataclasses.replace(cfg, row_cap=0.0, row_cap_cross=0.0))
  assert np.abs(np.asarray(plain['out_embed']) - np.asarray(got['out_embed'])).max() > 1e-4
