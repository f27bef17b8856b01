"""Hugging Face checkpoints as other tools write them: config defaults, untied MLM heads,
bf16 weights, tokenizer.json files with padding/truncation settings, keys of old configs.

Each case is checked against `transformers` itself, as in tests/test_hf_convert.py, whose
tiny-model builders it reuses.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import LazyModule  # noqa: E402
from test_hf_convert import (TEXTS, byte_bpe, make_bert, make_roberta,  # noqa: E402
                             padded_batch, randomize, torch_out, wordpiece)

torch = LazyModule('torch')
tf = LazyModule('transformers')

from translearn_jax import convert  # noqa: E402
from translearn_jax.errors import DataError  # noqa: E402
from translearn_jax.models import lm as lm_models  # noqa: E402
from translearn_jax.transfer import sources  # noqa: E402


def _save(d, model, fast, edit=None):
  model.save_pretrained(d)
  fast.save_pretrained(d)
  if edit:
    p = os.path.join(d, 'config.json')
    conf = json.load(open(p))
    edit(conf)
    json.dump(conf, open(p, 'w'))


def _encoder(kind, **kw):
  """An unsaved tiny BertForMaskedLM / RobertaForMaskedLM (`kw`: config fields)."""
  return (make_bert if kind == 'bert' else make_roberta)(None, save=False, **kw)


def _mlm_logits(run, texts=TEXTS):
  src = sources.load('mlm', run)
  tok = src.tokenizer
  toks, mask = padded_batch(tok, texts, lambda x: [tok.bos_id] + x + [tok.eos_id])
  # jitted: one compiled program, not hundreds of eager one-op programs
  logits = np.asarray(jax.jit(lm_models.make(src.model_config).apply)(
      {'params': src.params}, jnp.asarray(toks), mask=jnp.asarray(mask)))
  return toks, mask, logits


@pytest.mark.parametrize('kind', ['bert', 'roberta'])
def test_untied_mlm_heads_import_and_export_with_transformers_logits(tmp_path, kind):
  """Untied, transformers 5 computes with the decoder's own bias: the import reads it (not
  the stale `cls.predictions.bias` / `lm_head.bias`), the export writes it."""
  model, fast = _encoder(kind, tie_word_embeddings=False)
  d, run, out = (str(tmp_path / n) for n in ('hf', 'run', 'out'))
  _save(d, model, fast)
  convert.import_hf(d, run)
  toks, mask, ours = _mlm_logits(run)
  ref = torch_out(model, toks, mask).logits.numpy()
  np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=1e-4)
  convert.export_hf(run, out)
  again = tf.AutoModelForMaskedLM.from_pretrained(out).eval()
  np.testing.assert_allclose(torch_out(again, toks, mask).logits.numpy()[mask], ref[mask],
                             atol=1e-4, rtol=1e-4)


def test_bf16_weights_and_google_bert_config_keys_import(tmp_path):
  """bert-base-chinese-style config keys transformers never reads, weights stored in bf16."""
  model, fast = _encoder('bert')
  model = model.to(torch.bfloat16)
  d, run = str(tmp_path / 'hf'), str(tmp_path / 'run')
  _save(d, model, fast, lambda c: c.update(
      directionality='bidi', pooler_fc_size=32, pooler_num_attention_heads=4,
      pooler_num_fc_layers=3, pooler_size_per_head=8, pooler_type='first_token_transform',
      output_past=True, _num_labels=2))
  convert.import_hf(d, run)
  toks, mask, ours = _mlm_logits(run)
  ref = torch_out(model.float(), toks, mask).logits.numpy()    # the same bf16-rounded weights
  np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-3, rtol=1e-3)


def _gpt2(d, edit=None, **kw):
  tk = byte_bpe(['<|endoftext|>'])
  eot = tk.token_to_id('<|endoftext|>')
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<|endoftext|>',
                                    eos_token='<|endoftext|>', unk_token='<|endoftext|>')
  cfg = tf.GPT2Config(vocab_size=tk.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                      n_head=4, bos_token_id=eot, eos_token_id=eot, **kw)
  model = randomize(tf.GPT2LMHeadModel(cfg))
  _save(d, model, fast, edit)
  return model


def test_config_keys_left_out_take_transformers_defaults(tmp_path):
  # GPT-2 without activation_function: transformers computes gelu_new (tanh), not exact gelu
  def drop(c):
    del c['activation_function']
    c.update(n_special=0, predict_special_tokens=True)    # gpt2-medium's unread keys
  d, run = str(tmp_path / 'gpt2'), str(tmp_path / 'run_gpt2')
  model = _gpt2(d, drop, activation_function='gelu_new')
  convert.import_hf(d, run)
  src = sources.load('lm', run)
  assert src.model_config.activation == 'gelu_tanh'
  toks = np.asarray([[src.tokenizer.eos_id] + src.tokenizer.encode(TEXTS[0])])
  ours = np.asarray(jax.jit(lm_models.make(src.model_config).apply)({'params': src.params},
                                                                    jnp.asarray(toks)))
  ref = torch_out(model, toks, np.ones_like(toks, bool)).logits.numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)

  # GPT-NeoX: transformers' defaults (parallel residual, a quarter of each head rotary)
  # are layouts this project does not compute, so a config leaving them out is refused
  tk = byte_bpe(['<|endoftext|>'])
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='<|endoftext|>')
  cfg = tf.GPTNeoXConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                         use_parallel_residual=False,
                         rope_parameters={'rope_theta': 10000.0, 'partial_rotary_factor': 1.0,
                                          'rope_type': 'default'})
  neox = tf.GPTNeoXForCausalLM(cfg)
  for key, match in (('use_parallel_residual', "no 'use_parallel_residual', which transformers "
                      'then takes as True'),
                     ('rope_parameters', 'partial_rotary_factor=0.25 is not supported')):
    d = str(tmp_path / f'neox_{key}')
    _save(d, neox, fast, lambda c: c.pop(key))
    with pytest.raises(DataError, match=match) as e:
      convert.import_hf(d, str(tmp_path / f'run_{key}'))
    assert os.path.join(d, 'config.json') in str(e.value)


def test_gpt_neox_with_an_odd_head_size_is_refused_both_ways(tmp_path):
  """A head of 9 dimensions: transformers' GPT-NeoX cannot run it (its rotary tables are
  10 wide), and this project's rotary leaves the last dimension unrotated."""
  from translearn_jax.convert import hf
  tk = byte_bpe(['<|endoftext|>'])
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='<|endoftext|>')
  neox = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
      vocab_size=tk.get_vocab_size(), hidden_size=36, num_hidden_layers=1,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
      use_parallel_residual=False, rope_parameters={'rope_theta': 10000.0,
                                                    'partial_rotary_factor': 1.0,
                                                    'rope_type': 'default'}))
  d = str(tmp_path / 'neox')
  _save(d, neox, fast)
  with pytest.raises(DataError, match=r'config\.json: hidden_size=36 / num_attention_heads=4 '
                                      r'is a head size of 9'):
    convert.import_hf(d, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  cfg = lm_models.config_from(ml_collections.ConfigDict(dict(
      arch='transformer', d_model=36, num_heads=4, num_layers=1, d_ff=64, max_len=64,
      positions='rotary', dropout=0.0, attention_dropout=0.0, tie_embeddings=False)), 300)
  with pytest.raises(DataError, match=r'model\.d_model=36 / model\.num_heads=4 is a head size '
                                      r'of 9'):
    hf.GPT_NEOX.hf_config(cfg, None)


def test_roberta_with_another_hidden_act_is_refused_both_ways(tmp_path):
  """transformers' RoBERTa LM head applies exact GELU whatever hidden_act says."""
  from translearn_jax.convert import hf
  model, fast = _encoder('roberta', hidden_act='gelu_new')
  d = str(tmp_path / 'hf')
  _save(d, model, fast)
  with pytest.raises(DataError, match="hidden_act='gelu_new' is not supported for RoBERTa"):
    convert.import_hf(d, str(tmp_path / 'run'))
  model, fast = _encoder('roberta')
  _save(d, model, fast)
  convert.import_hf(d, str(tmp_path / 'run'))
  src = sources.load('mlm', str(tmp_path / 'run'))
  with pytest.raises(DataError, match="RoBERTa's LM head always applies exact GELU; this run "
                                      "has model.activation='gelu_tanh'"):
    hf.ROBERTA.hf_config(src.model_config.replace(activation='gelu_tanh'), src.tokenizer)


def test_tokenizer_json_padding_and_truncation_settings_are_not_applied(tmp_path):
  from translearn_jax.data.hf_tokenizer import HFTokenizer
  tk = wordpiece()
  plain = HFTokenizer(tk.to_str(), {'cls': '[CLS]', 'sep': '[SEP]', 'pad': '[PAD]'})
  tk.enable_padding(length=12, pad_id=tk.token_to_id('[PAD]'), pad_token='[PAD]')
  tk.enable_truncation(max_length=4)
  padded = HFTokenizer(tk.to_str(), {'cls': '[CLS]', 'sep': '[SEP]', 'pad': '[PAD]'})
  long = ' '.join(TEXTS)
  assert padded.encode('Anna') == plain.encode('Anna') and len(plain.encode('Anna')) < 4
  assert padded.encode(long) == plain.encode(long) and len(plain.encode(long)) > 12
  assert padded.encode_batch(TEXTS) == plain.encode_batch(TEXTS)


def test_roberta_whose_config_pads_with_another_id_than_its_tokenizer_is_refused(tmp_path):
  """transformers gives every token of the config's pad id (here `<s>`) the padding
  position; this project numbers positions by place: an import would score differently."""
  model, fast = _encoder('roberta')
  d = str(tmp_path / 'hf')
  _save(d, model, fast, lambda c: c.update(pad_token_id=0))
  with pytest.raises(DataError, match=r'config\.json: pad_token_id=0 but the tokenizer pads '
                                      r'with id 1'):
    convert.import_hf(d, str(tmp_path / 'run'))


def test_roberta_config_without_pad_token_id_takes_robertas_default(tmp_path):
  """RobertaConfig's pad_token_id defaults to 1: the positions (offset 2) and the padding id
  a row without a mask is read with (not 0, `<s>`) both follow it, and the run exports."""
  model, fast = _encoder('roberta')
  d, run = str(tmp_path / 'hf'), str(tmp_path / 'run')
  _save(d, model, fast, lambda c: c.pop('pad_token_id'))
  convert.import_hf(d, run)
  src = sources.load('mlm', run)
  tok = src.tokenizer
  assert src.model_config.pad_id == tok.pad_id == 1 and src.model_config.position_offset == 2
  toks = np.asarray([[tok.bos_id] + tok.encode(TEXTS[0]) + [tok.eos_id]])
  net = lm_models.make(src.model_config)
  ours = np.asarray(jax.jit(lambda p, t: lm_models.logits(net, p, t))(src.params,
                                                                      jnp.asarray(toks)))
  ref = torch_out(model, toks, np.ones_like(toks, bool)).logits.numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  convert.export_hf(run, str(tmp_path / 'out'))


@pytest.mark.parametrize('kind', ['gpt2', 'bert'])
def test_tied_config_with_a_head_of_other_values_is_refused(tmp_path, kind):
  """transformers 5 does not tie a file's head to the embeddings when the two differ, whatever
  tie_word_embeddings says (or its default, True, when absent): refused, naming the tensor;
  with tie_word_embeddings false the same file imports untied, as transformers computes it."""
  d, run = str(tmp_path / 'hf'), str(tmp_path / 'run')
  if kind == 'gpt2':
    model = _gpt2(d, lambda c: c.pop('tie_word_embeddings'), tie_word_embeddings=False)
    head, embed = 'lm_head.weight', 'transformer.wte.weight'
  else:
    model, fast = _encoder('bert', tie_word_embeddings=False)
    _save(d, model, fast, lambda c: c.update(tie_word_embeddings=True))
    head, embed = 'cls.predictions.decoder.weight', 'bert.embeddings.word_embeddings.weight'
  with pytest.raises(DataError, match=f'tensor {head} differs from {embed}, which the config '
                                      'ties it to') as e:
    convert.import_hf(d, run)
  assert 'tie_word_embeddings' in str(e.value) and not os.path.exists(run)
  p = os.path.join(d, 'config.json')
  json.dump({**json.load(open(p)), 'tie_word_embeddings': False}, open(p, 'w'))
  convert.import_hf(d, run)
  src = sources.load('run', run)
  tok = src.tokenizer
  frame = (lambda x: [tok.eos_id] + x) if kind == 'gpt2' else (
      lambda x: [tok.bos_id] + x + [tok.eos_id])
  toks, mask = padded_batch(tok, TEXTS, frame)
  ours = np.asarray(jax.jit(lm_models.make(src.model_config).apply)(
      {'params': src.params}, jnp.asarray(toks), **({} if kind == 'gpt2' else
                                                     {'mask': jnp.asarray(mask)})))
  ref = torch_out(model, toks, mask).logits.numpy()
  np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=1e-4)


