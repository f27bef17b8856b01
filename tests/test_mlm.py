"""Masked-LM encoders: masking, packing, architecture, training, resume, transfer into tasks."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import StopAfter, mlm_config, set_fields
from translearn_jax.data import masking
from translearn_jax.data.mlm_data import Packer
from translearn_jax.data.tokenizer import BOS, EOS
from translearn_jax.errors import ConfigError
from translearn_jax.models import encoder as enc
from translearn_jax.models import lm as lm_models
from translearn_jax.pretraining import mlm


@pytest.fixture(scope='module')
def tiny_mlm_run(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tiny_mlm_run'))
  summary = mlm.train_and_evaluate(mlm_config(**{'train.steps': 12}), d)
  return d, summary


# -- masking -------------------------------------------------------------------

def test_masking_statistics_on_a_large_batch():
  """15% of eligible pieces chosen; 80/10/10 mask/random/keep; specials and padding never."""
  v, mask_id, special = 500, 4, [0, 1, 2, 3, 4]
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, v, (256, 128)).astype(np.int32)
  tokens[:, 0], tokens[:, 60], tokens[:, 61] = BOS, EOS, BOS      # specials inside rows
  segments = np.ones_like(tokens)
  segments[:, 100:] = 0                                            # padding
  tokens[:, 100:] = 0
  normal = jnp.asarray(np.arange(5, v, dtype=np.int32))
  sel = masking.select(jax.random.key(1), jnp.asarray(tokens),
                       jnp.asarray((segments > 0) & ~np.isin(tokens, special)), 0.15)
  sel = np.asarray(sel)
  eligible = (segments > 0) & ~np.isin(tokens, special)
  assert not sel[~eligible].any()
  frac = sel.sum() / eligible.sum()
  assert abs(frac - 0.15) < 0.005, frac                  # 25k eligible: sd ~0.0023
  out = np.asarray(masking.corrupt(jax.random.key(2), jnp.asarray(tokens), jnp.asarray(sel),
                                   mask_id, normal))
  assert (out[~sel] == tokens[~sel]).all()               # unchosen positions untouched
  chosen_out, chosen_in = out[sel], tokens[sel]
  masked = (chosen_out == mask_id).mean()
  kept = (chosen_out == chosen_in).mean()
  randomised = 1 - masked - kept
  assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1 - 1 / 495 * 0.1) < 0.01
  assert abs(randomised - 0.1) < 0.01
  assert not np.isin(chosen_out[chosen_out != mask_id], special).any()  # random: never special


def test_whole_word_masking_takes_every_piece_of_a_word():
  pieces = ['<pad>', '<unk>', '<s>', '</s>', '<mask>', '\u2581the', 'ing', '\u2581go', 's']
  starts = masking.word_start_table(pieces, [0, 1, 2, 3, 4])
  row = np.array([[2, 5, 7, 6, 8, 5, 7, 6, 3]] * 4000, np.int32)     # <s> the go-ing-s ... </s>
  eligible = ~np.isin(row, [0, 1, 2, 3, 4])
  sel = np.asarray(masking.select(jax.random.key(0), jnp.asarray(row), jnp.asarray(eligible),
                                  0.3, jnp.asarray(starts)))
  # the word "go ing s" at 2..4 and at 6..8 (minus the trailing </s>): all or nothing
  assert (sel[:, 2] == sel[:, 3]).all() and (sel[:, 3] == sel[:, 4]).all()
  assert (sel[:, 6] == sel[:, 7]).all()
  assert abs(sel[:, 2].mean() - 0.3) < 0.03 and not sel[:, 8].any()
  assert (sel[:, 1] != sel[:, 2]).any()                 # words are drawn independently


def test_whole_word_masking_on_scripts_without_spaces_masks_characters(tmp_path):
  """In Chinese, Japanese or Thai text a sentencepiece 'word' (from '▁' to '▁') is a whole
  sentence: each character of those scripts starts a word of its own, as Google's Chinese
  BERT masks; sentencepiece/Metaspace and byte-level (GPT-2) pieces alike."""
  from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers, trainers
  from translearn_jax.data.hf_tokenizer import HFTokenizer
  pieces = ['<pad>', '\u2581今天', '天气', '很', '\u2581ok', 'ay', 'ภาษา', 'カタ', '\u2581',
            '<0xE4>', '<0xB8>', '<0xC3>', '<0x41>']
  assert masking.word_start_table(pieces, [0]).tolist() == [True, True, True, True, True,
                                                            False, True, True, True,
                                                            True, False, False, False]
  # a rare ideograph spelled in byte-fallback pieces starts a word: its lead byte
  from translearn_jax.data.tokenizer import Tokenizer
  tok = Tokenizer.train(['今天天气很好', '我们去公园玩', '今天我们很好'] * 30, vocab_size=300)
  ids = tok.encode('今天\u9f98好')                      # 龘: not in the training text
  flags = tok.word_start_flags()[ids]
  byte_ids = [k for k, i in enumerate(ids) if tok.sp.is_byte(i)]
  assert len(byte_ids) == 3 and flags[byte_ids].tolist() == [True, False, False]
  # the same in a Llama-style tokenizer.json (Metaspace, BPE with byte_fallback)
  from tokenizers import decoders as hf_decoders
  vocab = {'<unk>': 0, '<pad>': 1, '\u2581': 2, '今': 3, '天': 4, '好': 5,
           '<0xE9>': 6, '<0xBE>': 7, '<0x98>': 8}
  fb = HFTok(models.BPE(vocab=vocab, merges=[], unk_token='<unk>', byte_fallback=True))
  fb.pre_tokenizer = pre_tokenizers.Metaspace()
  fb.decoder = hf_decoders.Sequence([hf_decoders.ByteFallback(), hf_decoders.Metaspace()])
  fb.save(str(tmp_path / 'fallback.json'))
  fb_tok = HFTokenizer.load(str(tmp_path / 'fallback.json'))
  ids = fb_tok.encode('今天\u9f98好')
  assert ids == [2, 3, 4, 6, 7, 8, 5]
  assert fb_tok.word_start_flags()[ids].tolist() == [True, True, True, True, False, False, True]
  bpe = HFTok(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(['今天天气很好 the weather is good', '我们去公园 we go to the park'] * 20,
                          trainers.BpeTrainer(vocab_size=300, special_tokens=['<pad>', '</s>'],
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  bpe.save(str(tmp_path / 'tokenizer.json'))
  tok = HFTokenizer.load(str(tmp_path / 'tokenizer.json'))
  flags = tok.word_start_flags()
  han = [i for i in tok.encode('今天天气很好') if '\u4e00' <= tok.decode([i])[:1] <= '\u9fff']
  assert han and flags[han].all()           # each piece opening a Han character
  weather = tok.encode(' weathering')
  assert flags[weather].tolist() == [True] + [False] * (len(weather) - 1)
  # ideographs it never saw are spelled in single byte pieces: each character's lead byte
  # opens a word (they had been one word with the text before them)
  from translearn_jax.data.hf_tokenizer import _byte_piece_raw
  rare = tok.encode(' \u9f98\u9f96')              # 龘龖: 3 bytes each
  raw = [_byte_piece_raw(tok.id_to_piece(i)).lstrip(b' ') for i in rare]
  assert b''.join(raw) == '\u9f98\u9f96'.encode()
  leads = [bool(r) and 0xE3 <= r[0] <= 0xE9 for r in raw]
  assert sum(leads) == 2 and flags[rare].tolist() == [lead or k == 0 for k, lead in
                                                      enumerate(leads)]


def test_selection_beyond_the_slots_is_neither_scored_nor_corrupted():
  """K smaller than the chosen count (BERT's max_predictions): the excess positions are
  left as they are, so every altered input position has a loss on it."""
  v = 300
  tokens = jnp.asarray(np.random.default_rng(0).integers(5, v, (64, 128)), jnp.int32)
  segments = jnp.ones_like(tokens)
  mask_batch = jax.jit(masking.mask_batch, static_argnames=('rate', 'mask_id', 'k'))
  inputs, pos, targets, w = mask_batch(
      jax.random.key(0), tokens, segments, rate=0.3, mask_id=4,
      is_special=jnp.asarray(masking.special_table(v, range(5))),
      normal_ids=jnp.arange(5, v, dtype=jnp.int32), k=20)
  inputs, pos, w = map(np.asarray, (inputs, pos, w))
  assert (w.sum(1) == 20).all()                       # ~38 chosen per row, 20 kept
  for r in range(64):
    changed = set(np.flatnonzero(inputs[r] != np.asarray(tokens)[r]))
    assert changed <= set(pos[r][w[r] > 0])
  assert (np.asarray(targets) == np.take_along_axis(np.asarray(tokens), pos, 1)).all()


def test_whole_words_are_never_split_by_the_prediction_cap():
  """Whole-word masking with BERT's max_predictions (20 of 128): when more pieces are chosen
  than fit, whole words are left out, never a part of one (BERT's create_pretraining_data
  skips a word that does not fit); with room for all, the choice is unchanged."""
  v, special = 300, [0, 1, 2, 3, 4]
  starts = np.zeros(v, bool)
  starts[5:150] = True                       # 150..299: continuation pieces ('##x')
  starts[special] = True
  rng = np.random.default_rng(0)
  tokens = np.where(rng.random((256, 128)) < 0.5, rng.integers(5, 150, (256, 128)),
                    rng.integers(150, v, (256, 128))).astype(np.int32)
  tokens[:, 0], tokens[:, -1] = BOS, EOS
  tokens, segments = jnp.asarray(tokens), jnp.ones(tokens.shape, jnp.int32)
  words = np.maximum.accumulate(np.where(starts[np.asarray(tokens)], np.arange(128), 0), axis=1)
  for k in (20, 128):
    masker = masking.Masker(v, special, 4, 0.15, k, starts)
    inputs, pos, _, w = map(np.asarray, jax.jit(masker)(jax.random.key(0), tokens, segments))
    scored = np.zeros(tokens.shape, bool)
    np.put_along_axis(scored, pos, w > 0, axis=1)
    assert (w.sum(1) <= k).all() and (w.sum(1) > 0).all()
    for r in range(len(scored)):
      ids = words[r][1:-1]
      for word in np.unique(ids):
        part = scored[r, 1:-1][ids == word]
        assert part.all() or not part.any(), (k, r, word)
    assert (inputs[~scored] == np.asarray(tokens)[~scored]).all()
  # k=128 never binds: the whole-word selection itself, every chosen position scored
  select = jax.jit(masking.select, static_argnames='rate')
  sel = np.asarray(select(jax.random.split(jax.random.key(0), 3)[0], tokens,
                          (segments > 0) & ~jnp.isin(tokens, jnp.asarray(special)),
                          0.15, jnp.asarray(starts)))
  assert (scored == sel).all()


def test_masker_of_a_real_tokenizer_never_picks_specials(tiny_mlm_run):
  from translearn_jax.transfer import sources
  tok = sources.load('mlm', tiny_mlm_run[0]).tokenizer
  masker = masking.Masker.for_tokenizer(tok, 32, rate=0.5, whole_word=True)
  ids = tok.encode_batch(['the minister said on Tuesday that talks would resume'] * 16)
  row = [BOS] + ids[0][:30] + [EOS]
  tokens = jnp.asarray([row] * 16, jnp.int32)
  inputs, pos, targets, w = jax.jit(masker)(jax.random.key(1), tokens, jnp.ones_like(tokens))
  picked = np.asarray(targets)[np.asarray(w) > 0]
  assert len(picked) and not np.isin(picked, tok.special_ids()).any()
  assert tok.mask_id in np.asarray(inputs)
  starts = tok.word_start_flags()
  # whole words: a chosen continuation piece always comes with its word's first piece
  sel = np.zeros(tokens.shape, bool)
  np.put_along_axis(sel, np.asarray(pos), np.asarray(w) > 0, axis=1)
  for r in range(16):
    for t in range(1, len(row)):
      if sel[r, t] and not starts[row[t]]:
        first = max(i for i in range(t + 1) if starts[row[i]])
        assert sel[r, first]


def test_prediction_slots_cover_every_chosen_position():
  rng = np.random.default_rng(3)
  sel = rng.random((64, 128)) < 0.15
  pos, w = masking.prediction_slots(jax.random.key(0), jnp.asarray(sel),
                                    masking.num_slots(128, 0.15))
  pos, w = np.asarray(pos), np.asarray(w)
  for r in range(64):
    assert set(pos[r][w[r] > 0]) == set(np.flatnonzero(sel[r]))
  assert masking.num_slots(128, 0.15) == 39


# -- packing and the encoder ------------------------------------------------------

def test_packer_keeps_every_piece_and_cuts_long_documents():
  docs = [list(range(10, 10 + n)) for n in (5, 30, 3, 70, 9)]
  p = Packer(width=24, min_piece=4)
  for d in docs:
    p.add(d)
  rows = p.rows()
  assert rows.shape[1:] == (3, 24)
  got = []  # segments in order; a document's parts follow one another
  for r in rows:
    for s in range(1, r[1].max() + 1):
      at = r[1] == s
      seg = r[0][at]
      assert seg[0] == BOS and seg[-1] == EOS and (r[2][at] == np.arange(at.sum())).all()
      got.extend(seg[1:-1].tolist())
  assert got == [t for d in docs for t in d]
  assert ((rows[:, 1] == 0) == (rows[:, 0] == 0)).all()   # padding exactly where segment 0


@pytest.mark.parametrize('norm,positions', [('post', 'learned'), ('pre', 'rotary')])
def test_attention_never_crosses_a_packing_boundary(norm, positions):
  cfg = enc.EncoderConfig(vocab_size=50, d_model=16, num_heads=2, num_layers=2, d_ff=32,
                          max_len=32, norm=norm, positions=positions, type_vocab_size=2)
  model = enc.Encoder(cfg)
  docs = [[7, 8, 9, 10], [11, 12, 13, 14, 15, 16], [17, 18]]
  p = Packer(width=24, min_piece=1)
  for d in docs:
    p.add(d)
  row = p.rows()
  assert len(row) == 1
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  apply = jax.jit(model.apply)     # a program a shape, not hundreds of eager operations
  packed = apply({'params': params}, jnp.asarray(row[:, 0]), segments=jnp.asarray(row[:, 1]),
                 positions=jnp.asarray(row[:, 2]))
  for s, d in enumerate(docs, 1):
    alone = apply({'params': params}, jnp.asarray([[BOS] + d + [EOS]]))
    np.testing.assert_allclose(packed[0][row[0, 1] == s], alone[0], rtol=1e-4, atol=1e-5)
  # and the segments do matter: without them the first document's logits change
  merged = apply({'params': params}, jnp.asarray(row[:, 0]))
  assert not np.allclose(merged[0][row[0, 1] == 1], packed[0][row[0, 1] == 1], atol=1e-3)


def test_padding_does_not_change_real_positions_and_predict_at_matches():
  cfg = enc.EncoderConfig(vocab_size=40, d_model=16, num_heads=2, num_layers=1, d_ff=32,
                          max_len=16)
  model = enc.Encoder(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params'])
  apply = jax.jit(model.apply)     # a program a shape, not hundreds of eager operations
  toks = jnp.asarray([[2, 9, 10, 11, 3, 0, 0, 0]])
  full = apply({'params': params}, toks)
  short = apply({'params': params}, toks[:, :5])
  np.testing.assert_allclose(full[:, :5], short, rtol=1e-5, atol=1e-5)
  at = apply({'params': params}, toks, predict_at=jnp.asarray([[3, 1]]))
  np.testing.assert_allclose(at[0], full[0, jnp.asarray([3, 1])], rtol=1e-5, atol=1e-5)
  assert set(params) == {'embed', 'pos_embed', 'embed_ln', 'block_0', 'mlm'}
  assert set(params['mlm']) == {'dense', 'ln', 'bias'}          # tied decoder: no 'decoder'


def test_bert_base_parameter_count():
  """configs/bert_base.py built abstractly: BERT-base with its MLM head (HF
  BertForMaskedLM, tied decoder, no pooler) has 109,514,298 parameters."""
  from configs import bert_base
  c = bert_base.get_config()
  mcfg = lm_models.config_from(c.model, c.tokenizer.vocab_size)
  shapes = jax.eval_shape(lambda: nn.unbox(lm_models.make(mcfg).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert n == 109_514_298
  assert shapes['pos_embed'].shape == (512, 768) and shapes['type_embed']['embedding'].shape == (2, 768)


def _np_bert(params, cfg, tokens, types, positions):
  """Hugging Face BertForMaskedLM / RobertaForMaskedLM's forward pass in NumPy (post-LN,
  two-pass LayerNorm, exact GELU, tied decoder + bias), from our parameter tree."""
  from scipy.special import erf
  p = jax.tree.map(np.asarray, params)
  gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))
  def ln(x, q):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * q['scale'] + q['bias']
  dense = lambda x, q: x @ q['kernel'] + q['bias']
  h = (p['embed']['embedding'][tokens] + p['pos_embed'][positions + cfg.position_offset]
       + p['type_embed']['embedding'][types])
  h = ln(h, p['embed_ln'])
  pad = tokens == cfg.pad_id
  n, dh = cfg.num_heads, cfg.d_model // cfg.num_heads
  for i in range(cfg.num_layers):
    q = p[f'block_{i}']
    heads = lambda x: x.reshape(x.shape[0], -1, n, dh).transpose(0, 2, 1, 3)
    qq, kk, vv = (heads(dense(h, q['attn'][k])) for k in ('query', 'key', 'value'))
    scores = qq @ kk.transpose(0, 1, 3, 2) / np.sqrt(dh)
    scores = np.where(pad[:, None, None, :], -1e9, scores)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ vv).transpose(0, 2, 1, 3).reshape(h.shape)
    h = ln(h + dense(ctx, q['attn']['out']), q['ln_attn'])
    h = ln(h + dense(gelu(dense(h, q['mlp']['wi'])), q['mlp']['wo']), q['ln_mlp'])
  t = ln(gelu(dense(h, p['mlm']['dense'])), p['mlm']['ln'])
  return t @ p['embed']['embedding'].T + p['mlm']['bias']


@pytest.mark.parametrize('flavour', ['bert', 'roberta'])
def test_encoder_computes_what_bert_and_roberta_compute(flavour):
  """BERT (pad 0, positions from 0, 2 token types, eps 1e-12) and RoBERTa (pad 1,
  positions from padding_idx + 1 = 2, one token type, eps 1e-5) against a NumPy
  reference of Hugging Face's forward pass, padding included."""
  kw = (dict(pad_id=0, position_offset=0, type_vocab_size=2, layer_norm_eps=1e-12)
        if flavour == 'bert' else dict(pad_id=1, position_offset=2, type_vocab_size=1,
                                       layer_norm_eps=1e-5))
  cfg = enc.EncoderConfig(vocab_size=60, d_model=16, num_heads=4, num_layers=2, d_ff=32,
                          max_len=12, **kw)
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 60, (3, 10))
  tokens[1, 7:] = cfg.pad_id                            # a padded row
  types = (np.arange(10) >= 5).astype(np.int32)[None].repeat(3, 0) * (cfg.type_vocab_size > 1)
  positions = np.broadcast_to(np.arange(10), (3, 10))   # RoBERTa: cumsum of non-pad (= arange)
  model = enc.Encoder(cfg)
  params = nn.unbox(model.init(jax.random.key(1), jnp.asarray(tokens))['params'])
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape),
                        params)                         # LayerNorm scales/biases off 1/0
  ours = np.asarray(model.apply({'params': params}, jnp.asarray(tokens),
                                token_types=jnp.asarray(types)))
  ref = _np_bert(params, cfg, tokens, types, positions)
  real = tokens != cfg.pad_id
  np.testing.assert_allclose(ours[real], ref[real], rtol=2e-4, atol=2e-4)


