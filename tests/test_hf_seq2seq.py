"""Hugging Face BART, mBART and Marian import/export, checked against `transformers` (#15).

Tiny random `BartForConditionalGeneration`, `MBartForConditionalGeneration` and
`MarianMTModel`s are built with
`transformers` (weights N(0, 0.2), `final_logits_bias` included, so a wrong
transpose, offset, scale, norm placement or epsilon moves the logits by far
more than the tolerance) and saved with `save_pretrained`, with a byte-level BPE
tokenizer trained here on a made-up corpus.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import LazyModule  # noqa: E402

torch = LazyModule('torch')
tf = LazyModule('transformers')
from test_hf_convert import TEXTS, _cli_error, byte_bpe  # noqa: E402

from translearn_jax import convert, serving  # noqa: E402
from translearn_jax.convert import hf, hf_seq2seq, safetensors_io  # noqa: E402
from translearn_jax.data import tokenizer as sp_tokenizer  # noqa: E402
from translearn_jax.errors import ConfigError, DataError  # noqa: E402
from translearn_jax.generation import seq2seq_decode as dec  # noqa: E402
from translearn_jax.models import seq2seq as s2s  # noqa: E402
from translearn_jax.transfer import sources  # noqa: E402

TARGETS = ['Old mills ran.', 'Anna counted the grey boats and the price of grain',
           'quietly']
SPECIALS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']


def randomize(model, std=0.2, seed=0):
  """Every weight N(0, std) (LayerNorm scales around 1) and a random final_logits_bias;
  Marian's fixed sinusoidal positions are left alone (they are not in the file)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'embed_positions' in name and isinstance(model, tf.MarianMTModel):
        continue
      scale = name.endswith('weight') and p.dim() == 1
      p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if scale else 0.0))
    model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g) * std)
  return model.eval()


def make_bart(d):
  tk = byte_bpe(SPECIALS, roberta=True)
  fast = tf.BartTokenizerFast(tokenizer_object=tk, bos_token='<s>', eos_token='</s>',
                              sep_token='</s>', cls_token='<s>', unk_token='<unk>',
                              pad_token='<pad>', mask_token='<mask>')
  cfg = tf.BartConfig(vocab_size=tk.get_vocab_size(), d_model=32, encoder_layers=2,
                      decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                      encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                      forced_eos_token_id=None)
  m = randomize(tf.BartForConditionalGeneration(cfg))
  with torch.no_grad():   # greedy decoding then ends one row early (EOS, padding after it)
    m.final_logits_bias[0, cfg.eos_token_id] += 1.0
  m.save_pretrained(d)
  fast.save_pretrained(d)
  return m, fast


def make_mbart(d):
  """mBART: pre-LN with final encoder/decoder LayerNorms, scaled embeddings."""
  tk = byte_bpe(SPECIALS, roberta=True)
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<s>', eos_token='</s>',
                                    unk_token='<unk>', pad_token='<pad>')
  cfg = tf.MBartConfig(vocab_size=tk.get_vocab_size(), d_model=32, encoder_layers=1,
                       decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40,
                       scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                       decoder_start_token_id=2, forced_eos_token_id=None)
  m = randomize(tf.MBartForConditionalGeneration(cfg), seed=2)
  m.save_pretrained(d)
  fast.save_pretrained(d)
  return m, fast


def make_marian(d):
  """Marian's architecture (sinusoidal positions, scaled embeddings, swish, no embedding
  LayerNorm, pad as decoder start, pad banned) with a tokenizer.json tokenizer."""
  tk = byte_bpe(SPECIALS, roberta=True)
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='</s>', unk_token='<unk>',
                                    pad_token='<pad>')
  cfg = tf.MarianConfig(vocab_size=tk.get_vocab_size(), d_model=32, encoder_layers=2,
                        decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40,
                        activation_function='swish', scale_embedding=True, pad_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1, forced_eos_token_id=None)
  m = randomize(tf.MarianMTModel(cfg), seed=1)
  m.generation_config.bad_words_ids = [[1]]        # as opus-mt's: never generate <pad>
  m.save_pretrained(d)
  fast.save_pretrained(d)
  return m, fast


@pytest.fixture(scope='module')
def hf_s2s(tmp_path_factory):
  """{name: (hf dir, torch model, HF tokenizer, imported run dir)}."""
  root = tmp_path_factory.mktemp('hf_s2s')
  out = {}
  for name, make in (('bart', make_bart), ('mbart', make_mbart), ('marian', make_marian)):
    d, run = str(root / name), str(root / f'run_{name}')
    model, fast = make(d)
    report = convert.import_hf(d, run)
    assert report['model_type'] == name and report['family'] == 'seq2seq'
    assert not report['unused_tensors'] and not report['absent_groups']
    out[name] = (d, model, fast, run)
  return out


