"""Encoder-decoder: decoding (greedy, beam, cache), masks, BLEU, training, data errors."""

import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_fields, shared_data
from translearn_jax.data import parallel
from translearn_jax.data.tokenizer import BOS, PAD
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.generation import seq2seq_decode as dec
from translearn_jax.models import seq2seq as s2s
from translearn_jax.pretraining import seq2seq


def tiny(**kw):
  base = dict(vocab_size=30, d_model=16, num_heads=2, encoder_layers=1, decoder_layers=2,
              d_ff=32, max_len=12, dropout=0.0)
  base.update(kw)
  return s2s.Seq2SeqConfig(**base)


@pytest.fixture(scope='module')
def model_and_params():
  cfg = tiny()
  m = s2s.Seq2Seq(cfg)
  src = jnp.asarray(np.random.default_rng(0).integers(4, 30, (3, 7)), jnp.int32).at[1, 5:].set(0)
  p = jax.jit(m.init)(jax.random.key(0), src, jnp.zeros((3, 12), jnp.int32))['params']
  p = jax.tree.map(lambda x: x * 20 if x.ndim == 2 else x, p)  # peaky, varied outputs
  return cfg, m, p, src


def test_beam_one_equals_greedy(model_and_params):
  cfg, _, p, src = model_and_params
  dm = s2s.Seq2Seq(cfg.replace(decode=True))
  g = np.asarray(dec.greedy(dm, p, src, 12))
  b1 = np.asarray(dec.beam_search(dm, p, src, 12, beam=1, alpha=0.0))
  np.testing.assert_array_equal(g, b1)
  b4 = np.asarray(dec.beam_search(dm, p, src, 12, beam=4))
  assert b4.shape == g.shape and not np.isin(b4, [BOS]).any()


def test_cached_decoding_equals_uncached(model_and_params):
  cfg, m, p, src = model_and_params
  g = dec.greedy(s2s.Seq2Seq(cfg.replace(decode=True)), p, src, 12)
  tin = jnp.concatenate([jnp.full((3, 1), BOS), g[:, :-1]], 1)
  logits = jax.jit(lambda s, t: m.apply({'params': p}, s, t))(src, tin)
  logits = logits.at[..., jnp.array([PAD, BOS])].set(-1e9)
  full = np.asarray(jnp.argmax(logits, -1))
  g = np.asarray(g)
  real = np.cumsum(g == 3, 1) - (g == 3) == 0  # up to and including EOS
  np.testing.assert_array_equal(g[real], full[real])


def test_padding_never_changes_outputs(model_and_params):
  cfg, m, p, src = model_and_params
  tin = jnp.asarray(np.random.default_rng(1).integers(4, 30, (3, 6)), jnp.int32)
  apply = jax.jit(lambda s, t: m.apply({'params': p}, s, t))
  base = apply(src, tin)
  padded = jnp.concatenate([src, jnp.zeros((3, 4), jnp.int32)], 1)
  np.testing.assert_allclose(apply(padded, tin), base, atol=1e-4)
  # changing what sits under padding changes nothing either
  junk = src.at[1, 5:].set(17)
  assert not np.allclose(apply(junk, tin)[1], base[1], atol=1e-4)
  np.testing.assert_allclose(apply(junk, tin)[0], base[0], atol=1e-5)


def test_a_source_of_no_piece_translates_to_an_empty_line(model_and_params, capsys):
  """A line of zero-width or control characters only encodes to no piece; decoded from an
  all-padding row it made up a sentence (a review: 'ра ра ра ...'). It gives an empty
  line, as a blank line does, and the rest translate as they would alone."""
  cfg, _, p, src = model_and_params
  dm = s2s.Seq2Seq(cfg.replace(decode=True))

  class Tok:
    def decode(self, ids):
      return ' '.join(str(int(i)) for i in ids if i > 3) or '<nothing>'
  rows = np.asarray(src)
  with_empty = np.concatenate([rows[:1], np.zeros_like(rows[:1]), rows[1:]])
  out = dec.translate(dm, p, Tok(), with_empty, 12, beam=1, alpha=0.0, batch=4)
  alone = dec.translate(dm, p, Tok(), rows, 12, beam=1, alpha=0.0, batch=4)
  assert out[1] == '' and [out[0]] + out[2:] == alone
  assert '1 source(s) encode to no piece' in capsys.readouterr().err


