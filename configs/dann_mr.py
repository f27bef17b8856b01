"""Adversarial domain adaptation (DANN): full movie reviews (labelled) -> MR sentences.

  python train.py --config configs/dann_mr.py --workdir /tmp/dann \
    --config.init.path=runs/sg_pretrain_en/vectors.txt

Source: the 2,000 labelled full-length reviews of ../shared/data/movie_reviews.
Target: MR sentences (../shared/data/rt_polarity); only the texts of its train
split are used (unlabelled), its test split scores the result. Compares DANN
against the identical run without gradient reversal, over `seeds` seeds.
"""

from translearn_jax.configs import transfer_mr_skipgram


def get_config():
  base = transfer_mr_skipgram.get_config()
  config = base
  config.family = 'dann'
  config.source_data = dict(kind='jsonl', path='../shared/data/movie_reviews/reviews.jsonl',
                            text_field='text', label_field='label', encoding='utf-8')
  config.model.source_max_tokens = 1000   # full reviews (~700 words on average)
  config.dann = dict(lambda_max=1.0,      # reversal weight reached at the end (Ganin schedule)
                     hidden=64,           # domain classifier hidden units
                     label_mapping='neg=negative,pos=positive')  # source label -> target label
  config.train.steps = 600
  config.train.batch_size = 32
  config.optim.learning_rate = 3e-3      # Adam, linear decay to 0
  # fields of the classification config DANN does not read, so that an override of one is
  # an error, not ignored: its own schedule and steps, no strategies, seeds 0..seeds-1
  del config.transfer, config.train.epochs, config.seed, config.init.kind
  del config.with_scratch, config.compare_scratch, config.save_models
  del config.model.type, config.model.pooling
  for field in ('schedule', 'warmup_steps', 'grad_clip', 'weight_decay'):
    del config.optim[field]
  return config
