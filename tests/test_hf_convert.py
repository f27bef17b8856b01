"""Hugging Face import/export, checked against `transformers` itself (issue #15).

Tiny randomly initialised GPT-2, BERT and RoBERTa models are built with
`transformers`, their weights drawn at a scale where a wrong transpose, split,
offset or epsilon moves the logits by far more than the tolerance, and saved
with `save_pretrained`; tokenizers are trained here with `tokenizers` on a
made-up corpus and saved the same way.
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
from tokenizers import (Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, processors, trainers)

from translearn_jax import convert  # noqa: E402
from translearn_jax.convert import __main__ as convert_cli  # noqa: E402
from translearn_jax.convert import safetensors_io  # noqa: E402
from translearn_jax.errors import ConfigError, DataError  # noqa: E402
from translearn_jax.models import lm as lm_models  # noqa: E402
from translearn_jax.transfer import sources  # noqa: E402

WORDS = ('the river ran past old stone mills while children counted boats and merchants '
         'argued over the price of grain under a grey sky Anna Berlin quietly').split()
TEXTS = ['The river ran past old stone mills.', 'Anna counted boats in Berlin, quietly!',
         'merchants argued over grain']


def corpus(n=400, seed=0):
  rng = np.random.default_rng(seed)
  return [' '.join(rng.choice(WORDS, rng.integers(4, 14))).capitalize() + '.' for _ in range(n)]


def byte_bpe(specials, roberta=False):
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(corpus(), trainers.BpeTrainer(
      vocab_size=400, special_tokens=specials, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  if roberta:
    tk.post_processor = processors.RobertaProcessing(('</s>', tk.token_to_id('</s>')),
                                                     ('<s>', tk.token_to_id('<s>')))
  return tk


def wordpiece():
  tk = Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tk.normalizer = normalizers.BertNormalizer(lowercase=True)
  tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tk.decoder = decoders.WordPiece()
  tk.train_from_iterator(corpus(), trainers.WordPieceTrainer(
      vocab_size=200, show_progress=False,
      special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']))
  cls_, sep = tk.token_to_id('[CLS]'), tk.token_to_id('[SEP]')
  tk.post_processor = processors.TemplateProcessing(
      single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
      special_tokens=[('[CLS]', cls_), ('[SEP]', sep)])
  return tk


def randomize(model, std=0.2, seed=0):
  """Every weight N(0, std) (LayerNorm scales around 1): far from HF's tiny init."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = name.endswith('weight') and p.dim() == 1     # LayerNorm weights
      p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if scale else 0.0))
  return model.eval()


def make_gpt2(d, tie=True):
  tk = byte_bpe(['<|endoftext|>'])
  eot = tk.token_to_id('<|endoftext|>')
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<|endoftext|>',
                                    eos_token='<|endoftext|>', unk_token='<|endoftext|>')
  cfg = tf.GPT2Config(vocab_size=tk.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                      n_head=4, bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=tie)
  m = randomize(tf.GPT2LMHeadModel(cfg))
  m.save_pretrained(d)
  fast.save_pretrained(d)
  return m, fast


def make_neox(d, tie=False):
  """A GPT-NeoX LM with this project's rotary layout (full rotary, sequential residual) and
  Pythia's second special token, `<|padding|>`, which its greedy continuations produce
  (generate() bans no special token by default)."""
  tk = byte_bpe(['<|endoftext|>', '<|padding|>'])
  eot = tk.token_to_id('<|endoftext|>')
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<|endoftext|>',
                                    eos_token='<|endoftext|>', unk_token='<|endoftext|>',
                                    pad_token='<|padding|>')
  cfg = tf.GPTNeoXConfig(
      vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64, use_parallel_residual=False,
      rope_parameters={'rope_theta': 10000.0, 'partial_rotary_factor': 1.0,
                       'rope_type': 'default'},
      tie_word_embeddings=tie, bos_token_id=eot, eos_token_id=eot, hidden_act='gelu_new')
  m = randomize(tf.GPTNeoXForCausalLM(cfg))
  if not tie:
    with torch.no_grad():
      m.get_output_embeddings().weight[tk.token_to_id('<|padding|>')] *= 3.0
  m.save_pretrained(d)
  fast.save_pretrained(d)
  return m, fast