def test_bleu_of_references_is_100():
  refs = ['Ein Mann fährt Fahrrad .', 'Zwei Hunde spielen im Schnee.']
  assert seq2seq.score(refs, refs, 'bleu')['bleu'] == pytest.approx(100.0)
  assert seq2seq.score(refs, refs, 'bleu')['chrf'] == pytest.approx(100.0)
  assert seq2seq.score(['x y z', 'q'], refs, 'bleu')['bleu'] < 5


def test_metric_tokenisation_options_for_other_scripts(tmp_path):
  """eval.bleu_tokenize reaches sacrebleu (Chinese scored by characters with 'zh', as
  sacrebleu's own reference does); eval.rouge_tokenize='unicode' scores words of any script,
  where rouge-score's default tokenizer sees none; unusable settings and references that the
  default tokenizer cannot read stop the run before training."""
  import sacrebleu
  from configs import seq2seq_summarize
  hyps, refs = ['猫坐在垫子上。', '今天天气很好'], ['猫坐在垫子上了。', '今天天气不错']
  zh = seq2seq.score(hyps, refs, 'bleu', bleu_tokenize='zh')['bleu']
  assert zh == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize='zh').score)
  assert zh > 20 and seq2seq.score(hyps, refs, 'bleu')['bleu'] < zh  # 13a: one token a line
  ru_h, ru_r = ['кошка сидит на ковре'], ['кошка сидела на ковре']
  assert seq2seq.score(ru_h, ru_r, 'rouge')['rouge1'] == 0.0     # no a-z tokens at all
  assert seq2seq.score(ru_h, ru_r, 'rouge', rouge_tokenize='unicode')['rouge1'] == \
      pytest.approx(75.0)                                         # 3 of 4 words, both ways
  de = seq2seq.score(['Die Brücke über den Fluß'], ['die brücke über den fluß'], 'rouge',
                     rouge_tokenize='unicode')
  assert de['rouge1'] == pytest.approx(100.0)
  # unsegmented scripts: a character each (9 of the 11 characters of each side shared)
  zh_r = seq2seq.score(['今天天气不错，我们去公园。'], ['今天天气很好，我们去公园。'], 'rouge',
                       rouge_tokenize='unicode')
  assert zh_r['rouge1'] == pytest.approx(100 * 9 / 11)
  # rougeLsum: the summary-level LCS over sentences (swapped sentences keep it at 100 while
  # rougeL's one sequence halves); sentences split at . ! ? (and 。！？ without a space), or
  # at the line breaks a summary already has
  for tokenize in ('default', 'unicode'):
    swapped = seq2seq.score(['The dog ran fast. The cat sat down.'],
                            ['The cat sat down. The dog ran fast.'], 'rouge',
                            rouge_tokenize=tokenize)
    assert swapped['rougeLsum'] == pytest.approx(100.0) and swapped['rougeL'] == \
        pytest.approx(50.0)
  assert seq2seq.sentence_lines('It rained. Why?  Done') == 'It rained.\nWhy?\nDone'
  assert seq2seq.sentence_lines('今天很好。我们去公园！') == '今天很好。\n我们去公园！'
  assert seq2seq.sentence_lines(' a. b\n c d \n') == 'a. b\nc d'
  # no break after titles, initials or 'U.S.', nor before a lowercase word: the score of
  # the true two sentences a side (rouge-score's own split_summaries would give the same)
  ref = 'Mr. Smith met U.S. officials in Washington on Monday. He said the talks went well.'
  hyp = 'U.S. officials met Mr. Smith on Monday. The talks went well, he said.'
  assert seq2seq.sentence_lines(ref).count('\n') == seq2seq.sentence_lines(hyp).count('\n') == 1
  assert seq2seq.sentence_lines('J. K. Rowling wrote it. She won.') == \
      'J. K. Rowling wrote it.\nShe won.'
  assert seq2seq.score([hyp], [ref], 'rouge')['rougeLsum'] == pytest.approx(60.0)
  # scripts without case break at every period; 'no.' ends a sentence
  assert seq2seq.sentence_lines('오늘은 날씨가 좋다. 우리는 공원에 갔다.').count('\n') == 1
  assert seq2seq.sentence_lines('The answer was no. She left.').count('\n') == 1
  ev = seq2seq_summarize.get_config().eval
  seq2seq.check_metric('rouge', ev)
  ev.rouge_tokenize = 'words'
  with pytest.raises(ConfigError, match="eval.rouge_tokenize must be one of"):
    seq2seq.check_metric('rouge', ev)
  ev.bleu_tokenize = 'klingon'
  with pytest.raises(ConfigError, match="eval.bleu_tokenize='klingon': sacrebleu cannot"):
    seq2seq.check_metric('bleu', ev)
  with pytest.raises(ConfigError, match=r"the test split \(t.jsonl\): 2 of 3 references have "
                                        r"no a-z/0-9.*eval.rouge_tokenize='unicode'"):
    seq2seq.check_rouge_references(['кошка', 'ok', '猫'], 'default', 'the test split (t.jsonl)')
  seq2seq.check_rouge_references(['кошка', 'ok', '猫'], 'unicode', 'x')
  # Latin letters the default tokenizer drops: Vietnamese stops, German's 2% does not
  vi = ['Tôi yêu Việt Nam và những người bạn của tôi']
  assert seq2seq.score(['Tài yếu Viết Nam'], vi[:1], 'rouge')['rouge1'] > \
      seq2seq.score(['Tài yếu Viết Nam'], vi[:1], 'rouge', rouge_tokenize='unicode')['rouge1']
  with pytest.raises(ConfigError, match=r"x: \d+% of the references' letters are not a-z"):
    seq2seq.check_rouge_references(vi, 'default', 'x')
  seq2seq.check_rouge_references(['Ein Mann mit einem roten Hut fährt Fahrrad auf der Straße '
                                  'neben einem großen Gebäude'], 'default', 'x')
  # BLEU splitting unsegmented Chinese at spaces: stopped; segmented, or 'zh': scored
  zh_refs = ['今天天气很好，我们去公园散步吧。', '猫坐在垫子上了。']
  with pytest.raises(ConfigError, match=r"x: the references are unsegmented text.*"
                                        r"eval.bleu_tokenize='13a'.*'zh'"):
    seq2seq.check_bleu_references(zh_refs, '13a', 'x')
  seq2seq.check_bleu_references(zh_refs, 'zh', 'x')
  seq2seq.check_bleu_references(['今天 天气 很 好 ， 我们 去 公园 。'], '13a', 'x')
  seq2seq.check_bleu_references(['A man in a red hat rides a bike.'], '13a', 'x')


