"""Saved fine-tuned models (`serving`): what runs save, and that predict_file / translate_file
repeat the run's own test predictions exactly; atomic saves; bad input."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import set_fields
import train
from translearn_jax import serving
from translearn_jax.data import conll, labelled
from translearn_jax.errors import ConfigError, DataError, TranslearnError
from translearn_jax.serving import saved_model

GROUPS = r'head=^head/,top=^backbone/(block_0|ln_final)/,embed=^backbone/(embed|pos_embed)'


def bag_config(task_path, vectors_path, **over):
  from configs import transfer_mr_skipgram
  c = transfer_mr_skipgram.get_config()
  c.data.kind, c.data.path = 'tsv', task_path
  c.model.dim, c.model.max_tokens, c.init.path = 16, 16, vectors_path   # few shapes to compile
  c.train.epochs, c.train.batch_size = 2, 32
  return set_fields(c, over)


def split_file(tmp_path, config, name='test.txt', split='test'):
  """The texts of `config`'s split, one a line, and their gold label names."""
  s = labelled.read_splits(config.data)[split]
  path = tmp_path / name
  path.write_text(''.join(t + '\n' for t in s.texts), encoding='utf-8')
  return str(path), [s.label_names[y] for y in s.labels]


def accuracy(out_path, gold):
  preds = [json.loads(l) for l in open(out_path, encoding='utf-8')]
  assert len(preds) == len(gold)
  return sum(p['label'] == g for p, g in zip(preds, gold)) / len(gold), preds


@pytest.fixture(scope='module')
def bag_run(tmp_path_factory, topic_task, vectors):
  """A single fine-tuning run of a bag-of-embeddings classifier: (config, workdir, summary)."""
  workdir = str(tmp_path_factory.mktemp('bag') / 'run')
  c = bag_config(topic_task, vectors[0])
  return c, workdir, train.run(c, workdir)


@pytest.fixture(scope='module')
def s2s_run(tmp_path_factory):
  """A short seq2seq run on made-up pairs (target: the source's first three words)."""
  d = tmp_path_factory.mktemp('s2s')
  rng = np.random.default_rng(0)
  words = 'river stone forest light cloud market harbour engine garden letter'.split()
  for name, n in (('train', 64), ('valid', 12), ('test', 20)):
    docs = [' '.join(words[i] for i in rng.integers(0, len(words), rng.integers(3, 9)))
            for _ in range(n)]
    (d / f'{name}.src').write_text('\n'.join(docs) + '\n', encoding='utf-8')
    (d / f'{name}.tgt').write_text('\n'.join(' '.join(x.split()[:3]) for x in docs) + '\n',
                                   encoding='utf-8')
  from configs import seq2seq_multi30k
  c = seq2seq_multi30k.get_config()
  for s in ('train', 'valid', 'test'):
    c.data[f'{s}_source'], c.data[f'{s}_target'] = str(d / f'{s}.src'), str(d / f'{s}.tgt')
  set_fields(c, {'tokenizer.vocab_size': 320, 'model.d_model': 32, 'model.num_heads': 2,
                 'model.d_ff': 64, 'model.encoder_layers': 1, 'model.decoder_layers': 1,
                 'max_source_len': 24, 'max_target_len': 12, 'length_buckets': '',
                 'train.batch_size': 16, 'train.epochs': 80, 'num_devices': 1,
                 'progress': False, 'optim.warmup_steps': 2, 'optim.learning_rate': 5e-3,
                 'label_smoothing': 0.0, 'model.dropout': 0.0, 'eval.beam': 2,
                 'eval.no_repeat_ngram_size': 5})   # longer than any target: no effect
  workdir = str(d / 'run')
  return c, workdir, train.run(c, workdir), str(d / 'test.src')


# -- classification --------------------------------------------------------------------

def test_classifier_saved_model_repeats_the_reported_test_accuracy(tmp_path, bag_run):
  c, workdir, summary = bag_run
  model_dir = os.path.join(workdir, 'model')
  meta = json.load(open(os.path.join(model_dir, 'model.json')))
  assert (meta['format'], meta['format_version'], meta['task']) == (
      'translearn_jax.saved_model', 1, 'classification')
  assert meta['model']['class'] == 'BagOfEmbeddings' and meta['inputs']['encoding'] == 'words'
  prov = meta['provenance']
  best = json.loads(open(os.path.join(workdir, 'runs.jsonl')).readline())
  assert (prov['strategy'], prov['seed'], prov['dev'], prov['test'], prov['epoch']) == (
      'finetune', 0, best['dev'], best['test'], best['epoch'])
  assert prov['init'] == {'kind': 'word2vec', 'path': c.init.path}
  assert prov['graft']['grafted'] == 1 and prov['graft']['created_paths'] == ['head/bias',
                                                                              'head/kernel']
  assert prov['config']['model']['dim'] == 16 and meta['version'] and meta['created']
  assert sorted(os.listdir(model_dir)) == ['model.json', 'params.safetensors', 'vocab.txt']
  run_dir = os.path.join(workdir, 'runs', 'finetune-seed0')       # moved, checkpoints cleaned
  assert os.path.isdir(run_dir) and not {'best_model', 'checkpoints'} & set(os.listdir(run_dir))
  # the test split, as text: the run's test accuracy exactly (the task's eval batches: 512)
  path, gold = split_file(tmp_path, c)
  out = str(tmp_path / 'pred.jsonl')
  res = serving.predict_file(model_dir, path, out)   # default: the task's eval batch
  acc, preds = accuracy(out, gold)
  assert res['examples'] == len(gold) == 120 and acc == summary['rows'][0]['test'][0]
  p = preds[0]['probabilities']
  assert set(p) == {'0', '1'} and sum(p.values()) == pytest.approx(1.0)
  assert preds[0]['label'] == max(p, key=p.get)
  # the same file as TSV (column 'sentence' by default) and JSONL ('text'): the same output
  rows = labelled.read_splits(c.data)['test'].texts
  tsv, jsonl = tmp_path / 'in.tsv', tmp_path / 'in.jsonl'
  tsv.write_text('id\tsentence\n' + ''.join(f'{i}\t{t}\n' for i, t in enumerate(rows)))
  jsonl.write_text(''.join(json.dumps({'text': t}) + '\n' for t in rows))
  for src in (tsv, jsonl):
    serving.predict_file(model_dir, str(src), str(tmp_path / 'again.jsonl'), batch_size=512)
    assert open(tmp_path / 'again.jsonl').read() == open(out).read()


