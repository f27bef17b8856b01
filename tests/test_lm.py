"""Language models: causality, KV cache, packing, tokenizer, training, resume, errors."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import StopAfter, lm_config

from translearn_jax.data import readers
from translearn_jax.data.lm_data import LMState, LMStream, pack, split_documents, unpack
from translearn_jax.data.tokenizer import EOS, PAD, Tokenizer, encode_documents
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.generation import sampling
from translearn_jax.generation.sample import sample
from translearn_jax.models import lm as lm_models
from translearn_jax.models import lstm_lm, transformer_lm
from translearn_jax.pretraining import lm
from translearn_jax.training import mesh as mesh_lib
from translearn_jax.training import optimizers
from translearn_jax.training.state import init_params

LEE = readers.TextSpec(kind='text', path='gensim:lee_background.cor')


@pytest.fixture(scope='module')
def lee_tokenizer():
  return Tokenizer.train(readers.read_documents(LEE), vocab_size=500)


def small_tf(**kw):
  base = dict(vocab_size=50, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=32,
              dropout=0.0)
  base.update(kw)
  return transformer_lm.TransformerConfig(**base)


def small_lstm(**kw):
  base = dict(vocab_size=50, embed_dim=16, hidden_dim=24, num_layers=2)
  base.update(kw)
  return lstm_lm.LSTMConfig(**base)


def init(model, t=12):   # one jitted program per model and shape, not one per operation
  return init_params(model, jax.random.key(0), jnp.zeros((2, t), jnp.int32))


@pytest.mark.parametrize('make', [
    lambda: transformer_lm.TransformerLM(small_tf()),
    lambda: transformer_lm.TransformerLM(small_tf(positions='learned', tie_embeddings=False)),
    lambda: lstm_lm.LSTMLM(small_lstm())])
def test_causality_future_tokens_never_change_past_logits(make):
  model = make()
  params = init(model)
  rng = np.random.default_rng(0)
  toks = rng.integers(0, 50, (2, 12)).astype(np.int32)
  forward = jax.jit(lambda t: lm_models.logits(model, params, t))
  base = forward(jnp.asarray(toks))
  for j in (3, 7, 11):
    changed = toks.copy()
    changed[:, j] = (changed[:, j] + 1) % 50
    out = forward(jnp.asarray(changed))
    np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-5)
    assert not np.allclose(out[:, j], base[:, j], atol=1e-5)


@pytest.mark.parametrize('positions', ['rotary', 'learned'])
@pytest.mark.parametrize('temperature,top_k,top_p', [(0.0, 0, 1.0), (1.0, 5, 0.9)])
def test_kv_cache_generation_equals_uncached(positions, temperature, top_k, top_p):
  cfg = small_tf(positions=positions)
  params = init(transformer_lm.TransformerLM(cfg))
  prompts = jnp.asarray([[EOS, 5, 6, 7], [EOS, 9, 0, 0]], jnp.int32)
  lengths = jnp.asarray([4, 2], jnp.int32)
  outs = []
  for cached in (True, False):
    model = transformer_lm.TransformerLM(cfg.replace(decode=cached))
    step, init_state = sampling.transformer_step(model, cached)
    outs.append(np.asarray(sampling.generate(
        step, init_state(params, 2, 20), prompts, lengths, jax.random.key(3), total_len=20,
        temperature=temperature, top_k=top_k, top_p=top_p, eos_id=-1)))
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_array_equal(outs[0][0, :4], [EOS, 5, 6, 7])
  assert outs[0][1, 1] == 9


def test_lstm_generation_matches_teacher_forced_greedy():
  cfg = small_lstm()
  model = lstm_lm.LSTMLM(cfg)
  params = init(model)
  step, init_state = sampling.lstm_step(model)
  out = np.asarray(sampling.generate(step, init_state(params, 1, 10),
                                     jnp.asarray([[EOS, 4]], jnp.int32), jnp.asarray([2]),
                                     jax.random.key(0), total_len=10, temperature=0.0,
                                     eos_id=-1))
  logits = jax.jit(lambda t: lm_models.logits(model, params, t))(jnp.asarray(out))
  np.testing.assert_array_equal(np.argmax(logits[0, 1:-1], -1), out[0, 2:])


def test_layer_norms_use_two_pass_variance():
  """Every model family's LayerNorm computes mean((x - mean)²) as PyTorch does: with a
  common offset of 1e4 (float32 ulp 1e-3; x² near 1e8, ulp 8) the one-pass E[x²] - E[x]²
  loses the unit variance entirely, and an imported checkpoint would drift from its
  reference."""
  from translearn_jax.models import encoder, layers, seq2seq as s2s
  u = np.random.default_rng(0).standard_normal((4, 64))
  x = jnp.asarray(1e4 + u, jnp.float32)
  want = (u - u.mean(-1, keepdims=True)) / np.sqrt(u.var(-1, keepdims=True) + 1e-5)
  made = [layers.layer_norm(None, 1e-5),
          transformer_lm.layer_norm(transformer_lm.TransformerConfig(vocab_size=8), 'ln'),
          encoder.layer_norm(encoder.EncoderConfig(vocab_size=8), 'ln'),
          s2s._layer_norm(s2s.Seq2SeqConfig(vocab_size=8))]
  for ln in made:
    ln = ln.clone(epsilon=1e-5)
    y = ln.apply(ln.init(jax.random.PRNGKey(0), x), x)
    np.testing.assert_allclose(np.asarray(y), want, atol=2e-2)
  fast = nn.LayerNorm(epsilon=1e-5)          # what the test guards against
  assert np.abs(np.asarray(fast.apply(fast.init(jax.random.PRNGKey(0), x), x)) - want).max() > 0.5


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  k2 = sampling.filter_logits(logits, 1.0, 2, 1.0)
  assert np.isfinite(np.asarray(k2)).tolist() == [[True, True, False, False]]
  p = sampling.filter_logits(logits, 1.0, 0, 0.75)   # 0.5 + 0.3 reaches 0.75
  assert np.isfinite(np.asarray(p)).tolist() == [[True, True, False, False]]
  p1 = sampling.filter_logits(logits, 1.0, 0, 0.4)   # the top token alone
  assert np.isfinite(np.asarray(p1)).tolist() == [[True, False, False, False]]


def test_filter_logits_equals_transformers_warpers_with_ties():
  """Temperature, top-k and top-p as transformers' warpers (TopPLogitsWarper sorts ascending
  and drops tokens of cumulative probability <= 1 - top_p): of tokens tied at the nucleus
  boundary it keeps the later ones only, where keeping every tied token kept more."""
  from conftest import LazyModule
  torch, lp = LazyModule('torch'), LazyModule('transformers.generation.logits_process')
  crafted = [[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 2.0],
             np.log([0.4, 0.2, 0.2, 0.2]).tolist(), np.log([0.25] * 4).tolist()]
  tied = np.random.default_rng(0).integers(-3, 3, (64, 9)).astype(np.float32).tolist()
  for temperature, top_k, top_p in [(1.0, 0, 0.5), (1.0, 0, 0.7), (1.0, 0, 0.75),
                                    (0.7, 3, 0.6), (1.3, 20, 0.9), (1.0, 2, 0.3)]:
    warpers = [lp.TemperatureLogitsWarper(temperature)] + (
        [lp.TopKLogitsWarper(top_k)] if top_k else []) + [lp.TopPLogitsWarper(top_p)]
    for rows in ([crafted[0]], crafted[1:3], crafted[3:], tied):
      want = torch.tensor(rows, dtype=torch.float32)
      for w in warpers:
        want = w(None, want)
      got = sampling.filter_logits(jnp.asarray(rows, jnp.float32), temperature, top_k, top_p)
      np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want.numpy()))
      # the same logits up to the row's shift by its largest (softmax is shift-invariant)
      got = got + np.max(rows, axis=-1, keepdims=True).astype(np.float32) / temperature
      np.testing.assert_allclose(np.where(np.isfinite(got), got, 0),
                                 np.where(np.isfinite(want.numpy()), want.numpy(), 0),
                                 rtol=1e-6, atol=1e-6)


def test_sampling_settings_refuse_nan_and_infinite_temperature():
  """A NaN or infinite temperature made every logit NaN (banned tokens: -inf / inf), and
  sampling then wrote padding: a silent empty continuation."""
  for t in (float('nan'), float('inf'), -1.0):
    with pytest.raises(ConfigError, match='temperature must be a finite number >= 0'):
      sampling.check_sampling(t, 0, 1.0)
  sampling.check_sampling(0.0, 0, 1.0)
  sampling.check_sampling(1e3, 0, 1.0)


def test_a_tiny_temperature_draws_the_most_likely_token():
  """Logits divided by 1e-39 were all +inf where positive, and the draw took the lowest such
  id (a review: '.' repeated); the most likely token's logit is subtracted first."""
  logits = jnp.asarray([[1.0, 3.0, 2.0, -1.0]])
  for t in (1e-39, 1e-30, 1e-6):
    out = sampling.filter_logits(logits, t, 0, 1.0)
    assert int(jnp.argmax(out)) == 1 and float(out[0, 1]) == 0.0
    draws = jax.random.categorical(jax.random.key(0), out, shape=(64, 1))
    assert (np.asarray(draws) == 1).all()
  np.testing.assert_allclose(sampling.filter_logits(logits, 0.5, 0, 1.0),
                             (logits - 3.0) / 0.5)          # a shift: the same softmax


