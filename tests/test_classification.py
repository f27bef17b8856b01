"""Downstream classification with transfer, end to end on small real-text tasks."""

import json
import os
import re

import jax
import numpy as np
import pytest

from translearn_jax.downstream import classification as task
from translearn_jax.downstream import models as task_models
from translearn_jax.downstream import task as task_lib
from translearn_jax.errors import ConfigError, DataError
from translearn_jax.experiments import classification
from translearn_jax.transfer import graft as g


def base_config(task_path, vectors_path):
  from configs import transfer_mr_skipgram
  c = transfer_mr_skipgram.get_config()
  c.data.kind, c.data.path = 'tsv', task_path
  c.model.dim = 16
  c.init.path = vectors_path
  c.train.epochs, c.train.batch_size = 3, 32
  c.transfer.unfreeze_every = 20
  return c


def test_compare_scratch_table_and_files(tmp_path, topic_task, vectors, monkeypatch):
  c = base_config(topic_task, vectors[0])
  c.compare_scratch, c.seeds = True, 2
  c.transfer.strategies = 'feature_extraction,finetune'
  summary = classification.train_and_evaluate(c, str(tmp_path))
  rows = {r['strategy']: r for r in summary['rows']}
  assert set(rows) == {'scratch', 'feature_extraction', 'finetune'}
  assert all(r['seeds'] == 2 and len(r['test']) == 2 for r in rows.values())
  # test accuracies over the 120 test examples; the table's means and paired gains
  assert summary['data']['test'] == 120
  for r in rows.values():
    np.testing.assert_allclose(np.asarray(r['test']) * 120, np.round(np.asarray(r['test']) * 120),
                               atol=1e-9)
    assert r['test_mean'] == pytest.approx(np.mean(r['test']))
  for name in ('feature_extraction', 'finetune'):
    assert rows[name]['gain_mean'] == pytest.approx(
        np.mean(np.subtract(rows[name]['test'], rows['scratch']['test'])))
  assert 'gain_mean' not in rows['scratch']
  assert (tmp_path / 'gains.png').read_bytes()[:4] == b'\x89PNG'   # the comparison picture
  saved = json.load(open(tmp_path / 'results.json'))
  assert [r['strategy'] for r in saved['rows']] == [r['strategy'] for r in summary['rows']]
  # what a paired comparison of two results files checks (evaluation.compare)
  from translearn_jax.data import labelled
  from translearn_jax.experiments import runs as runs_lib
  test = labelled.read_splits(c.data)['test']
  assert saved['metric'] == 'accuracy'
  assert saved['seeds'] == [0, 1] and saved['test_digest'] == runs_lib.test_digest(
      test.texts, test.labels.tolist())
  c.data.split_seed += 1
  other = labelled.read_splits(c.data)['test']
  c.data.split_seed -= 1
  assert runs_lib.test_digest(other.texts, other.labels.tolist()) != saved['test_digest']
  report = json.load(open(tmp_path / 'graft_report_finetune.json'))
  assert report['grafted'][0][1] == 'backbone/embed/embedding'
  assert report['remapped']['backbone/embed/embedding']['found'] == 300
  # runs.jsonl: seed-major order; a restart with more seeds runs only the new ones
  recs = [json.loads(l) for l in open(tmp_path / 'runs.jsonl')]
  assert [(r['strategy'], r['seed']) for r in recs] == [
      (n, s) for s in (0, 1) for n in ('scratch', 'feature_extraction', 'finetune')]
  ran = []
  real = classification.run_once
  monkeypatch.setattr(classification, 'run_once',
                      lambda setup, st, seed, *a: ran.append((st, seed)) or real(setup, st, seed, *a))
  c.seeds = 3
  again = classification.train_and_evaluate(c, str(tmp_path))
  assert ran == [('scratch', 2), ('feature_extraction', 2), ('finetune', 2)]
  old = {r['strategy']: r['test'] for r in summary['rows']}
  new = {r['strategy']: r['test'][:2] for r in again['rows']}
  assert old == new and all(r['seeds'] == 3 for r in again['rows'])
  # a frozen-group run recorded before runs.VERSION 2 is run again; other old records are kept
  recs = [json.loads(l) for l in open(tmp_path / 'runs.jsonl')]
  for r in recs:
    if r['seed'] == 0:
      r.pop('version')
  (tmp_path / 'runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
  ran.clear()
  classification.train_and_evaluate(c, str(tmp_path))
  assert ran == [('feature_extraction', 0)]
  # with_scratch=False: the strategies alone (the scratch baseline lives in another workdir)
  from translearn_jax.experiments import runs
  c.with_scratch = False
  assert runs.run_list(c) == [(n, s) for s in range(3) for n in ('feature_extraction', 'finetune')]
  assert runs.fingerprint(c) == recs[0]['config']
  c.transfer.strategies = 'scratch'
  with pytest.raises(ConfigError, match='nothing to run'):
    runs.run_list(c)
  c.with_scratch, c.transfer.strategies = True, 'feature_extraction,finetune'
  c.optim.learning_rate = 0.1  # a different comparison must not reuse these records
  with pytest.raises(ConfigError, match='recorded by a different config'):
    classification.train_and_evaluate(c, str(tmp_path))


def test_frozen_backbone_is_bit_identical_after_training(tmp_path, topic_task, vectors):
  c = base_config(topic_task, vectors[0])
  setup = task.ClassificationTask(c)
  grafted, _ = setup.init_params(0, 'feature_extraction')
  r = classification.run_once(setup, 'feature_extraction', 0, c, str(tmp_path / 'run'))
  np.testing.assert_array_equal(np.asarray(r['params']['backbone']['embed']['embedding']),
                                np.asarray(grafted['backbone']['embed']['embedding']))
  assert not np.array_equal(np.asarray(r['params']['head']['kernel']),
                            np.asarray(grafted['head']['kernel']))
  assert r['report'].frozen == ['backbone/embed/embedding']
  # The grafted rows are the pretrained vectors of the same words.
  words, vecs = vectors[1], np.loadtxt(vectors[0], skiprows=1, usecols=range(1, 17),
                                         comments=None, dtype=np.float32)
  row = setup.vocab.index(words[5])
  np.testing.assert_allclose(np.asarray(grafted['backbone']['embed']['embedding'])[row],
                             vecs[5], rtol=1e-6)


@pytest.mark.parametrize('strategy', ['feature_extraction', 'linear_probe_logistic', 'finetune'])
def test_a_strategy_that_freezes_layers_the_graft_left_random_is_refused(tmp_path, topic_task,
                                                                          tiny_lm_run, strategy):
  """Rules that graft only the embedding leave the blocks at their random init: frozen,
  they are random features (a review's run scored chance with exit 0). Fine-tuning trains
  them, so it runs."""
  from configs import transfer_mr_lm
  from translearn_jax.transfer.graft import GraftError
  c = transfer_mr_lm.get_config()
  c.data.kind, c.data.path = 'tsv', topic_task
  c.init.path, c.init.rules = tiny_lm_run, r'(embed/.*)=>backbone/\1'
  c.train.epochs, c.train.batch_size, c.model.max_tokens = 1, 32, 48
  setup = task.ClassificationTask(c)
  run = (classification.run_probe if strategy.startswith('linear_probe')
         else classification.run_once)
  if strategy == 'finetune':
    assert run(setup, strategy, 0, c, str(tmp_path / 'run'))['report'].grafted
    return
  with pytest.raises(GraftError, match=rf"transfer.strategy='{strategy}' freezes \d+ "
                                       r'parameter\(s\) the graft did not fill.*backbone/'):
    run(setup, strategy, 0, c, str(tmp_path / 'run'))


def test_lm_encoder_classifier_from_lm_run(tmp_path, topic_task, tiny_lm_run):
  lm_dir = tiny_lm_run
  from configs import transfer_mr_lm
  c = transfer_mr_lm.get_config()
  c.data.kind, c.data.path = 'tsv', topic_task
  c.init.path = lm_dir
  c.train.epochs, c.train.batch_size = 2, 32
  c.model.max_tokens = 65
  with pytest.raises(ConfigError, match='max_tokens=65 exceeds the pretrained LM context'):
    task.ClassificationTask(c)
  c.model.max_tokens = 48
  c.transfer.groups = (r'head=^head/,top=^backbone/(block_0|ln_final)/,'
                       r'embed=^backbone/(embed|pos_embed)')
  c.transfer.strategy = 'discriminative'
  setup = task.ClassificationTask(c)
  params, report = setup.init_params(0, 'discriminative')
  src = setup.source.params
  np.testing.assert_array_equal(np.asarray(params['backbone']['block_0']['attn']['query']['kernel']),
                                np.asarray(src['block_0']['attn']['query']['kernel']))
  assert set(report.created) == {'head/kernel', 'head/bias'}
  r = classification.run_once(setup, 'discriminative', 0, c, str(tmp_path / 'run'))
  # model selection: the best of the logged per-epoch dev accuracies (the first on ties);
  # the last one is the returned (final) parameters' dev accuracy
  logged = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  devs = [m['dev_accuracy'] for m in logged if 'dev_accuracy' in m]
  assert len(devs) == 2 and r['dev'] == max(devs) and r['epoch'] == 1 + devs.index(max(devs))
  assert devs[-1] == setup.evaluate(r['params'], 'dev')
  if r['epoch'] == 2:
    assert r['test'] == setup.evaluate(r['params'], 'test')
  # trimming a batch to its longest real row changes no prediction, for every pooling
  toks, mask, _ = setup.inputs['dev']
  mask = mask & (np.arange(mask.shape[1]) < np.arange(len(mask))[:, None] % 20 + 1)
  toks = np.where(mask, toks, 0)  # rows of 1..20 real pieces, padded to 48
  w = task_lib.trimmed_width(mask)
  assert w < toks.shape[1] and w % 16 == 0 and mask[:, w:].sum() == 0
  for pooling in ('mean', 'last', 'max'):
    m = task_models.EncoderClassifier(setup.source.model_config, 2, pooling, 0.0)
    apply = jax.jit(lambda t, k: m.apply({'params': r['params']}, t, k))
    full = apply(toks, mask)
    np.testing.assert_allclose(apply(toks[:, :w], mask[:, :w]), full, rtol=1e-5, atol=1e-5)


def test_length_grouped_batches_cover_each_example_once():
  lengths = np.random.default_rng(0).integers(1, 60, 1000)
  batches = task_lib.length_grouped_batches(lengths, 32, np.random.default_rng(1), 5)
  flat = np.concatenate(batches)
  assert len(batches) == 1000 // 32 and all(len(b) == 32 for b in batches)
  assert len(set(flat.tolist())) == len(flat)
  spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
  assert spread < 15  # similar lengths in a batch (random batches: ~55)
  again = task_lib.length_grouped_batches(lengths, 32, np.random.default_rng(2), 5)
  assert not np.array_equal(np.concatenate(again), flat)


def test_span_f1_matches_seqeval_on_conll_test():
  from seqeval.metrics import f1_score, precision_score, recall_score
  from conftest import shared_data
  from translearn_jax.data import conll
  gold = conll.read_conll(shared_data('conll2003', 'test.txt')).tags
  rng = np.random.default_rng(0)
  kinds = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'I-MISC']
  pred = [[t if rng.random() > 0.15 else kinds[rng.integers(len(kinds))] for t in s]
          for s in gold]
  ours = conll.span_f1(gold, pred)
  assert ours['f1'] == pytest.approx(f1_score(gold, pred), abs=1e-12)
  assert ours['precision'] == pytest.approx(precision_score(gold, pred), abs=1e-12)
  assert ours['recall'] == pytest.approx(recall_score(gold, pred), abs=1e-12)
  assert conll.span_f1(gold, gold)['f1'] == 1.0
  assert 0.3 < ours['f1'] < 0.95
  # per entity type, as seqeval's classification report
  from seqeval.metrics import classification_report
  ref = classification_report(gold, pred, output_dict=True)
  types = conll.span_scores(gold, pred)['types']
  assert sorted(types) == ['LOC', 'MISC', 'ORG', 'PER']
  for t, s in types.items():
    assert s['f1'] == pytest.approx(ref[t]['f1-score'], abs=1e-12)
    assert s['precision'] == pytest.approx(ref[t]['precision'], abs=1e-12)
    assert s['gold'] == ref[t]['support']