def rows(ids, pad):
  width = max(map(len, ids))
  toks = np.full((len(ids), width), pad, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for r, x in enumerate(ids):
    toks[r, :len(x)], mask[r, :len(x)] = x, True
  return toks, mask


def batch(name, tok, cfg):
  """Padded sources (BART: <s> text </s>; Marian: text </s>) and decoder inputs."""
  bos = [] if name == 'marian' else [tok.bos_id]
  src = rows([bos + tok.encode(t) + [tok.eos_id] for t in TEXTS], cfg.pad_id)
  tin = rows([[cfg.decoder_start_id] + bos + tok.encode(t) for t in TARGETS], cfg.pad_id)
  return src, tin


def reference(model, src, tin):
  with torch.no_grad():
    return model(input_ids=torch.tensor(src[0], dtype=torch.long),
                 attention_mask=torch.tensor(src[1].astype(np.int64)),
                 decoder_input_ids=torch.tensor(tin[0], dtype=torch.long),
                 decoder_attention_mask=torch.tensor(tin[1].astype(np.int64))).logits.numpy()


def our_logits(cfg, params, source, tin):
  """Our full forward pass, as one jitted program (eagerly, each operation compiles alone)."""
  apply = jax.jit(s2s.Seq2Seq(cfg).apply)
  return np.asarray(apply({'params': params}, jnp.asarray(source), jnp.asarray(tin)))


def test_defaults_are_this_projects_ids():
  cfg = s2s.Seq2SeqConfig(vocab_size=8)
  assert (cfg.pad_id, cfg.decoder_start_id, cfg.eos_id) == (
      sp_tokenizer.PAD, sp_tokenizer.BOS, sp_tokenizer.EOS)
  assert cfg.suppress_ids == (sp_tokenizer.PAD, sp_tokenizer.BOS)


@pytest.mark.parametrize('name', ['bart', 'mbart', 'marian'])
def test_import_same_logits_batched_with_padding(hf_s2s, name):
  d, model, fast, run = hf_s2s[name]
  src = sources.load('seq2seq', run)
  cfg, tok = src.model_config, src.tokenizer
  want = dict(bart=dict(positions='learned', position_offset=2, embed_ln=True, pad_id=1,
                        decoder_start_id=2, eos_id=2, suppress_ids=(), activation='gelu'),
              mbart=dict(norm='pre', position_offset=2, embed_ln=True, scale_embedding=True),
              marian=dict(positions='sinusoidal', position_offset=0, embed_ln=False, pad_id=1,
                          decoder_start_id=1, eos_id=2, suppress_ids=(1,), activation='silu',
                          scale_embedding=True))[name]
  assert {k: getattr(cfg, k) for k in want} == want
  assert cfg.norm == ('pre' if name == 'mbart' else 'post')
  assert cfg.final_logits_bias and cfg.layer_norm_eps == 1e-5
  s, t = batch(name, tok, cfg)
  assert (~s[1]).any() and (~t[1]).any()          # padded sources and targets
  ref = reference(model, s, t)
  ours = our_logits(cfg, src.params, s[0], t[0])
  assert np.abs(ref).max() > 1.0                   # weights large enough to matter
  diff = np.abs(ours[t[1]] - ref[t[1]]).max()
  assert diff < 1e-4, diff


def uncached_greedy(cfg, params, source, steps):
  """Greedy decoding with the full (uncached) forward pass over a fixed-width target:
  causal attention makes position t depend on positions <= t only."""
  model = s2s.Seq2Seq(cfg)
  apply = jax.jit(lambda s, t: model.apply({'params': params}, s, t))
  b = source.shape[0]
  tin = np.full((b, steps), cfg.pad_id, np.int32)
  tin[:, 0] = cfg.decoder_start_id
  out = np.full((b, steps), cfg.pad_id, np.int32)
  done = np.zeros(b, bool)
  for t in range(steps):
    logits = np.array(apply(source, jnp.asarray(tin))[:, t])
    logits[:, list(cfg.suppress_ids)] = -np.inf
    nxt = np.where(done, cfg.pad_id, logits.argmax(-1))
    done |= nxt == cfg.eos_id
    out[:, t] = nxt
    if t + 1 < steps:
      tin[:, t + 1] = nxt
  return out


@pytest.mark.parametrize('name', ['bart', 'marian'])
def test_greedy_decoding_equals_transformers_generate(hf_s2s, name):
  d, model, fast, run = hf_s2s[name]
  src = sources.load('seq2seq', run)
  cfg, tok = src.model_config, src.tokenizer
  (s, smask), _ = batch(name, tok, cfg)
  steps = 16
  cached = np.asarray(dec.greedy(s2s.Seq2Seq(cfg.replace(decode=True)), src.params,
                                 jnp.asarray(s), steps))
  if name == 'bart':
    np.testing.assert_array_equal(cached, uncached_greedy(cfg, src.params, jnp.asarray(s), steps))
  lengths = np.argmax(np.concatenate([cached, np.full((len(s), 1), cfg.eos_id)], 1)
                      == cfg.eos_id, 1)
  assert lengths.max() >= 5                        # real sequences, not an immediate EOS
  if name == 'bart':
    assert lengths.min() < steps - 1 and (cached == cfg.pad_id).any()   # one ended early
  for use_cache in (True, False):
    with torch.no_grad():
      ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                           attention_mask=torch.tensor(smask.astype(np.int64)),
                           max_new_tokens=steps, num_beams=1, do_sample=False,
                           use_cache=use_cache).numpy()
    assert (ref[:, 0] == cfg.decoder_start_id).all()
    ref = ref[:, 1:]
    np.testing.assert_array_equal(cached[:, :ref.shape[1]], ref)
    assert (cached[:, ref.shape[1]:] == cfg.pad_id).all()
  for r, text in enumerate(tok.decode(row) for row in cached):   # same text as transformers'
    assert text == fast.decode(cached[r][:lengths[r]], skip_special_tokens=True)


@pytest.mark.parametrize('name,alpha', [('bart', 1.0), ('marian', 2.0), ('bart', 0.5)])
def test_beam_search_with_transformers_length_penalty_equals_its_generate(hf_s2s, tmp_path, name,
                                                                          alpha):
  """form='length' divides by len ** alpha, as transformers' length_penalty does: beam search
  gives generate(num_beams=4, early_stopping='never')'s output (its exact search)."""
  d, model, fast, run = hf_s2s[name]
  src = sources.load('seq2seq', run)
  cfg, tok = src.model_config, src.tokenizer
  (s, smask), _ = batch(name, tok, cfg)
  steps = 24
  ours = np.asarray(dec.beam_search(s2s.Seq2Seq(cfg.replace(decode=True)), src.params,
                                    jnp.asarray(s), steps, beam=4, alpha=alpha, form='length'))
  with torch.no_grad():
    ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                         attention_mask=torch.tensor(smask.astype(np.int64)),
                         max_new_tokens=steps, num_beams=4, do_sample=False,
                         length_penalty=alpha, early_stopping='never').numpy()[:, 1:]
  def cut(row):                  # up to EOS, without padding
    row = [int(t) for t in row if t != cfg.pad_id]
    return row[:row.index(cfg.eos_id) + 1] if cfg.eos_id in row else row
  got, want = [cut(r) for r in ours], [cut(r) for r in ref]
  assert got == want
  if name == 'bart':             # finished hypotheses among the results
    assert any(cfg.eos_id in g for g in got)
  if alpha == 1.0:               # and one unfinished at max_len that outscores them
    assert any(len(g) == steps and cfg.eos_id not in g for g in got)
  if name != 'bart':             # (the Marian fixture's tokenizer frames sources as BART's)
    return
  # translate_file with the same settings writes transformers' texts
  (tmp_path / 'src.txt').write_text(''.join(t + '\n' for t in TEXTS), encoding='utf-8')
  res = serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'out.txt'),
                               beam=4, length_penalty=alpha, length_penalty_form='length',
                               max_len=steps)
  assert res['length_penalty_form'] == 'length'
  assert (tmp_path / 'out.txt').read_text(encoding='utf-8').split('\n')[:-1] == [
      fast.decode(w, skip_special_tokens=True).replace('\n', ' ') for w in want]
  with pytest.raises(ConfigError, match='length_penalty_form must be one of'):
    serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'out.txt'),
                           length_penalty_form='fairseq')