def test_a_prompt_that_is_not_utf8_is_one_error_naming_the_byte(tiny_lm_run):
  """argv bytes that are not UTF-8 reach Python as surrogate escapes, which sentencepiece
  raised on (a traceback, exit 1)."""
  from translearn_jax.errors import DataError
  from translearn_jax.generation.sample import encode_prompts, load_run
  _, tok, _, _ = load_run(tiny_lm_run)
  bad = b'caf\xe9'.decode('utf-8', 'surrogateescape')
  with pytest.raises(DataError, match=r'prompt 2: byte 0xe9 at character 3 is not UTF-8'):
    encode_prompts(tok, ['fine', bad])


def test_top_k_at_or_beyond_the_vocabulary_keeps_every_token():
  """transformers' TopKLogitsWarper clamps top_k to the vocabulary; jax.lax.top_k raised."""
  logits = jnp.asarray([[0.5, -1.0, 2.0, 0.0, 1.0]])
  for k in (5, 6, 40):
    out = sampling.filter_logits(logits, 0.7, k, 0.9)
    np.testing.assert_allclose(out, sampling.filter_logits(logits, 0.7, 0, 0.9))
  step = lambda state, buf, t: (jnp.broadcast_to(logits, (buf.shape[0], 5)), state)
  out = sampling.generate(step, {}, jnp.full((2, 1), EOS, jnp.int32), jnp.ones(2, jnp.int32),
                          jax.random.key(0), total_len=4, top_k=1000, eos_id=99)
  assert out.shape == (2, 4)