def test_activation_and_eps_are_what_the_config_says():
  x = jnp.linspace(-3, 3, 7)
  np.testing.assert_allclose(
      enc.layers.ACTIVATIONS['gelu'](x), 0.5 * x * (1 + jax.scipy.special.erf(x / np.sqrt(2))),
      rtol=1e-5, atol=1e-7)
  assert not np.allclose(enc.layers.ACTIVATIONS['gelu'](x), enc.layers.ACTIVATIONS['gelu_tanh'](x),
                         atol=1e-5)
  with pytest.raises(ValueError, match='model.norm must be one of'):
    enc.EncoderConfig(vocab_size=10, norm='sandwich')
  # the LayerNorm epsilon reaches the LayerNorms: same params, other eps, other states
  cfg = enc.EncoderConfig(vocab_size=30, d_model=8, num_heads=2, num_layers=1, d_ff=16,
                          max_len=8, layer_norm_eps=1e-12)
  toks = jnp.asarray([[2, 7, 8, 3]])
  params = nn.unbox(jax.jit(enc.Encoder(cfg).init)(jax.random.key(0), toks)['params'])
  hidden = jax.jit(lambda c, p: enc.Encoder(c).apply({'params': p}, toks, return_hidden=True),
                   static_argnums=0)
  a = hidden(cfg, params)
  b = hidden(cfg.replace(layer_norm_eps=0.5), params)
  assert not np.allclose(a, b, atol=1e-3)