def _neox(d, edit=None):
  """A tiny GPT-NeoX LM with this project's rotary layout, saved in `d` (`edit`: config.json)."""
  tk = byte_bpe(['<|endoftext|>'])
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token='<|endoftext|>')
  cfg = tf.GPTNeoXConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                         use_parallel_residual=False,
                         rope_parameters={'rope_theta': 10000.0, 'partial_rotary_factor': 1.0,
                                          'rope_type': 'default'})
  _save(d, randomize(tf.GPTNeoXForCausalLM(cfg)), fast, edit)


@pytest.mark.parametrize('edit,match', [
    # transformers reads `type` as `rope_type` (its old name): linear scaling, not 'default'
    (lambda c: c.update(rope_parameters={'type': 'linear', 'factor': 2.0, 'rope_theta': 10000.0,
                                         'partial_rotary_factor': 1.0}),
     "rope_parameters.type='linear'"),
    # transformers 5 reads rotary_emb_base, not a top-level rope_theta (4.x wrote both)
    (lambda c: (c.pop('rope_parameters'), c.update(rotary_pct=1.0, rope_theta=10000.0,
                                                   rotary_emb_base=20000)),
     'rotary_emb_base=20000'),
    (lambda c: c.update(rope_theta=20000.0), 'rope_theta=20000.0'),
    (lambda c: c.update(rotary_pct=0.25), 'rotary_pct=0.25')])