def test_pack_roundtrip_and_targets_shift():
  stream = np.arange(103, dtype=np.int32)
  rows = pack(stream, 10)
  assert rows.shape == (10, 11)
  np.testing.assert_array_equal(rows[:, 1:][:-1, -1], rows[1:, 0])  # overlap by one
  np.testing.assert_array_equal(unpack(rows), stream[:101])
  with pytest.raises(DataError, match='fewer than one sequence'):
    pack(np.arange(5, dtype=np.int32), 10)


def test_stream_resume_and_shuffle():
  rows = pack(np.arange(2001, dtype=np.int32), 10)
  s = LMStream(rows, batch=4, accum=2, epochs=2, seed=1)
  full = list(s.iterate(LMState()))
  assert len(full) == s.total_steps == 2 * (200 // 8)
  resumed = list(LMStream(rows, 4, 2, 2, 1).iterate(full[9][0]))
  for (a, x), (b, y) in zip(full[10:], resumed):
    assert a == b
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
  first = np.concatenate([b['tokens'].reshape(-1, 11)[:, 0] for st, b in full if st.epoch == 0])
  assert len(set(first.tolist())) == len(first)  # no row twice in an epoch
  assert not np.array_equal(first, np.sort(first))  # shuffled


def test_split_documents_holds_out_whole_documents():
  docs = [f'doc {i}' for i in range(40)]
  train, valid = split_documents(docs, 0.1, seed=0)
  assert len(valid) == 4 and not set(train) & set(valid) and len(train) + len(valid) == 40
  assert split_documents(docs, 0.1, seed=0) == (train, valid)


@pytest.mark.parametrize('model_type', ['unigram', 'bpe'])
def test_tokenizer_roundtrip_non_ascii(tmp_path, model_type):
  text = ['Ça va très bien, naïve façade — Größe über alles.',
          'Москва и Санкт-Петербург; 東京と大阪; emoji 🙂 ok.',
          'plain ascii words repeated plain ascii words'] * 20
  tok = Tokenizer.train(text, vocab_size=400, model_type=model_type)
  path = str(tmp_path / 'tok.model')
  tok.save(path)
  tok2 = Tokenizer.load(path)
  for s in text[:3] + ['unseen: ΩΨ ŋ ⱥ 🦀']:
    assert tok2.decode(tok2.encode(s)) == s
  assert tok2.decode(tok2.encode('ǅ 𝔘')) == 'Dž U'  # NFKC folding, by design
  exact = Tokenizer.train(text, vocab_size=400, model_type=model_type,
                          normalization='identity')
  assert exact.decode(exact.encode('ǅ 𝔘')) == 'ǅ 𝔘'
  assert tok2.encode_batch(text[:3]) == [tok.encode(t) for t in text[:3]]
  flat = encode_documents(tok2, text[:2])
  assert (flat == EOS).sum() == 2 and flat[-1] == EOS


def test_tokenizer_bad_paths(tmp_path):
  with pytest.raises(DataError, match='tokenizer model not found: /no/such.model'):
    Tokenizer.load('/no/such.model')
  bad = tmp_path / 'bad.model'
  bad.write_bytes(b'not a model')
  with pytest.raises(DataError, match='not a sentencepiece model'):
    Tokenizer.load(str(bad))


def test_uniform_model_perplexity_is_vocab_size():
  cfg = small_tf(vocab_size=37)
  model = transformer_lm.TransformerLM(cfg)
  params = jax.tree.map(jnp.zeros_like, init(model))  # zero logits: uniform
  mesh = mesh_lib.make_mesh(1)
  rows = pack(np.random.default_rng(0).integers(0, 37, 500).astype(np.int32), 16)
  r = lm.evaluate_rows(lm.make_eval_fn(model, mesh), params, rows, 4, mesh)
  assert r['perplexity'] == pytest.approx(37.0, rel=1e-5)
  assert r['tokens'] == len(rows) * 16


@pytest.mark.parametrize('arch', ['transformer', 'lstm'])
def test_loss_decreases_on_real_text(tmp_path, arch):
  if arch == 'lstm':
    from configs import lm_lstm
    c = lm_lstm.get_config()
    base = lm_config()
    c.data, c.tokenizer = base.data, base.tokenizer
    c.model.embed_dim, c.model.hidden_dim, c.model.num_layers = 32, 48, 1
    c.train.seq_length, c.train.batch_size, c.train.epochs, c.num_devices, c.progress = 32, 8, 1, 1, False
    c.train.log_every_steps, c.train.eval_every_steps = 10, 1000
    c.train.steps = 150
  else:
    c = lm_config(**{'train.steps': 150})
  # 150 of the epoch's 853 steps: the loss falls by ~1.5 nats (to the unigram
  # level), held-out perplexity ~80
  summary = lm.train_and_evaluate(c, str(tmp_path))
  losses = [json.loads(l)['loss'] for l in open(tmp_path / 'metrics.jsonl')]
  assert losses[-1] < losses[0] - 1.0, losses
  assert summary['valid']['perplexity'] < 400  # < vocab size: better than uniform
  assert os.path.exists(tmp_path / 'tokenizer.model')


def test_grad_accumulation_equals_large_batch():
  cfg = small_tf()
  model = transformer_lm.TransformerLM(cfg)
  c = lm_config()
  mesh = mesh_lib.make_mesh(1)
  abstract = jax.eval_shape(lambda: init(model))
  tx, sched = optimizers.adamw(c, 10, abstract)
  toks = np.random.default_rng(0).integers(0, 50, (4, 13)).astype(np.int32)
  outs = []
  for shape in ((1, 4, 13), (2, 2, 13)):
    state = lm.init_state(model, tx, 0, 12, mesh)
    fn = lm.make_train_fn(model, tx, sched, mesh)
    state, m = fn(state, mesh_lib.shard_batch({'tokens': toks.reshape(shape)}, mesh, 1))
    outs.append((jax.device_get(state.params), float(m['loss_sum'])))
  assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               outs[0][0], outs[1][0])