# -- training -----------------------------------------------------------------------

def test_tiny_encoder_overfits_a_handful_of_sentences(tmp_path):
  text = tmp_path / 'few.txt'
  text.write_text('\n'.join(['the cat sat on the mat by the door',
                             'a dog ran in the park after the ball',
                             'she reads old books in the quiet library'] * 40) + '\n')
  c = mlm_config(**{'data.path': str(text), 'data.valid_path': str(text),
                    'data.valid_fraction': 0.0, 'tokenizer.vocab_size': 320,
                    'model.dropout': 0.0, 'model.attention_dropout': 0.0,
                    'model.d_model': 64, 'model.d_ff': 128, 'model.num_layers': 2,
                    'train.epochs': 400, 'train.steps': 200, 'train.batch_size': 4,
                    'optim.learning_rate': 6e-3, 'optim.warmup_steps': 20,
                    'mlm.mask_rate': 0.15})
  # accuracy / loss 0.92 / 0.42 after 150 steps, 0.98 / 0.13 after 200 (at learning rate
  # 3e-3: 0.81 / 0.86 after 150, 0.97 / 0.35 after 200, 1.00 / 0.05 after 300)
  s = mlm.train_and_evaluate(c, str(tmp_path / 'run'))
  assert s['valid']['accuracy'] > 0.9, s['valid']
  assert s['valid']['loss'] < 0.5