def test_lm_linear_probe_saved_model_repeats_its_accuracy(tmp_path, topic_task, tiny_lm_run):
  """An LM-bodied classifier (sentencepiece tokenizer copied in, the LM architecture in
  model.json), trained as a linear probe: the probe folded into the head."""
  from configs import transfer_mr_lm
  c = transfer_mr_lm.get_config()
  set_fields(c, {'data.kind': 'tsv', 'data.path': topic_task, 'init.path': tiny_lm_run,
                 'model.max_tokens': 16, 'transfer.groups': GROUPS,
                 'transfer.strategy': 'linear_probe_logistic'})
  summary = train.run(c, str(tmp_path / 'run'))
  model_dir = str(tmp_path / 'run' / 'model')
  meta = json.load(open(os.path.join(model_dir, 'model.json')))
  assert meta['model']['lm_config']['arch'] == 'transformer'
  assert meta['model']['lm_config']['dtype'] == 'float32' and meta['inputs']['causal'] is True
  assert meta['provenance']['graft']['frozen'] > 0 and 'l2' in meta['provenance']
  assert os.path.isfile(os.path.join(model_dir, 'tokenizer.model'))
  path, gold = split_file(tmp_path, c)
  serving.predict_file(model_dir, path, str(tmp_path / 'p.jsonl'))
  acc, _ = accuracy(str(tmp_path / 'p.jsonl'), gold)
  assert acc == summary['rows'][0]['test'][0] > 0.5


def test_a_probe_folded_into_a_head_computes_the_probe():
  from translearn_jax.transfer import probes
  rng = np.random.default_rng(0)
  train, x = rng.normal(3.0, 2.0, (200, 5)), rng.normal(3.0, 2.0, (50, 5))
  w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
  mu, sd = probes.moments(train)
  kernel, bias = probes.fold(w, b, mu, sd)
  np.testing.assert_allclose(x @ kernel + bias, probes.standardise(train, x)[1] @ w + b,
                             rtol=1e-5, atol=1e-5)


def test_a_resumed_run_keeps_its_best_model(tmp_path, monkeypatch, bag_run, topic_task,
                                           vectors):
  """Stopped by a signal in epoch 2: the run directory holds epoch 1's model, nothing is
  promoted; resumed, the model is the uninterrupted run's, bit for bit."""
  from conftest import StopAfter
  c, workdir = bag_config(topic_task, vectors[0]), str(tmp_path / 'run')
  monkeypatch.setattr('translearn_jax.training.loop.StopSignal', StopAfter(40))
  assert train.run(c, workdir)['stopped_by_signal']
  staged = os.path.join(workdir, 'runs', 'finetune-seed0', 'best_model')
  assert saved_model.read_meta(staged)['provenance']['epoch'] == 1
  assert not os.path.exists(os.path.join(workdir, 'model'))
  monkeypatch.undo()
  train.run(c, workdir)
  params = lambda d: open(os.path.join(d, 'model', 'params.safetensors'), 'rb').read()
  assert params(workdir) == params(bag_run[1]) and not os.path.exists(staged)
  prov = lambda d: saved_model.read_meta(os.path.join(d, 'model'))['provenance']
  assert {k: prov(workdir)[k] for k in ('dev', 'test', 'epoch')} == \
      {k: prov(bag_run[1])[k] for k in ('dev', 'test', 'epoch')}


def test_causal_tagger_learns_iobes_data_as_iob2_and_writes_iobes(tmp_path, conll_task,
                                                                   tiny_lm_run):
  """A causal body cannot see whether the next word ends an entity (IOBES's E-/S-): it
  learns the IOB2 tags of the same spans, and its predictions, in training's scores and a
  saved model's output alike, are well-formed IOBES with the spans of its IOB2 ones."""
  from configs import transfer_conll_lm
  iobes = []
  for path in conll_task:
    corpus = conll.read_conll(path)
    out = tmp_path / os.path.basename(path)
    out.write_text('\n\n'.join('\n'.join(f'{w} {t}' for w, t in
                                          zip(s, conll.convert_tags(tags, 'iobes')))
                               for s, tags in zip(corpus.sentences, corpus.tags)) + '\n',
                   encoding='utf-8')
    iobes.append(str(out))
  assert conll.tag_scheme(conll.read_conll(iobes[0]).tags) == 'iobes'
  c = transfer_conll_lm.get_config()
  c.data.train_path, c.data.dev_path, c.data.test_path = iobes
  set_fields(c, {'init.path': tiny_lm_run, 'model.max_tokens': 16, 'transfer.groups': GROUPS,
                 'train.epochs': 2, 'train.batch_size': 8, 'optim.learning_rate': 1e-2})
  summary = train.run(c, str(tmp_path / 'run'))
  meta = json.loads((tmp_path / 'run' / 'model' / 'model.json').read_text())
  assert meta['inputs']['labels'] == ['O', 'B-NAME', 'I-NAME']
  assert meta['inputs']['tag_scheme'] == 'iobes'
  test = conll.read_conll(iobes[2])
  src = tmp_path / 'test.jsonl'
  src.write_text(''.join(json.dumps({'tokens': s}) + '\n' for s in test.sentences))
  serving.predict_file(str(tmp_path / 'run' / 'model'), str(src), str(tmp_path / 'tags.jsonl'))
  tags = [json.loads(l)['tags'] for l in open(tmp_path / 'tags.jsonl')]
  assert all(conll.convert_tags(t, 'iobes') == t for t in tags)          # well-formed IOBES
  assert {x[:2] for t in tags for x in t} & {'S-', 'E-'}   # labels are B-/I-: rewritten
  assert conll.span_scores(test.tags, tags)['micro']['f1'] == summary['rows'][0]['test'][0] > 0
  meta['inputs']['tag_scheme'] = 'bio'
  (tmp_path / 'run' / 'model' / 'model.json').write_text(json.dumps(meta))
  with pytest.raises(DataError, match=r"inputs.tag_scheme must be '', 'iobes', 'bilou' or 'io'"):
    saved_model.load(str(tmp_path / 'run' / 'model'))