def test_sharded_step_matches_single_device():
  cfg = small_tf()
  model = transformer_lm.TransformerLM(cfg)
  c = lm_config()
  abstract = jax.eval_shape(lambda: init(model))
  tx, sched = optimizers.adamw(c, 10, abstract)
  toks = np.random.default_rng(1).integers(0, 50, (3, 1, 8, 13)).astype(np.int32)
  results = []
  for n in (1, 8):
    mesh = mesh_lib.make_mesh(n)
    state = lm.init_state(model, tx, 0, 12, mesh)
    fn = lm.make_train_fn(model, tx, sched, mesh)
    for b in toks:
      state, m = fn(state, mesh_lib.shard_batch({'tokens': b}, mesh, 1))
    results.append((jax.device_get(state.params), float(m['loss_sum'])))
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               results[0][0], results[1][0])


def test_resume_is_exact(tmp_path, monkeypatch):
  c = lm_config(**{'model.dropout': 0.1, 'train.steps': 24})
  full = lm.train_and_evaluate(c, str(tmp_path / 'full'))
  assert full['steps'] == 24
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(7))
  part = lm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert part['stopped_by_signal'] and part['steps'] == 8
  monkeypatch.undo()
  resumed = lm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert resumed['steps'] == full['steps']
  assert resumed['valid'] == full['valid']  # resumed at 8, through the checkpoint at 20
  assert resumed['train_sample'] == full['train_sample']


