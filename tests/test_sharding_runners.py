"""The masked-LM and seq2seq runners on a data × fsdp × tensor mesh (issue #18): `mesh.*`
places their parameters by the logical-axis rules, and a run computes what the
data-parallel run computes."""

import json
import os

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from conftest import mlm_config, s2s_config
from translearn_jax.errors import ConfigError
from translearn_jax.pretraining import mlm
from translearn_jax.pretraining import seq2seq

MESH_222 = {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}
DATA_8 = {'mesh.data': 8, 'mesh.fsdp': 1, 'mesh.tensor': 1}


def spy_states(monkeypatch, module, name):
  """Records each fresh TrainState that `module.<name>` builds."""
  seen, real = [], getattr(module, name)
  monkeypatch.setattr(module, name, lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
  return seen


def losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['loss'] for r in map(json.loads, f) if 'loss' in r]


def test_mlm_runner_shards_by_the_mesh_and_computes_the_same(tmp_path, monkeypatch):
  seen = spy_states(monkeypatch, mlm, 'init_train_state')
  over = {'train.steps': 3, 'num_devices': 8, 'train.eval_max_rows': 16,
          'train.log_every_steps': 1, 'model.num_heads': 2}
  out = {}
  for name, mesh in (('data', DATA_8), ('3d', MESH_222)):
    out[name] = mlm.train_and_evaluate(mlm_config(**over, **mesh), str(tmp_path / name))
  data_state, state = seen
  wi = state.params['block_0']['mlp']['wi']['kernel']
  assert wi.sharding.spec == P('fsdp', 'tensor')
  mu = optax.tree_utils.tree_get(state.opt_state, 'mu')    # Adam's first moment
  assert mu['block_0']['mlp']['wi']['kernel'].sharding == wi.sharding
  assert data_state.params['block_0']['mlp']['wi']['kernel'].sharding.spec == P()
  np.testing.assert_allclose(losses(tmp_path / '3d'), losses(tmp_path / 'data'), rtol=1e-5)
  assert len(losses(tmp_path / 'data')) == 3
  np.testing.assert_allclose(out['3d']['valid']['loss'], out['data']['valid']['loss'],
                             rtol=1e-4)
  with pytest.raises(ConfigError, match='config.mesh: mesh.data=3'):
    mlm.validate(mlm_config(**{'num_devices': 8, 'mesh.data': 3}))


def test_seq2seq_runner_shards_by_the_mesh_and_computes_the_same(tmp_path, monkeypatch):
  seen = spy_states(monkeypatch, seq2seq, 'init_state')
  for name, mesh in (('data', DATA_8), ('3d', MESH_222)):
    d = tmp_path / name
    d.mkdir()
    seq2seq.train_and_evaluate(s2s_config(d, **{'num_devices': 8, 'model.num_heads': 4, **mesh}), str(d / 'run'))
  assert seen[1].params['decoder_block_0']['mlp']['wi']['kernel'].sharding.spec == \
      P('fsdp', 'tensor')
  assert {x.sharding.spec for x in jax.tree.leaves(seen[0].params)} == {P()}
  ref = losses(tmp_path / 'data' / 'run')
  assert len(ref) == 3
  np.testing.assert_allclose(losses(tmp_path / '3d' / 'run'), ref, rtol=1e-5)