def test_run_reports_and_resume_is_exact(tmp_path, monkeypatch, tiny_mlm_run):
  _, first = tiny_mlm_run
  assert first['valid']['masked_tokens'] > 0 and first['tokens_seen'] == 12 * 8 * 32
  c = mlm_config(**{'model.dropout': 0.1, 'train.steps': 16, 'mlm.whole_word': True})
  full = mlm.train_and_evaluate(c, str(tmp_path / 'full'))
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(5))
  part = mlm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert part['stopped_by_signal'] and part['steps'] == 6
  monkeypatch.undo()
  resumed = mlm.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert resumed['steps'] == 16
  assert resumed['valid'] == full['valid'] and resumed['train_sample'] == full['train_sample']
  records = [json.loads(l) for l in open(tmp_path / 'full' / 'metrics.jsonl')]
  assert any('valid_accuracy' in r for r in records) and any('accuracy' in r for r in records)


def test_bad_mlm_config_is_one_error(tmp_path):
  with pytest.raises(ConfigError, match='config.mlm.mask_rate'):
    mlm.train_and_evaluate(mlm_config(**{'mlm.mask_rate': 1.5}), str(tmp_path / 'a'))
  with pytest.raises(ConfigError, match=r"model.arch: must be one of \('encoder',\) for a mlm run"):
    mlm.train_and_evaluate(mlm_config(**{'model.arch': 'transformer'}), str(tmp_path / 'b'))