def greedy_reference(mcfg, params, prompt_ids, n, banned=()):
  """`n` greedy tokens after `prompt_ids` by full forward passes (PAD after EOS), never
  one of `banned`."""
  model, ids = lm_models.make(mcfg), list(prompt_ids)
  forward = jax.jit(lambda t: lm_models.logits(model, params, t))
  while len(ids) < len(prompt_ids) + n:
    if ids[-1] in (EOS, PAD) and len(ids) > len(prompt_ids):
      ids.append(PAD)
      continue
    buf = np.zeros((1, len(prompt_ids) + n), np.int32)  # causal: the padding is not seen
    buf[0, :len(ids)] = ids
    logits = np.array(forward(jnp.asarray(buf))[0, len(ids) - 1])
    logits[list(banned)] = -np.inf
    ids.append(int(np.argmax(logits)))
  return ids[len(prompt_ids):]


def test_generation_never_emits_pieces_that_are_not_text():
  """pad, unk, bos and mask are suppressed, and so are rows past the tokenizer's vocabulary
  (a padded model vocabulary), however likely the model makes them; eos still ends."""
  vocab, favour = 12, [0, 1, 2, 10, 11, 7, 3]       # most likely first
  scores = jnp.zeros(vocab).at[jnp.asarray(favour)].set(jnp.arange(len(favour), 0, -1) * 5.0)
  step = lambda state, buf, t: (jnp.broadcast_to(scores, (buf.shape[0], vocab)), state)
  prompts, lengths = jnp.asarray([[EOS, 4]], jnp.int32), jnp.asarray([2], jnp.int32)
  out = sampling.generate(step, None, prompts, lengths, jax.random.key(0), total_len=6,
                          temperature=0.0, eos_id=EOS, suppress=(0, 1, 2), vocab_limit=10)
  assert out[0].tolist() == [EOS, 4, 7, 7, 7, 7]
  raw = sampling.generate(step, None, prompts, lengths, jax.random.key(0), total_len=6,
                          temperature=0.0, eos_id=EOS)
  assert raw[0].tolist() == [EOS, 4, 0, 0, 0, 0]
  hot = sampling.generate(step, None, prompts, lengths, jax.random.key(0), total_len=40,
                          temperature=3.0, eos_id=3, suppress=(0, 1, 2), vocab_limit=10)
  assert not set(hot[0, 2:].tolist()) & {1, 2, 10, 11}   # 0 only as padding after eos


