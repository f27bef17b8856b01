"""Checkpoint tokenizers without `tokenizer.json` (BERT's `vocab.txt`, GPT-2/RoBERTa/BART/NeoX
`vocab.json` + `merges.txt`), and `tokenizer_config.json` options stated beside a
`tokenizer.json`: the ids must be those of `transformers`' AutoTokenizer on the same folder.
No model is built: these are tokenizer-only and fast.
"""

import json
import os

import pytest

from conftest import LazyModule  # noqa: E402

tf = LazyModule('transformers')

from translearn_jax import convert  # noqa: E402
from translearn_jax.data import hf_tokenizer  # noqa: E402
from translearn_jax.data.hf_tokenizer import HFTokenizer  # noqa: E402
from translearn_jax.errors import DataError  # noqa: E402

TEXTS = ['Hello World, naïve café!', 'the [MASK] is ÉLAN 中文字 here', 'unknownword xyz',
         'hi <ent> there x<ent>y', 'a b <|endoftext|>c',
         '  spaced   out\ttab', "don't stop-believing", 'Newtok inside newtok ABC',
         'The <mask> token and café', 'x<mask>y <mask> z', 'Cafe\u0301 ﬁ Ωmega 12 #']
WORDS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'hello', 'world', ',', '!', 'na',
         '##ive', '##ïve', 'cafe', 'café', 'the', 'is', 'elan', 'ÉLAN', 'Hello', 'World', '中',
         '文', '字', 'here', 'un', '##known', '##word', 'x', '##y', '##z', 'spaced', 'out', 'tab',
         'don', "'", 't', 'stop', '-', 'believing', 'Élan', 'ABC', 'new', '##tok']
CORPUS = ['Hello world, this is a small corpus for byte level BPE.',
          'The <mask> token sits here; café naïve.', 'Numbers 12345 and symbols #@!'] * 20
ROBERTA_SPECIALS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']


def _write(d, model_type, conf=None, **files):
  os.makedirs(d, exist_ok=True)
  json.dump({'model_type': model_type}, open(os.path.join(d, 'config.json'), 'w'))
  if conf is not None:
    json.dump(conf, open(os.path.join(d, 'tokenizer_config.json'), 'w'))
  for name, obj in files.items():
    json.dump(obj, open(os.path.join(d, name.replace('_json', '.json')), 'w'))
  return str(d)


def bert_dir(d, conf=None, words=WORDS, **files):
  os.makedirs(d, exist_ok=True)
  (d / 'vocab.txt').write_text('\n'.join(words) + '\n', encoding='utf-8')
  return _write(d, 'bert', conf, **files)


def bpe_dir(d, model_type, specials, conf=None):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tk = Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=300, special_tokens=specials, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(d, exist_ok=True)
  tk.model.save(str(d))                    # vocab.json + merges.txt
  return _write(d, model_type, conf)


def assert_same_ids(d, ours):
  ref = tf.AutoTokenizer.from_pretrained(d)
  for t in TEXTS:
    assert ours.encode(t) == ref(t, add_special_tokens=False)['input_ids'], t
  assert ours.encode_batch(TEXTS) == [ours.encode(t) for t in TEXTS]
  return ref


@pytest.mark.parametrize('conf', [None, {'do_lower_case': False},
                                  {'do_lower_case': True, 'strip_accents': False},
                                  {'do_lower_case': False, 'strip_accents': True},
                                  {'tokenize_chinese_chars': False}])
def test_bert_vocab_txt_tokenizes_as_transformers(tmp_path, conf):
  d = bert_dir(tmp_path / 'bert', conf)
  ours = convert._hf_tokenizer(d, 'bert')       # the importer's path: no tokenizer.json here
  ref = assert_same_ids(d, ours)
  assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.mask_id, ours.unk_id) == (
      ref.cls_token_id, ref.sep_token_id, ref.pad_token_id, ref.mask_token_id, ref.unk_token_id)
  lowered = conf is None or conf.get('do_lower_case', True)
  assert (ours.encode('Hello') == [WORDS.index('hello')]) == lowered