# -- transfer -----------------------------------------------------------------------

def test_graft_into_classifier_and_tagger(tmp_path, tiny_mlm_run, topic_task, conll_task):
  from configs import transfer_conll_mlm, transfer_mr_mlm
  from translearn_jax.downstream.classification import ClassificationTask
  from translearn_jax.downstream.tagging import TaggingTask
  run, _ = tiny_mlm_run
  c = transfer_mr_mlm.get_config()
  set_fields(c, {'init.path': run, 'data.kind': 'tsv', 'data.path': topic_task,
                 'model.max_tokens': 48,
                 'transfer.groups': r'head=^head/,body=^backbone/'})
  task = ClassificationTask(c)
  toks, mask, _ = task.inputs['train']
  n = mask.sum(1)
  assert (toks[:, 0] == BOS).all() and (toks[np.arange(len(n)), n - 1] == EOS).all()
  params, report = task.init_params(0, 'finetune')
  assert sorted(report.created) == ['head/bias', 'head/kernel']
  assert report.dropped and all(p.startswith('mlm/') for p in report.dropped)
  assert not report.unused_source
  src = task.source.params
  np.testing.assert_array_equal(params['backbone']['embed']['embedding'],
                                src['embed']['embedding'])

  t = transfer_conll_mlm.get_config()
  set_fields(t, {'init.path': run, 'data.train_path': conll_task[0],
                 'data.dev_path': conll_task[1], 'data.test_path': conll_task[2],
                 'model.max_tokens': 48})
  tagger = TaggingTask(t)
  tparams, treport = tagger.init_params(0, 'finetune')
  assert sorted(treport.created) == ['head/bias', 'head/kernel'] and treport.dropped
  # bidirectional: a tag depends on the words after it
  toks, mask, pos, _ = tagger.inputs['test']
  apply = jax.jit(tagger.model.apply)
  out = apply({'params': tparams}, toks[:1], mask[:1])
  later = toks[:1].copy()
  last = int(pos[0][pos[0] >= 0].max())
  later[0, last] = (later[0, last] + 1) % 400 or 5
  out2 = apply({'params': tparams}, later, mask[:1])
  assert not np.allclose(out[0, pos[0][0]], out2[0, pos[0][0]])