def test_tokenizer_round_trip_check_and_normalization(tmp_path):
  """sentencepiece's nmt_nfkc gives back full-width punctuation as ASCII: a warning names
  the share of references no output can match; 'identity' gives them back as written."""
  from translearn_jax.data.tokenizer import Tokenizer, check_round_trip
  refs = ['今天天气很好，我们去公园散步吧！', '猫坐在垫子上。', 'ＡＢＣ株式会社（東京）'] * 20
  docs = refs + ['The cat sat on the mat.'] * 20
  nfkc = Tokenizer.train(docs, 400)
  with pytest.warns(UserWarning, match=r"dev: the tokenizer changes 40 of 60 texts .*"
                                       r"tokenizer.normalization=identity"):
    assert check_round_trip(nfkc, refs, 'dev') == pytest.approx(40 / 60)
  same = Tokenizer.train(docs, 400, normalization="identity")
  assert check_round_trip(same, refs, 'dev') == 0.0


def test_splits_by_kind_nested_jsonl_fields_and_cut_sources(tmp_path):
  """A split exists when its kind's fields name it (a TSV run's test split is test_path,
  whatever text-file defaults test_source holds); Hugging Face datasets' JSONL is read by
  dotted names; data.truncate_source cuts long sources instead of dropping their pairs."""
  from configs import seq2seq_multi30k
  from translearn_jax.data.tokenizer import Tokenizer
  d = seq2seq_multi30k.get_config().data
  assert parallel.configured_splits(d) == ['train', 'valid', 'test']
  d.kind, d.train_path, d.valid_path = 'tsv', 'train.tsv', 'valid.tsv'
  assert parallel.configured_splits(d) == ['train', 'valid']
  d.kind, d.test_source, d.test_target = 'text', 'test.en', ''
  with pytest.raises(ConfigError, match=r'config\.data\.test_source is set but '
                                        r'config\.data\.test_target is empty'):
    parallel.configured_splits(d)
  hf = tmp_path / 'hf.jsonl'
  hf.write_text(json.dumps({'translation': {'de': 'ein Haus', 'en': 'a house'}}) + '\n',
                encoding='utf-8')
  assert parallel.read_pairs_fields('jsonl', str(hf), 'translation.en', 'translation.de') == [
      ('a house', 'ein Haus')]
  with pytest.raises(DataError, match=r"hf\.jsonl:1: no field 'en' \(it is inside "
                                      r"'translation': name it translation\.en\)"):
    parallel.read_pairs_fields('jsonl', str(hf), 'en', 'de')
  tok = Tokenizer.train(['a b c d e f g h', 'x y'] * 20, 300)
  pairs = [('a b c d e f g h', 'x y'), ('a b', 'x')]
  rows, kept = seq2seq.encode_pairs(tok, pairs, 4, 4, filter_long=True)
  assert kept == [1]
  rows, kept = seq2seq.encode_pairs(tok, pairs, 4, 4, filter_long=True, truncate_source=True)
  assert kept == [0, 1] and rows[0, :4].tolist() == tok.encode_batch([pairs[0][0]])[0][:4]