@pytest.mark.parametrize('beam', [1, 3])
def test_min_length_and_no_repeat_ngram_equal_transformers_generate(hf_s2s, beam):
  """`min_len` and `no_repeat_ngram` ban what transformers' MinLength and NoRepeatNGram
  processors ban: greedy and beam search give generate()'s output with them (a tiny random
  BART repeats itself, so the ban changes the output, which is checked too)."""
  d, model, fast, run = hf_s2s['bart']
  src = sources.load('seq2seq', run)
  cfg = src.model_config
  (s, smask), _ = batch('bart', src.tokenizer, cfg)
  steps, m = 20, s2s.Seq2Seq(cfg.replace(decode=True))

  def ours(**kw):
    if beam == 1:
      return np.asarray(dec.greedy(m, src.params, jnp.asarray(s), steps, **kw))
    return np.asarray(dec.beam_search(m, src.params, jnp.asarray(s), steps, beam=beam, alpha=1.0,
                                      form='length', **kw))

  def cut(row):
    row = [int(t) for t in row if t != cfg.pad_id]
    return row[:row.index(cfg.eos_id) + 1] if cfg.eos_id in row else row
  with torch.no_grad():
    ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                         attention_mask=torch.tensor(smask.astype(np.int64)),
                         max_new_tokens=steps, num_beams=beam, do_sample=False,
                         length_penalty=1.0, early_stopping='never', no_repeat_ngram_size=2,
                         min_length=12).numpy()[:, 1:]
  got = [cut(r) for r in ours(min_len=12, no_repeat_ngram=2)]
  assert got == [cut(r) for r in ref]
  assert all(len(g) >= 11 for g in got)                         # EOS not before 12 with start
  for g in got:                                                 # no bigram twice
    pairs = list(zip([cfg.decoder_start_id] + g, g))
    assert len(pairs) == len(set(pairs))
  assert got != [cut(r) for r in ours()]                        # the constraints mattered


def test_imported_run_translates_with_its_generation_config(hf_s2s, tmp_path):
  """An import takes generate()'s default search from generation_config.json (num_beams,
  length_penalty as len ** alpha), so translate_file of the run, given no search settings,
  writes what generate() gives by default; the settings our search does not apply are
  reported, and a bad value is one error naming the file."""
  d, _, fast, _ = hf_s2s['bart']
  hf_dir, run = tmp_path / 'hf', str(tmp_path / 'run')
  shutil.copytree(d, hf_dir)
  gen_path = hf_dir / 'generation_config.json'
  gen = json.loads(gen_path.read_text())
  gen.update(num_beams=3, length_penalty=0.5, early_stopping='never')
  gen_path.write_text(json.dumps(gen))
  report = convert.import_hf(str(hf_dir), run)
  # generate()'s output limit (20 new tokens when unset) is ours only through --max_len
  assert report['generation'] == {'beam': 3, 'length_penalty': 0.5,
                                  'length_penalty_form': 'length', 'min_length': 0,
                                  'no_repeat_ngram_size': 0, 'early_stopping': 'never',
                                  'not_applied': {'max_new_tokens': 20}}
  model = tf.BartForConditionalGeneration.from_pretrained(str(hf_dir))
  src = sources.load('seq2seq', run)
  (s, smask), _ = batch('bart', src.tokenizer, src.model_config)
  steps = 24
  with torch.no_grad():                 # generate()'s defaults: the checkpoint's own search
    ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                         attention_mask=torch.tensor(smask.astype(np.int64)),
                         max_new_tokens=steps).numpy()[:, 1:]
    # with no limit given it stops after 20 new tokens (reported): ours decodes to --max_len
    short = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                           attention_mask=torch.tensor(smask.astype(np.int64))).numpy()
  assert short.shape[1] - 1 <= 20 < ref.shape[1]
  (tmp_path / 'src.txt').write_text(''.join(t + '\n' for t in TEXTS), encoding='utf-8')
  res = serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'out.txt'),
                               max_len=steps)
  assert (res['beam'], res['length_penalty'], res['length_penalty_form']) == (3, 0.5, 'length')
  assert (tmp_path / 'out.txt').read_text(encoding='utf-8').split('\n')[:-1] == [
      fast.decode(r, skip_special_tokens=True).replace('\n', ' ') for r in ref]
  # min_length and no_repeat_ngram_size are applied too (a summariser's, e.g. BART-CNN's
  # 56 and 3), by the run's translate as by generate()
  gen.update(min_length=12, no_repeat_ngram_size=2)
  gen_path.write_text(json.dumps(gen))
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run1'))
  assert (report['generation']['min_length'], report['generation']['no_repeat_ngram_size'],
          report['generation']['not_applied']) == (12, 2, {'max_new_tokens': 20})
  model = tf.BartForConditionalGeneration.from_pretrained(str(hf_dir))
  with torch.no_grad():
    ref2 = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                          attention_mask=torch.tensor(smask.astype(np.int64)),
                          max_new_tokens=steps).numpy()[:, 1:]
  res = serving.translate_file(str(tmp_path / 'run1'), str(tmp_path / 'src.txt'),
                               str(tmp_path / 'out1.txt'), max_len=steps)
  assert (res['min_length'], res['no_repeat_ngram_size']) == (12, 2)
  want2 = [fast.decode(r, skip_special_tokens=True).replace('\n', ' ') for r in ref2]
  assert (tmp_path / 'out1.txt').read_text(encoding='utf-8').split('\n')[:-1] == want2
  assert want2 != [fast.decode(r, skip_special_tokens=True).replace('\n', ' ') for r in ref]
  # the run's settings are defaults: given ones win
  serving.translate_file(str(tmp_path / 'run1'), str(tmp_path / 'src.txt'),
                         str(tmp_path / 'out2.txt'), max_len=steps, min_length=0,
                         no_repeat_ngram_size=0)
  assert (tmp_path / 'out2.txt').read_text() == (tmp_path / 'out.txt').read_text()
  with pytest.raises(ConfigError, match='no_repeat_ngram_size must be an integer >= 0'):
    serving.translate_file(str(tmp_path / 'run1'), str(tmp_path / 'src.txt'),
                           str(tmp_path / 'out2.txt'), no_repeat_ngram_size=-1)
  # what generate() would add that ours does not is reported, not silently dropped
  gen.update(repetition_penalty=1.2, early_stopping=True)
  gen_path.write_text(json.dumps(gen))
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run2'))
  assert report['generation']['not_applied'] == {'repetition_penalty': 1.2,
                                                 'max_new_tokens': 20}
  assert report['generation']['early_stopping'] == 'k_finished'
  gen.update(max_new_tokens=40, encoder_repetition_penalty=1.2, begin_suppress_tokens=[5],
             renormalize_logits=True)
  gen_path.write_text(json.dumps(gen))
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run4'))
  assert report['generation']['not_applied'] == {
      'repetition_penalty': 1.2,
      'max_new_tokens': 40, 'encoder_repetition_penalty': 1.2, 'begin_suppress_tokens': [5],
      'renormalize_logits': True}
  gen = {k: v for k, v in gen.items() if k not in (
      'max_new_tokens', 'encoder_repetition_penalty', 'begin_suppress_tokens',
      'renormalize_logits')}
  gen['early_stopping'] = 'sometimes'
  gen_path.write_text(json.dumps(gen))
  with pytest.raises(DataError, match=r"generation_config\.json: early_stopping must be true, "
                                      r"false or 'never', got 'sometimes'"):
    convert.import_hf(str(hf_dir), str(tmp_path / 'run5'))
  gen['early_stopping'] = True
  gen['num_beams'] = 0
  gen_path.write_text(json.dumps(gen))
  with pytest.raises(DataError, match=r'generation_config\.json: num_beams must be an '
                                      r'integer >= 1, got 0'):
    convert.import_hf(str(hf_dir), str(tmp_path / 'run3'))