def make_bert(d, cls=None, save=True, **kw):
  """(model, tokenizer), saved in `d` unless `save` is False; `kw`: BertConfig fields."""
  tk = wordpiece()
  fast = tf.BertTokenizerFast(tokenizer_object=tk)
  cfg = tf.BertConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                      pad_token_id=tk.token_to_id('[PAD]'), **kw)
  m = randomize((cls or tf.BertForMaskedLM)(cfg))
  if save:
    m.save_pretrained(d)
    fast.save_pretrained(d)
  return m, fast


def make_roberta(d, save=True, **kw):
  tk = byte_bpe(['<s>', '<pad>', '</s>', '<unk>', '<mask>'], roberta=True)
  fast = tf.RobertaTokenizerFast(tokenizer_object=tk, bos_token='<s>', eos_token='</s>',
                                 sep_token='</s>', cls_token='<s>', unk_token='<unk>',
                                 pad_token='<pad>', mask_token='<mask>')
  cfg = tf.RobertaConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=66,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                         **{'layer_norm_eps': 1e-5, **kw})
  m = randomize(tf.RobertaForMaskedLM(cfg))
  if save:
    m.save_pretrained(d)
    fast.save_pretrained(d)
  return m, fast


@pytest.fixture(scope='module')
def hf_models(tmp_path_factory):
  """{name: (hf dir, torch model, HF tokenizer, imported run dir)}."""
  root = tmp_path_factory.mktemp('hf')
  out = {}
  for name, make in (('gpt2', make_gpt2), ('gpt_neox', make_neox), ('bert', make_bert),
                     ('roberta', make_roberta)):
    d, run = str(root / name), str(root / f'run_{name}')
    model, fast = make(d)
    report = convert.import_hf(d, run)
    assert report['model_type'] == name and not report['unused_tensors']
    out[name] = (d, model, fast, run)
  return out