def test_held_out_files_left_at_the_defaults_are_named(tmp_path):
  """Overriding only the training files of a text-pairs config (another language pair)
  leaves Multi30k's held-out files in place: a warning names the fields and how to drop a
  split; held-out files beside the training files, or elsewhere with the same language
  suffixes (WMT's dev/ and test/ folders), pass with at most a note."""
  import warnings
  from configs import seq2seq_multi30k
  d = seq2seq_multi30k.get_config().data
  d.train_source, d.train_target = str(tmp_path / 'train.fr'), str(tmp_path / 'train.es')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    parallel.check_held_out_location(d, parallel.configured_splits(d))
  assert len(caught) == 2
  assert re.match(r'config\.data\.valid_source/valid_target \(.*val\.en, .*val\.de\) are in '
                  r'another directory than config\.data\.train_source .*other language '
                  r'suffixes.*--config\.data\.valid_source= ', str(caught[0].message))
  assert str(caught[1].message).startswith('config.data.test_source/test_target (')
  d.valid_source, d.valid_target = str(tmp_path / 'dev.fr'), str(tmp_path / 'dev.es')
  d.test_source, d.test_target = '', ''
  wmt = seq2seq_multi30k.get_config().data
  wmt.train_source, wmt.train_target = 'wmt/train/train.en', 'wmt/train/train.de'
  wmt.valid_source, wmt.valid_target = 'wmt/dev/newstest2013.en', 'wmt/dev/newstest2013.de'
  wmt.test_source, wmt.test_target = 'wmt/test/newstest2014.en', 'wmt/test/newstest2014.de'
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert parallel.check_held_out_location(d, parallel.configured_splits(d)) == []
    assert parallel.check_held_out_location(seq2seq_multi30k.get_config().data,
                                            ['train', 'test']) == []
    notes = parallel.check_held_out_location(wmt, parallel.configured_splits(wmt))
  assert notes == ["the valid split is read from wmt/dev, not the training files' directory",
                   "the test split is read from wmt/test, not the training files' directory"]