@pytest.mark.parametrize('model_type,specials,conf', [
    ('gpt2', ['<|endoftext|>'], None),
    ('gpt2', ['<|endoftext|>'], {'add_prefix_space': True}),
    ('gpt_neox', ['<|endoftext|>'], None),                                # NFC first
    ('roberta', ROBERTA_SPECIALS, None),
    ('roberta', ROBERTA_SPECIALS, {'add_prefix_space': True}),
    ('roberta', ROBERTA_SPECIALS, {'mask_token': {                       # the hub's layout
        '__type': 'AddedToken', 'content': '<mask>', 'lstrip': True, 'rstrip': False,
        'normalized': False, 'single_word': False, 'special': True}}),
    ('roberta', ROBERTA_SPECIALS, {'mask_token': '<mask>', 'added_tokens_decoder': {  # 4.34+
        '4': {'content': '<mask>', 'lstrip': True, 'rstrip': False, 'normalized': False,
              'single_word': False, 'special': True}}}),
    ('gpt2', ['<|endoftext|>', '<ent>'], {'additional_special_tokens': ['<ent>']}),
    ('gpt_neox', ['<|endoftext|>', '<|padding|>'], None),                 # its pad token
    ('bart', ROBERTA_SPECIALS, None)])
def test_byte_level_vocab_and_merges_tokenize_as_transformers(tmp_path, model_type, specials,
                                                              conf):
  d = bpe_dir(tmp_path / model_type, model_type, specials, conf)
  ours = convert._hf_tokenizer(d, model_type)
  ref = assert_same_ids(d, ours)
  assert (ours.bos_id, ours.eos_id) == (
      (ref.bos_token_id, ref.eos_token_id) if model_type in ('gpt2', 'gpt_neox')
      else (ref.cls_token_id, ref.sep_token_id))
  if '<|padding|>' in specials:          # in the vocabulary: the pad role, matched in text
    assert ours.pad_id == ref.pad_token_id == 1
    t = 'a <|padding|> b'
    assert ours.encode(t) == ref(t, add_special_tokens=False)['input_ids'] and 1 in ours.encode(t)
  if conf and 'additional_special_tokens' in conf:     # matched inside words, as transformers
    assert ours.encode('x<ent>y')[1] == ours.piece_id('<ent>')
  if model_type in ('roberta', 'bart'):
    assert ours.mask_id == ref.mask_token_id
    lstrip = bool(conf and ('added_tokens_decoder' in conf or isinstance(conf.get('mask_token'),
                                                                          dict)))
    assert (ours.encode('a <mask>') == ours.encode('a') + [ours.mask_id]) == lstrip


def test_added_tokens_land_at_their_recorded_ids(tmp_path):
  n = len(WORDS)
  d = bert_dir(tmp_path / 'ok', {'do_lower_case': True},
               added_tokens_json={'newtok': n, 'NewTok2': n + 1})
  ours = hf_tokenizer.from_vocab_files(d, 'bert')
  assert_same_ids(d, ours)
  assert ours.encode('a newtok b')[1] == n and ours.piece_id('NewTok2') == n + 1
  bad = bert_dir(tmp_path / 'gap', {}, added_tokens_json={'newtok': n + 5})
  with pytest.raises(DataError, match=r"added token 'newtok' is recorded at id 48 but lands "
                                      r'at 43'):
    hf_tokenizer.from_vocab_files(bad, 'bert')


def test_repeated_vocab_line_warns_with_file_and_line(tmp_path):
  d = bert_dir(tmp_path / 'rep', words=WORDS + ['hello'])
  with pytest.warns(UserWarning, match=r"vocab\.txt:6: 'hello' appears again at line 44"):
    ours = hf_tokenizer.from_vocab_files(d, 'bert')
  assert ours.encode('hello') == [len(WORDS)]     # transformers: the later line's id