def padded_batch(tok, texts, frame):
  ids = [frame(tok.encode(t)) for t in texts]
  width = max(map(len, ids))
  toks = np.full((len(ids), width), tok.pad_id, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for r, x in enumerate(ids):
    toks[r, :len(x)], mask[r, :len(x)] = x, True
  return toks, mask


def torch_out(model, toks, mask, **kw):
  with torch.no_grad():
    return model(input_ids=torch.tensor(toks, dtype=torch.long),
                 attention_mask=torch.tensor(mask.astype(np.int64)), output_hidden_states=True,
                 **kw)


# -- import: the same function as transformers -------------------------------------

@pytest.mark.parametrize('name,positions', [('gpt2', 'learned'), ('gpt_neox', 'rotary')])
def test_causal_lm_import_same_logits_and_states_batched_with_padding(hf_models, name,
                                                                      positions):
  d, model, fast, run = hf_models[name]
  src = sources.load('lm', run)
  assert src.model_config.layer_norm_eps == 1e-5 and src.model_config.positions == positions
  tok = src.tokenizer
  toks, mask = padded_batch(tok, TEXTS, lambda x: [tok.eos_id] + x)
  ref = torch_out(model, toks, mask)
  net = lm_models.make(src.model_config)
  # both outputs by one jitted program (eagerly, each operation compiles a program of its own)
  logits, states = map(np.asarray, jax.jit(lambda p, t: (
      net.apply({'params': p}, t), net.apply({'params': p}, t, return_hidden=True)))(
          src.params, jnp.asarray(toks)))
  assert np.abs(ref.logits.numpy()).max() > 1.0       # weights large enough to matter
  np.testing.assert_allclose(logits[mask], ref.logits.numpy()[mask], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(states[mask], ref.hidden_states[-1].numpy()[mask], atol=1e-4,
                             rtol=1e-4)


@pytest.mark.parametrize('name', ['gpt2', 'gpt_neox'])
def test_greedy_generation_equals_transformers_generate(hf_models, name):
  from translearn_jax.generation import sample
  d, model, fast, run = hf_models[name]
  config, tok, mcfg, params = sample.load_run(run)
  prompts = ['The river', 'Anna counted boats in']
  for cached in (True, False):
    for prompt in prompts:
      [text], _ = sample.sample(mcfg, params, tok, [prompt], 12, temperature=0, cached=cached)
      ids = [tok.eos_id] + tok.encode(prompt)
      with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             use_cache=cached, pad_token_id=tok.eos_id)
      new = out[0, len(ids):].tolist()
      assert text == tok.decode(new)
      assert text == fast.decode(new[:new.index(tok.eos_id)] if tok.eos_id in new else new,
                                 skip_special_tokens=True)
      if name == 'gpt_neox' and prompt == prompts[0]:   # generate() produced <|padding|>
        assert fast.pad_token_id in new


def test_sampled_continuation_that_ends_at_once_is_empty(tmp_path):
  """A GPT-2 whose `<|endoftext|>` is its last id (as the real one's, 50256) and always the
  most likely: `generate` gives only EOS, so the continuation is ''. The PAD ids written
  after EOS are id 0, '!' in a byte-level vocabulary, and the tokenizer's decode skips a
  leading EOS: the continuation read '!!!'."""
  from translearn_jax.generation import sample
  tk = byte_bpe([])
  tk.add_special_tokens(['<|endoftext|>'])
  eot = tk.token_to_id('<|endoftext|>')
  fast = tf.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token='<|endoftext|>',
                                    eos_token='<|endoftext|>', unk_token='<|endoftext|>')
  cfg = tf.GPT2Config(vocab_size=tk.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                      n_head=4, bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=False)
  m = randomize(tf.GPT2LMHeadModel(cfg))
  with torch.no_grad():           # every position's hidden state is ones: EOS scores 32
    m.transformer.ln_f.weight.zero_()
    m.transformer.ln_f.bias.fill_(1.0)
    m.lm_head.weight.zero_()
    m.lm_head.weight[eot] = 1.0
  m.save_pretrained(tmp_path / 'hf')
  fast.save_pretrained(tmp_path / 'hf')
  convert.import_hf(str(tmp_path / 'hf'), str(tmp_path / 'run'))
  _, tok, mcfg, params = sample.load_run(str(tmp_path / 'run'))
  assert eot != 0 and fast.decode([0]) == '!'
  ids = [eot] + fast.encode('The river')
  with torch.no_grad():
    assert m.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                      pad_token_id=eot)[0, len(ids):].tolist() == [eot]
  for temperature in (0.0, 1.0):
    texts, _ = sample.sample(mcfg, params, tok, ['The river', ''], 4, temperature=temperature)
    assert texts == ['', '']
    texts, _ = sample.sample(mcfg, params, tok, ['The river', ''], 4, temperature=temperature,
                             with_prompt=True)
    assert texts == ['The river', '']


def test_zero_shot_scores_of_an_imported_gpt2_are_transformers_log_probs(hf_models):
  """Zero-shot LM scoring (fusion.zero_shot) on the imported GPT-2: log p(verbalisation |
  <|endoftext|> text), the verbalisation encoded after a space as inside running text."""
  from translearn_jax.fusion import zero_shot
  d, model, fast, run = hf_models['gpt2']
  src = sources.load('lm', run)
  verbs = ['It was great.', 'It was awful.']
  scores, prior = zero_shot.lm_scores(lm_models.make(src.model_config), src.params,
                                      src.tokenizer, TEXTS[:2], verbs, max_len=64)
  eot = fast.eos_token_id
  for i, text in enumerate(TEXTS[:2]):
    for j, verb in enumerate(verbs):
      prefix, cont = [eot] + fast.encode(text), fast.encode(' ' + verb)
      with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prefix + cont])).logits[0], -1).numpy()
      want = sum(logp[len(prefix) - 1 + k, t] for k, t in enumerate(cont))
      np.testing.assert_allclose(scores[i, j], want, rtol=1e-4, atol=1e-3)
  assert prior.shape == (2,) and np.isfinite(prior).all()