def test_imported_run_stops_its_beam_search_where_generate_does_by_default(hf_s2s, tmp_path):
  """A checkpoint whose generation config leaves early_stopping out gets transformers'
  default (False: its heuristic) as eval.early_stopping='heuristic', so the run's translate,
  given no search settings, writes what generate() writes by default; the exact search
  ('never', given on the command line) writes something else here."""
  d, _, fast, _ = hf_s2s['bart']
  hf_dir, run = tmp_path / 'hf', str(tmp_path / 'run')
  shutil.copytree(d, hf_dir)
  gen_path = hf_dir / 'generation_config.json'
  gen = {k: v for k, v in json.loads(gen_path.read_text()).items() if k != 'early_stopping'}
  gen.update(num_beams=4, length_penalty=2.0)
  gen_path.write_text(json.dumps(gen))
  assert convert.import_hf(str(hf_dir), run)['generation']['early_stopping'] == 'heuristic'
  model = tf.BartForConditionalGeneration.from_pretrained(str(hf_dir))
  src = sources.load('seq2seq', run)
  (s, smask), _ = batch('bart', src.tokenizer, src.model_config)
  steps = 24
  with torch.no_grad():
    ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                         attention_mask=torch.tensor(smask.astype(np.int64)),
                         max_new_tokens=steps).numpy()[:, 1:]
  (tmp_path / 'src.txt').write_text(''.join(t + '\n' for t in TEXTS), encoding='utf-8')
  res = serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'out.txt'),
                               max_len=steps)
  assert res['early_stopping'] == 'heuristic'
  want = [fast.decode(r, skip_special_tokens=True).replace('\n', ' ') for r in ref]
  assert (tmp_path / 'out.txt').read_text(encoding='utf-8').split('\n')[:-1] == want
  serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'exact.txt'),
                         max_len=steps, early_stopping='never')
  assert (tmp_path / 'exact.txt').read_text(encoding='utf-8').split('\n')[:-1] != want
  with pytest.raises(ConfigError, match="early_stopping must be one of"):
    serving.translate_file(run, str(tmp_path / 'src.txt'), str(tmp_path / 'x.txt'),
                           early_stopping='true')


def test_imported_search_comes_from_generation_config_alone_when_it_exists(hf_s2s, tmp_path):
  """generate() reads its settings from generation_config.json when the checkpoint has one
  (config.json's legacy num_beams, length_penalty, ... only when it has none), so a key the
  file leaves out takes transformers' default, not config.json's value."""
  d, _, _, _ = hf_s2s['bart']
  hf_dir = tmp_path / 'hf'
  shutil.copytree(d, hf_dir)
  conf = json.loads((hf_dir / 'config.json').read_text())
  conf.update(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3)
  (hf_dir / 'config.json').write_text(json.dumps(conf))
  gen = json.loads((hf_dir / 'generation_config.json').read_text())
  for k in ('num_beams', 'length_penalty', 'no_repeat_ngram_size'):
    gen.pop(k, None)
  (hf_dir / 'generation_config.json').write_text(json.dumps(gen))
  hf_gen = tf.GenerationConfig.from_pretrained(str(hf_dir))
  assert hf_gen.num_beams in (None, 1) and hf_gen.length_penalty in (None, 1.0)
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run'))
  assert (report['generation']['beam'], report['generation']['length_penalty'],
          report['generation']['no_repeat_ngram_size']) == (1, 1.0, 0)
  gen.update(num_beams=None, length_penalty=None)    # null: transformers' default too
  (hf_dir / 'generation_config.json').write_text(json.dumps(gen))
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run_null'))
  assert (report['generation']['beam'], report['generation']['length_penalty']) == (1, 1.0)
  os.remove(hf_dir / 'generation_config.json')      # without the file: config.json's
  report = convert.import_hf(str(hf_dir), str(tmp_path / 'run2'))
  assert (report['generation']['beam'], report['generation']['length_penalty'],
          report['generation']['no_repeat_ngram_size']) == (4, 2.0, 3)


def test_imported_ids_come_from_generation_config_alone_when_it_exists(hf_s2s, tmp_path):
  """The start id, the forced first token and the banned ids as generate() reads them:
  from generation_config.json alone when the checkpoint has one (a key it leaves out is
  unset there; the start id falls back to its bos_token_id), config.json's without one."""
  d, _, _, _ = hf_s2s['bart']
  hf_dir = tmp_path / 'hf'
  shutil.copytree(d, hf_dir)
  conf = json.loads((hf_dir / 'config.json').read_text())
  conf.update(decoder_start_token_id=2, forced_bos_token_id=3, bad_words_ids=[[5]])
  (hf_dir / 'config.json').write_text(json.dumps(conf))
  gen = json.loads((hf_dir / 'generation_config.json').read_text())
  for k in ('decoder_start_token_id', 'forced_bos_token_id', 'bad_words_ids'):
    gen.pop(k, None)
  gen['bos_token_id'] = 0
  (hf_dir / 'generation_config.json').write_text(json.dumps(gen))
  hf_gen = tf.GenerationConfig.from_pretrained(str(hf_dir))
  assert (hf_gen.decoder_start_token_id, hf_gen.bos_token_id, hf_gen.forced_bos_token_id,
          hf_gen.bad_words_ids) == (None, 0, None, None)

  def ids(run):
    cfg = sources.load('seq2seq', run).model_config
    return cfg.decoder_start_id, getattr(cfg, 'forced_bos_id', -1), tuple(cfg.suppress_ids)

  convert.import_hf(str(hf_dir), str(tmp_path / 'run'))
  assert ids(tmp_path / 'run') == (0, -1, ())
  gen.update(decoder_start_token_id=4, forced_bos_token_id=6, suppress_tokens=[7])
  (hf_dir / 'generation_config.json').write_text(json.dumps(gen))
  convert.import_hf(str(hf_dir), str(tmp_path / 'run_gen'))
  assert ids(tmp_path / 'run_gen') == (4, 6, (7,))
  os.remove(hf_dir / 'generation_config.json')      # without the file: config.json's
  convert.import_hf(str(hf_dir), str(tmp_path / 'run_conf'))
  assert ids(tmp_path / 'run_conf') == (2, 3, (5,))


