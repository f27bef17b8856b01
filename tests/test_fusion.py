"""Fusion: gradient reversal, task mixing, zero-shot classification."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from translearn_jax.errors import ConfigError
from translearn_jax.export.word2vec_format import save_word2vec
from translearn_jax.fusion import gradient_reversal as grl
from translearn_jax.fusion import mixing, zero_shot


def test_gradient_reversal_negates_the_gradient_exactly():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3,)), jnp.float32)
  f = lambda x: jnp.sum(jnp.tanh(x @ w) ** 2)
  lam = jnp.float32(0.37)
  np.testing.assert_array_equal(grl.grad_reverse(x, lam), x)
  g = jax.grad(f)(x)
  g_rev, g_lam = jax.grad(lambda x, l: f(grl.grad_reverse(x, l)), argnums=(0, 1))(x, lam)
  np.testing.assert_array_equal(g_rev, -lam * g)
  assert float(g_lam) == 0.0
  # under jit, and only the path through the reversal is negated
  h = jax.jit(jax.grad(lambda x: f(grl.grad_reverse(x, 1.0)) + jnp.sum(x)))(x)
  np.testing.assert_allclose(h, -g + 1.0, rtol=1e-6)
  assert float(grl.dann_lambda(0.0)) == 0.0 and 0.99 < float(grl.dann_lambda(1.0)) < 1.0


@pytest.mark.parametrize('mode,temperature,expected', [
    ('proportional', 1.0, [0.7, 0.2, 0.1]),
    ('temperature', 2.0, np.sqrt([7, 2, 1]) / np.sqrt([7, 2, 1]).sum()),
    ('equal', 1.0, [1 / 3] * 3),
])
def test_mixing_sampler_proportions(mode, temperature, expected):
  s = mixing.TaskSampler([7000, 2000, 1000], mode, temperature, seed=3)
  np.testing.assert_allclose(s.probs, expected, rtol=1e-12)
  draws = s.tasks(0, 20000)
  freq = np.bincount(draws, minlength=3) / len(draws)
  np.testing.assert_allclose(freq, expected, atol=0.015)
  # a pure function of (seed, step): resuming at any step repeats the sequence
  np.testing.assert_array_equal(s.tasks(500, 600), draws[500:600])
  assert not np.array_equal(mixing.TaskSampler([7000, 2000, 1000], mode, temperature,
                                               seed=4).tasks(0, 200), draws[:200])


def test_mixing_errors():
  with pytest.raises(ConfigError, match='mixing mode'):
    mixing.task_probabilities([1, 2], 'sqrt')
  with pytest.raises(ConfigError, match='positive counts'):
    mixing.task_probabilities([3, 0], 'equal')
  for t in (0.0, float('nan'), float('inf')):     # NaN had drawn the first task only
    with pytest.raises(ConfigError, match='temperature must be a finite number > 0'):
      mixing.task_probabilities([3, 1], 'temperature', t)


def hand_built_vectors():
  words = ['good', 'great', 'bad', 'awful', 'movie', 'plot', 'the']
  v = np.array([[1, 0, 0], [0.9, 0.1, 0], [-1, 0, 0], [-0.9, 0, 0.1],
                [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]], np.float32)
  return words, v


def test_embedding_zero_shot_with_known_answer():
  words, v = hand_built_vectors()
  texts = ['The movie was GOOD', 'an awful plot', 'great great movie', 'bad', 'zzz qqq']
  pred, unknown = zero_shot.embedding_predict(texts, ['bad awful', 'good great'], words, v,
                                              fallback=1)
  np.testing.assert_array_equal(pred, [1, 0, 1, 0, 1])
  assert unknown == 1
  with pytest.raises(ConfigError, match='no word of'):
    zero_shot.embedding_predict(texts, ['bad', 'xyzzy'], words, v)
  assert zero_shot.parse_label_map('negative=a b;positive=c', ['negative', 'positive'],
                                   'x') == ['a b', 'c']
  with pytest.raises(ConfigError, match="missing \\['positive'\\]"):
    zero_shot.parse_label_map('negative=a', ['negative', 'positive'], 'zero_shot.descriptions')


def test_embedding_zero_shot_matches_cased_vector_files_case_blind():
  # cased files (GoogleNews, fastText, glove.840B, lowercase=False runs) hold words only
  # capitalised; texts and descriptions are lowercased by `tokenize`: matched as a graft
  # and the evaluation match them (the exact spelling first, else the first folded one)
  words, v = hand_built_vectors()
  cased = [w.capitalize() if i % 2 == 0 else w for i, w in enumerate(words)]
  texts = ['The movie was GOOD', 'an awful plot', 'great great movie', 'bad', 'zzz qqq']
  want = zero_shot.embedding_predict(texts, ['bad awful', 'good great'], words, v, fallback=1)
  got = zero_shot.embedding_predict(texts, ['bad awful', 'good great'], cased, v, fallback=1)
  np.testing.assert_array_equal(got[0], want[0])
  assert got[1] == want[1] == 1
  # the exact spelling wins over a case variant listed first
  both = ['Bad', 'bad', 'good']
  vb = np.array([[0, 1], [-1, 0], [1, 0]], np.float32)
  pred, _ = zero_shot.embedding_predict(['bad'], ['bad', 'good'], both, vb)
  np.testing.assert_array_equal(pred, [0])


def test_continuation_logprobs_match_a_full_forward_pass():
  from translearn_jax.models import transformer_lm
  cfg = transformer_lm.TransformerConfig(vocab_size=50, d_model=16, num_heads=2, num_layers=1,
                                         d_ff=32, max_len=16, dropout=0.0)
  model = transformer_lm.TransformerLM(cfg)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))['params']
  rng = np.random.default_rng(0)
  prefixes = [rng.integers(4, 50, n).tolist() for n in (1, 5, 14, 30)]  # 30: cut from the left
  conts = [rng.integers(4, 50, n).tolist() for n in (3, 1, 4, 2)]
  got = zero_shot.continuation_logprobs(model, params, prefixes, conts, max_len=16, batch=3)
  forward = jax.jit(lambda seq: jax.nn.log_softmax(model.apply({'params': params}, seq), -1))
  for p, c, g in zip(prefixes, conts, got):
    p = p[max(0, len(p) + len(c) - 16):]
    seq = jnp.asarray([p + c])
    logp = forward(seq[:, :-1])[0]
    want = sum(float(logp[len(p) - 1 + j, c[j]]) for j in range(len(c)))
    assert g == pytest.approx(want, abs=1e-4)
  with pytest.raises(ConfigError, match='does not fit'):
    zero_shot.continuation_logprobs(model, params, [[1]], [list(range(4, 20))], max_len=16)


def test_train_py_zero_shot_on_made_up_data(tmp_path):
  from configs import zero_shot_mr
  import train
  words, v = hand_built_vectors()
  save_word2vec(str(tmp_path / 'v.txt'), words, v)
  texts = ['good movie', 'great plot', 'the good', 'bad movie', 'awful plot', 'bad bad'] * 5
  rows = ['sentence\tlabel'] + [f'{t}\t{"pos" if i % 6 < 3 else "neg"}'
                                for i, t in enumerate(texts)]
  (tmp_path / 'd.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  c = zero_shot_mr.get_config()
  c.data.kind, c.data.path, c.eval_split = 'tsv', str(tmp_path / 'd.tsv'), 'all'
  c.init.kind, c.init.path = 'word2vec', str(tmp_path / 'v.txt')
  c.zero_shot.descriptions = 'neg=bad awful;pos=good great'
  out = train.run(c, str(tmp_path / 'run'))
  acc = {r['method']: r['accuracy'] for r in out['rows']}
  assert acc == {'majority class': 0.5, 'embedding similarity': 1.0}
  saved = json.loads((tmp_path / 'run' / 'zero_shot.json').read_text())
  assert saved['class_counts'] == [15, 15]
  # all 30 right: a Wilson interval over the examples, not '100 ± 0'
  emb = [r for r in saved['rows'] if r['method'] == 'embedding similarity'][0]
  assert emb['ci95_high'] == 1.0 and emb['ci95_low'] == pytest.approx(0.8865, abs=1e-4)
  # the majority class (the baseline, and the answer for a text without a known word) is
  # the training split's: the evaluated split's labels are only scored
  train_rows = ['sentence\tlabel'] + [f'bad film {i}\tneg' for i in range(8)] + [
      f'good film {i}\tpos' for i in range(2)]
  test_rows = ['sentence\tlabel'] + ['zzz qqq\tpos'] * 8 + ['zzz\tneg'] * 2
  for name, rows_ in (('tr', train_rows), ('te', test_rows)):
    (tmp_path / f'{name}.tsv').write_text('\n'.join(rows_) + '\n', encoding='utf-8')
  c.data.path, c.eval_split = str(tmp_path / 'tr.tsv'), 'test'
  c.data.dev_path = c.data.test_path = str(tmp_path / 'te.tsv')
  out = train.run(c, str(tmp_path / 'run_majority'))
  acc = {r['method']: r['accuracy'] for r in out['rows']}
  assert out['majority_class'] == 'neg' and acc == {'majority class': 0.2,
                                                    'embedding similarity': 0.2}
  c.zero_shot.descriptions = 'negative=bad;positive=good'
  with pytest.raises(ConfigError, match='labels of the data are'):
    train.run(c, str(tmp_path / 'run2'))


def dann_config(tmp_path):
  """Made-up source (long, topic A) and target (short, topic B) sentiment tasks, vectors."""
  from configs import dann_mr
  rng = np.random.default_rng(0)
  pos, neg, topic_a, topic_b = ['good', 'great'], ['bad', 'awful'], ['film', 'plot'], ['game', 'team']
  def texts(n, topic, long):
    out = []
    for i in range(n):
      words = list(rng.choice(topic, 6 if long else 2)) + list(rng.choice(pos if i % 2 else neg, 2))
      out.append((' '.join(words), 'pos' if i % 2 else 'neg'))
    return out
  src = texts(60, topic_a, True)
  tgt = texts(80, topic_b, False)
  (tmp_path / 's.tsv').write_text('text\tlabel\n' + ''.join(f'{t}\t{l}\n' for t, l in src))
  (tmp_path / 't.tsv').write_text('sentence\tlabel\n' + ''.join(
      f'{t}\t{"positive" if l == "pos" else "negative"}\n' for t, l in tgt))
  words = pos + neg + topic_a + topic_b
  save_word2vec(str(tmp_path / 'v.txt'), words, rng.normal(size=(len(words), 8)))
  c = dann_mr.get_config()
  c.source_data.kind, c.source_data.path = 'tsv', str(tmp_path / 's.tsv')
  c.data.kind, c.data.path = 'tsv', str(tmp_path / 't.tsv')
  c.init.path, c.model.dim, c.seeds = str(tmp_path / 'v.txt'), 8, 2
  c.train.steps, c.train.batch_size = 30, 8
  return c


def test_dann_runs_and_reversal_only_changes_the_features(tmp_path, monkeypatch):
  import train
  from translearn_jax.experiments import dann as da
  c = dann_config(tmp_path)
  out = train.run(c, str(tmp_path / 'run'))
  rows = {r['condition']: r for r in out['rows']}
  assert set(rows) == {'no adaptation', 'DANN'} and rows['DANN']['seeds'] == 2
  assert rows['DANN']['gain_mean'] == pytest.approx(
      np.mean(np.subtract(rows['DANN']['test'], rows['no adaptation']['test'])))
  assert 'gain_mean' not in rows['no adaptation']
  saved = json.loads((tmp_path / 'run' / 'dann.json').read_text())
  assert [(r['condition'], r['test']) for r in saved['rows']] == [
      (r['condition'], r['test']) for r in out['rows']]
  # a rerun of the finished workdir reads its runs back (none trains again); a changed
  # config is refused by name, not resumed from the old runs' checkpoints
  monkeypatch.setattr(da.Run, 'train', lambda *a, **k: pytest.fail('trained again'))
  again = train.run(c, str(tmp_path / 'run'))
  assert again['rows'] == out['rows']
  monkeypatch.undo()
  c.optim.learning_rate *= 2
  with pytest.raises(ConfigError, match=r'holds a run of another config; changed: '
                                        r'optim\.learning_rate'):
    train.run(c, str(tmp_path / 'run'))
  c.optim.learning_rate /= 2
  # the step with lambda = 0 gives the task parameters the gradient of the task loss alone
  setup = da.DannSetup(c)
  params, _ = setup.init(0)
  import optax
  tx = optax.sgd(1.0)
  toks, mask, lab = setup.src_inputs
  tt, tm, _ = setup.tgt_inputs['train']
  batch = ((toks[:8], mask[:8], lab[:8]), (tt[:8], tm[:8]), 5, jax.random.key(0))
  # jitted, as the training loop runs it (eagerly, every operation is a program of its own)
  p0, _, _ = jax.jit(da.make_step(setup, tx, 0.0, 30))(params, tx.init(params), *batch)
  p1, _, _ = jax.jit(da.make_step(setup, tx, 1.0, 30))(params, tx.init(params), *batch)
  np.testing.assert_array_equal(p0['task']['head']['kernel'], p1['task']['head']['kernel'])
  np.testing.assert_array_equal(p0['domain']['out']['kernel'], p1['domain']['out']['kernel'])
  assert not np.allclose(p0['task']['backbone']['embed']['embedding'],
                         p1['task']['backbone']['embed']['embedding'])
  c.dann.label_mapping = 'neg=negative'
  with pytest.raises(ConfigError, match='unmapped'):
    da.DannSetup(c)


def test_multitask_shared_backbone_heads_and_sampler(tmp_path, monkeypatch, tiny_lm_run,
                                                     conll_task):
  import train
  from configs import multitask as mt_config
  from translearn_jax.experiments import multitask
  lm_dir = tiny_lm_run
  rows = ['sentence\tlabel'] + [f'{"good fine nice" if i % 2 else "bad poor sad"} film {i}\t{i % 2}'
                                for i in range(200)]
  (tmp_path / 'mr.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  c = mt_config.get_config()
  c.init.path = lm_dir
  c.mr.data.kind, c.mr.data.path = 'tsv', str(tmp_path / 'mr.tsv')
  c.mr.model.max_tokens = 32
  c.ner.data.train_path, c.ner.data.dev_path, c.ner.data.test_path = conll_task
  c.ner.model.max_tokens = 48
  c.lm.data.kind, c.lm.data.path = 'text', 'gensim:lee_background.cor'
  c.train.steps, c.train.batch_size, c.lm.seq_len = 40, 8, 32
  c.train.log_every_steps = 10
  out = train.run(c, str(tmp_path / 'run'))
  assert sum(out['steps_per_task'].values()) == 40 and min(out['steps_per_task'].values()) > 0
  assert set(out['results']) == {'mr_test_accuracy', 'ner_test_f1', 'lm_valid_perplexity'}
  logged = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert len(logged) == 4 and all('lm_steps' in m for m in logged)
  assert any('ner_loss' in m for m in logged) and any('mr_loss' in m for m in logged)
  # a head whose task is never drawn is never moved; the shared backbone is
  mt = multitask.MultiTask(c)
  monkeypatch.setattr(multitask.TaskSampler, 'task_at', lambda self, s: 0)  # always 'mr'
  init = mt.init_params(0)
  params, draws = multitask.train(mt, 0, 5, str(tmp_path / 'mt'))
  assert draws == {'mr': 5, 'ner': 0, 'lm': 0}
  for a, b in zip(jax.tree.leaves(init['heads']['ner']), jax.tree.leaves(params['heads']['ner'])):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(jax.tree.leaves(init['backbone'])[0],
                            jax.tree.leaves(params['backbone'])[0])
  # the single-task baseline trains what the multi-task run trains when only that task is drawn
  alone, draws_alone = multitask.train(mt, 0, 5, str(tmp_path / 'alone'), only='mr')
  assert draws_alone == {'mr': 5} and set(alone['heads']) == {'mr'}
  for a, b in zip(jax.tree.leaves(alone['backbone']) + jax.tree.leaves(alone['heads']['mr']),
                  jax.tree.leaves(params['backbone']) + jax.tree.leaves(params['heads']['mr'])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  monkeypatch.undo()

  # multi-task vs single task over seeds: equal per-task steps, paired table, resumable
  c.multitask.tasks, c.train.steps, c.multitask.mixing = 'mr,lm', 6, 'equal'
  c.compare_single, c.seeds = True, 2
  out = train.run(c, str(tmp_path / 'cmp'))
  recs = [json.loads(l) for l in (tmp_path / 'cmp' / 'runs.jsonl').read_text().splitlines()]
  assert [(r['strategy'], r['seed']) for r in recs] == [
      ('multitask', 0), ('single_mr', 0), ('single_lm', 0),
      ('multitask', 1), ('single_mr', 1), ('single_lm', 1)]
  for seed in (0, 1):
    multi = recs[3 * seed]['steps_per_task']
    assert recs[3 * seed + 1]['steps_per_task'] == {'mr': multi['mr']}
    assert recs[3 * seed + 2]['steps_per_task'] == {'lm': multi['lm']}
  rows = {r['task']: r for r in out['rows']}
  assert set(rows) == {'mr', 'lm'} and len(rows['mr']['diff']) == 2
  assert rows['mr']['multitask'][1] == 100 * recs[3]['results']['mr_test_accuracy']
  np.testing.assert_allclose(rows['lm']['diff'][0], recs[0]['results']['lm_valid_perplexity']
                             - recs[2]['results']['lm_valid_perplexity'])
  # rerun in the same workdir: every run is read back, none retrained
  monkeypatch.setattr(multitask, 'train', lambda *a, **k: pytest.fail('retrained a recorded run'))
  again = train.run(c, str(tmp_path / 'cmp'))
  assert again['table'] == out['table']


def test_lm_zero_shot_scores_a_verbalisation_as_one_word_after_a_space(monkeypatch):
  """`encode_words` puts a word after one space (byte-level BPE: 'Ġword'); the shipped
  verbalisations begin with their own space, which made two there (an extra 'Ġ' piece: a
  review's GPT-2 scores were 5.6 nats off transformers'). Leading space is stripped first."""
  seen = {}

  class Tok:
    eos_id = 0

    def encode_batch(self, texts):
      return [[1] for _ in texts]

    def encode_words(self, words):
      seen['words'] = list(words)
      return [[2] for _ in words]
  monkeypatch.setattr(zero_shot, 'continuation_logprobs',
                      lambda model, params, prefixes, conts, max_len, batch: np.zeros(len(prefixes)))
  zero_shot.lm_scores(None, None, Tok(), ['a text'], [' It was bad.', 'It was good.'], 16)
  assert seen['words'] == ['It was bad.', 'It was good.']