def test_encoder_import_same_mlm_logits_and_states(hf_models):
  for name in ('bert', 'roberta'):
    d, model, fast, run = hf_models[name]
    src = sources.load('mlm', run)
    cfg, tok = src.model_config, src.tokenizer
    assert cfg.position_offset == (2 if name == 'roberta' else 0) and cfg.pad_id == tok.pad_id
    toks, mask = padded_batch(tok, TEXTS, lambda x: [tok.bos_id] + x + [tok.eos_id])
    ref = torch_out(model, toks, mask)
    net = lm_models.make(cfg)
    # the three outputs below by one jitted program, not one program per operation
    logits, states, own = map(np.asarray, jax.jit(lambda p, t, m: (
        net.apply({'params': p}, t, mask=m), net.apply({'params': p}, t, mask=m,
                                                        return_hidden=True),
        net.apply({'params': p}, t)))(src.params, jnp.asarray(toks), jnp.asarray(mask)))
    assert np.abs(ref.logits.numpy()).max() > 1.0
    np.testing.assert_allclose(logits[mask], ref.logits.numpy()[mask], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(states[mask], ref.hidden_states[-1].numpy()[mask], atol=1e-4,
                               rtol=1e-4)
    # without an explicit mask the model's own pad id marks the padding
    np.testing.assert_allclose(own[mask], logits[mask], atol=1e-5)


@pytest.fixture(scope='module')
def bert_pretraining(tmp_path_factory):
  """A BertForPreTraining directory (pooler + NSP head), imported: (hf dir, model, report, run)."""
  root = tmp_path_factory.mktemp('bert_pt')
  d, run = str(root / 'hf'), str(root / 'run')
  model, _ = make_bert(d, cls=tf.BertForPreTraining)
  return d, model, convert.import_hf(d, run), run


def test_bert_pooler_kept_or_dropped(bert_pretraining, tmp_path):
  d, model, report, run = bert_pretraining
  assert report['unused_tensors'] == ['cls.seq_relationship.bias', 'cls.seq_relationship.weight']
  src = sources.load('mlm', run)
  assert src.model_config.pooler and 'pooler' in src.params
  tok = src.tokenizer
  toks, mask = padded_batch(tok, TEXTS, lambda x: [tok.bos_id] + x + [tok.eos_id])
  net = lm_models.make(src.model_config)   # one jitted program, not one per operation
  _, pooled = jax.jit(lambda p, t, m: net.apply({'params': p}, t, mask=m, return_hidden='pooled'))(
      src.params, jnp.asarray(toks), jnp.asarray(mask))
  with torch.no_grad():
    ref = model.bert(input_ids=torch.tensor(toks, dtype=torch.long),
                     attention_mask=torch.tensor(mask.astype(np.int64))).pooler_output
  np.testing.assert_allclose(np.asarray(pooled), ref.numpy(), atol=1e-4, rtol=1e-4)
  report = convert.import_hf(d, str(tmp_path / 'dropped'), drop_pooler=True)
  assert report['absent_groups'] == ['pooler']
  assert 'bert.pooler.dense.weight' in report['unused_tensors']
  src = sources.load('mlm', str(tmp_path / 'dropped'))
  assert not src.model_config.pooler and 'pooler' not in src.params
  # a classifier asking for the pooler of a checkpoint without one: the field, before any init
  from translearn_jax.downstream import models as task_models
  ask = ml_collections.ConfigDict({'max_tokens': 32, 'pooling': 'pooler', 'lora_rank': 0})
  with pytest.raises(ConfigError, match=r"config\.model\.pooling='pooler': the pretrained "
                                        r"model at init\.path has no pooler .*'cls' or 'mean'"):
    task_models.lm_backbone_config(src, ask)
  assert task_models.lm_backbone_config(sources.load('mlm', run), ask).pooler


def test_tokenizers_give_transformers_ids(hf_models):
  from translearn_jax.downstream.classification import encode_pieces
  for name in ('gpt2', 'bert', 'roberta'):
    d, _, fast, run = hf_models[name]
    tok = sources.load('run', run).tokenizer
    text = TEXTS + ['Unseen wörds: zebra-crossings, 1999!']
    for t in text:
      assert tok.encode(t) == fast(t, add_special_tokens=False)['input_ids'], (name, t)
    assert tok.encode_batch(text) == [fast(t, add_special_tokens=False)['input_ids']
                                      for t in text]
    if name != 'gpt2':    # an encoder's rows are framed as the checkpoint's own tokenizer does
      toks, mask = encode_pieces(text, tok, 40, causal=False)
      for r, t in enumerate(text):
        assert toks[r][mask[r]].tolist() == fast(t)['input_ids'], (name, t)
      assert tok.mask_id == fast.mask_token_id and tok.pad_id == fast.pad_token_id
    assert tok.decode(tok.encode(TEXTS[0])).strip().lower() == TEXTS[0].lower()


# -- export: transformers loads what a run of this project wrote ---------------------

@pytest.mark.parametrize('positions,hf_class', [('learned', 'GPT2LMHeadModel'),
                                                 ('rotary', 'GPTNeoXForCausalLM')])
def test_export_lm_run_loads_in_transformers(tmp_path, positions, hf_class):
  from conftest import lm_config
  from translearn_jax.pretraining import lm
  run = str(tmp_path / 'lm')
  lm.train_and_evaluate(lm_config(**{'train.steps': 2, 'model.positions': positions,
                                     'model.num_layers': 2}), run)
  out = str(tmp_path / 'hf')
  convert.export_hf(run, out)
  src = sources.load('lm', run)
  model = tf.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(model).__name__ == hf_class
  toks = np.asarray([[src.tokenizer.eos_id] + src.tokenizer.encode('the minister said today')])
  ours = np.asarray(jax.jit(lm_models.make(src.model_config).apply)(   # one program
      {'params': src.params}, jnp.asarray(toks)))
  ref = torch_out(model, toks, np.ones_like(toks, bool)).logits.numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)
  check_exported_tokenizer(src.tokenizer, out)