def test_imported_negative_length_penalty_is_one_error_naming_the_file(hf_s2s, tmp_path):
  """transformers accepts length_penalty < 0 (shorter hypotheses favoured); this project's
  search takes alpha >= 0 only (its early stop bounds a hypothesis by lp(max_len)), so an
  import refuses it naming the file instead of writing a run whose translate fails."""
  d, _, _, _ = hf_s2s['bart']
  hf_dir = tmp_path / 'hf'
  shutil.copytree(d, hf_dir)
  gen = json.loads((hf_dir / 'generation_config.json').read_text())
  gen.update(num_beams=2, length_penalty=-0.5)
  (hf_dir / 'generation_config.json').write_text(json.dumps(gen))
  with pytest.raises(DataError, match=r'generation_config\.json: length_penalty must be a '
                                      r'finite number >= 0.*got -0\.5'):
    convert.import_hf(str(hf_dir), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('name', ['bart', 'mbart', 'marian'])
def test_import_then_export_is_bit_identical(hf_s2s, tmp_path, name):
  d, _, _, run = hf_s2s[name]
  out = str(tmp_path / name)
  convert.export_hf(run, out)
  a, b = safetensors_io.read_weights(d), safetensors_io.read_weights(out)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
  ca, cb = (json.load(open(os.path.join(p, 'config.json'))) for p in (d, out))
  for k in ('model_type', 'vocab_size', 'd_model', 'encoder_layers', 'decoder_layers',
            'encoder_attention_heads', 'encoder_ffn_dim', 'max_position_embeddings',
            'activation_function', 'scale_embedding', 'pad_token_id', 'eos_token_id',
            'decoder_start_token_id'):
    assert ca.get(k) == cb.get(k), k
  ga, gb = (json.load(open(os.path.join(p, 'generation_config.json'))) for p in (d, out))
  for k in ('decoder_start_token_id', 'eos_token_id', 'pad_token_id', 'bad_words_ids'):
    assert ga.get(k) == gb.get(k), k


def test_post_ln_run_exported_as_bart_gives_transformers_the_same_logits(tmp_path):
  from test_seq2seq import _write_pairs, s2s_config
  from translearn_jax.pretraining import seq2seq
  s, t = _write_pairs(tmp_path)
  c = s2s_config(tmp_path, s, t, **{
      'train.steps': 3, 'train.batch_size': 8,
      'data.valid_source': '', 'data.valid_target': '', 'model.d_model': 32,
      'model.d_ff': 64, 'model.encoder_layers': 1, 'model.decoder_layers': 1,
      'model.norm': 'post', 'model.embed_ln': True,
      'model.final_logits_bias': True, 'model.activation': 'gelu',
      'model.layer_norm_eps': 1e-5, 'length_buckets': ''})
  run = str(tmp_path / 'run')
  seq2seq.train_and_evaluate(c, run)
  out = str(tmp_path / 'hf')
  assert convert.export_hf(run, out)['architectures'] == ['BartForConditionalGeneration']
  src = sources.load('seq2seq', run)
  cfg, tok = src.model_config, src.tokenizer
  assert cfg.position_offset == 0 and np.abs(src.params['final_logits_bias']).max() > 0
  model = tf.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
  assert type(model).__name__ == 'BartForConditionalGeneration'
  sx = rows([tok.encode(x) for x in TEXTS], tok.pad_id)
  tx = rows([[tok.bos_id] + tok.encode(x) for x in TARGETS], tok.pad_id)
  ours = our_logits(cfg, src.params, sx[0], tx[0])
  ref = reference(model, sx, tx)
  np.testing.assert_allclose(ours[tx[1]], ref[tx[1]], atol=1e-4, rtol=1e-4)


def test_bad_seq2seq_input_gives_one_clear_line(hf_s2s, tmp_path, capsys):
  d = hf_s2s['bart'][0]
  conf = json.load(open(os.path.join(d, 'config.json')))
  bad = tmp_path / 'bad'
  shutil.copytree(d, bad)
  (bad / 'config.json').write_text(json.dumps({**conf, 'rope_theta': 10000.0}))
  assert "config key 'rope_theta' is unknown to the bart converter" in _cli_error(
      capsys, 'import-hf', str(bad), str(tmp_path / 'r1'))
  (bad / 'config.json').write_text(json.dumps({**conf, 'decoder_attention_heads': 2}))
  assert 'encoder_attention_heads=4 and decoder_attention_heads=2 differ' in _cli_error(
      capsys, 'import-hf', str(bad), str(tmp_path / 'r2'))
  (bad / 'config.json').write_text(json.dumps({**conf, 'normalize_before': True}))
  assert 'normalize_before=True is not supported' in _cli_error(
      capsys, 'import-hf', str(bad), str(tmp_path / 'r3'))
  marian = tmp_path / 'marian'
  shutil.copytree(hf_s2s['marian'][0], marian)
  os.remove(marian / 'tokenizer.json')
  err = _cli_error(capsys, 'import-hf', str(marian), str(tmp_path / 'r4'))
  assert 'source.spm, target.spm' in err and 'nothing was converted' in err
  assert not any(os.path.exists(tmp_path / f'r{i}') for i in range(1, 5))
  # this project's default model (pre-LN, no embedding LayerNorm) has no counterpart
  src = sources.load('seq2seq', hf_s2s['bart'][3])
  default = s2s.Seq2SeqConfig(vocab_size=src.model_config.vocab_size, d_model=32, num_heads=4)
  with pytest.raises(DataError, match="mbart needs model.norm='pre'.*model.embed_ln=True.*"
                                      "this run has model.embed_ln=False, "
                                      "model.layer_norm_eps=1e-06"):
    hf_seq2seq.arch_of(default).hf_config(default, src.tokenizer)
  assert hf.arch_for(conf, 'config.json') is hf_seq2seq.BART


@pytest.mark.parametrize('name', ['bart', 'marian'])
def test_translate_an_imported_run_reads_sources_as_transformers_does(hf_s2s, tmp_path, name):
  """`translate` on an imported run: sources framed by the checkpoint's tokenizer (BART's
  `<s> text </s>`), as `transformers` reads them, so greedy output equals its `generate`."""
  from translearn_jax import serving
  d, model, fast, run = hf_s2s[name]
  (tmp_path / 'in.txt').write_text('\n'.join(TEXTS) + '\n', encoding='utf-8')
  serving.translate_file(run, str(tmp_path / 'in.txt'), str(tmp_path / 'out.txt'), beam=1,
                         max_len=12)
  got = (tmp_path / 'out.txt').read_text(encoding='utf-8').splitlines()
  enc = fast(TEXTS, return_tensors='pt', padding=True)
  with torch.no_grad():
    ref = model.generate(input_ids=enc['input_ids'], attention_mask=enc['attention_mask'],
                         max_new_tokens=12, num_beams=1, do_sample=False)
  assert got == [fast.decode(r, skip_special_tokens=True) for r in ref]


def test_fine_tuning_an_imported_bart_takes_its_ids_and_framing(hf_s2s):
  """The seq2seq runner initialised from an imported BART pads, ends and starts decoding
  with BART's ids, and trains on targets as BART's fine-tuning frames them: decoder input
  `</s> <s> text`, labels `<s> text </s>`."""
  from configs import seq2seq_multi30k
  from translearn_jax.errors import ConfigError
  from translearn_jax.pretraining import seq2seq
  d, model, fast, run = hf_s2s['bart']
  c = seq2seq_multi30k.get_config()
  c.init.kind, c.init.path = 'seq2seq', run
  src = sources.load('seq2seq', run)
  m = src.model_config
  for f in ('d_model', 'num_heads', 'd_ff', 'encoder_layers', 'decoder_layers', 'norm',
            'activation', 'layer_norm_eps', 'positions', 'position_offset', 'scale_embedding',
            'embed_ln', 'final_logits_bias', 'share_embeddings'):
    c.model[f] = getattr(m, f)
  c.max_source_len = c.max_target_len = 16
  src = seq2seq.init_source(c)
  assert (c.model.pad_id, c.model.eos_id, c.model.decoder_start_id) == (1, 2, 2)
  cfg = seq2seq.model_config(c, src.tokenizer.vocab_size)
  assert (cfg.pad_id, cfg.eos_id, cfg.decoder_start_id) == (1, 2, 2)
  rows, kept = seq2seq.encode_pairs(src.tokenizer, [(TEXTS[0], TARGETS[0])], 16, 16,
                                    filter_long=True, start_id=c.model.decoder_start_id)
  s, tin, tout = seq2seq.split_rows(rows[0], 16, 16)
  want_src = fast(TEXTS[0])['input_ids']
  labels = fast(text_target=TARGETS[0])['input_ids']
  assert s[:len(want_src)].tolist() == want_src and (s[len(want_src):] == 1).all()
  assert tout[:len(labels)].tolist() == labels
  assert tin[:len(labels)].tolist() == [2] + labels[:-1]
  c.model.pad_id = 0
  with pytest.raises(ConfigError, match=r'config\.model\.pad_id=0, but the source .* uses 1'):
    seq2seq.init_source(c)


@pytest.mark.parametrize('style', ['mbart', 'mbart50'])
def test_mbart_language_codes_frame_and_start_decoding_as_transformers(tmp_path, style):
  """mBART's tokenizer frames `text </s> en_XX` (mBART-50: `en_XX text </s>`).
  `tokenizer.source_lang`/`target_lang` put the codes where transformers' `src_lang`/
  `tgt_lang` put them; training's decoder input is transformers' `shift_tokens_right` of the
  labels; decoding starts from the code (mBART) or from </s> with the code forced first
  (mBART-50), so greedy output equals `generate` with those settings."""
  from configs import seq2seq_multi30k
  from tokenizers import processors
  from translearn_jax import serving
  from translearn_jax.errors import ConfigError
  from translearn_jax.pretraining import seq2seq
  from transformers.models.mbart.modeling_mbart import shift_tokens_right
  d = str(tmp_path / 'hf')
  tk = byte_bpe(SPECIALS + ['en_XX', 'ro_RO', 'de_DE'])
  ids = {t: tk.token_to_id(t) for t in ('</s>', 'en_XX', 'ro_RO')}
  single = '$A </s> en_XX' if style == 'mbart' else 'en_XX $A </s>'
  tk.post_processor = processors.TemplateProcessing(
      single=single, pair=single.replace('$A', '$A $B'),
      special_tokens=[('</s>', ids['</s>']), ('en_XX', ids['en_XX'])])
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<s>', eos_token='</s>',
                                    unk_token='<unk>', pad_token='<pad>',
                                    additional_special_tokens=['en_XX', 'ro_RO', 'de_DE'])
  cfg = tf.MBartConfig(vocab_size=tk.get_vocab_size(), d_model=32, encoder_layers=1,
                       decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40,
                       scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                       decoder_start_token_id=2, forced_eos_token_id=None)
  model = randomize(tf.MBartForConditionalGeneration(cfg), seed=3)
  model.save_pretrained(d)
  fast.save_pretrained(d)
  run = str(tmp_path / 'run')
  convert.import_hf(d, run)
  c = seq2seq_multi30k.get_config()
  c.init.kind, c.init.path = 'seq2seq', run
  m = sources.load('seq2seq', run).model_config
  for f in ('d_model', 'num_heads', 'd_ff', 'encoder_layers', 'decoder_layers', 'norm',
            'activation', 'layer_norm_eps', 'positions', 'position_offset', 'scale_embedding',
            'embed_ln', 'final_logits_bias', 'share_embeddings'):
    c.model[f] = getattr(m, f)
  c.max_source_len = c.max_target_len = 16
  c.tokenizer.source_lang, c.tokenizer.target_lang = 'en_XX', 'ro_RO'
  bad = ml_collections.ConfigDict(c.to_dict())
  bad.tokenizer.target_lang = 'xx_YY'
  src = seq2seq.init_source(c)
  tok = src.tokenizer
  rows, _ = seq2seq.encode_pairs(tok, [(TEXTS[0], TARGETS[0])], 16, 16, filter_long=True,
                                 start_id=c.model.decoder_start_id, source_lang='en_XX',
                                 target_lang='ro_RO')
  s, tin, tout = (x.tolist() for x in seq2seq.split_rows(rows[0], 16, 16))
  src_ids, tgt_ids = tok.encode(TEXTS[0]), tok.encode(TARGETS[0])
  if style == 'mbart':     # MBartTokenizer: suffix [eos, lang] for sources and targets
    want_src, labels = src_ids + [2, ids['en_XX']], tgt_ids + [2, ids['ro_RO']]
    assert (c.model.decoder_start_id, c.model.get('forced_bos_id', -1)) == (ids['ro_RO'], -1)
  else:                    # MBart50Tokenizer: prefix [lang], suffix [eos]
    want_src, labels = [ids['en_XX']] + src_ids + [2], [ids['ro_RO']] + tgt_ids + [2]
    assert (c.model.decoder_start_id, c.model.forced_bos_id) == (2, ids['ro_RO'])
  assert s[:len(want_src)] == want_src and tout[:len(labels)] == labels
  shifted = shift_tokens_right(torch.tensor([labels]), 1)[0].tolist()
  assert tin[:len(labels)] == shifted
  # cut to the length limit, the frame's closing ids stay (mBART's `</s> en_XX`)
  long_rows, _ = seq2seq.encode_pairs(tok, [(TEXTS[1] * 3, 'x')], 8, 16, filter_long=False,
                                      source_lang='en_XX', target_lang='ro_RO')
  assert long_rows[0, 6:8].tolist() == ([2, ids['en_XX']] if style == 'mbart' else
                                        tok.encode(TEXTS[1] * 3)[5:6] + [2])
  # greedy decoding of the run's model config = generate with tgt_lang's settings
  run_cfg = seq2seq.model_config(c, tok.vocab_size)
  cfg_run = src.model_config.replace(decoder_start_id=run_cfg.decoder_start_id,
                                     forced_bos_id=run_cfg.forced_bos_id, decode=True)
  source, _ = dec.encode_sources(tok, TEXTS, 16, 'en_XX')
  ours = np.asarray(dec.greedy(s2s.Seq2Seq(cfg_run), src.params, jnp.asarray(source), 10))
  kw = ({'decoder_start_token_id': ids['ro_RO']} if style == 'mbart' else
        {'decoder_start_token_id': 2, 'forced_bos_token_id': ids['ro_RO']})
  with torch.no_grad():
    ref = model.generate(input_ids=torch.tensor(source, dtype=torch.long),
                         attention_mask=torch.tensor((source != 1).astype(np.int64)),
                         max_new_tokens=10, num_beams=1, do_sample=False, **kw).numpy()[:, 1:]
  np.testing.assert_array_equal(ours[:, :ref.shape[1]], ref)
  if style == 'mbart50':
    assert (ours[:, 0] == ids['ro_RO']).all()
  # translate on the imported run with the same codes writes the same text
  (tmp_path / 'in.txt').write_text('\n'.join(TEXTS) + '\n', encoding='utf-8')
  serving.translate_file(run, str(tmp_path / 'in.txt'), str(tmp_path / 'out.txt'), beam=1,
                         max_len=10, source_lang='en_XX', target_lang='ro_RO')
  assert (tmp_path / 'out.txt').read_text(encoding='utf-8').splitlines() == [
      fast.decode(r, skip_special_tokens=True) for r in ref]
  with pytest.raises(ConfigError, match=r"config\.tokenizer\.target_lang='xx_YY' is not a token "
                                        r".*its language codes: en_XX, ro_RO, de_DE"):
    seq2seq.init_source(bad)
  # back-translation through the reverse model reads the target language, writes the source's
  (tmp_path / 'mono.txt').write_text('\n'.join(TARGETS) + '\n', encoding='utf-8')
  bt = ml_collections.ConfigDict({'model': run, 'path': str(tmp_path / 'mono.txt'), 'beam': 1,
                                  'max_sentences': 0, 'batch_size': 8})
  pairs = seq2seq.back_translate(bt, str(tmp_path / 'bt'), 'en_XX', 'ro_RO')
  serving.translate_file(run, str(tmp_path / 'mono.txt'), str(tmp_path / 'rev.txt'), beam=1,
                         source_lang='ro_RO', target_lang='en_XX')
  assert [p[0] for p in pairs] == [x for x in (tmp_path / 'rev.txt').read_text(
      encoding='utf-8').splitlines() if x.strip()]
  # a run continued from a fine-tuned one (its config names the codes) keeps its codes
  conf = json.load(open(os.path.join(run, 'config.json')))
  conf['tokenizer'] = {'source_lang': 'en_XX', 'target_lang': 'ro_RO'}
  with open(os.path.join(run, 'config.json'), 'w') as f:
    json.dump(conf, f)
  again = ml_collections.ConfigDict(bad.to_dict())
  again.tokenizer.source_lang = again.tokenizer.target_lang = ''
  seq2seq.init_source(again)
  assert (again.tokenizer.source_lang, again.tokenizer.target_lang) == ('en_XX', 'ro_RO')
  assert again.model.to_dict() == c.model.to_dict()
  # no codes at all: mBART's labels end in the frame's own code, which starts decoding, as
  # shift_tokens_right of those labels does
  conf.pop('tokenizer')
  with open(os.path.join(run, 'config.json'), 'w') as f:
    json.dump(conf, f)
  plain = ml_collections.ConfigDict(again.to_dict())
  plain.tokenizer.source_lang = plain.tokenizer.target_lang = ''
  for f in ('decoder_start_id', 'forced_bos_id', 'pad_id', 'eos_id', 'suppress_ids'):
    if f in plain.model:
      del plain.model[f]
  seq2seq.init_source(plain)
  rows, _ = seq2seq.encode_pairs(tok, [(TEXTS[0], TARGETS[0])], 16, 16, filter_long=True,
                                 start_id=plain.model.decoder_start_id)
  _, tin, tout = (x.tolist() for x in seq2seq.split_rows(rows[0], 16, 16))
  n = len([t for t in tout if t != 1])
  assert tin[:n] == shift_tokens_right(torch.tensor([tout[:n]]), 1)[0].tolist()
  if style == 'mbart50':   # forced_bos_token_id: exported for generate, imported back
    conf['model']['forced_bos_id'] = ids['ro_RO']
    with open(os.path.join(run, 'config.json'), 'w') as f:
      json.dump(conf, f)
    convert.export_hf(run, str(tmp_path / 'exported'))
    for name in ('config.json', 'generation_config.json'):
      assert json.load(open(tmp_path / 'exported' / name))['forced_bos_token_id'] == ids['ro_RO']
    convert.import_hf(str(tmp_path / 'exported'), str(tmp_path / 'back'))
    assert sources.load('seq2seq', str(tmp_path / 'back')).model_config.forced_bos_id == \
        ids['ro_RO']
  with pytest.raises(ConfigError, match=r"^--target_lang='xx_YY' is not a token"):
    serving.translate_file(run, str(tmp_path / 'in.txt'), str(tmp_path / 'o2.txt'),
                           target_lang='xx_YY')


