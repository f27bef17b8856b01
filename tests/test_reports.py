"""Reports: one seed has no interval (never '± nan'); every JSON written is strict (issue #17)."""

import json
import math

import numpy as np
import pytest

from translearn_jax.evaluation.stats import fmt, mean_ci
from translearn_jax.experiments.runs import format_table, summarise
from translearn_jax.training.metrics import MetricWriter, write_json


def strict_load(text):
  def refuse(token):
    raise ValueError(f'non-strict JSON token {token}')
  return json.loads(text, parse_constant=refuse)


def test_one_seed_has_no_interval_and_prints_none():
  assert mean_ci([0.7]) == (0.7, None) and mean_ci([]) == (None, None)
  m, h = mean_ci([0.70, 0.72, 0.74])
  assert m == pytest.approx(0.72) and h == pytest.approx(0.02 * 4.302653 / 3 ** 0.5, rel=1e-5)
  assert fmt(0.7, None) == '70.00' and fmt(0.7123, 0.0149) == '71.23 ± 1.49'
  assert fmt(0.1411, 0.0167, sign=True) == '+14.11 ± 1.67' and fmt(None, None) == '–'
  rows = summarise([{'strategy': 'scratch', 'seed': 0, 'dev': 0.6, 'test': 0.58},
                    {'strategy': 'finetune', 'seed': 0, 'dev': 0.7, 'test': 0.72}])
  table = format_table(rows)
  assert 'nan' not in table and '72.00' in table and '+14.00' in table


def test_json_written_is_strict(tmp_path):
  path = str(tmp_path / 'eval.json')
  write_json(path, {'ppl': float('nan'), 'inf': float('inf'), 'ok': 1.5,
                    'nested': [np.float32('nan'), {'x': -math.inf}], 'ci': mean_ci([0.5])})
  got = strict_load(open(path).read())
  assert got == {'ppl': None, 'inf': None, 'ok': 1.5, 'nested': [None, {'x': None}],
                 'ci': [0.5, None]}
  w = MetricWriter(str(tmp_path))
  w.write(1, {'loss': float('nan'), 'lr': 0.1})
  w.close()
  rec = strict_load(open(tmp_path / 'metrics.jsonl').read().splitlines()[0])
  assert rec['loss'] == 'nan' and rec['lr'] == pytest.approx(0.1)   # its documented spelling