SAMPLES = ['The minister said on Tuesday that talks would resume.', '  extra   spaces here ',
           'Ünïcödé ǅ text, 1999 — “quotes”', 'zqxj unseenword']


def check_exported_tokenizer(tok, out):
  """transformers' tokenizer of the export gives the run's sentencepiece ids (and the
  tokenizer.json itself does on a literal user-defined piece inside text, which
  transformers splits off as an added token first)."""
  from translearn_jax.data.hf_tokenizer import HFTokenizer
  fast = tf.AutoTokenizer.from_pretrained(out)
  for t in SAMPLES:
    assert fast(t, add_special_tokens=False)['input_ids'] == tok.encode(t), t
  twin = HFTokenizer.load(out)
  for t in SAMPLES + ['a<mask>b', 'the <mask> of']:
    assert twin.encode(t) == tok.encode(t), t
  assert (fast.pad_token_id, fast.eos_token_id) == (tok.pad_id, tok.eos_id)
  return fast


def test_export_of_what_hf_cannot_compute_is_one_clear_error(hf_models, tmp_path):
  from translearn_jax.convert import hf
  src = sources.load('lm', hf_models['gpt2'][3])
  with pytest.raises(DataError, match="GPT-2 has learned absolute positions; this run has "
                                      "model.positions='rotary'"):
    hf.GPT2.hf_config(src.model_config.replace(positions='rotary'), src.tokenizer)
  enc = sources.load('mlm', hf_models['bert'][3])
  with pytest.raises(DataError, match="bert is a post-LN encoder with learned positions; this "
                                      "run has model.norm='pre'"):
    hf.BERT.hf_config(enc.model_config.replace(norm='pre'), enc.tokenizer)
  lora = dict(enc.params, block_0=dict(enc.params['block_0'], lora_a=np.zeros(2)))
  from translearn_jax.transfer import graft
  with pytest.raises(DataError, match=r"parameters \['block_0/lora_a'\] have no bert "
                                      'counterpart'):
    hf.export_tensors(hf.BERT, enc.model_config, graft.flatten(lora))