def test_io_tagged_files_train_score_and_serve_as_io(tmp_path, conll_task, tiny_lm_run):
  """IO files (the entity type alone, as Few-NERD writes it, a type with a hyphen among
  them): refused without `data.tag_scheme='io'`, naming the file and line; with it, read as
  the IOB2 tags of each run of one type, trained and scored on those, and a saved tagger
  writes IO back (JSONL and CoNLL), with the span F1 the run reported."""
  from configs import transfer_conll_lm
  io = []
  for path in conll_task:
    corpus = conll.read_conll(path)
    out = tmp_path / os.path.basename(path)
    out.write_text('\n\n'.join('\n'.join(f'{w}\t{"O" if t == "O" else "person-name"}'
                                          for w, t in zip(s, tags))
                               for s, tags in zip(corpus.sentences, corpus.tags)) + '\n',
                   encoding='utf-8')
    io.append(str(out))
  with pytest.raises(DataError, match=rf"^{re.escape(io[0])}:\d+: tag 'person-name' is not O"):
    conll.read_conll(io[0])
  read = conll.read_conll(io[2], scheme='io')
  assert read.tags == [[t.replace('NAME', 'person-name') for t in tags]
                       for tags in conll.read_conll(conll_task[2]).tags]
  c = transfer_conll_lm.get_config()
  c.data.train_path, c.data.dev_path, c.data.test_path = io
  set_fields(c, {'init.path': tiny_lm_run, 'model.max_tokens': 16, 'transfer.groups': GROUPS,
                 'train.epochs': 2, 'train.batch_size': 8, 'optim.learning_rate': 1e-2})
  with pytest.raises(DataError, match=r"tag 'person-name' is not O"):
    train.run(c, str(tmp_path / 'refused'))
  c.data.tag_scheme = 'bio'
  with pytest.raises(ConfigError, match=r"^config\.data\.tag_scheme: .* got 'bio'"):
    train.run(c, str(tmp_path / 'refused2'))
  c.data.tag_scheme = 'io'
  summary = train.run(c, str(tmp_path / 'run'))
  model_dir = str(tmp_path / 'run' / 'model')
  meta = saved_model.read_meta(model_dir)
  assert meta['inputs']['labels'] == ['O', 'B-person-name', 'I-person-name']
  assert meta['inputs']['tag_scheme'] == 'io'
  # the IO test file itself: read as CoNLL (its last column is an IO tag), tags written as IO
  serving.predict_file(model_dir, io[2], str(tmp_path / 'pred.conll'))
  rows = [l.split('\t') for l in open(tmp_path / 'pred.conll').read().split('\n') if l]
  assert {r[-1] for r in rows} <= {'O', 'person-name'} and 'person-name' in {r[-1] for r in rows}
  serving.predict_file(model_dir, io[2], str(tmp_path / 'pred.jsonl'))
  pred = [json.loads(l)['tags'] for l in open(tmp_path / 'pred.jsonl')]
  assert [t for p in pred for t in p] == [r[-1] for r in rows]
  f1 = conll.span_scores(read.tags, [conll.from_io(p) for p in pred])['micro']['f1']
  assert f1 == summary['rows'][0]['test'][0] > 0
  # plain sentences (any word may stand in a tag column, none is this tagger's tag or O)
  # stay sentences, tab-separated tables too; a comment above an IO sentence stays a comment
  sents = [' '.join(s) for s in read.sentences[:6]]
  for name, text in (('plain.txt', '\n'.join(sents)), ('table.tsv', '\n'.join(
      f'{i}\t{x}' for i, x in enumerate(sents)))):
    (tmp_path / name).write_text(text + '\n', encoding='utf-8')
    assert not conll.looks_like_conll(str(tmp_path / name), scheme='io',
                                      known={'person-name'})
  serving.predict_file(model_dir, str(tmp_path / 'plain.txt'), str(tmp_path / 'plain.jsonl'))
  assert [json.loads(l)['tokens'] for l in open(tmp_path / 'plain.jsonl')] == \
      read.sentences[:6]
  (tmp_path / 'comment.conll').write_text('# source\tfew-nerd\n' + open(io[2]).read(),
                                          encoding='utf-8')
  serving.predict_file(model_dir, str(tmp_path / 'comment.conll'), str(tmp_path / 'c.jsonl'))
  assert open(tmp_path / 'c.jsonl').read() == open(tmp_path / 'pred.jsonl').read()


