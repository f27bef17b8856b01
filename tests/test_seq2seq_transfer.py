"""Seq2seq models initialised from pretrained trees (issue #16): the default graft rules of an
LM into the decoder, and a seq2seq run grafted whole by the runner, which resumes exactly."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import s2s_config
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.models import encoder as encoder_lib
from translearn_jax.models import seq2seq as s2s
from translearn_jax.models import transformer_lm
from translearn_jax.pretraining import seq2seq
from translearn_jax.training.checkpoint import Checkpointer
from translearn_jax.transfer import graft as graft_lib
from translearn_jax.transfer.sources import Source


def test_lm_into_the_decoder_lands_the_right_leaves_and_creates_cross_attention():
  lm_cfg = transformer_lm.TransformerConfig(vocab_size=64, d_model=32, num_heads=4, num_layers=2,
                                            d_ff=64, max_len=16, positions='learned')
  lm = nn.unbox(transformer_lm.TransformerLM(lm_cfg).init(
      jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params'])
  cfg = s2s.Seq2SeqConfig(vocab_size=64, d_model=32, num_heads=4, d_ff=64, encoder_layers=1,
                          decoder_layers=2, max_len=16)
  fresh = nn.unbox(s2s.Seq2Seq(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                         jnp.zeros((1, 8), jnp.int32))['params'])
  out, report = graft_lib.graft(fresh, lm, graft_lib.parse_rules(graft_lib.seq2seq_rules('lm')))
  src, got, init = (graft_lib.flatten(t) for t in (lm, out, fresh))
  pairs = {'block_1/attn/query/kernel': 'decoder_block_1/self_attn/query/kernel',
           'block_0/attn/out/bias': 'decoder_block_0/self_attn/out/bias',
           'block_1/ln_attn/scale': 'decoder_block_1/ln_self/scale',
           'block_0/mlp/wi/kernel': 'decoder_block_0/mlp/wi/kernel',
           'block_1/ln_mlp/bias': 'decoder_block_1/ln_mlp/bias',
           'ln_final/scale': 'dec_ln/scale', 'embed/embedding': 'embed/embedding',
           'pos_embed': 'decoder_pos_embed'}
  for s, t in pairs.items():
    np.testing.assert_array_equal(got[t], src[s], err_msg=t)
  assert report.unused_source == [] and len(report.grafted) == len(src)
  created = set(report.created)
  assert {'decoder_block_0/cross_attn/query/kernel', 'decoder_block_1/ln_cross/scale',
          'encoder_block_0/self_attn/key/kernel', 'encoder_pos_embed'} <= created
  assert not any(p.startswith('decoder_block') and 'cross' not in p for p in created)
  for p in created:      # created leaves keep their initialisation
    np.testing.assert_array_equal(got[p], init[p], err_msg=p)


def test_rows_the_lm_never_saw_stay_fresh_and_are_reported(tmp_path):
  """An LM's piece_counts.npy: rows of pieces it never trained on (a German LM's English-only
  pieces in a joint vocabulary) keep the seq2seq model's fresh rows, seen rows are grafted;
  the report counts them; a source without counts is grafted whole."""
  from translearn_jax.transfer import piece_counts
  lm_cfg = transformer_lm.TransformerConfig(vocab_size=64, d_model=32, num_heads=4, num_layers=1,
                                            d_ff=64, max_len=16, positions='learned')
  lm = nn.unbox(transformer_lm.TransformerLM(lm_cfg).init(
      jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params'])
  cfg = s2s.Seq2SeqConfig(vocab_size=64, d_model=32, num_heads=4, d_ff=64, encoder_layers=1,
                          decoder_layers=1, max_len=16)
  fresh = nn.unbox(s2s.Seq2Seq(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                                         jnp.zeros((1, 8), jnp.int32))['params'])
  rows = np.random.default_rng(0).integers(0, 40, (50, 9))      # ids 40..63 never occur
  counts = piece_counts.count(rows, 64)
  assert counts.sum() == rows.size and (counts[40:] == 0).all()
  piece_counts.write(str(tmp_path), counts)
  np.testing.assert_array_equal(piece_counts.read(str(tmp_path), 64), counts)
  with pytest.raises(DataError, match=r'piece_counts\.npy: expected 65 integer counts'):
    piece_counts.read(str(tmp_path), 65)
  unseen = piece_counts.unseen_rows(counts)
  for path, want_fresh in ((str(tmp_path), unseen), (str(tmp_path / 'no_counts'), [])):
    src = Source('lm', path, lm, model_config=lm_cfg)
    out, report = graft_lib.graft(fresh, lm, graft_lib.parse_rules(graft_lib.seq2seq_rules('lm')))
    out = seq2seq.keep_unseen_rows_fresh(src, out, graft_lib.flatten(fresh), report)
    got = np.asarray(graft_lib.flatten(out)['embed/embedding'])
    lm_rows, init_rows = np.asarray(lm['embed']['embedding']), np.asarray(fresh['embed']['embedding'])
    seen = np.setdiff1d(np.arange(64), want_fresh)
    np.testing.assert_array_equal(got[seen], lm_rows[seen])
    np.testing.assert_array_equal(got[want_fresh], init_rows[want_fresh])
    assert report.unseen_rows == ({'embed/embedding': {
        'rows': len(unseen), 'vocab': 64, 'counts': os.path.join(path, 'piece_counts.npy')}}
        if len(want_fresh) else {})
    assert (f'embed/embedding: {len(unseen)}/64 rows of pieces the source never saw'
            in report.summary()) == bool(len(want_fresh))


def bert_like_source():
  """A post-LN masked-LM encoder with token types and more positions than the target."""
  cfg = encoder_lib.EncoderConfig(vocab_size=64, d_model=32, num_heads=4, num_layers=2, d_ff=64,
                                  max_len=40, type_vocab_size=2, dropout=0.0,
                                  attention_dropout=0.0)
  params = nn.unbox(jax.jit(encoder_lib.Encoder(cfg).init)(jax.random.key(3),
                                                           jnp.zeros((1, 8), jnp.int32))['params'])
  params = jax.tree.map(   # non-trivial LayerNorms and type rows, so a lost leaf shows
      lambda x: np.asarray(x) + 0.1 * np.random.default_rng(x.size).normal(size=x.shape), params)
  return Source('mlm', 'bert_run', params, model_config=cfg), cfg


def test_mlm_into_the_encoder_computes_what_the_mlm_encoder_computes():
  src, enc_cfg = bert_like_source()
  cfg = s2s.Seq2SeqConfig(vocab_size=64, d_model=32, num_heads=4, d_ff=64, encoder_layers=2,
                          decoder_layers=1, max_len=16, norm='post', embed_ln=True,
                          activation='gelu', layer_norm_eps=1e-12, dropout=0.0)
  seq2seq.check_architecture(src, cfg, 'bert_run')
  model = s2s.Seq2Seq(cfg)
  tokens = jnp.asarray(np.random.default_rng(0).integers(4, 64, (3, 12)), jnp.int32)
  tokens = tokens.at[1, 9:].set(0)   # padding
  fresh = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, tokens[:, :5])['params'])
  out, report = graft_lib.graft(fresh, seq2seq.source_leaves(src, 16),
                                graft_lib.parse_rules(graft_lib.seq2seq_rules('mlm')))
  # token type 0 folded into the positions, the table cut to the model's 16 rows
  np.testing.assert_allclose(out['encoder_pos_embed'], src.params['pos_embed'][:16]
                             + src.params['type_embed']['embedding'][0][None], rtol=1e-6)
  # jitted: one program each, not hundreds of eager operations
  ours, _ = jax.jit(lambda p: model.apply({'params': p}, tokens, method=s2s.Seq2Seq.encode))(out)
  theirs = jax.jit(lambda p: encoder_lib.Encoder(enc_cfg).apply(
      {'params': p}, tokens, token_types=jnp.zeros_like(tokens), return_hidden=True))(src.params)
  real = np.asarray(tokens != 0)
  np.testing.assert_allclose(np.asarray(ours)[real], np.asarray(theirs)[real], atol=2e-5)
  assert set(report.dropped) >= {'mlm/bias', 'type_embed/embedding'}
  assert report.unused_source == []
  assert all(p.startswith(('decoder', 'dec_')) for p in report.created), report.created
  # the same layers under another activation would be another function: refused, named
  with pytest.raises(ConfigError, match=r"activation='gelu'.*--config\.model\.activation=gelu"):
    seq2seq.check_architecture(src, cfg.replace(activation='gelu_tanh'), 'bert_run')
  with pytest.raises(ConfigError, match='init.rules.*decoder'):
    graft_lib.seq2seq_rules('mlm', 'decoder')


def tiny_config(d, **over):
  return s2s_config(d, **{'train.checkpoint_every_steps': 2, **over})


def final_params(workdir):
  ck = Checkpointer(str(workdir))
  try:
    return graft_lib.flatten(ck.restore_params())
  finally:
    ck.close()


def test_a_run_grafted_from_a_seq2seq_run_starts_from_it_and_resumes_exactly(tmp_path,
                                                                              monkeypatch):
  source = tmp_path / 'source'
  source.mkdir()
  seq2seq.train_and_evaluate(tiny_config(source), str(source / 'run'))
  src_params = final_params(source / 'run')
  grafted, real = [], seq2seq.init_from_source

  def spy(*a, **k):   # a host copy: the first train step donates the state's buffers
    state = real(*a, **k)
    grafted.append((int(state.step), graft_lib.flatten(jax.device_get(state.params))))
    return state
  monkeypatch.setattr(seq2seq, 'init_from_source', spy)
  init = {'init.path': str(source / 'run')}
  straight = tmp_path / 'straight'
  straight.mkdir()
  seq2seq.train_and_evaluate(tiny_config(straight, **init, **{'train.steps': 4}),
                             str(straight / 'run'))
  step0, start = grafted[0]
  assert start.keys() == src_params.keys()
  for k in src_params:
    np.testing.assert_array_equal(start[k], src_params[k], err_msg=k)
  assert step0 == 0
  report = json.load(open(straight / 'run' / 'graft_report.json'))
  assert len(report['grafted']) == len(src_params) and report['created'] == []
  assert os.path.isfile(straight / 'run' / 'tokenizer.model')   # the source's, kept
  # 2 steps, then resumed to 4: the graft is not applied again
  split = tmp_path / 'split'
  split.mkdir()
  seq2seq.train_and_evaluate(tiny_config(split, **init, **{'train.steps': 2}),
                             str(split / 'run'))
  seq2seq.train_and_evaluate(tiny_config(split, **init, **{'train.steps': 4}),
                             str(split / 'run'))
  assert len(grafted) == 2
  a, b = final_params(split / 'run'), final_params(straight / 'run')
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with pytest.raises(ConfigError, match='init.kind'):
    seq2seq.init_source(tiny_config(split, **{'init.kind': 'word2vec', **init}))
  with pytest.raises(ConfigError, match='tokenizer.path'):
    seq2seq.init_source(tiny_config(split, **{'tokenizer.path': 'x.model', **init}))


def test_low_resource_subsets_are_seeded_and_nested():
  a, b = seq2seq.subset(500, 50, 3), seq2seq.subset(500, 200, 3)
  assert len(a) == 50 and len(set(a)) == 50 and set(a) <= set(b)
  assert not np.array_equal(a, seq2seq.subset(500, 50, 4))
  with pytest.raises(ConfigError, match='max_train_pairs=501'):
    seq2seq.subset(500, 501, 0)


def test_back_translation_adds_the_reverse_models_outputs_and_reuses_them(tmp_path):
  from translearn_jax.serving import translate
  rev = tmp_path / 'rev'
  rev.mkdir()
  rc = tiny_config(rev, **{'train.steps': 2})
  rc.data.train_source, rc.data.train_target = rc.data.train_target, rc.data.train_source
  seq2seq.train_and_evaluate(rc, str(rev / 'run'))
  mono = tmp_path / 'mono.tgt'
  mono.write_text('river stone\n\nmarket\ncloud light\n')   # fit max_target_len=8
  fwd = tmp_path / 'fwd'
  fwd.mkdir()
  c = tiny_config(fwd, **{'train.steps': 2, 'data.max_train_pairs': 20,
                          'backtranslation.model': str(rev / 'run' / 'model'),
                          'backtranslation.path': str(mono), 'backtranslation.beam': 2})
  out = seq2seq.train_and_evaluate(c, str(fwd / 'run'))
  assert out['train_pairs'] == 20
  bt = fwd / 'run' / 'backtranslation'
  # what the reverse model translates, read back as the sources of the 3 real lines
  translate.translate_file(str(rev / 'run' / 'model'), str(bt / 'target.txt'),
                           str(tmp_path / 'direct.txt'), beam=2)
  assert (bt / 'source.txt').read_text() == (tmp_path / 'direct.txt').read_text()
  assert (bt / 'target.txt').read_text().splitlines() == [
      'river stone', 'market', 'cloud light']
  n_real = sum(1 for s in (bt / 'source.txt').read_text().splitlines() if s.strip())
  assert out['synthetic_pairs'] == n_real
  before = (bt / 'source.txt').stat().st_mtime_ns
  c.train.steps = 3          # resumed: the synthetic sources are reused, not regenerated
  seq2seq.train_and_evaluate(c, str(fwd / 'run'))
  assert (bt / 'source.txt').stat().st_mtime_ns == before


def test_strategies_freeze_the_lowest_groups_of_a_grafted_seq2seq_model(tmp_path):
  source = tmp_path / 'source'
  source.mkdir()
  seq2seq.train_and_evaluate(tiny_config(source), str(source / 'run'))
  src = final_params(source / 'run')
  run = tmp_path / 'ft'
  run.mkdir()
  # groups top first: head, decoder_0, decoder_embed, encoder_0, embed -> the encoder
  # block (with its final LayerNorm) and the shared embedding stay as grafted
  c = tiny_config(run, **{'init.path': str(source / 'run'), 'train.steps': 3,
                          'transfer.strategy': 'discriminative', 'transfer.freeze_bottom': 2})
  seq2seq.train_and_evaluate(c, str(run / 'run'))
  got = final_params(run / 'run')
  frozen = [k for k in got if k.startswith(('encoder_block_0/', 'enc_ln/', 'embed/'))
            or k == 'encoder_pos_embed']
  assert len(frozen) > 5
  for k in got:
    same = np.array_equal(got[k], src[k])
    assert same == (k in frozen), k
  with pytest.raises(ConfigError, match='freeze_bottom=5'):
    seq2seq.train_and_evaluate(tiny_config(tmp_path, **{'init.path': str(source / 'run'),
                                                         'transfer.freeze_bottom': 5}),
                               str(tmp_path / 'bad'))
