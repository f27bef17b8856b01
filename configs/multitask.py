"""Multi-task learning: MR sentiment + CoNLL NER + language modelling on one LM backbone.

  python train.py --config configs/lm_transformer.py --workdir /tmp/lm_tf
  python train.py --config configs/multitask.py --workdir /tmp/mtl \
    --config.init.path=/tmp/lm_tf [--config.multitask.mixing=temperature]

`mr` and `ner` are the configs of configs/transfer_mr_lm.py and
configs/transfer_conll_lm.py (override any of their fields as
--config.mr.FIELD / --config.ner.FIELD); `lm` is the language-modelling task
(`lm.data`: its corpus, default the movie reviews, in-domain text for MR). Each
task named in `multitask.tasks` is a sub-config whose `family` says which task
it is (`classify`, `tag`, `language_model`). Per-task losses and step
counts go to metrics.jsonl / TensorBoard; test metrics to multitask.json.
With --config.compare_single=True --config.seeds=N every seed also trains each
task alone for the steps it got in the multi-task run (same batches, same
initialisation): per-task mean ± 95% CI and the paired difference go to
compare.json (resumable: rerun the command in the same workdir).
"""

import ml_collections

from translearn_jax import config_fields
from translearn_jax.configs import transfer_conll_lm, transfer_mr_lm


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.family = 'multitask'
  config.seed = 0
  config.compare_single = False           # True: multi-task vs each task alone (equal
  config.seeds = 3                        #   per-task steps), seeds 0..seeds-1, resumable
  config.init = ml_collections.ConfigDict()
  config.init.kind = 'lm'
  config.init.path = '/tmp/lm_tf'        # the shared backbone's LM run
  config.mr = transfer_mr_lm.get_config()
  config.ner = transfer_conll_lm.get_config()
  config.mr.init.path = config.init.get_ref('path')
  config.ner.init.path = config.init.get_ref('path')
  config.lm = ml_collections.ConfigDict()
  config.lm.family = 'language_model'
  config.lm.data = dict(kind='jsonl', path='../shared/data/movie_reviews/reviews.jsonl',
                        field='text', unit='line', encoding='utf-8', encoding_fallback='',
                        split='train', data_dir='', valid_fraction=0.05)
  config.lm.seq_len = 64                  # tokens per LM row
  config.lm.eval_rows = 512               # held-out rows scored (0: all)
  config.multitask = dict(
      tasks='mr,ner,lm',
      mixing='temperature',        # 'proportional' | 'temperature' | 'equal'
      temperature=2.0,
      init='pretrained')           # 'pretrained' (graft the LM run) | 'scratch'
  config.train = ml_collections.ConfigDict()
  config.train.steps = 1500              # multi-task steps (each trains one drawn task)
  config.train.batch_size = 32
  config.train.log_every_steps = 50
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3      # backbone and every head
  config.optim.schedule = 'slanted_triangular'
  config.optim.weight_decay = 0.0
  # Devices the run spans (0: all) and their mesh, as in fine-tuning: e.g. num_devices=8,
  # mesh.fsdp=4 shards the shared backbone's parameters and Adam moments by its logical
  # axes; heads are replicated; each batch is split over data x fsdp
  config.num_devices = 1
  config.mesh = config_fields.mesh_fields()
  return config