def test_tagger_saved_model_repeats_the_reported_span_f1(tmp_path, conll_task, tiny_lm_run):
  from configs import transfer_conll_lm
  c = transfer_conll_lm.get_config()
  c.data.train_path, c.data.dev_path, c.data.test_path = conll_task
  set_fields(c, {'init.path': tiny_lm_run, 'model.max_tokens': 16, 'transfer.groups': GROUPS,
                 'train.epochs': 2, 'train.batch_size': 8, 'optim.learning_rate': 1e-2})
  summary = train.run(c, str(tmp_path / 'run'))
  model_dir = str(tmp_path / 'run' / 'model')
  test = conll.read_conll(conll_task[2])
  src = tmp_path / 'test.txt'
  src.write_text(''.join(' '.join(s) + '\n' for s in test.sentences), encoding='utf-8')
  res = serving.predict_file(model_dir, str(src), str(tmp_path / 'tags.jsonl'))
  out = [json.loads(l) for l in open(tmp_path / 'tags.jsonl')]
  assert [o['tokens'] for o in out] == test.sentences
  f1 = conll.span_scores(test.tags, [o['tags'] for o in out])['micro']['f1']
  assert f1 == summary['rows'][0]['test'][0] > 0
  # max_tokens=16 cuts sentences of 10 words: cut words are 'O' with no probability
  assert res['truncated_words'] == sum(p is None for o in out for p in o['probabilities']) > 0
  assert all(0 < p <= 1 for o in out for p in o['probabilities'] if p is not None)
  # JSONL with word lists: the same tags
  js = tmp_path / 'test.jsonl'
  js.write_text(''.join(json.dumps({'tokens': s}) + '\n' for s in test.sentences))
  serving.predict_file(model_dir, str(js), str(tmp_path / 'tags2.jsonl'), batch_size=256)
  assert open(tmp_path / 'tags2.jsonl').read() == open(tmp_path / 'tags.jsonl').read()
  # text and JSONL text split words where a CoNLL line splits them: not at a no-break space
  nb = tmp_path / 'nbsp.txt'
  nb.write_text('Nueva\u00a0York es\u3000bonita\n', encoding='utf-8')
  serving.predict_file(model_dir, str(nb), str(tmp_path / 'nb.jsonl'))
  assert json.loads(open(tmp_path / 'nb.jsonl').read())['tokens'] == [
      'Nueva\u00a0York', 'es\u3000bonita']
  # the CoNLL test file itself (a -DOCSTART- line and a comment added): its lines come back
  # with the predicted tag appended, the layout conlleval scores; JSONL on request
  gold = tmp_path / 'test.conll'
  gold.write_text('-DOCSTART- -X- O\n\n# sent_id = 1\n' + open(conll_task[2]).read())
  serving.predict_file(model_dir, str(gold), str(tmp_path / 'pred.conll'))
  lines = open(tmp_path / 'pred.conll').read().split('\n')
  assert lines[:2] == ['-DOCSTART- -X- O O', '']       # the comment is left out
  rows = [l.split() for l in lines[2:] if l.strip()]
  assert len({len(r) for r in rows}) == 1              # conlleval: one column count
  assert [r[:-1] for r in rows] == [l.split() for l in open(conll_task[2]) if l.strip()]
  assert [r[-1] for r in rows] == [t for o in out for t in o['tags']]
  serving.predict_file(model_dir, str(gold), str(tmp_path / 'tags3.jsonl'), output_format='jsonl')
  assert open(tmp_path / 'tags3.jsonl').read() == open(tmp_path / 'tags.jsonl').read()
  # a CoNLL file named .txt (CoNLL-2003's own) is read as CoNLL, not as one sentence a line
  serving.predict_file(model_dir, conll_task[2], str(tmp_path / 'tags4.jsonl'))
  assert open(tmp_path / 'tags4.jsonl').read() == open(tmp_path / 'tags.jsonl').read()
  assert not conll.looks_like_conll(str(src))          # the plain sentences above
  crlf = tmp_path / 'crlf.txt'
  crlf.write_bytes(open(conll_task[2], 'rb').read().replace(b'\n', b'\r\n'))
  assert conll.looks_like_conll(str(crlf))
  # ... and so is one named .tsv (BioBERT-style NER files: token<TAB>tag)
  tsv = tmp_path / 'test.tsv'
  tsv.write_text(open(conll_task[2]).read().replace(' ', '\t'))
  serving.predict_file(model_dir, str(tsv), str(tmp_path / 'tags5.jsonl'))
  assert open(tmp_path / 'tags5.jsonl').read() == open(tmp_path / 'tags.jsonl').read()
  with pytest.raises(ConfigError, match=r"output_format='conll' .* needs CoNLL input"):
    serving.predict_file(model_dir, str(js), str(tmp_path / 'x.conll'), output_format='conll')


# -- comparisons -------------------------------------------------------------------------

def test_comparison_keeps_the_best_dev_seed_of_each_strategy(tmp_path, topic_task, vectors):
  c = bag_config(topic_task, vectors[0], compare_scratch=True, seeds=2,
                 **{'transfer.strategies': 'finetune', 'train.epochs': 1})
  c.train.checkpoint_every_steps = 1000          # one checkpoint a run (at its end)
  train.run(c, str(tmp_path / 'best'))
  recs = [json.loads(l) for l in open(tmp_path / 'best' / 'runs.jsonl')]
  assert sorted(os.listdir(tmp_path / 'best' / 'models')) == ['finetune', 'scratch']
  for strategy in ('scratch', 'finetune'):
    mine = [r for r in recs if r['strategy'] == strategy]
    want = max(mine, key=lambda r: (r['dev'], -r['seed']))       # the earlier seed on ties
    prov = saved_model.read_meta(str(tmp_path / 'best' / 'models' / strategy))['provenance']
    assert (prov['seed'], prov['dev'], prov['test']) == (want['seed'], want['dev'], want['test'])
  assert not any(os.path.exists(tmp_path / 'best' / 'runs' / d / 'best_model')
                 for d in os.listdir(tmp_path / 'best' / 'runs'))
  # 'all': every run; 'none': nothing; neither changes the comparison's fingerprint
  from translearn_jax.experiments import runs
  from translearn_jax.training import workdir as workdir_lib
  c.save_models, c.with_scratch = 'all', False
  fp = runs.fingerprint(c)
  train.run(c, str(tmp_path / 'all'))
  assert sorted(os.listdir(tmp_path / 'all' / 'models')) == ['finetune-seed0', 'finetune-seed1']
  c.save_models, c.seeds = 'none', 1
  assert runs.fingerprint(c) == fp
  train.run(c, str(tmp_path / 'none'))
  assert os.listdir(tmp_path / 'none' / 'runs') == ['finetune-seed0']
  assert not os.path.exists(tmp_path / 'none' / 'models')
  assert not os.path.exists(tmp_path / 'none' / 'runs' / 'finetune-seed0' / 'best_model')
  # an older run's config.json without the field resumes (the field's value before: 'best')
  assert workdir_lib.config_changes({'seed': 0}, {'seed': 0, 'save_models': 'best'}) == ([], [])
  # the same field of a task's config nested in another (the multi-task config's 'mr')
  old = {'mr': {'data': {'kind': 'tsv'}}}
  assert workdir_lib.config_changes(old, {'mr': {'data': {'kind': 'tsv', 'header': 'auto'}}}) \
      == ([], [])
  assert workdir_lib.config_changes(old, {'mr': {'data': {'kind': 'tsv', 'header': 'yes'}}}) \
      == (['mr.data.header "auto" → "yes"'], [])
  assert workdir_lib.may_change('save_models')
  c.save_models = 'some'
  with pytest.raises(ConfigError, match=r"^config\.save_models: must be one of \('best', "
                                        r"'all', 'none'\), got 'some'$"):
    train.run(c, str(tmp_path / 'bad'))


