"""Denoising seq2seq pretraining (issue #16): the per-epoch noised stream, the tokenizer's
mask and sentinel pieces, a tiny model overfitting a few sentences, and its checks."""

import json

import numpy as np
import pytest

from conftest import set_fields
from translearn_jax.data import noising
from translearn_jax.data.lm_data import LMState
from translearn_jax.data.tokenizer import MASK_PIECE, Tokenizer
from translearn_jax.errors import ConfigError
from translearn_jax.pretraining import seq2seq

WORDS = 'river stone forest light cloud market harbour engine garden letter'.split()


def sentences(n, seed=0):
  rng = np.random.default_rng(seed)
  return [' '.join(WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(5, 9))) + ' .'
          for _ in range(n)]


def denoise_config(d, n=8, **over):
  """configs/seq2seq_denoise.py on `n` made-up sentences (held out: the same file)."""
  from configs import seq2seq_denoise
  (d / 'mono.txt').write_text('\n'.join(sentences(n)) + '\n', encoding='utf-8')
  c = seq2seq_denoise.get_config()
  return set_fields(c, {
      'data.path': str(d / 'mono.txt'), 'data.valid_path': str(d / 'mono.txt'),
      'tokenizer.vocab_size': 300, 'model.d_model': 32, 'model.num_heads': 2,
      'model.d_ff': 64, 'model.encoder_layers': 1, 'model.decoder_layers': 1,
      'max_source_len': 40, 'max_target_len': 40, 'length_buckets': '',
      'train.batch_size': 8, 'train.steps': 3, 'train.epochs': 1000, 'progress': False,
      'num_devices': 1, 'train.log_every_steps': 50, 'model.dropout': 0.0,
      'optim.warmup_steps': 10, 'optim.learning_rate': 3e-3, 'label_smoothing': 0.0,
      'noise.sentinels': 4, **over})


@pytest.fixture(scope='module')
def tok():
  return Tokenizer.train(sentences(200), 300, special_pieces=(MASK_PIECE,)
                         + noising.sentinel_pieces(4))


def test_stream_noises_each_epoch_afresh_and_resumes_exactly(tok):
  cfg = noising.NoiseConfig(mask_rate=0.4)
  ids = noising.noise_ids(tok, cfg)
  docs = noising.chunk_documents(tok.encode_batch(sentences(64)), 31)
  assert min(map(len, docs)) >= 15      # long sentences split evenly, no stubs
  stream = noising.DenoiseStream(docs, cfg, ids, 32, 32, [16, 32], 8, 3, seed=5)
  batches = list(stream.iterate(LMState()))
  assert len(batches) == stream.total_steps
  # a resumed stream yields exactly the batches the whole one did
  state, _ = batches[4]
  rest = list(stream.iterate(state))
  for (_, a), (_, b) in zip(batches[5:], rest):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  seen = {}   # document -> noised source per epoch: the targets are the clean documents
  for epoch in range(3):
    for index in range(stream.batches_per_epoch):
      b = stream.make_batch(epoch, index)
      _, rows = stream._plan(epoch)[index]
      for r, row in enumerate(rows):
        tgt = b['target_out'][0, r]
        clean = list(docs[row]) + [tok.eos_id]
        assert list(tgt[:len(clean)]) == clean and not tgt[len(clean):].any()
        assert b['target_in'][0, r, 0] == tok.bos_id
        src = [int(i) for i in b['source'][0, r] if i != tok.pad_id]
        assert ids.mask in src or len(docs[row]) < 3   # round(0.4 n) = 0 pieces
        seen.setdefault(int(row), []).append(tuple(src))
  assert sum(len(set(v)) == 3 for v in seen.values()) > 0.8 * len(seen)


def test_sentinels_are_special_and_a_tokenizer_without_them_is_named(tok, tmp_path):
  cfg = noising.NoiseConfig(objective='span_corruption')
  ids = noising.noise_ids(tok, cfg, 4)
  assert len(ids.sentinels) == 4 and set(ids.sentinels) <= set(tok.special_ids())
  assert [tok.id_to_piece(i) for i in ids.sentinels] == list(noising.sentinel_pieces(4))
  assert all(tok.id_to_piece(i).endswith('.') for i in ids.boundaries)
  plain = Tokenizer.train(sentences(200), 300, special_pieces=(MASK_PIECE,))
  plain.save(str(tmp_path / 'plain.model'))
  plain = Tokenizer.load(str(tmp_path / 'plain.model'))
  with pytest.raises(ConfigError, match=r'plain\.model.*<extra_id_0>'):
    noising.noise_ids(plain, cfg, 4)


def test_tiny_denoising_model_overfits_a_few_sentences(tmp_path):
  c = denoise_config(tmp_path, **{'train.steps': 300})
  out = seq2seq.train_and_evaluate(c, str(tmp_path / 'run'))
  # the held-out rows are the training sentences under a noise draw it never trained on
  assert out['valid']['accuracy'] > 0.95 and out['valid']['loss'] < 0.3, out['valid']
  first = json.loads((tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()[0])
  assert first['loss'] > 3.0 * out['valid']['loss'] + 1.0
  sample = out['valid_samples'][0]
  assert MASK_PIECE in sample['source'] and sample['output'] == sample['reference']
  saved = json.loads((tmp_path / 'run' / 'model' / 'model.json').read_text())
  assert saved['provenance']['config']['objective'] == 'denoise'


def test_span_corruption_trains_with_sentinel_targets(tmp_path):
  c = denoise_config(tmp_path, **{'noise.objective': 'span_corruption', 'train.steps': 2})
  out = seq2seq.train_and_evaluate(c, str(tmp_path / 'run'))
  tok = Tokenizer.load(str(tmp_path / 'run' / 'tokenizer.model'))
  assert tok.piece_id('<extra_id_3>') in tok.special_ids()
  assert out['valid']['tokens'] > 0 and np.isfinite(out['valid']['loss'])
  assert out['valid_samples'][0]['reference'].startswith('<extra_id_0>')


@pytest.mark.parametrize('field,value,match', [
    ('objective', 'mlm', r'config\.objective must be one of'),
    ('noise.objective', 'shuffle', r'config\.noise\.objective'),
    ('noise.mask_rate', 1.0, r'config\.noise\.mask_rate must be in \[0, 1\)'),
    ('noise.poisson_lambda', 0.0, r'config\.noise\.poisson_lambda'),
    ('packing', True, r'config\.packing'),
])
def test_bad_denoise_fields_fail_before_reading_data(tmp_path, field, value, match):
  c = denoise_config(tmp_path)
  c.data.path = str(tmp_path / 'missing.txt')   # never read: the check comes first
  set_fields(c, {field: value})
  with pytest.raises(ConfigError, match=match):
    seq2seq.train_and_evaluate(c, str(tmp_path / 'run'))