def test_neox_rotary_settings_under_any_key_transformers_reads_are_checked(tmp_path, edit, match):
  """GPT-NeoX configs state the rotary base, fraction and type under several keys (old and new
  names, which transformers versions read in different orders): any of them other than this
  project's layout is refused naming it, never imported with the wrong rotation."""
  d = str(tmp_path / 'hf')
  _neox(d, edit)
  with pytest.raises(DataError, match=match):
    convert.import_hf(d, str(tmp_path / 'run'))


def test_neox_config_of_transformers_4_with_every_rotary_key_imports(tmp_path):
  """transformers 4.4x wrote rotary_pct, partial_rotary_factor, rotary_emb_base and rope_theta
  side by side: when they all state this project's layout, the file imports."""
  d, run = str(tmp_path / 'hf'), str(tmp_path / 'run')
  _neox(d, lambda c: (c.pop('rope_parameters'), c.update(
      rotary_pct=1.0, partial_rotary_factor=1.0, rotary_emb_base=10000, rope_theta=10000,
      rope_scaling=None)))
  model = tf.GPTNeoXForCausalLM.from_pretrained(d).eval()
  convert.import_hf(d, run)
  src = sources.load('lm', run)
  toks = np.asarray([[src.tokenizer.eos_id] + src.tokenizer.encode(TEXTS[0])])
  ours = np.asarray(jax.jit(lm_models.make(src.model_config).apply)({'params': src.params},
                                                                    jnp.asarray(toks)))
  ref = torch_out(model, toks, np.ones_like(toks, bool)).logits.numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('kind', ['bart', 'marian'])
