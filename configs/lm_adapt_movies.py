"""ULMFiT's middle stage: continue an LM's pretraining on target-domain text (movie reviews).

The three stages of LM-based domain adaptation for MR sentence polarity:

  # 1. general-domain LM on ../shared/data/pretrain_en (news, speeches, web text)
  python train.py --config configs/lm_adapt_movies.py --workdir runs/lm_pe \
    --config.init.path= --config.data.kind=text \
    --config.data.path=../shared/data/pretrain_en --config.data.unit=line \
    --config.train.steps=1200 --config.optim.learning_rate=2e-3 --config.optim.warmup_steps=50
  # 2. the same LM continued on the 2,000 full movie reviews (this config's data)
  python train.py --config configs/lm_adapt_movies.py --workdir runs/lm_pe_movies \
    --config.init.path=runs/lm_pe
  # 3. MR classifiers from each LM (same seeds; compare with evaluation.compare)
  python train.py --config configs/transfer_mr_lm.py --workdir runs/mr_from_lm_pe \
    --config.init.path=runs/lm_pe --config.compare_scratch=True --config.seeds=5 ...
  python train.py --config configs/transfer_mr_lm.py --workdir runs/mr_from_lm_pe_movies \
    --config.init.path=runs/lm_pe_movies --config.compare_scratch=True --config.seeds=5 \
    --config.with_scratch=False ...
  python -m translearn_jax.evaluation.compare runs/mr_from_lm_pe/results.json \
    runs/mr_from_lm_pe_movies/results.json --strategy finetune

(`with_scratch=False` in the second: stage 2 keeps stage 1's tokenizer and
architecture, so its scratch runs would repeat the first's seed for seed.)
`init.path` reuses the source run's tokenizer and parameters (the model fields
below must match its architecture: checked before any data is read) with a
fresh optimiser; the learning rate is lower than for pretraining from scratch.
The model is the 4-layer d_model-256 LM of the README's novels run.
"""

from translearn_jax.configs import lm_transformer


def get_config():
  config = lm_transformer.get_config()
  config.init.path = 'runs/lm_pe'       # the general-domain LM run to continue (stage 1)
  config.data.kind = 'jsonl'
  config.data.path = '../shared/data/movie_reviews/reviews.jsonl'
  config.data.field = 'text'
  config.data.valid_fraction = 0.05      # reviews held out for perplexity
  config.tokenizer.vocab_size = 8000     # used only when training from scratch (stage 1)
  config.model.d_model = 256
  config.model.num_layers = 4
  config.model.d_ff = 1024
  config.train.epochs = 1
  config.train.steps = 600           # 1.2M tokens of reviews at 16 × 128 a step
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 30
  config.train.eval_max_rows = 512
  return config
