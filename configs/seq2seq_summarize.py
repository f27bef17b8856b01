"""Summarisation with the encoder-decoder on any (document, summary) JSONL or TSV file.

  python train.py --config configs/seq2seq_summarize.py --workdir /tmp/summ \
    --config.data.train_path=train.jsonl --config.data.valid_path=valid.jsonl \
    [--config.data.kind=tsv] [--config.data.source_field=document --config.data.target_field=summary]

Reports ROUGE-1/2/L and ROUGE-Lsum F-measures (rouge-score, stemmed) on the held-out files.
"""

from translearn_jax.configs import seq2seq_multi30k


def get_config():
  config = seq2seq_multi30k.get_config()
  config.data.kind = 'jsonl'
  for split in ('train', 'valid', 'test'):
    config.data[f'{split}_source'] = ''
    config.data[f'{split}_target'] = ''
    config.data[f'{split}_path'] = ''
  config.data.source_field = 'document'
  config.data.target_field = 'summary'
  config.data.truncate_source = True     # documents beyond max_source_len are cut, not dropped
  config.max_source_len = 256
  config.max_target_len = 64
  config.length_buckets = '32,64,128,192'
  config.packing = False                 # True: several (document, summary) pairs per row
  config.train.batch_size = 16
  config.eval.metric = 'rouge'
  config.eval.beam = 4
  return config