def test_decoder_start_id_from_generation_config_as_generate_reads_it(hf_s2s, tmp_path):
  """generate() starts from generation_config.json's decoder_start_token_id: when config.json
  lacks it (not bos_token_id then) and when the two files differ."""
  d = hf_s2s['bart'][0]
  for name, edit_conf, gen_start in (('absent', lambda c: c.pop('decoder_start_token_id'), 2),
                                     ('differs', lambda c: None, 0)):
    hf_dir = tmp_path / name
    shutil.copytree(d, hf_dir)
    conf = json.load(open(hf_dir / 'config.json'))
    edit_conf(conf)
    (hf_dir / 'config.json').write_text(json.dumps(conf))
    gen = json.load(open(hf_dir / 'generation_config.json'))
    (hf_dir / 'generation_config.json').write_text(
        json.dumps({**gen, 'decoder_start_token_id': gen_start}))
    assert tf.GenerationConfig.from_pretrained(str(hf_dir)).decoder_start_token_id == gen_start
    convert.import_hf(str(hf_dir), str(tmp_path / f'run_{name}'))
    src = sources.load('seq2seq', str(tmp_path / f'run_{name}'))
    assert src.model_config.decoder_start_id == gen_start, name


def test_shared_table_aliases_of_other_values_are_refused(hf_s2s, tmp_path):
  """transformers 5 unties an encoder/decoder token table or output layer whose values differ
  from `shared` in the file; the model here has one table: refused, naming the tensor."""
  from safetensors.numpy import save_file
  d = hf_s2s['bart'][0]
  tensors = safetensors_io.read_weights(d)
  for alias in ('model.encoder.embed_tokens.weight', 'lm_head.weight'):
    hf_dir = tmp_path / alias
    shutil.copytree(d, hf_dir)
    save_file({**tensors, alias: tensors['model.shared.weight'] + 0.5},
              str(hf_dir / 'model.safetensors'), metadata={'format': 'pt'})
    with pytest.raises(DataError, match=f'tensor {alias} differs from model.shared.weight'):
      convert.import_hf(str(hf_dir), str(tmp_path / 'run'))
  hf_dir = tmp_path / 'same'          # the same values (as transformers 4 saved them): imports
  shutil.copytree(d, hf_dir)
  save_file({**tensors, 'model.encoder.embed_tokens.weight': tensors['model.shared.weight']},
            str(hf_dir / 'model.safetensors'), metadata={'format': 'pt'})
  convert.import_hf(str(hf_dir), str(tmp_path / 'run'))