def test_tagger_predicts_at_each_words_first_piece():
  from translearn_jax.data.conll import TaggedCorpus
  from translearn_jax.downstream.tagging import encode_tagged

  class Tok:
    unk_id, bos_id, eos_id, bare_space_id = 1, BOS, EOS, 9
    def encode_batch(self, words):          # 'unbelievable' -> 3 pieces; 'a' -> '▁' + 'a'
      table = {'unbelievable': [20, 21, 22], 'news': [30], 'from': [31], 'Reuters': [40, 41],
               'a': [9, 50]}
      return [table[w] for w in words]
    encode_words = encode_batch

  corpus = TaggedCorpus(path='x', sentences=[['unbelievable', 'news', 'from', 'a', 'Reuters']],
                        tags=[['O', 'O', 'O', 'O', 'B-ORG']])
  idx = {'O': 0, 'B-ORG': 1}
  toks, mask, pos, tags = encode_tagged(corpus, Tok(), idx, 16, causal=False)
  assert toks[0, :11].tolist() == [BOS, 20, 21, 22, 30, 31, 9, 50, 40, 41, EOS]
  # first pieces; for 'a' the piece after the lone '▁'
  assert pos[0].tolist() == [1, 4, 5, 7, 8] and tags[0].tolist() == [0, 0, 0, 0, 1]
  toks, _, pos, _ = encode_tagged(corpus, Tok(), idx, 16, causal=True)
  assert toks[0, :10].tolist() == [EOS, 20, 21, 22, 30, 31, 9, 50, 40, 41]
  assert pos[0].tolist() == [3, 4, 5, 7, 9]
  # truncation keeps <eos>; a word whose first piece is cut is -1
  toks, mask, pos, _ = encode_tagged(corpus, Tok(), idx, 7, causal=False)
  assert toks[0].tolist() == [BOS, 20, 21, 22, 30, 31, EOS] and pos[0].tolist() == [1, 4, 5, -1, -1]