def test_entity_spans_and_conll_errors(tmp_path):
  from translearn_jax.data import conll
  assert conll.entity_spans(['B-PER', 'I-PER', 'O', 'I-LOC', 'I-LOC', 'B-LOC', 'I-ORG']) == {
      ('PER', 0, 2), ('LOC', 3, 5), ('LOC', 5, 6), ('ORG', 6, 7)}
  # IOBES: E- and S- close their chunk, an I- after E- starts a new one
  assert conll.entity_spans(['S-PER', 'B-LOC', 'E-LOC', 'I-LOC', 'E-LOC', 'S-LOC', 'E-ORG']) == {
      ('PER', 0, 1), ('LOC', 1, 3), ('LOC', 3, 5), ('LOC', 5, 6), ('ORG', 6, 7)}
  # bare prefixes (one entity type, as NCBI-disease writes it): seqeval's type '_'
  from seqeval.metrics.sequence_labeling import get_entities
  bare = ['B', 'I', 'O', 'I', 'B', 'S', 'E', 'O']
  assert conll.entity_spans(bare) == {(t, b, e + 1) for t, b, e in get_entities(bare)}
  p = tmp_path / 'bad.txt'
  p.write_text('aspirin B\ninduced O\nrenal B\nfailure I\n', encoding='utf-8')
  assert conll.read_conll(str(p)).tags == [['B', 'O', 'B', 'I']]
  p.write_text('-DOCSTART- O\n\nEU B-ORG\nrejects X-BAD\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'bad\.txt:4: tag .X-BAD. is not O, B-X or I-X'):
    conll.read_conll(str(p))
  p.write_text('EU S-ORG\nrejects O\nGerman B-MISC\ncall E-MISC\n', encoding='utf-8')
  assert conll.read_conll(str(p)).tags == [['S-ORG', 'O', 'B-MISC', 'E-MISC']]
  # tabs separate columns when a line has one (tokens may hold spaces); otherwise runs of
  # ASCII spaces do, and a no-break or ideographic space stays inside its token
  p.write_text('New York\tNNP\tB-LOC\n10\u00a0000  CD  O \n\u3000\tO\n', encoding='utf-8')
  corpus = conll.read_conll(str(p))
  assert corpus.sentences == [['New York', '10\u00a0000', '\u3000']]
  assert corpus.tags == [['B-LOC', 'O', 'O']]
  # other column layouts (GermEval 2014: index, token, outer tag, inner tag)
  p.write_text('1\tSchartau\tB-PER\tO\n2\tsagte\tO\tO\n\n1\tBonn\tB-LOC\tO\n',
               encoding='utf-8')
  corpus = conll.read_conll(str(p), token_column=1, tag_column=2)
  assert corpus.sentences == [['Schartau', 'sagte'], ['Bonn']]
  assert corpus.tags == [['B-PER', 'O'], ['B-LOC']]
  p.write_text('1\tBonn\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'bad\.txt:1: expected the token in column 1 and the tag '
                     r'in column 2'):
    conll.read_conll(str(p), token_column=1, tag_column=2)
  # encodings: Latin-1 bytes raise unless named or given as the fallback
  p.write_bytes('Málaga B-LOC\n'.encode('latin-1'))
  with pytest.raises(DataError, match=r'bad\.txt:1: bytes are not valid utf-8'):
    conll.read_conll(str(p))
  assert conll.read_conll(str(p), 'latin-1').sentences == [['Málaga']]
  assert conll.read_conll(str(p), 'utf-8', 'latin-1').sentences == [['Málaga']]


def test_dev_test_tags_training_lacks_are_scored_as_missed():
  """A test tag training never has: warned about, no id (no loss), its gold entity a miss
  (as seqeval counts it); words beyond max_tokens are counted whatever their tag."""
  from translearn_jax.data import conll
  from translearn_jax.downstream import tagging

  class Tok:
    bos_id, eos_id, unk_id = 2, 3, 1

    def encode_words(self, words):
      return [[10] for _ in words]

  test = conll.TaggedCorpus([['a', 'b', 'c'], ['d']], [['B-LOC', 'O', 'S-product'], ['O']],
                            'test.txt')
  with pytest.warns(UserWarning, match=r"test\.txt: 1 word\(s\) carry tags the training data "
                                       r"never has \(S-product\)"):
    toks, mask, pos, tags = tagging.encode_tagged(test, Tok(), {'O': 0, 'B-LOC': 1}, 3)
  assert tags[0].tolist() == [1, 0, -1] and pos[0].tolist() == [1, 2, -1]
  assert tagging.truncated_words(pos, test) == 1
  pred = [['B-LOC', 'O', 'O'], ['O']]
  assert conll.span_f1(test.tags, pred)['recall'] == 0.5


def test_bilou_files_are_read_and_scored_as_seqeval_strict_bilou(tmp_path):
  """BILOU (spaCy's L-/U- for IOBES's E-/S-) reads, and its spans and scores are seqeval's
  strict BILOU mode's on well-formed tags (seqeval's default mode does not read BILOU: it
  joins U-LOC U-LOC into one entity); ill-formed tags are chunked as their IOBES names."""
  from seqeval.metrics import f1_score
  from seqeval.metrics.sequence_labeling import get_entities
  from seqeval.scheme import BILOU, Entities
  from translearn_jax.data import conll
  p = tmp_path / 'bilou.txt'
  p.write_text('John B-PER\nvan I-PER\nSmith L-PER\nin O\nParis U-LOC\nLondon U-LOC\n\n'
               'Bonn U\n', encoding='utf-8')
  gold = conll.read_conll(str(p)).tags
  assert gold == [['B-PER', 'I-PER', 'L-PER', 'O', 'U-LOC', 'U-LOC'], ['U']]
  rng = np.random.default_rng(0)
  spans = lambda n: [(b, b + rng.integers(1, 4), ('PER', 'LOC')[rng.integers(2)])
                     for b in range(0, n - 3, 4) if rng.random() < 0.6]
  def tags(n, chunks):
    out = ['O'] * n
    for b, e, t in chunks:
      out[b:e] = [f'U-{t}'] if e - b == 1 else [f'B-{t}'] + [f'I-{t}'] * (e - b - 2) + [f'L-{t}']
    return out
  gold = [tags(20, spans(20)) for _ in range(200)]
  pred = [tags(20, spans(20)) if rng.random() < 0.5 else g for g in gold]
  for seq in gold + pred:
    assert conll.entity_spans(seq) == {(e.tag, e.start, e.end)
                                       for e in Entities([seq], BILOU).entities[0]}
  assert conll.span_f1(gold, pred)['f1'] == pytest.approx(
      f1_score(gold, pred, mode='strict', scheme=BILOU), abs=1e-12)
  bad = ['L-PER', 'U-PER', 'I-PER', 'L-LOC', 'B', 'L', 'U', 'O', 'U-LOC']
  iobes = [{'L': 'E', 'U': 'S'}.get(t[0], t[0]) + t[1:] for t in bad]
  assert conll.entity_spans(bad) == {(t, b, e + 1) for t, b, e in get_entities(iobes)}


def test_io_tags_read_as_runs_of_one_type_and_written_back():
  """IO (Few-NERD's files): a run of words with one type is one entity, as Few-NERD's own
  scorer reads it; `from_io` gives the IOB2 tags of those runs and `convert_tags(..., 'io')`
  the IO tags of any sequence's spans (adjacent entities of a type merge: IO cannot tell)."""
  from translearn_jax.data import conll
  io = ['person-actor', 'person-actor', 'O', 'location-GPE', 'person-actor', 'person-actor',
        'O', 'O', 'art-music']
  bio = conll.from_io(io)
  assert bio == ['B-person-actor', 'I-person-actor', 'O', 'B-location-GPE', 'B-person-actor',
                 'I-person-actor', 'O', 'O', 'B-art-music']
  assert conll.entity_spans(bio) == {('person-actor', 0, 2), ('location-GPE', 3, 4),
                                     ('person-actor', 4, 6), ('art-music', 8, 9)}
  assert conll.convert_tags(bio, 'io') == io
  assert conll.convert_tags(['B-PER', 'B-PER', 'I-LOC', 'O'], 'io') == ['PER', 'PER', 'LOC', 'O']
  assert conll.from_io(conll.convert_tags(['B-PER', 'B-PER'], 'io')) == ['B-PER', 'I-PER']
  with pytest.raises(ValueError, match="tag scheme must be '' .* or 'io'"):
    conll.read_conll('unused', scheme='bio')


def test_span_scores_refuse_different_numbers_of_sentences():
  """As seqeval: predictions for fewer sentences than the gold ones are an error, not a
  score over the first ones (the second sentence's entity was counted neither way)."""
  from translearn_jax.data import conll
  with pytest.raises(ValueError, match=r'2 gold but 1 predicted sequences'):
    conll.span_f1([['B-PER'], ['B-LOC']], [['B-PER']])
  with pytest.raises(ValueError, match=r'1 gold but 2 predicted sequences'):
    conll.span_scores([['B-PER']], [['B-PER'], ['O']])


@pytest.mark.parametrize('prefixes', ['BI', 'BIES'])
def test_entity_spans_chunk_as_seqeval_does_on_random_tags(prefixes):
  """Arbitrary (also ill-formed) IOB and IOBES sequences: the same chunks, and so the same
  micro and per-type scores, as seqeval's default mode."""
  from seqeval.metrics import classification_report, f1_score
  from seqeval.metrics.sequence_labeling import get_entities
  from translearn_jax.data import conll
  rng = np.random.default_rng(len(prefixes))
  kinds = ['O', 'O'] + [f'{p}-{t}' for p in prefixes for t in ('PER', 'LOC', 'B-X')]
  draw = lambda: [[kinds[k] for k in rng.integers(len(kinds), size=rng.integers(1, 12))]
                  for _ in range(400)]
  gold, pred = draw(), [[t if rng.random() < 0.7 else kinds[rng.integers(len(kinds))]
                         for t in s] for s in draw()]
  pred = [p[:len(g)] + ['O'] * (len(g) - len(p)) for g, p in zip(gold, pred)]
  for seq in gold + pred:
    assert conll.entity_spans(seq) == {(t, b, e + 1) for t, b, e in get_entities(seq)}, seq
  assert conll.span_f1(gold, pred)['f1'] == pytest.approx(f1_score(gold, pred), abs=1e-12)
  ref = classification_report(gold, pred, output_dict=True)
  for t, s in conll.span_scores(gold, pred)['types'].items():
    assert s['f1'] == pytest.approx(ref[t]['f1-score'], abs=1e-12), t


def test_ner_tagger_learns_from_lm_run(tmp_path, tiny_lm_run, conll_task):
  from translearn_jax.downstream import tagging as tagging_task
  from translearn_jax.experiments import tagging
  lm_dir = tiny_lm_run
  from configs import transfer_conll_lm
  c = transfer_conll_lm.get_config()
  c.data.train_path, c.data.dev_path, c.data.test_path = conll_task
  c.init.path = lm_dir
  c.model.max_tokens = 48
  c.transfer.groups = (r'head=^head/,top=^backbone/(block_0|ln_final)/,'
                       r'embed=^backbone/(embed|pos_embed)')
  c.train.epochs, c.train.batch_size = 10, 8
  c.optim.learning_rate = 1e-2
  summary = tagging.train_and_evaluate(c, str(tmp_path / 'ner'))
  # All-'O' scores 0; capitalisation is learnable from the pieces.
  assert summary['rows'][0]['test_mean'] > 0.6
  # the best dev epoch's scores per entity type, recorded and summarised
  name = summary['rows'][0]['entity_types']['NAME']
  assert name['f1_mean'] == pytest.approx(summary['rows'][0]['test_mean'])   # the one type
  assert name['gold'] > 0 and name['seeds'] == 1 and name['f1_ci95'] is None
  rec = json.loads((tmp_path / 'ner' / 'runs.jsonl').read_text().splitlines()[0])
  assert rec['details']['entity_types']['NAME']['f1'] == pytest.approx(rec['test'])
  # prediction in length-sorted, trimmed batches == the full-width model, in corpus order
  c.model.max_tokens = 64
  setup = tagging_task.TaggingTask(c)
  params, _ = setup.init_params(1, 'finetune')
  toks, mask, pos, _ = setup.inputs['test']
  assert task_lib.trimmed_width(mask[np.argsort(mask.sum(1))[:7]]) < toks.shape[1]
  full = np.asarray(setup._eval(params, toks, mask)[0])
  want = [[setup.tag_names[full[r, q]] if q >= 0 else 'O'
           for q in pos[r, :len(s)]] for r, s in enumerate(setup.corpora['test'].sentences)]
  assert len({t for s in want for t in s}) > 1  # an untrained head still varies by position
  assert setup.predict(params, 'test', batch=7) == want


def test_linear_probe_strategy_uses_frozen_pretrained_features(tmp_path, topic_task, vectors):
  c = base_config(topic_task, vectors[0])
  setup = task.ClassificationTask(c)
  from translearn_jax.transfer import probes
  r = classification.run_once(setup, 'linear_probe_svm', 0, c, str(tmp_path / 'run'))
  assert r['report'].frozen == ['backbone/embed/embedding']
  # the embedding is the grafted one: the file's vectors for its 300 words
  emb = np.asarray(r['params']['backbone']['embed']['embedding'])
  words, vecs = vectors[1], np.loadtxt(vectors[0], skiprows=1, usecols=range(1, 17),
                                         comments=None, dtype=np.float32)
  np.testing.assert_array_equal(emb[[setup.vocab.index(w) for w in words]], vecs)
  # features = each example's mean word vector (numpy); the result = an SVM probe on them
  feats, labels = {}, {}
  for split, (toks, mask, y) in setup.inputs.items():
    m = mask[..., None].astype(np.float32)
    want = (emb[toks] * m).sum(1) / np.maximum(m.sum(1), 1.0)
    feats[split], labels[split] = setup.features(r['params'], split), y
    np.testing.assert_allclose(feats[split], want, rtol=1e-5, atol=1e-6)
  best = probes.probe(feats, labels, 2, 'svm')
  assert (r['dev'], r['test'], r['l2']) == (best['dev'], best['test'], best['l2'])


def test_lora_starts_as_the_pretrained_function_and_trains_only_adapters(tmp_path, topic_task,
                                                                        tiny_lm_run):
  from translearn_jax.models import transformer_lm
  import jax.numpy as jnp
  # 1. A LoRA model with grafted weights computes the pretrained model's function.
  cfg = transformer_lm.TransformerConfig(vocab_size=40, d_model=16, num_heads=2, num_layers=1,
                                         d_ff=32, max_len=16)
  toks = jnp.asarray(np.random.default_rng(0).integers(0, 40, (2, 9)), jnp.int32)
  plain = transformer_lm.TransformerLM(cfg)
  p_plain = jax.jit(plain.init)(jax.random.key(0), toks)['params']
  lora = transformer_lm.TransformerLM(cfg.replace(lora_rank=4))
  p_lora, report = g.graft(jax.jit(lora.init)(jax.random.key(1), toks)['params'], p_plain,
                           g.parse_rules('(.*)=>\\1'))
  assert sorted(report.created) == sorted(
      f'block_0/attn/{n}/lora_{x}' for n in ('query', 'value') for x in 'ab')
  np.testing.assert_allclose(jax.jit(lora.apply)({'params': p_lora}, toks),
                             jax.jit(plain.apply)({'params': p_plain}, toks), atol=1e-6)
  # 2. Strategy 'lora' in a classifier: the backbone stays bit-identical.
  lm_dir = tiny_lm_run
  from configs import transfer_mr_lm
  c = transfer_mr_lm.get_config()
  c.data.kind, c.data.path, c.init.path = 'tsv', topic_task, lm_dir
  c.model.max_tokens, c.model.lora_rank = 48, 2
  c.train.epochs, c.train.batch_size = 1, 32
  c.transfer.groups = r'head=^head/,body=^backbone/'
  setup = task.ClassificationTask(c)
  start, _ = setup.init_params(0, 'lora')
  r = classification.run_once(setup, 'lora', 0, c, str(tmp_path / 'run'))
  flat0, flat1 = g.flatten(start), g.flatten(r['params'])
  for path in flat0:
    same = np.array_equal(np.asarray(flat0[path]), np.asarray(flat1[path]))
    assert same == (path.startswith('backbone/') and '/lora_' not in path), path
  assert 'backbone/block_0/attn/query/kernel' in r['report'].frozen
  assert not any('lora_' in p for p in r['report'].frozen)


def test_lora_adapters_are_drawn_and_scaled_as_peft_draws_and_scales_them():
  """`lora_a` uniform in ±1/sqrt(fan_in) (peft's and loralib's kaiming_uniform_(a=sqrt(5))),
  `lora_b` zero, the update scaled by lora_alpha / lora_rank: merged, W + (alpha/r)·A·B."""
  from translearn_jax.models import layers
  import jax.numpy as jnp
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 256)), jnp.float32)
  dense = layers.Dense(8, lora_rank=4, lora_alpha=8.0)
  p = dense.init(jax.random.key(0), x)['params']
  a = np.asarray(p['lora_a'])
  assert a.shape == (256, 4) and np.abs(a).max() <= 1 / 16 and np.abs(a).max() > 0.9 / 16
  assert np.std(a) == pytest.approx(1 / np.sqrt(3 * 256), rel=0.1)
  assert not np.asarray(p['lora_b']).any()
  p = dict(p, lora_b=jnp.asarray(np.random.default_rng(1).normal(size=(4, 8)), jnp.float32))
  merged = np.asarray(p['kernel']) + 8.0 / 4 * a @ np.asarray(p['lora_b'])
  np.testing.assert_allclose(dense.apply({'params': p}, x),
                             np.asarray(x) @ merged + np.asarray(p['bias']), rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize('field, value, match', [
    ('lora_rank', -2, r'config\.model\.lora_rank: must be an integer >= 0'),
    ('lora_alpha', 0.0, r'config\.model\.lora_alpha: must be > 0'),
    ('lora_alpha', float('nan'), r'config\.model\.lora_alpha: must be > 0')])
def test_bad_lora_settings_are_refused_by_name(topic_task, tiny_lm_run, field, value, match):
  """A negative rank had trained with no adapters at all, silently."""
  from configs import transfer_mr_lm
  c = transfer_mr_lm.get_config()
  c.data.kind, c.data.path, c.init.path = 'tsv', topic_task, tiny_lm_run
  c.model.max_tokens, c.model[field] = 48, value
  with pytest.raises(ConfigError, match=match):
    task.ClassificationTask(c)


@pytest.mark.parametrize('config_name, message', [
    # the default data.path read as TSV: a directory without .tsv files (or absent)
    ('transfer_mr_lm', r'error: no (tsv files \(\.tsv\) in directory|such file or directory:) '
                       r'\S*rt_polarity$'),
    ('transfer_conll_lm', r'error: no such file or directory: \S*/x\.txt$')], ids=['mr', 'conll'])
def test_train_py_runs_transfer_configs_with_clear_errors(tmp_path, config_name, message):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  res = subprocess.run(
      [sys.executable, os.path.join(root, 'train.py'), '--config',
       os.path.join(root, 'configs', f'{config_name}.py'), '--workdir', str(tmp_path),
       '--config.init.path=/no/such/run', '--config.data.kind=tsv'] if config_name ==
      'transfer_mr_lm' else
      [sys.executable, os.path.join(root, 'train.py'), '--config',
       os.path.join(root, 'configs', f'{config_name}.py'), '--workdir', str(tmp_path),
       '--config.init.path=/no/such/run', f'--config.data.train_path={tmp_path}/x.txt'],
      capture_output=True, text=True, timeout=300, cwd=root)
  assert res.returncode == 2, res.stderr
  err = [l for l in res.stderr.splitlines() if l.startswith('error: ')]
  assert len(err) == 1 and re.match(message, err[0]), res.stderr


def test_predefined_split_files_share_the_training_label_ids(tmp_path):
  import ml_collections
  from translearn_jax.data import labelled
  (tmp_path / 'train.tsv').write_text('sentence\tlabel\ngood film \tpos\nbad film \tneg\n'
                                      'fine film \tpos\n', encoding='utf-8')
  (tmp_path / 'dev.tsv').write_text('sentence\tlabel\nlovely \tpos\n', encoding='utf-8')
  (tmp_path / 'test.tsv').write_text('sentence\tlabel\ngreat \tpos\npoor \tneg\n',
                                     encoding='utf-8')
  cfg = ml_collections.ConfigDict(dict(
      kind='tsv', path=str(tmp_path / 'train.tsv'), dev_path=str(tmp_path / 'dev.tsv'),
      test_path=str(tmp_path / 'test.tsv'), text_field='sentence', label_field='label',
      split='0.8,0.1,0.1', split_seed=0))
  s = labelled.read_splits(cfg)
  assert s['train'].label_names == ['neg', 'pos'] and s['test'].label_names == ['neg', 'pos']
  # dev holds only 'pos' (id 0 among its own labels): ids come from the training file
  assert s['dev'].labels.tolist() == [1] and s['test'].labels.tolist() == [1, 0]
  assert s['test'].texts == ['great ', 'poor '] and len(s['train'].texts) == 3
  (tmp_path / 'dev.tsv').write_text('sentence\tlabel\nmeh \tneutral\n', encoding='utf-8')
  with pytest.raises(DataError, match=r"dev\.tsv: label\(s\) \['neutral'\] do not occur"):
    labelled.read_splits(cfg)
  cfg.dev_path = ''
  with pytest.raises(ConfigError, match='dev_path and config.data.test_path go together'):
    labelled.read_splits(cfg)
  # neither: the training file is cut by the fractions, stratified (its one 'neg' example
  # is kept for training, as every class's first one is, which leaves dev empty: an error)
  cfg.test_path, cfg.split = '', '0.34,0.33,0.33'
  with pytest.raises(DataError, match=r"the dev split of \S*train\.tsv is empty"):
    labelled.read_splits(cfg)
  with open(tmp_path / 'train.tsv', 'a', encoding='utf-8') as f:
    f.write('dull film \tneg\nawful film \tneg\nnice film \tpos\n')
  s = labelled.read_splits(cfg)
  assert sorted(sum((s[k].texts for k in s), [])) == [
      'awful film ', 'bad film ', 'dull film ', 'fine film ', 'good film ', 'nice film ']
  assert all(sorted(s[k].labels.tolist()) == [0, 1] for k in s)


def test_tagging_task_reads_a_tfds_dataset(tmp_path, tiny_lm_run):
  """`data.kind='tfds'` for tagging: the task builds from TFDS splits (split names in
  data.*_path) with the tag set of its training split."""
  from configs import transfer_conll_lm
  from tfds_tiny_ner.tiny_ner_dataset_builder import TAGS, Builder
  from translearn_jax.downstream.tagging import TaggingTask
  Builder(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  c = transfer_conll_lm.get_config()
  c.data.kind, c.data.path, c.data.data_dir = 'tfds', 'tiny_ner', str(tmp_path)
  c.data.train_path, c.data.dev_path, c.data.test_path = 'train', 'validation', 'validation'
  c.init.path, c.model.max_tokens = tiny_lm_run, 32
  task = TaggingTask(c)
  assert task.tag_names == ['O'] + sorted(t for t in TAGS if t != 'O')
  assert len(task.corpora['test'].sentences) == 3
  c.data.kind = 'iob'
  with pytest.raises(ConfigError, match="config.data.kind: 'conll' \\(files\\) or 'tfds', "
                                        "got 'iob'"):
    TaggingTask(c)


def test_class_scores_equal_scikit_learn():
  """Accuracy, macro-F1 and per-class precision/recall/F1 as scikit-learn computes them,
  classes that are never predicted (or absent from the gold labels) included."""
  from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
  rng = np.random.default_rng(0)
  names = ['neg', 'neu', 'pos', 'unused']
  for trial in range(20):
    gold = rng.choice(3, 50, p=[0.7, 0.2, 0.1])
    pred = np.where(rng.random(50) < 0.6, gold, rng.integers(0, 3 if trial % 2 else 2, 50))
    got = task.class_scores(pred, gold, names)
    assert got['accuracy'] == pytest.approx(accuracy_score(gold, pred))
    assert got['macro_f1'] == pytest.approx(f1_score(gold, pred, average='macro',
                                                     zero_division=0))
    p, r, f, support = precision_recall_fscore_support(gold, pred, labels=[0, 1, 2, 3],
                                                       zero_division=0)
    for i, n in enumerate(names):
      c = got['classes'][n]
      assert (c['precision'], c['recall'], c['f1'], c['gold']) == pytest.approx(
          (p[i], r[i], f[i], support[i]))
  assert task.class_scores(np.array([0, 0]), np.array([0, 0]), names)['macro_f1'] == 1.0


def test_macro_f1_picks_epochs_and_probe_penalties_and_is_reported(tmp_path, topic_task,
                                                                   vectors):
  """eval.metric='macro_f1': dev macro-F1 picks the best epoch and the probe's L2; the test
  score recorded is macro-F1, with accuracy and each class's scores beside it; runners that
  score accuracy only refuse it; an unknown metric is named."""
  c = base_config(topic_task, vectors[0])
  c.compare_scratch, c.seeds = True, 1
  c.transfer.strategies = 'finetune,linear_probe_logistic'
  c.eval.metric = 'macro_f1'
  summary = classification.train_and_evaluate(c, str(tmp_path / 'cmp'))
  setup = task.ClassificationTask(c)
  recs = [json.loads(l) for l in open(tmp_path / 'cmp' / 'runs.jsonl')]
  assert [r['strategy'] for r in recs] == ['scratch', 'finetune', 'linear_probe_logistic']
  for r in recs:
    d = r['details']
    assert r['test'] == pytest.approx(d['macro_f1'])
    assert set(d['classes']) == set(setup.splits['train'].label_names)
    n = sum(v['gold'] for v in d['classes'].values())
    assert n == 120 and d['accuracy'] == pytest.approx(
        sum(v['recall'] * v['gold'] for v in d['classes'].values()) / n)
  # the saved best model of the fine-tuned run repeats the recorded macro-F1 on test
  from translearn_jax import serving
  model = serving.load(str(tmp_path / 'cmp' / 'models' / 'finetune'))
  prov = model.meta['provenance']
  assert prov['metric'] == 'macro_f1' and prov['test'] == pytest.approx(recs[1]['test'])
  rows = {r['strategy']: r for r in summary['rows']}
  assert rows['finetune']['macro_f1_mean'] == pytest.approx(recs[1]['details']['macro_f1'])
  assert set(rows['finetune']['classes']) == set(setup.splits['train'].label_names)
  # the probe's penalty is the one with the best dev macro-F1
  from translearn_jax.transfer import probes
  params, _ = setup.init_params(0, 'linear_probe_logistic')
  feats = {s: setup.features(params, s) for s in setup.inputs}
  labels = {s: y for s, (_, _, y) in setup.inputs.items()}
  names = setup.splits['train'].label_names
  by_l2 = {l2: probes.probe(feats, labels, setup.num_classes, 'logistic', l2_grid=(l2,),
                            score=lambda p, g: task.class_scores(p, g, names)['macro_f1'])['dev']
           for l2 in (1e-4, 1e-3, 1e-2, 1e-1)}
  assert recs[2]['dev'] == pytest.approx(max(by_l2.values()))
  from translearn_jax.experiments import dann, learning_curves, zero_shot
  for runner, name in ((dann, 'DANN'), (learning_curves, 'learning-curve'),
                       (zero_shot, 'zero-shot')):
    with pytest.raises(ConfigError, match=f"eval.metric='macro_f1': the {name} runner scores "
                                          'accuracy only'):
      runner.train_and_evaluate(c, str(tmp_path / name))
  c.eval.metric = 'f1'
  with pytest.raises(ConfigError, match=r"config.eval.metric: a classifier is scored by one of "
                                        r"\('accuracy', 'macro_f1'\), got 'f1'"):
    task.ClassificationTask(c)


def test_tagging_training_data_without_entities_is_one_error(tmp_path, tiny_lm_run):
  """A training file whose every word is 'O' (a wrong tag column, a filtered export) has
  nothing to learn or score: one error naming it, as a one-class classification set is."""
  from configs import transfer_conll_lm
  from translearn_jax.downstream.tagging import TaggingTask
  p = tmp_path / 'train.txt'
  p.write_text('EU O\nrejects O\n\nBonn O\n', encoding='utf-8')
  c = transfer_conll_lm.get_config()
  c.data.train_path = c.data.dev_path = c.data.test_path = str(p)
  c.init.path, c.model.max_tokens = tiny_lm_run, 32
  with pytest.raises(DataError, match=r"train\.txt: the training sentences carry no entity tag"):
    TaggingTask(c)


def test_evaluation_set_names_are_unique():
  """Similarity scores are keyed by set name: two bare paths with one file name (or a set
  named like the analogy result) would overwrite each other's score."""
  from translearn_jax.evaluation import word_vectors as wv
  assert wv.parse_named_paths('ws=a/x.txt,b/x.txt') == [('ws', 'a/x.txt'), ('x.txt', 'b/x.txt')]
  with pytest.raises(ConfigError, match=r"names \['x.txt'\] are used twice"):
    wv.parse_named_paths('a/x.txt,b/x.txt')
  with pytest.raises(ConfigError, match=r"\['analogy'\]"):
    wv.parse_named_paths('analogy=a.txt')


def test_transfer_that_moves_nothing_is_refused_and_a_word2vec_run_grafts(tmp_path, topic_task,
                                                                         tiny_config):
  """A word2vec run directory as the source grafts its input table (the default rule reads
  `embedding`, as a vectors file names it); a graft that moves nothing (a mistyped rule) or
  finds no task word in the source (another language) is one error, not a 'transfer' run on
  random or constant embeddings."""
  from translearn_jax.downstream.classification import ClassificationTask
  from translearn_jax.export.word2vec_format import save_word2vec
  from translearn_jax.pretraining import word2vec
  from translearn_jax.transfer.graft import GraftError
  run = tmp_path / 'w2v'
  tiny_config.export.format = ''
  word2vec.train_and_evaluate(tiny_config, str(run))
  c = base_config(topic_task, str(run))
  c.init.kind = 'word2vec_run'
  task = ClassificationTask(c)
  params, report = task.init_params(0, 'feature_extraction')
  assert ('embedding', 'backbone/embed/embedding', (len(task.vocab), 16)) in report.grafted
  src = task.source
  found = [w for w in task.vocab if w in src.vocab][:5]
  assert found
  for w in found:
    np.testing.assert_array_equal(params['backbone']['embed']['embedding'][task.vocab.index(w)],
                                  src.params['in_embed'][src.vocab.index(w)])
  c.init.rules = 'embeding=>backbone/embed/embedding'          # mistyped
  with pytest.raises(GraftError, match=r'config\.init\.rules: nothing of .* was grafted'):
    ClassificationTask(c).init_params(0, 'finetune')
  assert ClassificationTask(c).init_params(0, 'scratch')[1] is None   # scratch grafts nothing
  save_word2vec(str(tmp_path / 'other.txt'), ['xyzzy', 'plugh'], np.ones((2, 16), np.float32))
  c = base_config(topic_task, str(tmp_path / 'other.txt'))
  with pytest.raises(GraftError, match=r"holds none of the task's \d+ words"):
    ClassificationTask(c).init_params(0, 'feature_extraction')