def test_seq2seq_num_hidden_layers_other_than_encoder_layers_is_refused(tmp_path, kind):
  """transformers takes `num_hidden_layers` (an alias of `encoder_layers`) as the encoder depth:
  a config where the two differ builds another encoder there, so it is refused naming both."""
  import test_hf_seq2seq as s2s_tests
  d = str(tmp_path / 'hf')
  model, fast = getattr(s2s_tests, f'make_{kind}')(d)
  _save(d, model, fast, lambda c: c.update(num_hidden_layers=c['encoder_layers'] - 1))
  with pytest.raises(DataError, match='num_hidden_layers=1 and encoder_layers=2 differ'):
    convert.import_hf(d, str(tmp_path / 'run'))
  _save(d, model, fast, lambda c: c.update(num_hidden_layers=c['encoder_layers']))
  convert.import_hf(d, str(tmp_path / 'run'))


@pytest.mark.parametrize('kind,key,value,match', [
    ('gpt2', 'activation_function', ['gelu'], "activation_function=\\['gelu'\\] is not supported"),
    ('gpt2', 'layer_norm_epsilon', None, "layer_norm_epsilon"),
    ('neox', 'rope_parameters', 'default', "rope_parameters='default' is not"),
    ('bert', 'hidden_act', {'gelu': 1}, "hidden_act=\\{'gelu': 1\\} is not supported"),
    ('bert', 'layer_norm_eps', None, "layer_norm_eps"),
    # no token-type table: transformers cannot run it (every position looks up type 0)
    ('bert', 'type_vocab_size', 0, "type_vocab_size=0 is not supported")])
def test_config_values_of_the_wrong_type_are_one_error_naming_the_key(tmp_path, kind, key, value,
                                                                      match):
  """A value transformers refuses too (a list for an activation, null for an epsilon) was a bare
  TypeError or ValueError traceback; it is one DataError naming the key."""
  d = str(tmp_path / 'hf')
  edit = lambda c: c.update({key: value})
  if kind == 'gpt2':
    _gpt2(d, edit)
  elif kind == 'neox':
    _neox(d, edit)
  else:
    model, fast = _encoder(kind)
    _save(d, model, fast, edit)
  with pytest.raises(DataError, match=match):
    convert.import_hf(d, str(tmp_path / 'run'))