def test_finetune_strategies_run_on_an_encoder(tmp_path, tiny_mlm_run, topic_task):
  """LoRA and a linear probe, unchanged, on an encoder backbone (one epoch on the topic
  task; strategies are group tables over parameter paths, which the encoder's share
  with the LM's)."""
  from configs import transfer_mr_mlm
  from translearn_jax.experiments import classification
  run, _ = tiny_mlm_run
  c = transfer_mr_mlm.get_config()
  set_fields(c, {'init.path': run, 'data.kind': 'tsv', 'data.path': topic_task,
                 'model.max_tokens': 48, 'model.lora_rank': 4, 'train.epochs': 1,
                 'compare_scratch': True, 'with_scratch': False, 'seeds': 1,
                 'transfer.strategies': 'lora,linear_probe_logistic',
                 'transfer.factor': 0.5,
                 'transfer.groups': r'head=^head/,block_0=^backbone/block_0/,'
                                    r'embed=^backbone/(embed|pos_embed|embed_ln)',
                 'transfer.unfreeze_every': 5})
  out = classification.train_and_evaluate(c, str(tmp_path))
  got = {r['strategy'] for r in out['rows']}
  assert got == {'lora', 'linear_probe_logistic'}
  assert all(r['test_mean'] > 0.5 for r in out['rows']), out['rows']