def test_marian_position_tables_in_the_file_must_be_the_sinusoid(hf_s2s, tmp_path):
  """transformers computes with a Marian file's stored embed_positions; the model here
  computes the sinusoid: a stored table that differs is refused, naming it; one rounded to
  float16 (as fp16 checkpoints store it) imports."""
  from safetensors.numpy import save_file
  d = hf_s2s['marian'][0]
  tensors = safetensors_io.read_weights(d)
  model = hf_s2s['marian'][1]
  table = model.model.encoder.embed_positions.weight.detach().numpy().astype(np.float32)
  for name, value in (('fp16', table.astype(np.float16).astype(np.float32)),
                      ('shifted', table + 0.5)):
    hf_dir = tmp_path / name
    shutil.copytree(d, hf_dir)
    save_file({**tensors, 'model.encoder.embed_positions.weight': value,
               'model.decoder.embed_positions.weight': table},
              str(hf_dir / 'model.safetensors'), metadata={'format': 'pt'})
    if name == 'fp16':
      convert.import_hf(str(hf_dir), str(tmp_path / f'run_{name}'))
    else:
      with pytest.raises(DataError, match='tensor model.encoder.embed_positions.weight differs '
                                          'from the table this architecture computes'):
        convert.import_hf(str(hf_dir), str(tmp_path / f'run_{name}'))