# -- seq2seq -----------------------------------------------------------------------------

def test_translate_file_repeats_the_runs_test_hypotheses(tmp_path, s2s_run):
  c, workdir, summary, test_src = s2s_run
  hyps = open(os.path.join(workdir, 'hypotheses.test.txt'), encoding='utf-8').read()
  assert len(hyps.splitlines()) == 20 and len(set(hyps.splitlines())) > 10   # varied outputs
  assert os.path.isfile(os.path.join(workdir, 'hypotheses.valid.txt'))
  meta = saved_model.read_meta(os.path.join(workdir, 'model'))
  assert meta['task'] == 'seq2seq' and meta['inputs']['beam'] == 2
  assert meta['provenance']['test'] == summary['test']
  out = str(tmp_path / 'out.txt')
  res = serving.translate_file(os.path.join(workdir, 'model'), test_src, out)
  assert res['beam'] == 2 and res['max_len'] == 12 and res['examples'] == 20
  assert open(out, encoding='utf-8').read() == hyps
  assert meta['inputs']['no_repeat_ngram_size'] == res['no_repeat_ngram_size'] == 5
  # a saved model's search constraints are its defaults: one that bans every repeated piece
  # changes the outputs, as the same option given to translate_file does
  banned = tmp_path / 'banned'
  shutil.copytree(os.path.join(workdir, 'model'), banned)
  meta_path = banned / saved_model.MODEL_JSON
  m = json.loads(meta_path.read_text())
  m['inputs']['no_repeat_ngram_size'] = 1
  meta_path.write_text(json.dumps(m))
  serving.translate_file(str(banned), test_src, str(tmp_path / 'b1.txt'))
  serving.translate_file(os.path.join(workdir, 'model'), test_src, str(tmp_path / 'b2.txt'),
                         no_repeat_ngram_size=1)
  assert (tmp_path / 'b1.txt').read_text() == (tmp_path / 'b2.txt').read_text() != hyps
  assert meta['inputs']['early_stopping'] == res['early_stopping'] == 'never'
  m['inputs']['early_stopping'] = 'soon'
  meta_path.write_text(json.dumps(m))
  with pytest.raises(DataError, match=r"inputs\.early_stopping .*'never', 'heuristic' or "
                                      r"'k_finished'"):
    serving.translate_file(str(banned), test_src, str(tmp_path / 'b3.txt'))
  m['inputs']['early_stopping'] = 'never'
  m['inputs']['min_length'] = -2
  meta_path.write_text(json.dumps(m))
  with pytest.raises(DataError, match=r'inputs\.min_length .*an integer >= 0'):
    serving.translate_file(str(banned), test_src, str(tmp_path / 'b3.txt'))
  assert res['truncated_sources'] == 0
  # a source beyond the model's max_source_len is cut to it, and the summary counts it
  long_src = tmp_path / 'long.txt'
  first = open(test_src, encoding='utf-8').readline().strip()
  long_src.write_text(first + '\n' + ' '.join([first] * 20) + '\n', encoding='utf-8')
  res = serving.translate_file(os.path.join(workdir, 'model'), str(long_src),
                               str(tmp_path / 'long_out.txt'))
  assert res['truncated_sources'] == 1 and res['max_source_len'] == c.max_source_len
  # both the saved model and the run directory know their training read aligned text files
  records = tmp_path / 'test.jsonl'
  records.write_text('{"source": "x"}\n', encoding='utf-8')
  for model in (os.path.join(workdir, 'model'), workdir):
    with pytest.raises(DataError, match='trained on aligned text files'):
      serving.translate_file(model, str(records), str(tmp_path / 'rec_out.txt'))
  # the run directory itself (its final checkpoint) translates the same
  serving.translate_file(workdir, test_src, str(tmp_path / 'run_out.txt'))
  assert open(tmp_path / 'run_out.txt', encoding='utf-8').read() == hyps
  with pytest.raises(ConfigError, match=r'max_len must be in \[1, 24\]'):
    serving.translate_file(workdir, test_src, out, max_len=25)


# -- atomic saves ------------------------------------------------------------------------

def test_a_failing_save_leaves_the_old_model_and_no_temporary_folder(tmp_path, bag_run,
                                                                      monkeypatch):
  model_dir = str(tmp_path / 'model')
  shutil.copytree(os.path.join(bag_run[1], 'model'), model_dir)
  before = {f: open(os.path.join(model_dir, f), 'rb').read() for f in os.listdir(model_dir)}
  m = saved_model.load(model_dir)

  def broken(path, flat):
    open(path, 'wb').write(b'half')
    raise OSError('disk full')
  monkeypatch.setattr(saved_model, 'write_params', broken)
  with pytest.raises(OSError, match='disk full'):
    saved_model.save(model_dir, m.module, m.params, task='classification', inputs=m.inputs,
                     vocab=m.vocab)
  assert sorted(os.listdir(tmp_path)) == ['model']
  assert {f: open(os.path.join(model_dir, f), 'rb').read() for f in os.listdir(model_dir)} == \
      before
  monkeypatch.undo()
  # a save that dies between its two renames leaves the old model aside: load names it,
  # and the next save (or `recover`) puts it back
  os.rename(model_dir, str(tmp_path / '.model.old4242'))
  with pytest.raises(DataError, match=r'a crashed save left the previous model at '
                                      r'\S*\.model\.old4242'):
    saved_model.load(model_dir)
  saved_model.recover(model_dir)
  assert sorted(os.listdir(tmp_path)) == ['model'] and saved_model.load(model_dir).vocab == m.vocab
  # a good save replaces the model whole
  saved_model.save(model_dir, m.module, m.params, task='classification', inputs=m.inputs,
                   vocab=m.vocab, provenance={'note': 'again'})
  assert saved_model.read_meta(model_dir)['provenance'] == {'note': 'again'}
  assert sorted(os.listdir(tmp_path)) == ['model']


