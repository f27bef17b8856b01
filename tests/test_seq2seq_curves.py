"""Low-resource translation curves (issue #16): cells share pairs per seed and one
tokenizer, pretrained conditions start from their runs, back-translation trains its
reverse model first, finished cells are never rerun, and gains are paired by seed."""

import json
import os

import ml_collections
import pytest

from conftest import s2s_config, set_fields
from test_denoise import denoise_config
from translearn_jax.errors import ConfigError
from translearn_jax.experiments import seq2seq_curves
from translearn_jax.pretraining import seq2seq


def curve_config(d, denoise_run, **curve):
  from configs import curves_multi30k
  c = s2s_config(d, **{'train.steps': 2, 'max_source_len': 40, 'max_target_len': 24,
                        'train.batch_size': 4})
  c.data.test_source, c.data.test_target = c.data.train_source, c.data.train_target
  c.family, c.seeds = 'seq2seq_curves', 1
  c.eval.beam = 1                        # greedy: cheaper to compile in every cell
  c.curve = curves_multi30k.get_config().curve
  c.curve.update({**dict(budgets='8,16', conditions='denoise,backtranslation', bt_budgets='8',
                         epochs=1, min_steps=2, max_steps=2, denoise_path=str(denoise_run),
                         lm_path='', bt_path=c.data.train_target, bt_max_sentences=6), **curve})
  return c


def test_cells_share_pairs_and_tokenizer_and_are_not_rerun(tmp_path):
  (tmp_path / 'dn').mkdir()
  seq2seq.train_and_evaluate(denoise_config(tmp_path / 'dn', **{'train.steps': 2}),
                             str(tmp_path / 'dn' / 'run'))
  c = curve_config(tmp_path, tmp_path / 'dn' / 'run')
  work = tmp_path / 'curves'
  out = seq2seq_curves.train_and_evaluate(c, str(work))
  cells = [json.loads(x) for x in (work / 'cells.jsonl').read_text().splitlines()]
  assert [(x['budget'], x['condition']) for x in cells] == [
      (8, 'scratch'), (8, 'denoise'), (8, 'reverse'), (8, 'backtranslation'),
      (16, 'scratch'), (16, 'denoise')]
  assert all(x['train_pairs'] == x['budget'] and x['steps'] == 2 for x in cells)
  cell = lambda b, cond: work / 'cells' / str(b) / f'{cond}-seed0'   # noqa: E731
  shared = (tmp_path / 'dn' / 'run' / 'tokenizer.model').read_bytes()
  for b, cond in [(8, 'scratch'), (8, 'denoise'), (16, 'denoise'), (8, 'backtranslation')]:
    assert (cell(b, cond) / 'model' / 'tokenizer.model').read_bytes() == shared, (b, cond)
  report = json.loads((cell(8, 'denoise') / 'graft_report.json').read_text())
  assert report['created'] == [] and report['grafted']
  assert not (cell(8, 'scratch') / 'graft_report.json').exists()
  # the reverse cell translates target -> source; the BT cell adds its outputs
  rev = json.loads((cell(8, 'reverse') / 'config.json').read_text())
  assert rev['data']['train_source'] == c.data.train_target
  bt = cells[3]
  assert bt['synthetic_pairs'] == len([
      s for s in (cell(8, 'backtranslation') / 'backtranslation' / 'source.txt')
      .read_text().splitlines() if s.strip()]) > 0
  rows = {(r['budget'], r['condition']): r for r in out['rows']}
  assert rows[(8, 'denoise')]['bleu_gain'] == pytest.approx(
      cells[1]['test']['bleu'] - cells[0]['test']['bleu'])
  assert (work / 'curves.csv').read_text().splitlines()[0].startswith('budget,condition')
  # a restart reruns nothing and rewrites the same summary
  before = (work / 'cells.jsonl').read_text()
  again = seq2seq_curves.train_and_evaluate(c, str(work))
  assert (work / 'cells.jsonl').read_text() == before and again['rows'] == out['rows']
  # ... but not after its tokenizer changed under it (retrained at the same path)
  (work / 'cells.jsonl').write_text(before.replace(cells[2]['tokenizer_sha256'], 'f' * 64, 1))
  with pytest.raises(ConfigError, match=r'cells\.jsonl: the cell \(8 pairs, scratch, seed 0\) '
                                        r'was trained with another tokenizer'):
    seq2seq_curves.train_and_evaluate(c, str(work))
  (work / 'cells.jsonl').write_text(before)
  # through the one entry point: a changed model or optimiser in the same workdir is refused
  # (its recorded cells would pair with new ones), more budgets, conditions or seeds are not
  import train
  changed = set_fields(ml_collections.ConfigDict(c.to_dict()),
                       {'optim.learning_rate': c.optim.learning_rate * 5})
  with pytest.raises(ConfigError, match=r'holds a run of another config; changed: '
                                        r'optim\.learning_rate'):
    train.run(changed, str(work))
  from translearn_jax.training import workdir as workdir_lib
  more = set_fields(ml_collections.ConfigDict(c.to_dict()),
                    {'curve.budgets': '8,16,24', 'curve.seed_list': '0,1'})
  workdir_lib.check_resume(more, str(work))
  # a second workdir of the same study (split by condition) takes these cells instead of
  # rerunning them; one run with another model is refused, naming the field
  other = tmp_path / 'curves2'
  # a workdir written before a config field was added (data.header) still shares its cells
  saved = json.loads((work / 'config.json').read_text())
  del saved['data']['header']
  (work / 'config.json').write_text(json.dumps(saved))
  c2 = curve_config(tmp_path, tmp_path / 'dn' / 'run', conditions='scratch',
                    import_cells=str(work), budgets='8', denoise_path='',
                    tokenizer=str(tmp_path / 'dn' / 'run' / 'tokenizer.model'))
  c2.seeds, c2.curve.seed_list = 2, '0'   # a study of two seeds; seed 1 runs elsewhere
  out2 = seq2seq_curves.train_and_evaluate(c2, str(other))
  assert not (other / 'cells').exists()                 # nothing trained
  assert out2['rows'] == [r for r in out['rows'] if r['budget'] == 8 and r['condition'] in
                          ('scratch', 'reverse')]     # a study of scratch alone
  assert len((other / 'cells.jsonl').read_text().splitlines()) == len(cells)
  # each cell names its tokenizer by digest, so cells kept apart from their workdir (a
  # study's committed results, its pretrained runs gone) still import, and cells of another
  # tokenizer never do
  import hashlib
  assert {x['tokenizer_sha256'] for x in cells} == {hashlib.sha256(shared).hexdigest()}
  kept = tmp_path / 'kept'
  kept.mkdir()
  saved['curve']['denoise_path'] = str(tmp_path / 'gone')
  (kept / 'config.json').write_text(json.dumps(saved))
  (kept / 'cells.jsonl').write_text((work / 'cells.jsonl').read_text())
  c2.curve.import_cells = str(kept)
  out4 = seq2seq_curves.train_and_evaluate(c2, str(tmp_path / 'curves4'))
  assert out4['rows'] == out2['rows'] and not (tmp_path / 'curves4' / 'cells').exists()
  (kept / 'cells.jsonl').write_text((work / 'cells.jsonl').read_text().replace(
      cells[0]['tokenizer_sha256'], '0' * 64, 1))
  with pytest.raises(ConfigError, match=r'import_cells: .*kept: the cell \(8 pairs, scratch, '
                                        r'seed 0\) was trained with another tokenizer'):
    seq2seq_curves.train_and_evaluate(c2, str(tmp_path / 'curves5'))
  c3 = curve_config(tmp_path, tmp_path / 'dn' / 'run', import_cells=str(work))
  c3.model.d_ff = 48
  with pytest.raises(ConfigError, match=r'import_cells: .*curves ran its cells with '
                                        r'model\.d_ff=.*this study with 48'):
    seq2seq_curves.train_and_evaluate(c3, str(tmp_path / 'curves3'))
  # another pretrained run under the same condition would mix two sources in one row
  import shutil
  shutil.copytree(tmp_path / 'dn' / 'run', tmp_path / 'dn2')
  c.curve.denoise_path = str(tmp_path / 'dn2')
  with pytest.raises(ConfigError, match=r'curve\.denoise_path: cells of .denoise.'):
    seq2seq_curves.train_and_evaluate(c, str(work))