def test_misaligned_and_empty_lines_are_named(tmp_path):
  a, b = tmp_path / 'a.en', tmp_path / 'b.de'
  a.write_text('one\ntwo\nthree\n', encoding='utf-8')
  b.write_text('eins\nzwei\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'a\.en has 3 lines, .*b\.de has 2'):
    parallel.read_aligned(str(a), str(b))
  b.write_text('eins\n\ndrei\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'b\.de:2: empty line'):
    parallel.read_aligned(str(a), str(b))


def test_unknown_language_pair_in_tfds(tmp_path):
  from tfds_tiny_text.tiny_text_dataset_builder import Builder
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  with pytest.raises(DataError, match="no feature 'en'.*language codes"):
    parallel.read_tfds_pairs('tiny_text', 'train', 'en', 'de', str(tmp_path))


def s2s_config(tmp_path, pairs_src, pairs_tgt, **over):
  from configs import seq2seq_multi30k
  c = seq2seq_multi30k.get_config()
  c.data.train_source, c.data.train_target = pairs_src, pairs_tgt
  c.data.valid_source, c.data.valid_target = pairs_src, pairs_tgt
  c.data.test_source = c.data.test_target = ''
  c.tokenizer.vocab_size = 400
  c.model.d_model, c.model.num_heads, c.model.d_ff = 64, 4, 128
  c.model.encoder_layers = c.model.decoder_layers = 2
  c.model.dropout = 0.0
  c.max_source_len = c.max_target_len = 96  # a 400-piece vocabulary is nearly characters
  c.train.batch_size, c.num_devices, c.progress = 32, 1, False
  c.optim.warmup_steps, c.optim.learning_rate = 20, 3e-3
  c.label_smoothing = 0.0
  c.eval.beam = 1
  c.train.log_every_steps = 50
  return set_fields(c, over)


def _write_pairs(tmp_path, n=32):
  src = open(shared_data('multi30k', 'train.en'), encoding='utf-8').read().split('\n')[:n]
  tgt = open(shared_data('multi30k', 'train.de'), encoding='utf-8').read().split('\n')[:n]
  (tmp_path / 's.en').write_text('\n'.join(src) + '\n', encoding='utf-8')
  (tmp_path / 't.de').write_text('\n'.join(tgt) + '\n', encoding='utf-8')
  return str(tmp_path / 's.en'), str(tmp_path / 't.de')


def test_tiny_model_overfits_16_multi30k_pairs(tmp_path):
  s, t = _write_pairs(tmp_path, n=16)
  # packed rows (data.packing): the 16 pairs share rows of 96 pieces, about two a row (one
  # batch an epoch); 1 + 1 layers at learning rate 6e-3: BLEU 59 after 60 epochs, 90
  # after 70, 100 from 80 on (32 pairs: the same epochs, twice the steps)
  c = s2s_config(tmp_path, s, t, packing=True, **{'train.epochs': 100, 'train.batch_size': 8,
                                                  'optim.learning_rate': 6e-3,
                                                  'model.encoder_layers': 1,
                                                  'model.decoder_layers': 1})
  summary = seq2seq.train_and_evaluate(c, str(tmp_path / 'run'))
  assert summary['valid']['bleu'] > 90, summary['valid_samples']


# exact resume does not depend on the model's size: 1 + 1 layers × 32 (a resumed run with
# another dropout key, or parameters off by 1e-3, still changes the scores compared)
RESUME = {'train.epochs': 6, 'model.dropout': 0.1, 'eval.max_examples': 16,
          'model.encoder_layers': 1, 'model.decoder_layers': 1, 'model.d_model': 32,
          'model.d_ff': 64, 'train.checkpoint_every_steps': 2}


@pytest.fixture(scope='module')
def resume_reference(tmp_path_factory):
  """(make_config, summary of the uninterrupted run): the RESUME config on 64 pairs, run once
  through `train.run` and read by both resume tests (each interrupts its own copy)."""
  import train
  d = tmp_path_factory.mktemp('s2s_resume')
  s, t = _write_pairs(d, n=64)
  make = lambda: s2s_config(d, s, t, **RESUME)   # noqa: E731  (a fresh config each call)
  return make, train.run(make(), str(d / 'full'))


def test_resume_is_exact(tmp_path, monkeypatch, resume_reference):
  from conftest import StopAfter
  make, full = resume_reference
  c = make()
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(4))
  part = seq2seq.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert part['stopped_by_signal'] and part['steps'] == 5
  monkeypatch.undo()
  resumed = seq2seq.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert resumed['valid'] == full['valid'] and resumed['steps'] == full['steps']


def test_summarisation_config_on_made_up_pairs(tmp_path):
  rng = np.random.default_rng(0)
  words = 'river stone forest light cloud market harbour engine garden letter'.split()
  rows = []
  for _ in range(64):
    doc = [words[i] for i in rng.integers(0, len(words), 8)]
    rows.append({'document': ' '.join(doc), 'summary': ' '.join(doc[:2])})  # the lead
  for name, part in (('train', rows[:48]), ('valid', rows[48:])):
    (tmp_path / f'{name}.jsonl').write_text('\n'.join(json.dumps(r) for r in part) + '\n',
                                            encoding='utf-8')
  from configs import seq2seq_summarize
  c = seq2seq_summarize.get_config()
  c.data.train_path, c.data.valid_path = str(tmp_path / 'train.jsonl'), str(tmp_path /
                                                                            'valid.jsonl')
  c.tokenizer.vocab_size = 300
  c.model.d_model, c.model.d_ff, c.model.encoder_layers, c.model.decoder_layers = 64, 128, 1, 1
  c.max_source_len, c.max_target_len, c.train.batch_size = 24, 12, 16
  # ROUGE-1 47 after 40 epochs, 84 after 50, 94 after 60, 100 after 100
  c.train.epochs, c.num_devices, c.progress, c.optim.warmup_steps = 60, 1, False, 10
  c.optim.learning_rate = 3e-3
  c.eval.beam = 2
  summary = seq2seq.train_and_evaluate(c, str(tmp_path / 'run'))
  assert set(summary['valid']) >= {'rouge1', 'rouge2', 'rougeL', 'rougeLsum'}
  assert summary['valid']['rouge1'] > 50  # copying the lead is learnable
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"document": "a b", "summary": ""}\n', encoding='utf-8')
  with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'summary' missing or empty"):
    parallel.read_pairs_fields('jsonl', str(bad), 'document', 'summary')
  # summaries that rouge-score's default tokenizer cannot read: refused before training
  ru = tmp_path / 'ru.jsonl'
  ru.write_text(''.join(json.dumps({'document': 'а б в', 'summary': 'а б'}) + '\n'
                        for _ in range(4)), encoding='utf-8')
  c.data.valid_path = str(ru)
  with pytest.raises(ConfigError, match=r"the valid split \(.*ru\.jsonl\): 4 of 4 references"):
    seq2seq.train_and_evaluate(c, str(tmp_path / 'ru_run'))
  assert not os.path.exists(tmp_path / 'ru_run' / 'checkpoints')