def test_masked_lm_task_keeps_the_head_apart_and_learns(tiny_mlm_run):
  """The MLM objective as a Task (multi-task with an encoder): body and head split and
  rejoin to the source exactly; a few steps on its loss raise masked accuracy."""
  import ml_collections
  import optax
  from translearn_jax.downstream.masked_lm import MaskedLMTask
  from translearn_jax.transfer import sources
  run, _ = tiny_mlm_run
  src = sources.load('mlm', run)
  data = ml_collections.ConfigDict(dict(kind='text', path='gensim:lee_background.cor',
                                        field='text', unit='line', encoding='utf-8',
                                        encoding_fallback='', split='train', data_dir='',
                                        valid_fraction=0.1))
  task = MaskedLMTask(data, src, seq_len=32, eval_rows=64)
  params, _ = task.init_params(0, 'finetune')
  assert set(params['head']) == {'dense', 'ln', 'bias'} and 'mlm' not in params['backbone']
  jax.tree.map(np.testing.assert_array_equal, task.join(params), src.params)
  before = task.evaluate(params, 'valid')
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  step = jax.jit(lambda p, o, b, k: (lambda l, g: (optax.apply_updates(p, tx.update(g, o)[0]),
                                                    tx.update(g, o)[1], l))(
      *jax.value_and_grad(task.loss)(p, b, k)))
  for i in range(40):
    idx = np.arange(i * 8, i * 8 + 8) % task.num_examples('train')
    params, opt, loss = step(params, opt, task.batch(idx), jax.random.key(i))
    assert np.isfinite(float(loss))
  assert task.evaluate(params, 'valid') > before + 0.02
  with pytest.raises(ConfigError, match='needs a masked-LM encoder source'):
    MaskedLMTask(data, sources.Source('lm', model_config=src.model_config), 32)


def test_multitask_and_learning_curves_take_an_encoder(tmp_path, tiny_mlm_run):
  """configs/multitask_mlm.py (an MR head + the masked-LM task on one encoder) and the
  vmapped learning-curve runner, each on the tiny MLM run."""
  import train
  from configs import curves_mr_skipgram, multitask_mlm, transfer_mr_mlm
  run, _ = tiny_mlm_run
  rows = ['sentence\tlabel'] + [f'{"good fine nice" if i % 2 else "bad poor sad"} film {i}\t{i % 2}'
                                for i in range(200)]
  (tmp_path / 'mr.tsv').write_text('\n'.join(rows) + '\n', encoding='utf-8')
  c = multitask_mlm.get_config()
  set_fields(c, {'init.path': run, 'mr.data.kind': 'tsv', 'mr.data.path': str(tmp_path / 'mr.tsv'),
                 'mr.model.max_tokens': 32, 'lm.seq_len': 32, 'lm.eval_rows': 32,
                 'multitask.tasks': 'mr,lm', 'multitask.mixing': 'equal', 'train.steps': 12,
                 'train.batch_size': 8,
                 'train.log_every_steps': 6})
  c.lm.data.kind, c.lm.data.path = 'text', 'gensim:lee_background.cor'
  out = train.run(c, str(tmp_path / 'mt'))
  assert min(out['steps_per_task'].values()) > 0
  assert set(out['results']) == {'mr_test_accuracy', 'lm_valid_accuracy'}
  assert 0.0 < out['results']['lm_valid_accuracy'] < 1.0

  cv = curves_mr_skipgram.get_config()
  m = transfer_mr_mlm.get_config()
  cv.model, cv.init = m.model, m.init
  set_fields(cv, {'init.path': run, 'data.kind': 'tsv', 'data.path': str(tmp_path / 'mr.tsv'),
                  'model.max_tokens': 32, 'transfer.groups': r'head=^head/,body=^backbone/',
                  'seeds': 2, 'curve.budgets': '40', 'curve.strategies': 'finetune',
                  'curve.epochs': 1, 'curve.min_steps': 6, 'curve.time_sequential': False})
  res = train.run(cv, str(tmp_path / 'curves'))
  assert {(r['strategy'], r['budget']) for r in res['rows']} == {('scratch', 40), ('finetune', 40)}


def test_held_out_rows_scoring_nothing_give_no_number():
  """No masked piece (or, for the LM, no token) to score: NaN, not loss 0 / accuracy 0."""
  import math
  from translearn_jax.pretraining import lm as lm_pre
  from translearn_jax.pretraining import mlm as mlm_pre
  r = mlm_pre.evaluate_rows(None, None, np.zeros((0, 3, 8), np.int32), 4, None, 0)
  assert math.isnan(r['loss']) and math.isnan(r['accuracy']) and r['masked_tokens'] == 0
  r = lm_pre.evaluate_rows(None, None, np.zeros((0, 9), np.int32), 4, None)
  assert math.isnan(r['loss']) and math.isnan(r['perplexity']) and r['tokens'] == 0