def test_gains_are_paired_by_seed_with_a_t_interval(tmp_path):
  cells = [{'budget': 10, 'condition': cond, 'seed': s, 'train_pairs': 10, 'steps': 5,
            'test': {'bleu': bleu, 'chrf': 2 * bleu}}
           for cond, vals in [('scratch', [10.0, 20.0, 30.0]), ('denoise', [12.0, 21.0, 33.0])]
           for s, bleu in enumerate(vals)]
  rows = seq2seq_curves.summarise(cells, [10], ['scratch', 'denoise'])
  dn = rows[1]
  assert dn['bleu'] == pytest.approx(22.0) and dn['bleu_gain'] == pytest.approx(2.0)
  # paired differences 2, 1, 3: sd 1, t(0.975, 2) = 4.303 -> 4.303 / sqrt(3)
  assert dn['bleu_gain_ci95'] == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-3)
  assert dn['chrf_gain'] == pytest.approx(4.0) and dn['paired_seeds'] == 3
  # one row per condition, whatever the list names (the reverse cells once, last)
  rev = [dict(c, condition='reverse') for c in cells[:3]]
  rows = seq2seq_curves.summarise(cells + rev, [10], ['scratch', 'reverse', 'denoise'])
  assert [r['condition'] for r in rows] == ['scratch', 'denoise', 'reverse']
  # the CSV carries the paired gain; the PNG (curves and gain panels) is written whole
  seq2seq_curves.save_outputs(rows, str(tmp_path), 't')
  import csv
  with open(tmp_path / 'curves.csv') as f:
    got = {r['condition']: r for r in csv.DictReader(f)}
  assert float(got['denoise']['bleu_gain']) == pytest.approx(2.0)
  assert got['scratch']['bleu_gain'] == ''
  png = (tmp_path / 'curves.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
  assert not list(tmp_path.glob('*.tmp'))


@pytest.mark.parametrize('field,value,match', [
    ('conditions', 'scratch,magic', 'curve.conditions'),
    ('budgets', '100,x', 'curve.budgets'),
    ('bt_budgets', '77', r'curve.bt_budgets: \[77\]'),
    ('seed_list', '1', r'curve.seed_list: .1.; each seed once, from 0 to seeds-1 = 0'),
    ('seed_list', '0,x', 'curve.seed_list: .* not a comma-separated list'),
    ('denoise_path', '/nowhere', 'curve.denoise_path: no run directory'),
])
def test_bad_curve_fields_are_named_before_training(tmp_path, field, value, match):
  c = curve_config(tmp_path, tmp_path, **{field: value})
  with pytest.raises(ConfigError, match=match):
    seq2seq_curves.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


def test_cells_from_random_weights_train_every_parameter(tmp_path):
  """A study's transfer strategy applies to the pretrained conditions only: scratch, reverse
  and back-translation cells start from random weights and freeze nothing."""
  (tmp_path / 'dn').mkdir()
  c = curve_config(tmp_path, tmp_path / 'dn')
  c.transfer.strategy, c.transfer.freeze_bottom = 'gradual_unfreezing', 1
  tok = str(tmp_path / 'tok.model')
  for cond in ('scratch', 'reverse', 'backtranslation'):
    t = seq2seq_curves.cell_config(c, 8, cond, 0, tok, str(tmp_path)).transfer
    assert (t.strategy, t.freeze_bottom) == ('finetune', 0), cond
  t = seq2seq_curves.cell_config(c, 8, 'denoise', 0, tok, str(tmp_path)).transfer
  assert (t.strategy, t.freeze_bottom) == ('gradual_unfreezing', 1)


def test_bt_budgets_outside_budgets_only_refused_with_backtranslation(tmp_path):
  """A study split over workdirs by budget keeps the config's bt_budgets; a part without the
  back-translation condition runs, one with it is refused before training."""
  c = curve_config(tmp_path, tmp_path, budgets='16', bt_budgets='8', conditions='denoise')
  assert seq2seq_curves.parse(c) == ([16], ['scratch', 'denoise'])
  c = curve_config(tmp_path, tmp_path, budgets='16', bt_budgets='8')
  with pytest.raises(ConfigError, match=r'curve.bt_budgets: \[8\]'):
    seq2seq_curves.parse(c)


def test_workdirs_side_by_side_skip_the_cells_the_other_finished(tmp_path, monkeypatch):
  """The imported workdirs are read again before every cell: a cell another workdir finished
  after this one started (a scratch cell both plans hold) is taken, not trained again."""
  from translearn_jax.data.tokenizer import Tokenizer
  tok = tmp_path / 'tok.model'
  Tokenizer.train([f'word{i % 37} other{i % 11} text' for i in range(400)], 320).save(str(tok))
  c = curve_config(tmp_path, '', conditions='scratch', budgets='8', denoise_path='',
                   tokenizer=str(tok))
  c.seeds = 2
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'config.json').write_text(c.to_json_best_effort())
  (other / 'cells.jsonl').write_text('')
  c.curve.import_cells = str(other)
  digest = seq2seq_curves.tokenizer_digest(str(tok))
  trained = []

  def fake_train(cfg, workdir):
    trained.append(cfg.data.subset_seed)
    # meanwhile the other workdir finishes seed 1's scratch cell
    done = {'budget': 8, 'condition': 'scratch', 'seed': 1, 'source': {}, 'train_pairs': 8,
            'synthetic_pairs': 0, 'steps': 2, 'test': {'bleu': 5.0, 'chrf': 9.0},
            'valid': None, 'tokenizer_sha256': digest}
    (other / 'cells.jsonl').write_text(json.dumps(done) + '\n')
    return {'train_pairs': 8, 'steps': 2, 'test': {'bleu': 4.0, 'chrf': 8.0}}
  monkeypatch.setattr(seq2seq_curves.seq2seq, 'train_and_evaluate', fake_train)
  out = seq2seq_curves.train_and_evaluate(c, str(tmp_path / 'mine'))
  assert trained == [0] and out['cells'] == 2
  cells = [json.loads(x) for x in (tmp_path / 'mine' / 'cells.jsonl').read_text().splitlines()]
  assert sorted((x['seed'], x['test']['bleu']) for x in cells) == [(0, 4.0), (1, 5.0)]
