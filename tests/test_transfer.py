"""Transfer: graft rules, vocabulary remap, strategies (freezing, LR groups, unfreezing)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import shared_data
from translearn_jax.data import labelled
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.training import optimizers
from translearn_jax.transfer import graft as g
from translearn_jax.transfer import strategies as st


def target_tree():
  return {'backbone': {'embed': {'embedding': jnp.zeros((4, 3))},
                      'block_0': {'kernel': jnp.zeros((3, 3)), 'bias': jnp.zeros(3)}},
          'head': {'kernel': jnp.zeros((3, 2)), 'bias': jnp.zeros(2)}}


def source_tree():
  return {'embed': {'embedding': jnp.arange(12.0).reshape(4, 3)},
          'block_0': {'kernel': jnp.full((3, 3), 7.0), 'bias': jnp.ones(3)},
          'ln_final': {'scale': jnp.ones(3)}}


def test_graft_lands_values_where_rules_say_and_reports():
  rules = g.parse_rules(r'(embed|block_0)/(.*)=>backbone/\1/\2; nothing/.*=>head/kernel')
  out, report = g.graft(target_tree(), source_tree(), rules)
  np.testing.assert_array_equal(out['backbone']['embed']['embedding'],
                                np.arange(12.0).reshape(4, 3))
  np.testing.assert_array_equal(out['backbone']['block_0']['kernel'], np.full((3, 3), 7.0))
  np.testing.assert_array_equal(out['head']['kernel'], np.zeros((3, 2)))
  assert sorted(t for _, t, _ in report.grafted) == [
      'backbone/block_0/bias', 'backbone/block_0/kernel', 'backbone/embed/embedding']
  assert set(report.created) == {'head/kernel', 'head/bias'}
  assert report.unused_source == ['ln_final/scale']
  assert report.unmatched_rules == ['nothing/.*=>head/kernel']


def test_graft_shape_mismatch_names_both_paths_and_shapes():
  src = source_tree()
  src['block_0']['kernel'] = jnp.zeros((3, 5))
  with pytest.raises(g.GraftError, match=r'source block_0/kernel \(3, 5\) vs target '
                                         r'backbone/block_0/kernel \(3, 3\)'):
    g.graft(target_tree(), src, g.parse_rules(r'block_0/(.*)=>backbone/block_0/\1'))


def test_graft_missing_target_path_is_an_error():
  with pytest.raises(g.GraftError, match='backbone/nope/kernel, which the target does not have'):
    g.graft(target_tree(), source_tree(), g.parse_rules(r'block_0/kernel=>backbone/nope/kernel'))
  with pytest.raises(ConfigError, match='must look like'):
    g.parse_rules('no arrow here')


def test_vocabulary_remap_moves_the_right_rows():
  src = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], np.float32)
  src_vocab = ['the', 'cat', 'sat']
  tgt_vocab = ['<pad>', 'sat', 'dog', 'the']
  init = np.full((4, 2), -9.0, np.float32)
  out, stats = g.remap_rows(src, src_vocab, tgt_vocab, init, init='mean')
  np.testing.assert_array_equal(out[1], [3, 3])
  np.testing.assert_array_equal(out[3], [1, 1])
  np.testing.assert_array_equal(out[2], [2, 2])   # mean of the source rows
  assert stats['found'] == 2 and stats['missing'] == 2
  assert stats['missing_examples'] == ['<pad>', 'dog']
  kept, _ = g.remap_rows(src, src_vocab, tgt_vocab, init, init='init')
  np.testing.assert_array_equal(kept[2], [-9, -9])
  tree, report = g.graft({'e': jnp.zeros((4, 2))}, {'w': src}, [('w', 'e')],
                         vocab_remap={'e': (src_vocab, tgt_vocab)})
  np.testing.assert_array_equal(tree['e'][1], [3, 3])
  assert report.remapped['e']['found'] == 2
  with pytest.raises(g.GraftError, match=r'embedding widths differ: .* \(set config\.model\.dim=2,'):
    g.remap_rows(src, src_vocab, tgt_vocab, np.zeros((4, 5), np.float32), init='mean')


def test_vocabulary_remap_takes_a_repeated_source_token_s_first_row():
  """A source vocabulary that repeats a token (an HF vocabulary with aliases, a list read
  without deduplication) gives its first row, as vector files and case-folded matches do."""
  src = np.array([[1.0], [2.0], [3.0]], np.float32)
  out, stats = g.remap_rows(src, ['the', 'cat', 'the'], ['the', 'cat'],
                            np.zeros((2, 1), np.float32))
  np.testing.assert_array_equal(out[:, 0], [1, 2])
  assert stats['found'] == 2 and stats['found_folded'] == 0


def test_vocabulary_remap_falls_back_to_the_first_case_folded_source_word():
  import unicodedata
  # a cased vectors file, most frequent casing first, read by a lowercased vocabulary
  src_vocab = ['London', 'love', 'LONDON', 'Paris', 'paris', 'Cafe\u0301']
  src = np.arange(12, dtype=np.float32).reshape(6, 2)
  tgt_vocab = ['<pad>', 'london', 'paris', 'love', 'café', 'rome']
  out, stats = g.remap_rows(src, src_vocab, tgt_vocab, np.zeros((6, 2), np.float32))
  np.testing.assert_array_equal(out[1], src[0])   # 'London', not 'LONDON'
  np.testing.assert_array_equal(out[2], src[4])   # the exact 'paris' before 'Paris'
  np.testing.assert_array_equal(out[3], src[1])
  np.testing.assert_array_equal(out[4], src[5])   # NFD 'Café' → 'café'
  assert unicodedata.is_normalized('NFC', tgt_vocab[4])
  assert stats['found'] == 4 and stats['found_folded'] == 2 and stats['missing'] == 2
  _, report = g.graft({'e': jnp.zeros((6, 2))}, {'w': src}, [('w', 'e')],
                      vocab_remap={'e': (src_vocab, tgt_vocab)})
  assert '4/6 rows from the source (2 by case-folded match)' in report.summary()


GROUPS = st.parse_groups(r'head=^head/,block=^backbone/block_0/,embed=^backbone/embed/')


def run_steps(strategy, n, **kw):
  params = target_tree()
  params = jax.tree.map(lambda x: x + 0.5, params)
  cfg = st.StrategyConfig(strategy=strategy, learning_rate=0.1, schedule='constant',
                          grad_clip=0.0, **kw)
  tx, plan = st.build(cfg, params, GROUPS, total_steps=100)
  state = tx.init(params)
  update = jax.jit(tx.update)   # one program, not one per operation
  history = [params]
  for i in range(n):
    grads = jax.tree.map(lambda x: jnp.ones_like(x) * (1 + i), params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state, plan


def test_feature_extraction_freezes_bitwise_and_keeps_no_state():
  history, state, plan = run_steps('feature_extraction', 3)
  first, last = history[0], history[-1]
  for path in (('backbone', 'embed', 'embedding'), ('backbone', 'block_0', 'kernel')):
    a, b = first, last
    for k in path:
      a, b = a[k], b[k]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(first['head']['kernel'], last['head']['kernel'])
  # Optimiser state: only the head's Adam moments exist.
  sizes = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, 'size') and x.ndim > 0)
  head_size = 3 * 2 + 2
  assert sizes == 2 * head_size
  params = target_tree()
  assert st.frozen_paths(params, GROUPS, plan) == [
      'backbone/block_0/bias', 'backbone/block_0/kernel', 'backbone/embed/embedding']


def test_frozen_leaves_get_no_gradient_computed_and_no_clipping_share():
  params = jax.tree.map(lambda x: x + 0.5, target_tree())
  tokens = jnp.array([0, 2, 3])

  def loss(p, tokens):  # embed -> block_0 -> head
    h = jnp.take(p['backbone']['embed']['embedding'], tokens, axis=0)
    h = jnp.tanh(h @ p['backbone']['block_0']['kernel'] + p['backbone']['block_0']['bias'])
    return jnp.sum((h @ p['head']['kernel'] + p['head']['bias']) ** 2)

  _, plan = st.build(st.StrategyConfig(strategy='feature_extraction'), params, GROUPS, 10)
  frozen = st.frozen_mask(params, GROUPS, plan)
  assert frozen['backbone']['embed']['embedding'] and not frozen['head']['kernel']
  # jitted, as a training step runs them: one program each, not one per operation
  value, grads = jax.jit(st.value_and_grad(loss, frozen))(params, tokens)
  full_value, full = jax.jit(jax.value_and_grad(loss))(params, tokens)
  assert value == full_value
  np.testing.assert_array_equal(grads['head']['kernel'], full['head']['kernel'])
  for leaf in jax.tree.leaves(grads['backbone']):
    assert not np.asarray(leaf).any()
  assert np.asarray(full['backbone']['block_0']['kernel']).any()
  # nothing is differentiated through the frozen body: no scatter-add into the
  # embedding table and only the head's matmul in the backward pass
  text = str(jax.make_jaxpr(st.value_and_grad(loss, frozen))(params, tokens))
  full_text = str(jax.make_jaxpr(jax.value_and_grad(loss))(params, tokens))
  assert 'scatter-add' in full_text and 'scatter-add' not in text
  assert text.count('dot_general') < full_text.count('dot_general')


def test_discriminative_lr_per_group_step_sizes():
  history, _, plan = run_steps('discriminative', 1, factor=0.5)
  # Adam's first step moves each parameter by lr (the sign of the gradient).
  delta = jax.tree.map(lambda a, b: np.abs(np.asarray(b) - np.asarray(a)), history[0],
                       history[1])
  np.testing.assert_allclose(delta['head']['kernel'], 0.1, rtol=1e-4)
  np.testing.assert_allclose(delta['backbone']['block_0']['kernel'], 0.05, rtol=1e-4)
  np.testing.assert_allclose(delta['backbone']['embed']['embedding'], 0.025, rtol=1e-4)
  assert plan == {'head': (0, 1.0, 0), 'block': (1, 0.5, 0), 'embed': (2, 0.25, 0)}


def test_freeze_bottom_keeps_the_lowest_groups_frozen():
  history, _, plan = run_steps('discriminative', 2, factor=0.5, freeze_bottom=1)
  assert plan['embed'] == (2, 0.0, None) and plan['block'] == (1, 0.5, 0)
  np.testing.assert_array_equal(history[2]['backbone']['embed']['embedding'],
                                history[0]['backbone']['embed']['embedding'])
  assert not np.array_equal(history[2]['backbone']['block_0']['kernel'],
                            history[0]['backbone']['block_0']['kernel'])
  with pytest.raises(ConfigError, match='freeze_bottom=3'):
    run_steps('finetune', 1, freeze_bottom=3)


def test_gradual_unfreezing_on_schedule_with_fresh_adam():
  history, state, plan = run_steps('gradual_unfreezing', 7, unfreeze_every=3, factor=1.0)
  changed = lambda t, path: not np.array_equal(
      np.asarray(_get(history[t], path)), np.asarray(_get(history[t - 1], path)))
  head, block, embed = ('head', 'kernel'), ('backbone', 'block_0', 'kernel'), (
      'backbone', 'embed', 'embedding')
  assert [changed(t, head) for t in range(1, 8)] == [True] * 7
  assert [changed(t, block) for t in range(1, 8)] == [False] * 3 + [True] * 4
  assert [changed(t, embed) for t in range(1, 8)] == [False] * 6 + [True]
  # The first update after unfreezing is a full lr step (Adam count started at 0).
  np.testing.assert_allclose(np.abs(np.asarray(_get(history[4], block)) -
                                    np.asarray(_get(history[3], block))), 0.1, rtol=1e-4)
  assert plan['embed'] == (2, 1.0, 6)


def test_gradual_unfreezing_follows_the_runs_one_slanted_triangle():
  """ULMFiT: every group follows the run's one STLR schedule at its discriminative multiple;
  a group unfrozen at step s joins it at step s (it had begun a triangle of its own, so
  neighbouring groups' rates were not a factor apart). Gradients of ones make each Adam
  step the rate itself."""
  params = jax.tree.map(lambda x: x + 0.5, target_tree())
  total, every, factor = 40, 8, 1 / 2.6
  cfg = st.StrategyConfig(strategy='gradual_unfreezing', learning_rate=0.1,
                          schedule='slanted_triangular', grad_clip=0.0, factor=factor,
                          unfreeze_every=every)
  tx, _ = st.build(cfg, params, GROUPS, total_steps=total)
  stlr = optimizers.slanted_triangular(0.1, total)
  state, update = tx.init(params), jax.jit(tx.update)
  paths = {0: ('head', 'kernel'), 1: ('backbone', 'block_0', 'kernel'),
           2: ('backbone', 'embed', 'embedding')}
  for t in range(total):
    updates, state = update(jax.tree.map(jnp.ones_like, params), state, params)
    for depth, path in paths.items():
      step = float(np.abs(np.asarray(_get(updates, path))).max())
      want = float(stlr(t)) * factor ** depth if t >= depth * every else 0.0
      assert step == pytest.approx(want, rel=1e-4, abs=1e-9), (t, depth)
    params = optax.apply_updates(params, updates)


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def test_uncovered_parameters_are_listed():
  params = target_tree()
  with pytest.raises(ConfigError, match=r"no pattern matches \['backbone/block_0/bias', "
                                        r"'backbone/block_0/kernel'\]"):
    st.build(st.StrategyConfig(), params, st.parse_groups('head=^head/,e=embed'), 10)


def test_slanted_triangular_shape():
  s = optimizers.slanted_triangular(1.0, 100, cut_frac=0.1, ratio=32)
  assert float(s(0)) == pytest.approx(1 / 32)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(5)) == pytest.approx((1 + 0.5 * 31) / 32)
  assert float(s(100)) == pytest.approx(1 / 32)
  assert float(s(55)) == pytest.approx((1 + 0.5 * 31) / 32)


def test_mr_reader_handles_latin1_and_split_is_stratified():
  data = labelled.read_mr(shared_data('rt_polarity'))
  assert len(data.texts) == 10662 and data.labels.sum() == 5331
  assert any('\u00e9' in t for t in data.texts)  # Latin-1 é decoded, not mangled
  tr, dv, te = labelled.split_indices(data.labels, (0.8, 0.1, 0.1), seed=0)
  assert len(set(tr) | set(dv) | set(te)) == 10662
  assert not (set(tr) & set(dv)) and not (set(dv) & set(te))
  assert abs(data.labels[te].mean() - 0.5) < 0.01


def test_labelled_tsv_and_errors(tmp_path):
  p = tmp_path / 'd.tsv'
  p.write_text('sentence\tlabel\ngood\t1\nbad\t0\nok\t1\n', encoding='utf-8')
  d = labelled.read_fields('tsv', str(p), 'sentence', 'label')
  assert d.texts == ['good', 'bad', 'ok'] and d.labels.tolist() == [1, 0, 1]
  with pytest.raises(DataError, match=r"d\.tsv:1: no column named 'text'"):
    labelled.read_fields('tsv', str(p), 'text', 'label')


@pytest.mark.parametrize('kind', ['logistic', 'svm'])
def test_linear_probe_separates_and_picks_l2_on_dev(kind):
  from translearn_jax.transfer import probes
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 5)) * 3
  def make(n):
    y = rng.integers(0, 3, n)
    return centers[y] + rng.normal(size=(n, 5)), y
  (xt, yt), (xd, yd), (xs, ys) = make(300), make(100), make(100)
  best = probes.probe({'train': xt, 'dev': xd, 'test': xs},
                      {'train': yt, 'dev': yd, 'test': ys}, 3, kind)
  assert best['test'] > 0.9 and best['l2'] in (1e-4, 1e-3, 1e-2, 1e-1)
  # A huge penalty collapses the weights: chance-level predictions.
  w, b = probes.fit(*probes.standardise(xt)[:1], yt, 3, kind, l2=1e3)
  assert float(jnp.abs(w).max()) < 1e-2


def test_scratch_baseline_trains_every_group_whatever_freeze_bottom():
  # `freeze_bottom` keeps pretrained bottom groups fixed; the scratch baseline every gain is
  # paired with has nothing pretrained there, and must not keep random groups frozen
  import ml_collections
  from translearn_jax.experiments import finetune, runs
  config = ml_collections.ConfigDict({
      'transfer': {'factor': 0.5, 'unfreeze_every': 10, 'freeze_bottom': 1},
      'optim': {'learning_rate': 0.1, 'schedule': 'constant', 'warmup_steps': 0,
                'weight_decay': 0.0, 'grad_clip': 0.0}})
  params = target_tree()
  _, plan = st.build(finetune.strategy_config(config, 'scratch', 10), params, GROUPS, 100)
  assert st.frozen_paths(params, GROUPS, plan) == []
  _, plan = st.build(finetune.strategy_config(config, 'finetune', 10), params, GROUPS, 100)
  assert st.frozen_paths(params, GROUPS, plan) == ['backbone/embed/embedding']
  # a scratch record written while scratch still froze them is run again
  assert runs.recorded_before_frozen_change({'strategy': 'scratch', 'version': 2}, config)
  assert not runs.recorded_before_frozen_change({'strategy': 'scratch', 'version': 3}, config)
  assert not runs.recorded_before_frozen_change({'strategy': 'finetune', 'version': 2}, config)
  config.transfer.freeze_bottom = 0
  assert not runs.recorded_before_frozen_change({'strategy': 'scratch', 'version': 2}, config)


def test_unfreeze_every_zero_is_one_epoch_of_the_runs_data():
  """ULMFiT unfreezes one more group every epoch: transfer.unfreeze_every=0 follows the
  dataset (a fixed step count fits only the data it was tuned on)."""
  import ml_collections
  from translearn_jax.errors import ConfigError
  from translearn_jax.experiments import finetune
  config = ml_collections.ConfigDict({
      'transfer': {'factor': 1.0, 'unfreeze_every': 0, 'freeze_bottom': 0},
      'optim': {'learning_rate': 0.1, 'schedule': 'constant', 'warmup_steps': 0,
                'weight_decay': 0.0, 'grad_clip': 0.0}})
  params = target_tree()
  starts = lambda per_epoch: [   # noqa: E731
      s for _, (_, _, s) in sorted(st.build(
          finetune.strategy_config(config, 'gradual_unfreezing', per_epoch), params, GROUPS,
          100)[1].items(), key=lambda kv: kv[1][0])]
  assert starts(7) == [7 * d for d in range(len(GROUPS))]
  assert starts(266) == [266 * d for d in range(len(GROUPS))]
  config.transfer.unfreeze_every = 5                      # a step count stays one
  assert starts(266) == [5 * d for d in range(len(GROUPS))]
  for bad in (-1, -7):
    config.transfer.unfreeze_every = bad
    with pytest.raises(ConfigError, match='transfer.unfreeze_every must be a whole number'):
      starts(7)


@pytest.mark.parametrize('rule, match', [
    (r'(.*)=>backbone/\2', r"names group '2', but the source regex has 1 group"),
    (r'(?P<layer>block_\d+)/(.*)=>backbone/\g<name>/\2', r"names group 'name'.*named \['layer'\]"),
    (r'embed=>backbone/\g<1>', r"names group '1', but the source regex has 0 group")])
def test_a_rule_target_naming_a_group_its_regex_lacks_is_refused(rule, match):
  """re raised 'invalid group reference' from the first leaf the rule matched (a traceback)."""
  with pytest.raises(ConfigError, match=match):
    g.parse_rules(rule)
  assert g.parse_rules(r'(?P<layer>block_\d+)/(.*)=>backbone/\g<layer>/\2; (a)=>\g<1>')


def test_a_remapped_table_of_another_width_or_rank_names_both_paths():
  """The vocabulary remap's errors name the source and target leaves (they named neither,
  or raised a bare IndexError for a 1-D leaf)."""
  vocab = ['a', 'b', 'c']
  target = {'e': jnp.zeros((3, 4))}
  with pytest.raises(g.GraftError, match=r'source emb -> target e: embedding widths differ'):
    g.graft(target, {'emb': np.ones((3, 5), np.float32)}, g.parse_rules('emb=>e'),
            vocab_remap={'e': (vocab, vocab)})
  with pytest.raises(g.GraftError, match=r'source emb \(3,\) maps to the vocabulary table e '
                                         r'\(3, 4\): a remapped table is \(rows, width\)'):
    g.graft(target, {'emb': np.ones(3, np.float32)}, g.parse_rules('emb=>e'),
            vocab_remap={'e': (vocab, vocab)})