def test_stated_options_override_tokenizer_json_as_transformers_does(tmp_path):
  """A tokenizer.json whose normalizer / pre-tokenizer disagrees with what tokenizer_config.json
  states: the stated option wins (as transformers applies it)."""
  for case, (option, value) in {'cased': ('do_lower_case', False),
                                'uncased': ('do_lower_case', True)}.items():
    d = bert_dir(tmp_path / case)
    tf.AutoTokenizer.from_pretrained(d).save_pretrained(d)
    spec = json.load(open(os.path.join(d, 'tokenizer.json')))
    spec['normalizer']['lowercase'] = not value
    json.dump(spec, open(os.path.join(d, 'tokenizer.json'), 'w'))
    conf = json.load(open(os.path.join(d, 'tokenizer_config.json')))
    conf[option] = value
    json.dump(conf, open(os.path.join(d, 'tokenizer_config.json'), 'w'))
    ours = HFTokenizer.load(d)
    assert_same_ids(d, ours)
    assert (ours.encode('Hello') == [WORDS.index('hello')]) == value
    if case == 'cased':            # strip_accents: null (follow lowercasing) overrides true
      spec['normalizer']['strip_accents'] = True
      json.dump(spec, open(os.path.join(d, 'tokenizer.json'), 'w'))
      conf['strip_accents'] = None
      json.dump(conf, open(os.path.join(d, 'tokenizer_config.json'), 'w'))
      assert_same_ids(d, HFTokenizer.load(d))
    (tmp_path / f'{case}_out').mkdir()
    ours.save(str(tmp_path / f'{case}_out' / 'tokenizer.json'))   # the export keeps it
    again = HFTokenizer.load(str(tmp_path / f'{case}_out'))
    assert [again.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS]
  d = bpe_dir(tmp_path / 'rob', 'roberta', ROBERTA_SPECIALS)
  tf.AutoTokenizer.from_pretrained(d).save_pretrained(d)
  conf = json.load(open(os.path.join(d, 'tokenizer_config.json')))
  conf['add_prefix_space'] = True
  json.dump(conf, open(os.path.join(d, 'tokenizer_config.json'), 'w'))
  ours = HFTokenizer.load(d)
  assert_same_ids(d, ours)
  assert ours.encode('Hello') == ours.encode(' Hello')


def test_missing_or_unreadable_vocabulary_files_are_named(tmp_path):
  d = bpe_dir(tmp_path / 'nomerges', 'roberta', ROBERTA_SPECIALS)
  os.remove(os.path.join(d, 'merges.txt'))
  with pytest.raises(DataError, match=r'no tokenizer\.json and no merges\.txt \(a roberta '
                                      r'tokenizer needs vocab\.json \+ merges\.txt\)'):
    convert._hf_tokenizer(d, 'roberta')
  d = bpe_dir(tmp_path / 'badmerges', 'gpt2', ['<|endoftext|>'])
  with open(os.path.join(d, 'merges.txt'), 'a') as f:
    f.write('one two three\n')
  with pytest.raises(DataError, match='vocab.json / merges.txt not readable as byte-level BPE'):
    convert._hf_tokenizer(d, 'gpt2')
  d = bert_dir(tmp_path / 'nounk', words=[w for w in WORDS if w != '[UNK]'])
  with pytest.raises(DataError, match=r"vocab\.txt: the unknown token '\[UNK\]' is not in"):
    convert._hf_tokenizer(d, 'bert')
  d = bert_dir(tmp_path / 'other')
  with pytest.raises(DataError, match="'mbart' checkpoints have no vocabulary-file reader"):
    convert._hf_tokenizer(d, 'mbart')
  (tmp_path / 'spm').mkdir()
  (tmp_path / 'spm' / 'spiece.model').write_bytes(b'x')
  with pytest.raises(DataError, match=r'no tokenizer\.json \(it has spiece\.model: write'):
    convert._hf_tokenizer(str(tmp_path / 'spm'), 'bert')
  d = bert_dir(tmp_path / 'badopt', {'do_lower_case': 'yes'})
  with pytest.raises(DataError, match="do_lower_case must be bool, got 'yes'"):
    convert._hf_tokenizer(d, 'bert')