# -- bad input ---------------------------------------------------------------------------

def _edit_json(path, **change):
  d = json.load(open(path))
  d.update(change)
  open(path, 'w').write(json.dumps(d))


def _edit_inputs(d, **fields):
  """model.json with `inputs` fields replaced (None: removed)."""
  meta = json.load(open(d / 'model.json'))
  for k, v in fields.items():
    if v is None:
      meta['inputs'].pop(k)
    else:
      meta['inputs'][k] = v
  (d / 'model.json').write_text(json.dumps(meta))


def test_broken_saved_models_are_named(tmp_path, bag_run):
  good = os.path.join(bag_run[1], 'model')
  inp = tmp_path / 'in.txt'
  inp.write_text('a fine film\n')
  out = str(tmp_path / 'out.jsonl')

  def broken(name, edit):
    d = tmp_path / name
    shutil.copytree(good, d)
    edit(d)
    return str(d)

  cases = [
      (str(tmp_path / 'nowhere'), r"saved model '\S*nowhere' does not exist$"),
      (broken('nojson', lambda d: os.remove(d / 'model.json')),
       r'nojson/model\.json: not found \(\S*nojson is not a saved model\)$'),
      (bag_run[1], r'is not a saved model; the run keeps its saved model\(s\) in \S+/model\)$'),
      (broken('badjson', lambda d: (d / 'model.json').write_text('{"format": ')),
       r'badjson/model\.json: cannot read it'),
      (broken('format', lambda d: _edit_json(d / 'model.json', format='other')),
       r"format 'other' is not 'translearn_jax\.saved_model'"),
      (broken('version', lambda d: _edit_json(d / 'model.json', format_version=2)),
       r'format_version 2 is not supported \(this version reads 1'),
      (broken('noparams', lambda d: os.remove(d / 'params.safetensors')),
       r'noparams/params\.safetensors: missing'),
      (broken('novocab', lambda d: os.remove(d / 'vocab.txt')), r'novocab/vocab\.txt: missing'),
      # files that disagree with the model, and hand-edited inputs, are named, not served
      (broken('shortvocab', lambda d: (d / 'vocab.txt').write_text(
          ''.join((d / 'vocab.txt').read_text().splitlines(True)[:-1]))),
       r'shortvocab/vocab\.txt: \d+ words for \d+ embedding rows$'),
      (broken('labels', lambda d: _edit_inputs(d, labels=['a', 'b', 'c'])),
       r'labels/model\.json: 3 labels for a model with 2 outputs$'),
      (broken('nolabels', lambda d: _edit_inputs(d, labels=None)),
       r'nolabels/model\.json: inputs\.labels is missing$'),
      (broken('maxtok', lambda d: _edit_inputs(d, max_tokens=0)),
       r'maxtok/model\.json: inputs\.max_tokens must be an integer >= 1, got 0$'),
      (broken('enc', lambda d: _edit_inputs(d, encoding='chars')),
       r"enc/model\.json: inputs\.encoding must be 'words' or 'pieces', got 'chars'$"),
  ]
  for model_dir, pattern in cases:
    with pytest.raises(DataError, match=pattern) as e:
      serving.predict_file(model_dir, str(inp), out)
    assert '\n' not in str(e.value)
  # a tensor of the wrong shape, and one the model does not have, are named
  from safetensors.numpy import load_file, save_file
  for name, change, pattern in (
      ('shape', lambda t: t.update({'head/kernel': np.zeros((3, 2), np.float32)}),
       r"tensor 'head/kernel' has shape \(3, 2\), the model needs \(16, 2\)$"),
      ('extra', lambda t: t.update({'head/extra': np.zeros(2, np.float32)}),
       r"tensor 'head/extra' is not a parameter of the model$"),
      ('missing', lambda t: t.pop('head/bias'), r"no tensor 'head/bias' \(the model needs "
                                               r"shape \(2,\)\)$"),
      ('int', lambda t: t.update({'head/kernel': t['head/kernel'].astype(np.int32)}),
       r"tensor 'head/kernel' is int32, the model needs floating point$"),
      ('nan', lambda t: t['head/bias'].__setitem__(0, np.nan),
       r"tensor 'head/bias' holds NaN or Inf$")):
    d = broken(name, lambda d: None)
    t = load_file(os.path.join(d, 'params.safetensors'))
    change(t)
    save_file(t, os.path.join(d, 'params.safetensors'))
    with pytest.raises(DataError, match=pattern):
      saved_model.load(d)
  assert not os.path.exists(out)