@pytest.fixture(scope='module')
def early_eos_model():
  """A decoding model whose every greedy output row ends (EOS) before the last position."""
  cfg = tiny()
  src = jnp.asarray(np.random.default_rng(0).integers(4, 30, (8, 7)), jnp.int32).at[1, 5:].set(0)
  p = nn.unbox(jax.jit(s2s.Seq2Seq(cfg).init)(jax.random.key(0), src,
                                              jnp.zeros((8, 12), jnp.int32))['params'])
  p = jax.tree.map(lambda x: x * 5 if x.ndim == 2 else x, p)
  p['embed']['embedding'] = p['embed']['embedding'].at[3].mul(4.0)  # EOS comes early
  return s2s.Seq2Seq(cfg.replace(decode=True)), p, src


def test_greedy_early_stopping_changes_no_output(early_eos_model):
  dm, p, src = early_eos_model
  g = np.asarray(dec.greedy(dm, p, src, 12))
  assert ((g == 3).any(1) & (g[:, -1] == PAD)).all()  # every row stops early
  np.testing.assert_array_equal(g, dec.greedy(dm, p, src, 12, early_stop=False))


@pytest.mark.parametrize('alpha', [0.0, 0.6, 1.5])
def test_beam_early_stopping_changes_no_output(early_eos_model, alpha):
  dm, p, src = early_eos_model
  np.testing.assert_array_equal(dec.beam_search(dm, p, src, 12, beam=3, alpha=alpha),
                                dec.beam_search(dm, p, src, 12, beam=3, alpha=alpha,
                                                early_stop=False))