def test_export_mlm_run_as_bert_loads_in_transformers(tmp_path):
  from conftest import mlm_config
  from translearn_jax.pretraining import mlm
  run = str(tmp_path / 'mlm')
  mlm.train_and_evaluate(mlm_config(**{'train.steps': 3}), run)
  out = str(tmp_path / 'hf')
  convert.export_hf(run, out)
  src = sources.load('mlm', run)
  model = tf.AutoModelForMaskedLM.from_pretrained(out).eval()
  assert type(model).__name__ == 'BertForMaskedLM'
  tok = src.tokenizer
  toks, mask = padded_batch(tok, TEXTS, lambda x: [tok.bos_id] + x + [tok.eos_id])
  ours = np.asarray(jax.jit(lm_models.make(src.model_config).apply)(   # one program
      {'params': src.params}, jnp.asarray(toks), mask=jnp.asarray(mask)))
  ref = torch_out(model, toks, mask).logits.numpy()
  np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=1e-4)
  fast = check_exported_tokenizer(tok, out)
  assert fast(SAMPLES[0])['input_ids'] == [tok.bos_id] + tok.encode(SAMPLES[0]) + [tok.eos_id]
  assert fast.mask_token_id == tok.mask_id


def test_import_then_export_is_bit_identical(hf_models, tmp_path):
  for name in ('gpt2', 'gpt_neox', 'bert', 'roberta'):
    d, _, _, run = hf_models[name]
    out = str(tmp_path / name)
    convert.export_hf(run, out)
    a, b = safetensors_io.read_weights(d), safetensors_io.read_weights(out)
    assert sorted(a) == sorted(b), name
    for k in a:
      assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (name, k)
    ca, cb = (json.load(open(os.path.join(p, 'config.json'))) for p in (d, out))
    for k in ('vocab_size', 'hidden_size', 'n_embd', 'num_hidden_layers', 'n_layer',
              'intermediate_size', 'tie_word_embeddings', 'use_parallel_residual',
              'max_position_embeddings', 'n_positions', 'layer_norm_eps', 'layer_norm_epsilon',
              'pad_token_id', 'type_vocab_size'):
      assert ca.get(k) == cb.get(k), (name, k)


# -- bad input: one line each, nothing written ---------------------------------------

def _cli_error(capsys, *argv):
  assert convert_cli.main(list(argv)) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and '\n' not in err, err
  return err