def test_bad_inputs_and_the_wrong_task_are_named(tmp_path, bag_run, s2s_run):
  clf, s2s = os.path.join(bag_run[1], 'model'), os.path.join(s2s_run[1], 'model')
  out = str(tmp_path / 'out')
  files = {'no_col.tsv': 'id\tlabel\n1\tx\n', 'bad.jsonl': '{"text": "ok"}\nnot json\n',
           'nofield.jsonl': '{"review": "x"}\n', 'empty.txt': '', 'ok.txt': 'a film\n'}
  for name, text in files.items():
    (tmp_path / name).write_text(text)
  cases = [
      (clf, 'no_col.tsv', {'text_field': 'review'}, r"no_col\.tsv:1: no column named 'review'"),
      (clf, 'bad.jsonl', {}, r'bad\.jsonl:2: invalid JSON \(Expecting value\)$'),
      (clf, 'nofield.jsonl', {}, r"nofield\.jsonl:1: no field 'text' or 'sentence'$"),
      (clf, 'empty.txt', {}, r'empty\.txt: no input examples$'),
      (clf, 'missing.txt', {}, r'missing\.txt: no such input file$'),
      (clf, '', {}, r': is a directory, not a file'),
      (s2s, 'ok.txt', {}, r'a seq2seq model; predict_file takes a classification or tagging'),
  ]
  for model, name, kw, pattern in cases:
    with pytest.raises(TranslearnError, match=pattern):
      serving.predict_file(model, str(tmp_path / name), out, **kw)
  with pytest.raises(DataError, match=r'a classification model; translate_file takes a seq2seq'):
    serving.translate_file(clf, str(tmp_path / 'ok.txt'), out)
  with pytest.raises(DataError, match=r'empty\.txt: no input lines$'):
    serving.translate_file(s2s, str(tmp_path / 'empty.txt'), out)
  os.mkfifo(tmp_path / 'pipe.txt')       # the library reads a file twice: a pipe is named
  with pytest.raises(DataError, match=r"pipe\.txt: is a pipe or device, not a file .*'-'"):
    serving.translate_file(s2s, str(tmp_path / 'pipe.txt'), out)
  for alpha in (float('nan'), float('inf'), -1.0):
    with pytest.raises(ConfigError, match=r'length_penalty must be a finite number >= 0'):
      serving.translate_file(s2s, str(tmp_path / 'ok.txt'), out, length_penalty=alpha)
  shutil.copytree(s2s, tmp_path / 'notok')
  os.remove(tmp_path / 'notok' / 'tokenizer.model')
  with pytest.raises(DataError, match=r"notok/tokenizer\.model: missing \(the saved model's "
                                      r"tokenizer\)$"):
    serving.translate_file(str(tmp_path / 'notok'), str(tmp_path / 'ok.txt'), out)
  with pytest.raises(ConfigError, match=r"input_format must be one of"):
    serving.predict_file(clf, str(tmp_path / 'ok.txt'), out, input_format='xlsx')
  assert not os.path.exists(out)
  # a TSV's text column: 'sentence'/'text', else named; a header without them may as well
  # be a first row of a headerless file, so guessing would lose or misread a line
  (tmp_path / 'first.tsv').write_text('review\tid\na fine film\t1\n')
  with pytest.raises(DataError, match=r"first\.tsv:1: the header names no sentence or text "
                                      r"column \(got \['review', 'id'\]\)"):
    serving.predict_file(clf, str(tmp_path / 'first.tsv'), out)
  serving.predict_file(clf, str(tmp_path / 'first.tsv'), out, text_field='review')
  assert len(open(out).readlines()) == 1
  # CSV (quoted commas and line breaks), several text fields joined as training joins them
  (tmp_path / 'two.csv').write_text('title,body\n"a fine, fine film","it\nworked"\n')
  (tmp_path / 'joined.txt').write_text('a fine, fine film it\nworked\n'.replace('\nw', ' w'))
  serving.predict_file(clf, str(tmp_path / 'two.csv'), out + '.c', text_field='title,body')
  serving.predict_file(clf, str(tmp_path / 'joined.txt'), out + '.j')
  assert open(out + '.c').read() == open(out + '.j').read()
  assert len(open(out + '.c').readlines()) == 1
  (tmp_path / 'two.jsonl').write_text('{"title": "a fine, fine film", "body": "it worked"}\n')
  serving.predict_file(clf, str(tmp_path / 'two.jsonl'), out + '.jl', text_field='title,body')
  assert open(out + '.jl').read() == open(out + '.j').read()
  # without text_field, the field(s) the model was trained on, when the file has them
  from translearn_jax.serving import predict as predict_lib
  assert serving.load(clf).inputs['text_field'] == 'sentence'
  for name in ('two.csv', 'two.jsonl'):
    got = predict_lib.read_inputs(str(tmp_path / name), 'auto', None, False,
                                  trained='title,body')
    assert [t.replace('\n', ' ') for t in got] == ['a fine, fine film it worked'], name
  # a model trained on columns by number (a headerless file, as AG News): those columns,
  # with no header row unless training skipped one (or `header` says so)
  assert predict_lib.read_inputs(str(tmp_path / 'two.csv'), 'auto', None, False, trained='0,1',
                                 header=True) == ['a fine, fine film it\nworked']
  assert predict_lib.read_inputs(str(tmp_path / 'two.csv'), 'auto', None, False,
                                 trained='0,1') == ['title body', 'a fine, fine film it\nworked']
  assert predict_lib.read_inputs(str(tmp_path / 'two.csv'), 'auto', '1', False,
                                 header=True) == ['it\nworked']
  # JSONL: the first record decides where the text is, for every record
  (tmp_path / 'mixed.jsonl').write_text('{"text": "t1"}\n{"text": "t2", "review": "r2"}\n')
  assert predict_lib.read_inputs(str(tmp_path / 'mixed.jsonl'), 'auto', None, False,
                                 trained='review') == ['t1', 't2']
  (tmp_path / 'mixed2.jsonl').write_text('{"review": "r1", "text": "t1"}\n{"text": "t2"}\n')
  with pytest.raises(DataError, match=r"mixed2\.jsonl:2: no field 'review'"):
    predict_lib.read_inputs(str(tmp_path / 'mixed2.jsonl'), 'auto', None, False,
                            trained='review')
  (tmp_path / 'nested.jsonl').write_text('{"review": {"body": "r1"}, "text": "t1"}\n')
  assert predict_lib.read_inputs(str(tmp_path / 'nested.jsonl'), 'auto', None, False,
                                 trained='review.body') == ['r1']     # as training read it
  (tmp_path / 'toks.jsonl').write_text('{"tokens": ["a", "b"]}\n{"text": "c d"}\n')
  with pytest.raises(DataError, match=r'toks\.jsonl:2: no field "tokens" \(the first line'):
    predict_lib.read_inputs(str(tmp_path / 'toks.jsonl'), 'auto', None, True)
  # another encoding, named
  (tmp_path / 'latin.txt').write_bytes('un café\n'.encode('latin-1'))
  with pytest.raises(DataError, match=r'latin\.txt:1: bytes are not valid utf-8.*--encoding'):
    serving.predict_file(clf, str(tmp_path / 'latin.txt'), out)
  serving.predict_file(clf, str(tmp_path / 'latin.txt'), out + '.l1', encoding='latin-1')
  assert len(open(out + '.l1').readlines()) == 1
  # compressed inputs are read by their inner extension
  import gzip
  (tmp_path / 'first.tsv.gz').write_bytes(gzip.compress((tmp_path / 'first.tsv').read_bytes()))
  serving.predict_file(clf, str(tmp_path / 'first.tsv.gz'), out + '.gz', text_field='review')
  assert open(out + '.gz').read() == open(out).read()
  # an output path that cannot be written fails before any compute
  for bad, match in ((str(tmp_path), 'is a directory'), ('', 'output path is empty')):
    with pytest.raises(DataError, match=match):
      serving.predict_file(clf, str(tmp_path / 'ok.txt'), bad)