def test_runs_record_the_pieces_their_training_rows_hold(tiny_lm_run, tmp_path):
  """piece_counts.npy of an LM and a masked-LM run: the counts of their training rows (what
  a seq2seq graft reads to keep rows of never-seen pieces fresh)."""
  from conftest import lm_config, mlm_config
  from translearn_jax.pretraining import mlm
  from translearn_jax.transfer import piece_counts
  for run, family, make in ((tiny_lm_run, lm, lm_config), (str(tmp_path / 'mlm'), mlm, mlm_config)):
    if family is mlm:
      mlm.train_and_evaluate(mlm_config(**{'train.steps': 1}), run)
    os.makedirs(tmp_path / 'again', exist_ok=True)
    tok_path = os.path.join(run, 'tokenizer.model')
    tok, train_rows, _, _ = family.load_data(make(**{'tokenizer.path': tok_path}),
                                             str(tmp_path / 'again'))
    counts = piece_counts.read(run, tok.vocab_size)
    np.testing.assert_array_equal(counts, piece_counts.count(train_rows, tok.vocab_size))
    assert counts.sum() == train_rows.size and 0 < (counts == 0).sum() < tok.vocab_size
  # continued pretraining adds its rows to the source's counts; from a source without
  # counts (an import) nothing is written
  (tmp_path / 'domain.txt').write_text('the quick brown fox jumps over the lazy dog\n' * 50)
  more = {'init.path': tiny_lm_run, 'data.path': str(tmp_path / 'domain.txt'),
          'data.valid_fraction': 0.0, 'train.steps': 1}
  lm.train_and_evaluate(lm_config(**more), str(tmp_path / 'continued'))
  os.makedirs(tmp_path / 'again2')
  _, rows2, _, _ = lm.load_data(lm_config(**more), str(tmp_path / 'again2'))
  before = piece_counts.read(tiny_lm_run, 400)
  np.testing.assert_array_equal(piece_counts.read(str(tmp_path / 'continued'), 400),
                                before + piece_counts.count(rows2, 400))
  bare = tmp_path / 'bare'
  shutil.copytree(tiny_lm_run, bare)
  os.remove(bare / 'piece_counts.npy')
  lm.train_and_evaluate(lm_config(**{**more, 'init.path': str(bare)}), str(tmp_path / 'c2'))
  assert not (tmp_path / 'c2' / 'piece_counts.npy').exists()