@pytest.mark.parametrize('name,alpha,hf_stopping,ours', [
    ('bart', 2.0, False, 'heuristic'), ('bart', 2.0, True, 'k_finished'),
    ('marian', 1.0, True, 'k_finished')])
def test_beam_search_stopping_rules_equal_transformers_early_stopping(hf_s2s, name, alpha,
                                                                      hf_stopping, ours):
  """stopping='heuristic' / 'k_finished' end an example's search where generate()'s
  early_stopping=False (its default) / True do, so the outputs are its outputs; with these
  settings they differ from the exact search's ('never') in some rows."""
  d, model, fast, run = hf_s2s[name]
  src = sources.load('seq2seq', run)
  cfg = src.model_config
  (s, smask), _ = batch(name, src.tokenizer, cfg)
  steps = 24

  def search(stopping):
    return np.asarray(dec.beam_search(s2s.Seq2Seq(cfg.replace(decode=True)), src.params,
                                      jnp.asarray(s), steps, beam=4, alpha=alpha, form='length',
                                      stopping=stopping))
  with torch.no_grad():
    ref = model.generate(input_ids=torch.tensor(s, dtype=torch.long),
                         attention_mask=torch.tensor(smask.astype(np.int64)),
                         max_new_tokens=steps, num_beams=4, do_sample=False,
                         length_penalty=alpha, early_stopping=hf_stopping).numpy()[:, 1:]
  def cut(row):
    row = [int(t) for t in row if t != cfg.pad_id]
    return row[:row.index(cfg.eos_id) + 1] if cfg.eos_id in row else row
  got = [cut(r) for r in search(ours)]
  assert got == [cut(r) for r in ref]
  if name == 'bart':             # the rule mattered: the exact search ends elsewhere
    assert got != [cut(r) for r in search('never')]
  with pytest.raises(ValueError, match='stopping must be one of'):
    search('early')