def test_gain_plot_draws_each_strategy_against_scratch(tmp_path):
  from translearn_jax.evaluation.plots import gain_plot
  rows = [{'strategy': 'scratch', 'seeds': 5, 'test_mean': 0.58, 'test_ci95': 0.01},
          {'strategy': 'finetune', 'seeds': 5, 'gain_mean': 0.14, 'gain_ci95': 0.017},
          {'strategy': 'feature_extraction', 'seeds': 5, 'gain_mean': -0.2, 'gain_ci95': 0.01},
          {'strategy': 'lora', 'seeds': 1, 'gain_mean': 0.01, 'gain_ci95': None}]
  bars = gain_plot(rows, str(tmp_path / 'gains.png'), 'MR: transfer vs scratch')
  assert [(b[0], round(b[1], 6), b[3]) for b in bars] == [
      ('finetune (5 seeds)', 14.0, 'tab:green'),
      ('feature_extraction (5 seeds)', -20.0, 'tab:red'),
      ('lora (1 seeds)', 1.0, 'tab:grey')]        # one seed: no interval, no verdict
  assert (tmp_path / 'gains.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert gain_plot(rows[:1], str(tmp_path / 'none.png'), 't') == []
  assert not (tmp_path / 'none.png').exists()


def test_fields_added_later_keep_recorded_runs_valid():
  """A comparison's fingerprint ignores a field added after runs were recorded while it holds
  the value those runs computed with (`ADDED_FIELDS`), and counts it once it differs."""
  from configs import transfer_conll_lm
  from translearn_jax.experiments.runs import fingerprint
  new = transfer_conll_lm.get_config()
  old = transfer_conll_lm.get_config()
  for f in ('kind', 'path', 'tokens_field', 'tags_field', 'data_dir'):
    del old.data[f]                      # how a tagging config looked before TFDS
  assert fingerprint(new) == fingerprint(old)
  new.data.kind = 'tfds'
  assert fingerprint(new) != fingerprint(old)


def test_records_made_before_a_field_was_listed_as_added_stay_valid(tmp_path, monkeypatch):
  """A field one family gains may already exist in another (`data.encoding`: the classification
  configs had it before the tagging configs did), while the family itself gains another
  (`eval.metric`). Hash-only records made before either entered `ADDED_FIELDS` still resume,
  and a different config is still refused."""
  from configs import transfer_sst2_mlm
  from translearn_jax.errors import ConfigError
  from translearn_jax.experiments import runs
  from translearn_jax.training import workdir
  config = transfer_sst2_mlm.get_config()
  assert config.data.encoding == workdir.ADDED_FIELDS['data.encoding']
  entries = list(workdir.ADDED_FIELDS.items())
  k = [p for p, _ in entries].index('data.encoding')
  old = transfer_sst2_mlm.get_config()
  del old['eval']                                   # the config of that day: none of the
  for group, field in (('data', 'encoding_fallback'), ('data', 'header'),   # fields added
                       ('init', 'unicode_errors')):                         # since, and
    del old[group][field]                     # optim.warmup_steps, listed only after records
  assert old.optim.warmup_steps == 0          # carried their fields, kept in its hash
  monkeypatch.setattr(workdir, 'ADDED_FIELDS', dict(entries[:k]))   # the code of that day
  old_fp = runs.fingerprint(old)
  monkeypatch.undo()
  assert old_fp != runs.fingerprint(config)         # today's hash drops the field at its default
  path = tmp_path / 'runs.jsonl'
  path.write_text(json.dumps({'strategy': 'scratch', 'seed': 0, 'dev': 0.5, 'test': 0.5,
                              'epoch': 1, 'config': old_fp, 'version': 2}) + '\n')
  assert list(runs.load_done(str(path), config)) == [('scratch', 0)]
  config.train.epochs += 1
  with pytest.raises(ConfigError, match='runs.jsonl:1: recorded by a different config; use'):
    runs.load_done(str(path), config)
  # the list is append-only: the 50 entries of the hash-only records' day stay its prefix
  assert list(workdir.ADDED_FIELDS).index(runs.HASH_ONLY_LAST) == 49


def test_records_carry_their_config_and_a_difference_is_named(tmp_path):
  """New records hold the shared config (`fields`): a later field at its listed default keeps
  them valid, and a record of another config is refused naming the field that differs."""
  from configs import transfer_sst2_mlm
  from translearn_jax.errors import ConfigError
  from translearn_jax.experiments import runs
  config = transfer_sst2_mlm.get_config()
  fields = runs.shared_config(config)
  assert 'seeds' not in fields and 'transfer.strategies' not in fields
  del fields['eval.metric']                          # recorded before the field existed
  path = tmp_path / 'runs.jsonl'
  path.write_text(json.dumps({'strategy': 'finetune', 'seed': 1, 'dev': 0.5, 'test': 0.5,
                              'epoch': 1, 'config': 'x', 'fields': fields}) + '\n')
  config.seeds = 7                                   # the run list may change
  assert list(runs.load_done(str(path), config)) == [('finetune', 1)]
  config.eval.metric = 'macro_f1'
  config.optim.learning_rate = 1e-4
  with pytest.raises(ConfigError, match=r'runs\.jsonl:1: recorded by a different config '
                                        r'\(eval\.metric "accuracy" → "macro_f1"; '
                                        r'optim\.learning_rate 0\.0005 → 0\.0001\)'):
    runs.load_done(str(path), config)


def test_strict_json_of_numpy_and_jax_values():
  """Arrays are written as numbers (non-finite ones as null), never as their repr strings."""
  import jax.numpy as jnp
  from translearn_jax.training.metrics import dumps
  got = json.loads(dumps({'a': np.float32('nan'), 'b': jnp.array(2.5), 'c': np.array([1.0, np.nan]),
                          'd': jnp.array([[np.inf, 3]]), 'e': np.int64(3), 'f': np.bool_(True)}))
  assert got == {'a': None, 'b': 2.5, 'c': [1.0, None], 'd': [[None, 3.0]], 'e': 3, 'f': True}


def test_a_config_with_a_non_finite_value_resumes_its_records(tmp_path):
  """Records are strict JSON (inf/nan stored as null); the config they are compared with is
  read the same way, so an infinite setting does not make a comparison unresumable."""
  from configs import transfer_sst2_mlm
  from translearn_jax.experiments import runs
  config = transfer_sst2_mlm.get_config()
  config.optim.grad_clip = float('inf')
  path = str(tmp_path / 'runs.jsonl')
  runs.append_record(path, {'strategy': 'scratch', 'seed': 0, 'dev': 0.5, 'test': 0.5,
                            'epoch': 1, 'config': runs.fingerprint(config),
                            'fields': runs.shared_config(config)})
  assert '"optim.grad_clip": null' in open(path).read()
  assert list(runs.load_done(path, config)) == [('scratch', 0)]