@pytest.mark.parametrize('smoothing', [0.0, 0.1, 0.3])
def test_smoothed_cross_entropy_equals_optax_with_one_hot(smoothing):
  import optax
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(3, 5, 11)) * 3, jnp.float32)
  y = jnp.asarray(rng.integers(0, 11, (3, 5)))
  want = jax.jit(lambda z: optax.softmax_cross_entropy(
      z, optax.smooth_labels(jax.nn.one_hot(y, 11), smoothing)))(z)
  got = jax.jit(lambda z: seq2seq.smoothed_cross_entropy(z, y, smoothing))(z)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  g = jax.jit(jax.grad(lambda z: seq2seq.smoothed_cross_entropy(z, y, smoothing).sum()))(z)
  g_want = jax.jit(jax.grad(lambda z: optax.softmax_cross_entropy(
      z, optax.smooth_labels(jax.nn.one_hot(y, 11), smoothing)).sum()))(z)
  np.testing.assert_allclose(g, g_want, rtol=1e-5, atol=1e-6)


def test_kill9_then_resume_equals_uninterrupted(tmp_path, resume_reference):
  """SIGKILL of a `train.py` seq2seq run after its first checkpoint (now and then during a
  later checkpoint write); the rerun ends with the uninterrupted run's scores and steps."""
  import signal
  import subprocess
  import sys
  import time
  import train
  from configs import seq2seq_multi30k
  make, full = resume_reference
  c = make()
  default = seq2seq_multi30k.get_config().to_dict()

  def overrides(d, ref, prefix=''):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from overrides(v, ref.get(k, {}), f'{prefix}{k}.')
      elif ref.get(k) != v:
        yield f'--config.{prefix}{k}={v}'

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cut = tmp_path / 'cut'
  proc = subprocess.Popen([sys.executable, 'train.py', '--config', 'configs/seq2seq_multi30k.py',
                           '--workdir', str(cut), *overrides(c.to_dict(), default)],
                          cwd=root, env={**os.environ, 'PYTHONPATH': root},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and not (
      (cut / 'checkpoints').exists() and any(p.name.isdigit()
                                             for p in (cut / 'checkpoints').iterdir())):
    time.sleep(0.01)
  proc.kill()
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run finished before the kill'
  saved = [int(p.name) for p in (cut / 'checkpoints').iterdir() if p.name.isdigit()]
  assert saved and 0 < max(saved) < full['steps']   # the rerun resumes mid-way
  resumed = train.run(c, str(cut))
  assert resumed['steps'] == full['steps'] and resumed['valid'] == full['valid']


def test_banned_ids_are_masked_in_the_log_probabilities_not_renormalised():
  """A banned id (`suppress_ids`) is masked after the log-softmax, as transformers' processors
  mask generate()'s scores: the other ids keep their probabilities (their sum is 1 minus the
  banned id's), so beam scores sum what the model gives them."""
  from translearn_jax.generation import seq2seq_decode as dec
  from translearn_jax.models import seq2seq as s2s
  cfg = s2s.Seq2SeqConfig(vocab_size=24, d_model=16, num_heads=2, d_ff=32, encoder_layers=1,
                          decoder_layers=1, max_len=8, suppress_ids=(5,))
  free = cfg.replace(suppress_ids=())
  src = jnp.array([[4, 6, 7, 2]], jnp.int32)
  params = jax.jit(s2s.Seq2Seq(free).init)(jax.random.key(0), src, src)['params']
  params = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.key(1), p.shape),
                        params)

  def first_step(c):
    m = s2s.Seq2Seq(c.replace(decode=True))

    @jax.jit            # one program, not hundreds of eager operations
    def logp(params):
      enc, mask = m.apply({'params': params}, src, method='encode')
      return dec._step(m, params, dec._cache(m, params, src, 8), enc, mask,
                       jnp.array([c.decoder_start_id], jnp.int32))[0]
    return np.asarray(logp(params)[0])
  banned, plain = first_step(cfg), first_step(free)
  assert banned[5] <= dec.NEG / 2 and np.exp(plain[5]) > 1e-3
  keep = np.arange(24) != 5
  np.testing.assert_allclose(banned[keep], plain[keep], rtol=1e-5, atol=1e-6)