# -- the console script on real saved models -----------------------------------------

def test_translearn_predict_and_translate_commands(tmp_path, capsys, bag_run, s2s_run):
  """`translearn predict` / `translate` (in-process `cli.main`) write what the Python API writes;
  bad input is one `error:` line and exit 2."""
  from translearn_jax import cli
  c, workdir, summary = bag_run
  model_dir = os.path.join(workdir, 'model')
  path, gold = split_file(tmp_path, c)
  out = str(tmp_path / 'cli.jsonl')
  assert cli.main(['predict', model_dir, '--input', path, '--output', out, '--no_progress']) == 0
  acc, _ = accuracy(out, gold)
  assert acc == summary['rows'][0]['test'][0]
  # every option the command line offers reaches the library (the package's predict_file)
  assert cli.main(['predict', model_dir, '--input', path, '--output', out + '.o', '--header',
                   'yes', '--output_format', 'jsonl', '--format', 'text', '--no_progress']) == 0
  assert open(out + '.o').read() == open(out).read()
  os.remove(out + '.o')
  capsys.readouterr()
  assert cli.main(['predict', model_dir, '--input', path, '--output', out, '--no_progress']) == 0
  _, s2s_dir, _, test_src = s2s_run
  hyps = open(os.path.join(s2s_dir, 'hypotheses.test.txt'), encoding='utf-8').read()
  assert cli.main(['translate', os.path.join(s2s_dir, 'model'), '--input', test_src,
                   '--output', str(tmp_path / 't.txt'), '--no_progress']) == 0
  assert open(tmp_path / 't.txt', encoding='utf-8').read() == hyps
  err = capsys.readouterr().err.splitlines()
  assert err == [f'wrote {len(gold)} predictions to {out}',
                 f'wrote {hyps.count(chr(10))} translations to {tmp_path / "t.txt"}'], err
  # '-': standard output (the summary stays on stderr)
  assert cli.main(['predict', model_dir, '--input', path, '--output', '-', '--no_progress']) == 0
  assert cli.main(['translate', os.path.join(s2s_dir, 'model'), '--input', test_src,
                   '--output', '-', '--no_progress']) == 0
  got = capsys.readouterr()
  assert got.out == open(out, encoding='utf-8').read() + hyps
  assert got.err.splitlines() == [
      f'wrote {len(gold)} predictions to standard output',
      f'wrote {hyps.count(chr(10))} translations to standard output'], got.err
  # '-' as the input: standard input; a pipe (read once: format sniffing and reading need
  # two passes) as a file would be; an error names the input as given, not the copy
  import io
  import sys
  import threading
  stdin = sys.stdin
  try:
    sys.stdin = io.TextIOWrapper(io.BytesIO(open(path, 'rb').read()))
    assert cli.main(['predict', model_dir, '--input', '-', '--output', out + '.stdin',
                     '--no_progress']) == 0
    sys.stdin = io.TextIOWrapper(io.BytesIO(b'\xff\xfe\x00bad\n'))
    assert cli.main(['predict', model_dir, '--input', '-', '--output', out + '.x',
                     '--no_progress', '--format', 'text', '--encoding', 'ascii']) == 2
  finally:
    sys.stdin = stdin
  assert open(out + '.stdin').read() == open(out).read()
  assert capsys.readouterr().err.splitlines()[-1].startswith('error: <stdin>:1: bytes are not')
  fifo = str(tmp_path / 'sources.txt')
  os.mkfifo(fifo)
  writer = threading.Thread(target=lambda: open(fifo, 'wb').write(open(test_src, 'rb').read()))
  writer.start()
  assert cli.main(['translate', os.path.join(s2s_dir, 'model'), '--input', fifo,
                   '--output', str(tmp_path / 't_fifo.txt'), '--no_progress']) == 0
  writer.join()
  assert open(tmp_path / 't_fifo.txt', encoding='utf-8').read() == hyps
  capsys.readouterr()
  # a symbolic link as the output is kept; its target is what gets replaced
  target, link = tmp_path / 'target.jsonl', tmp_path / 'link.jsonl'
  target.write_text('old\n')
  os.symlink(target, link)
  assert cli.main(['predict', model_dir, '--input', path, '--output', str(link),
                   '--no_progress']) == 0
  assert os.path.islink(link) and target.read_text() == open(out, encoding='utf-8').read()
  capsys.readouterr()
  cases = [(['predict', str(tmp_path / 'nowhere'), '--input', path, '--output', out],
            'nowhere'),
           (['translate', model_dir, '--input', test_src, '--output', out], 'classification'),
           (['predict', os.path.join(s2s_dir, 'model'), '--input', path, '--output', out],
            'seq2seq')]
  for argv, word in cases:
    assert cli.main(argv + ['--no_progress']) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and word in err, err