def test_sample_from_run_and_prompt_errors(tiny_lm_run):
  from translearn_jax.generation.sample import load_run
  config, tok, mcfg, params = load_run(tiny_lm_run)
  prompts = ['The prime minister', 'é']
  texts, _ = sample(mcfg, params, tok, prompts, 10, temperature=0.0)
  # greedy = argmax of the full forward pass, token by token; every prompt gets 10 new
  # tokens, the shorter one of the batch too (as transformers' generate gives each row)
  ids = [[EOS] + tok.encode(p) for p in prompts]
  assert len(ids[0]) != len(ids[1])
  banned = [i for i in tok.special_ids() if i != EOS]
  want = [tok.decode(greedy_reference(mcfg, params, x, 10, banned)) for x in ids]
  assert texts == want and all(want)
  texts2, _ = sample(mcfg, params, tok, prompts, 10, temperature=0.0, cached=False)
  assert texts2 == texts
  # with the prompt: prompt and continuation decoded as one text (no space put between)
  whole, _ = sample(mcfg, params, tok, prompts, 10, temperature=0.0, with_prompt=True)
  assert whole == [tok.decode(x[1:] + greedy_reference(mcfg, params, x, 10, banned))
                   for x in ids]
  assert whole[0].startswith('The prime minister')
  with pytest.raises(ConfigError, match='longer than the model context'):
    sample(mcfg, params, tok, ['word ' * 100], 5)
  with pytest.raises(ConfigError, match='exceeds the model context'):
    sample(mcfg, params, tok, ['word'], 100)
  with pytest.raises(ConfigError, match='top_p'):
    sample(mcfg, params, tok, ['word'], 5, top_p=0.0)


def test_sample_refuses_no_new_tokens_and_no_prompts(tiny_lm_run):
  """max_new_tokens < 1 cut the prompts silently (a negative count shortened the buffer)
  and no prompts failed inside numpy; both are one-line errors."""
  from translearn_jax.generation.sample import load_run
  _, tok, mcfg, params = load_run(tiny_lm_run)
  for n in (0, -3):
    with pytest.raises(ConfigError, match='max_new_tokens must be >= 1'):
      sample(mcfg, params, tok, ['The prime minister'], n, with_prompt=True)
  with pytest.raises(ConfigError, match='no prompts'):
    sample(mcfg, params, tok, [], 5)


@pytest.mark.parametrize('overrides, message', [
    ({'train.seq_length': 1024}, 'config.train.seq_length: 1024 is larger than the model maximum '
                                 'model.max_len=512'),
    ({'tokenizer.path': '/no/tok.model'}, 'tokenizer model not found: /no/tok.model'),
])
def test_lm_bad_input_one_line(tmp_path, overrides, message):
  """Through the one entry point in-process: the one-line error train.py prints (its exit-2
  contract is test_cli's and test_reliability's), before anything is trained."""
  import train
  from conftest import set_fields
  from configs import lm_transformer
  from translearn_jax.errors import TranslearnError
  c = set_fields(lm_transformer.get_config(), {'num_devices': 1, 'data.kind': 'text',
                                               'data.path': 'gensim:lee_background.cor',
                                               **overrides})
  with pytest.raises(TranslearnError) as info:
    train.run(c, str(tmp_path / 'w'))
  assert message in str(info.value) and '\n' not in str(info.value)
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_continued_pretraining_from_another_lm_run(tmp_path, tiny_lm_run):
  """init_from: the source's tokenizer and parameters, fresh optimiser; architecture checked."""
  import optax
  from translearn_jax.generation.sample import load_run
  src = tiny_lm_run  # lm_config(**{'train.steps': 10})
  c = lm_config(**{'train.steps': 4, 'data.path': 'gensim:lee.cor', 'data.encoding': 'latin-1'})
  c.init.path = src
  model = lm_models.make(lm.model_config(c, 400, deterministic=False))
  mesh = mesh_lib.make_mesh(1)
  _, src_tok, _, src_params = load_run(src)
  fresh = lm.init_state(model, optax.sgd(0.1), 0, 8, mesh)
  state = lm.init_from_run(src, fresh, lm.model_config(c, src_tok.vocab_size), mesh)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(src_params)):
    np.testing.assert_array_equal(a, b)
  out = lm.train_and_evaluate(c, str(tmp_path / 'dst'))
  assert out['steps'] == 4
  dst_tok = load_run(str(tmp_path / 'dst'))[1]
  assert dst_tok.encode('The government said') == src_tok.encode('The government said')
  bad = lm_config(**{'model.d_model': 48})
  bad.init.path = src
  with pytest.raises(ConfigError, match='different architecture'):
    lm.train_and_evaluate(bad, str(tmp_path / 'bad'))


