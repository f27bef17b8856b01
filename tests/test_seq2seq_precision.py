"""Mixed precision for the seq2seq family (issue #18): `config.dtype='bfloat16'` computes in
bfloat16 with float32 parameters, optimiser state and loss."""

import json

import jax
import numpy as np
import pytest

from conftest import s2s_config
from translearn_jax.errors import ConfigError
from translearn_jax.pretraining import seq2seq
from translearn_jax.serving import saved_model


def test_bfloat16_computes_close_to_float32_and_keeps_float32_parameters(tmp_path):
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    d = tmp_path / dtype
    d.mkdir()
    # 3 steps: the float32 run is the unaccumulated run below (one set of compiled programs)
    seq2seq.train_and_evaluate(s2s_config(d, dtype=dtype), str(d / 'run'))
    losses[dtype] = [json.loads(x)['loss'] for x in (d / 'run' / 'metrics.jsonl').open()]
    m = saved_model.load(str(d / 'run' / 'model'))
    assert m.module.config.dtype == (jax.numpy.bfloat16 if dtype == 'bfloat16'
                                     else jax.numpy.float32)
    assert {np.asarray(x).dtype for x in jax.tree.leaves(m.params)} == {np.dtype('float32')}
  a, b = np.array(losses['float32']), np.array(losses['bfloat16'])
  assert len(a) == 3 and np.all(a != b)            # really computed differently ...
  np.testing.assert_allclose(b, a, rtol=2e-2)      # ... to bfloat16's precision


def test_an_unknown_dtype_is_named(tmp_path):
  with pytest.raises(ConfigError, match=r"config\.dtype: must be one of \['bfloat16', "
                                        r"'float32'\], got 'float16'"):
    seq2seq.train_and_evaluate(s2s_config(tmp_path, dtype='float16'), str(tmp_path / 'run'))


@pytest.mark.parametrize('packing', [False, True])
def test_gradient_accumulation_equals_the_large_batch(tmp_path, packing):
  """2 micro-batches of 8 rows = one batch of 16 rows: the same rows each step (the stream
  plans batch_size × grad_accum rows), the summed gradient over all their tokens."""
  out = {}
  for accum, batch in ((1, 16), (2, 8)):
    d = tmp_path / f'a{accum}'
    d.mkdir()
    c = s2s_config(d, **{'train.grad_accum': accum, 'train.batch_size': batch,
                         'train.steps': 3, 'packing': packing})
    seq2seq.train_and_evaluate(c, str(d / 'run'))
    out[accum] = ([json.loads(x) for x in (d / 'run' / 'metrics.jsonl').open()],
                  saved_model.load(str(d / 'run' / 'model')).params)
  (m1, p1), (m2, p2) = out[1], out[2]
  assert [r['loss'] for r in m1] == pytest.approx([r['loss'] for r in m2], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), p1, p2)