def test_bad_input_gives_one_clear_line(hf_models, tmp_path, capsys):
  d = hf_models['bert'][0]
  bin_only = tmp_path / 'bin'
  bin_only.mkdir()
  shutil.copy(os.path.join(d, 'config.json'), bin_only)
  (bin_only / 'pytorch_model.bin').write_bytes(b'\x80\x02}q\x00.')
  err = _cli_error(capsys, 'import-hf', str(bin_only), str(tmp_path / 'r1'))
  assert 'only pytorch_model.bin found' in err and 'weights_only=True' in err
  # the conversion it suggests keeps every tensor (heads too) and then imports
  model = hf_models['bert'][1]
  torch.save(model.state_dict(), bin_only / 'pytorch_model.bin')
  code = err.split('python -c "', 1)[1].split('" (every tensor', 1)[0]
  out = tmp_path / 'converted'
  shutil.copytree(d, out)
  os.remove(out / 'model.safetensors')
  exec(code.replace('OUT_DIR', str(out)), {})
  from safetensors.numpy import load_file
  a, b = load_file(str(out / 'model.safetensors')), load_file(os.path.join(d, 'model.safetensors'))
  assert set(b) <= set(a) and all(np.array_equal(a[k], b[k]) for k in b)
  # sharded pickles (transformers' save_pretrained of a large model): every shard converted
  sharded = tmp_path / 'sharded'
  sharded.mkdir()
  shutil.copy(os.path.join(d, 'config.json'), sharded)
  state = model.state_dict()
  names = sorted(state)
  halves = {'pytorch_model-00001-of-00002.bin': names[:len(names) // 2],
            'pytorch_model-00002-of-00002.bin': names[len(names) // 2:]}
  for shard, keys in halves.items():
    torch.save({k: state[k] for k in keys}, sharded / shard)
  (sharded / 'pytorch_model.bin.index.json').write_text(json.dumps(
      {'weight_map': {k: shard for shard, keys in halves.items() for k in keys}}))
  err = _cli_error(capsys, 'import-hf', str(sharded), str(tmp_path / 'r3'))
  assert 'only sharded pytorch_model.bin.index.json weights found' in err
  code = err.split('python -c "', 1)[1].split('" (every tensor', 1)[0]
  os.remove(out / 'model.safetensors')
  exec(code.replace('OUT_DIR', str(out)), {})
  a = load_file(str(out / 'model.safetensors'))
  assert set(a) == set(names) and all(np.array_equal(a[k], b[k]) for k in b)

  unknown = tmp_path / 'unknown'
  shutil.copytree(d, unknown)
  conf = json.load(open(unknown / 'config.json'))
  (unknown / 'config.json').write_text(json.dumps({**conf, 'model_type': 'llama'}))
  assert "model_type='llama' is not supported" in _cli_error(
      capsys, 'import-hf', str(unknown), str(tmp_path / 'r2'))
  (unknown / 'config.json').write_text(json.dumps({**conf, 'hidden_size': '32'}))
  assert "config.json: 'hidden_size' must be an integer, got '32'" in _cli_error(
      capsys, 'import-hf', str(unknown), str(tmp_path / 'r2'))
  (unknown / 'config.json').write_text(json.dumps({**conf, 'num_attention_heads': 4.0}))
  assert "'num_attention_heads' must be an integer, got 4.0" in _cli_error(
      capsys, 'import-hf', str(unknown), str(tmp_path / 'r2'))
  (unknown / 'config.json').write_text(json.dumps({**conf, 'rope_scaling': {'type': 'x'}}))
  assert "config key 'rope_scaling' is unknown" in _cli_error(
      capsys, 'import-hf', str(unknown), str(tmp_path / 'r2'))

  truncated = tmp_path / 'truncated'
  shutil.copytree(d, truncated)
  w = truncated / 'model.safetensors'
  w.write_bytes(w.read_bytes()[:-100])
  err = _cli_error(capsys, 'import-hf', str(truncated), str(tmp_path / 'r3'))
  assert str(w) in err and 'truncated' in err

  mismatch = tmp_path / 'mismatch'
  shutil.copytree(d, mismatch)
  (mismatch / 'config.json').write_text(json.dumps({**conf, 'intermediate_size': 48}))
  err = _cli_error(capsys, 'import-hf', str(mismatch), str(tmp_path / 'r4'))
  assert 'tensor bert.encoder.layer.0.intermediate.dense.weight has shape (64, 32)' in err
  assert 'the config implies (48, 32)' in err
  assert not any(os.path.exists(tmp_path / f'r{i}') for i in range(1, 5))

  # an existing target is never overwritten
  run = hf_models['bert'][3]
  before = sorted(os.listdir(run))
  assert 'already exists' in _cli_error(capsys, 'import-hf', d, run)
  assert sorted(os.listdir(run)) == before


# -- transfer from an imported checkpoint --------------------------------------------

def test_transfer_configs_fine_tune_an_imported_bert(bert_pretraining, topic_task, conll_task,
                                                      tmp_path):
  """configs/transfer_mr_hf_bert.py end to end (BERT's pooler, its tokenizer's [CLS]/[SEP],
  the graft report) and the CoNLL config's tagger graft, on the imported tiny BERT."""
  from configs import transfer_conll_hf_bert, transfer_mr_hf_bert
  from conftest import set_fields
  from translearn_jax.downstream.classification import ClassificationTask
  from translearn_jax.downstream.tagging import TaggingTask
  from translearn_jax.experiments import classification
  d, model, _, run = bert_pretraining
  fast = tf.AutoTokenizer.from_pretrained(d)
  c = set_fields(transfer_mr_hf_bert.get_config(), {
      'init.path': run, 'data.kind': 'tsv', 'data.path': topic_task, 'model.max_tokens': 48})
  task = ClassificationTask(c)
  toks, mask, _ = task.inputs['train']
  first = np.nonzero(mask[0])[0]
  assert toks[0, first[0]] == fast.cls_token_id and toks[0, first[-1]] == fast.sep_token_id
  params, report = task.init_params(0, 'finetune')
  assert sorted(report.created) == ['head/bias', 'head/kernel']
  assert report.dropped and all(p.startswith('mlm/') for p in report.dropped)
  np.testing.assert_array_equal(params['backbone']['pooler']['kernel'],
                                task.source.params['pooler']['kernel'])
  set_fields(c, {'train.epochs': 1, 'seeds': 1, 'transfer.strategies': 'finetune',
                 'train.batch_size': 64,
                 'optim.learning_rate': 1e-3})
  out = classification.train_and_evaluate(c, str(tmp_path / 'mr'))
  assert [r['strategy'] for r in out['rows']] == ['finetune']
  t = set_fields(transfer_conll_hf_bert.get_config(), {
      'init.path': run, 'data.train_path': conll_task[0], 'data.dev_path': conll_task[1],
      'data.test_path': conll_task[2], 'model.max_tokens': 48})
  _, treport = TaggingTask(t).init_params(0, 'finetune')
  assert sorted(treport.created) == ['head/bias', 'head/kernel']


def test_tf_era_layer_norm_names_import_the_same(hf_models, tmp_path):
  """Older BERT files (converted from TensorFlow) name LayerNorm parameters gamma/beta."""
  from translearn_jax.transfer import graft
  d, _, _, run = hf_models['bert']
  old = tmp_path / 'old'
  shutil.copytree(d, old)
  tensors = safetensors_io.read_weights(d)
  renamed = {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias',
                                                                      'LayerNorm.beta'): v
             for k, v in tensors.items()}
  assert sum(k.endswith('.gamma') for k in renamed) == 2 * 2 + 2    # 2 per layer, embeddings, head
  safetensors_io.write_weights(str(old / 'model.safetensors'), renamed)
  report = convert.import_hf(str(old), str(tmp_path / 'run'))
  assert not report['unused_tensors']
  a = graft.flatten(sources.load('mlm', str(tmp_path / 'run')).params)
  b = graft.flatten(sources.load('mlm', run).params)
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_continued_mlm_pretraining_from_an_encoder_imported_without_its_head(tmp_path):
  """BertForTokenClassification (or BertModel) has no MLM head: continued pretraining from
  it made a device_put traceback. The head starts afresh; the encoder is the import's."""
  from configs import mlm_encoder
  from conftest import set_fields
  from translearn_jax.pretraining import mlm
  d, run = str(tmp_path / 'hf'), str(tmp_path / 'run')
  make_bert(d, cls=tf.BertForTokenClassification, num_labels=3)
  report = convert.import_hf(d, run)
  assert 'mlm' in report['absent_groups']
  (tmp_path / 'text.txt').write_text('\n'.join(corpus(200)) + '\n')
  c = set_fields(mlm_encoder.get_config(), {
      'data.kind': 'text', 'data.path': str(tmp_path / 'text.txt'), 'init.path': run,
      'train.steps': 2, 'train.batch_size': 8, 'train.seq_length': 32, 'model.d_model': 32,
      'model.d_ff': 64, 'model.max_len': 64, 'model.type_vocab_size': 2, 'progress': False})
  out = mlm.train_and_evaluate(c, str(tmp_path / 'cont'))
  assert out['steps'] == 2 and np.isfinite(out['valid']['loss'])
  src = sources.load('mlm', run)
  after = sources.load('mlm', str(tmp_path / 'cont'))
  assert 'mlm' in after.params and 'mlm' not in src.params
  # two small steps moved the encoder only a little from the import (not a fresh init)
  a, b = (np.asarray(p['embed']['embedding']) for p in (src.params, after.params))
  assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