def test_a_new_lm_tokenizer_that_changes_the_text_warns(tmp_path):
  """nmt_nfkc turns Persian's zero-width non-joiner into a space (one word becomes two):
  the LM's tokenizer training says so and names the setting that keeps it."""
  from configs import lm_transformer
  from translearn_jax.pretraining import lm as lm_pre
  c = lm_transformer.get_config()
  c.tokenizer.vocab_size = 400
  docs = ['می\u200cخواهم به خانه بروم و کتاب بخوانم'] * 30 + ['ساده است'] * 30
  with pytest.warns(UserWarning, match=r'the training text: the tokenizer changes 30 of 60 '
                                       r'texts.*tokenizer\.normalization=identity'):
    lm_pre.get_tokenizer(c, docs, str(tmp_path))
  c.tokenizer.normalization = 'identity'
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    (tmp_path / 'id').mkdir()
    lm_pre.get_tokenizer(c, docs, str(tmp_path / 'id'))


def test_tokenizer_training_gives_one_model_whatever_the_machines_cores(monkeypatch):
  """sentencepiece's pieces depend on its trainer's thread count: a fixed count
  (`tokenizer.train_threads`), not the machine's cores, so one config trains the same
  tokenizer on a laptop and a server (the cores' count gave another model on the Multi30k
  English side with 1 thread than with 2)."""
  from translearn_jax.data import readers
  from translearn_jax.data.tokenizer import Tokenizer
  from translearn_jax.errors import DataError
  docs = list(readers.read_documents(LEE))
  protos = set()
  for cores in (1, 2, 8):
    monkeypatch.setattr(os, 'cpu_count', lambda cores=cores: cores)
    protos.add(Tokenizer.train(docs, vocab_size=600).proto)
  assert len(protos) == 1
  with pytest.raises(DataError, match='tokenizer.train_threads must be an integer >= 1'):
    Tokenizer.train(docs, vocab_size=600, threads=0)


def test_a_tokenizer_left_by_a_run_that_never_checkpointed_is_made_again(tmp_path, tiny_lm_run):
  """A run that stopped with an error after saving its tokenizer (before a checkpoint) left
  `tokenizer.model`; the next run in that workdir, with another config, must not train on it
  (a resume, whose config is checked, does reuse it)."""
  import shutil
  from translearn_jax.data.tokenizer import Tokenizer
  from translearn_jax.pretraining import lm
  shutil.copy(os.path.join(tiny_lm_run, 'tokenizer.model'), tmp_path / 'tokenizer.model')
  assert Tokenizer.load(str(tmp_path / 'tokenizer.model')).vocab_size == 400
  lm.train_and_evaluate(lm_config(**{'train.steps': 2, 'tokenizer.vocab_size': 360}),
                        str(tmp_path))
  assert Tokenizer.load(str(tmp_path / 'tokenizer.model')).vocab_size == 360
