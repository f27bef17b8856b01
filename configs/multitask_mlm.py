"""Multi-task learning on a masked-LM encoder: MR sentiment + CoNLL NER + the MLM objective.

  python train.py --config configs/mlm_encoder.py --workdir /tmp/mlm
  python train.py --config configs/multitask_mlm.py --workdir /tmp/mtl_mlm \
    --config.init.path=/tmp/mlm

As configs/multitask.py, with the encoder's task configs (configs/transfer_mr_mlm.py,
configs/transfer_conll_mlm.py) and, in place of next-token language modelling, the
`masked_lm` task: the encoder keeps training on its own objective (on the movie
reviews, in-domain text for MR) through its MLM head, the task's head.
"""

from translearn_jax.configs import multitask, transfer_conll_mlm, transfer_mr_mlm


def get_config():
  config = multitask.get_config()
  config.init.kind = 'mlm'
  config.init.path = '/tmp/mlm'          # the shared encoder's MLM run
  config.mr = transfer_mr_mlm.get_config()
  config.ner = transfer_conll_mlm.get_config()
  config.mr.init.path = config.init.get_ref('path')
  config.ner.init.path = config.init.get_ref('path')
  config.lm.family = 'masked_lm'
  config.lm.seq_len = 128                # positions per packed row
  config.lm.mask_rate = 0.15            # (leave it out: the MLM run's own rate)
  config.optim.learning_rate = 5e-4
  return config