def test_a_tokenizer_left_by_a_run_that_never_checkpointed_is_trained_again(tmp_path):
  """A run that stopped with an error after saving its tokenizer left `tokenizer.model`; the
  next run in the workdir, on other data, trains its own (it trained on the stale one: byte
  pieces, BLEU 0), while a resume (config checked) reuses it."""
  import conftest
  from translearn_jax.data.tokenizer import Tokenizer
  (tmp_path / 'a').mkdir()
  first = conftest.s2s_config(tmp_path / 'a', **{'tokenizer.model_type': 'bpe'})
  seq2seq.train_and_evaluate(first, str(tmp_path / 'first'))
  seq2seq.train_and_evaluate(conftest.s2s_config(tmp_path / 'a'), str(tmp_path / 'clean'))
  stale, clean = ((tmp_path / d / 'tokenizer.model').read_bytes() for d in ('first', 'clean'))
  assert stale != clean
  work = tmp_path / 'w'
  work.mkdir()
  (work / 'tokenizer.model').write_bytes(stale)
  seq2seq.train_and_evaluate(conftest.s2s_config(tmp_path / 'a'), str(work))
  assert (work / 'tokenizer.model').read_bytes() == clean
  assert Tokenizer.load(str(work / 'tokenizer.model')).vocab_size > 0


def test_references_longer_than_max_target_len_are_counted(tiny_lm_run, capsys):
  """Hypotheses stop at max_target_len pieces: references beyond it are out of reach, which
  the log says (summarisation at a short max_target_len scored 0 with no word why)."""
  import ml_collections
  from translearn_jax.data.tokenizer import Tokenizer
  tok = Tokenizer.load(os.path.join(tiny_lm_run, 'tokenizer.model'))
  config = ml_collections.ConfigDict({'max_source_len': 16, 'max_target_len': 6,
                                      'tokenizer': {}})
  pairs = [('a short source', 'the'), ('another source', ' '.join(['word'] * 12)),
           ('third', 'a')]
  assert [len(tok.encode(t)) + 1 for _, t in pairs][::2] == [2, 2]   # the short ones fit
  seq2seq.encode_sources(tok, pairs, config, 'test')
  assert 'test: 1 of 3 references are longer than max_target_len=6 pieces' in \
      capsys.readouterr().err
  seq2seq.encode_sources(tok, pairs[:1], config, 'test')
  assert 'references' not in capsys.readouterr().err
