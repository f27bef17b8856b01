"""GLUE SST-2 (a second sentiment task) with the bag-of-embeddings classifier of
configs/transfer_mr_skipgram.py, from skip-gram vectors.

`../shared/data/sst2` holds SST-2 as re-split by ALPS (see its PROVENANCE.txt):
train 60,614 and dev 6,735 phrases/sentences (together GLUE's training set) and
test = GLUE's 872-sentence dev set, read as a predefined split
(`data.dev_path`, `data.test_path`). The README's table:

  PE=../shared/data/pretrain_en; PE=$PE/abc_news.txt,$PE/brown.txt,$PE/state_union.txt,$PE/webtext.txt
  python train.py --config configs/skipgram.py --workdir runs/sg_pretrain_en \
    --config.data.kind=text --config.data.path=$PE --config.train.epochs=5
  python train.py --config configs/transfer_sst2_skipgram.py --workdir runs/sst2_from_sg_pe \
    --config.init.path=runs/sg_pretrain_en/vectors.txt --config.compare_scratch=True
"""

from translearn_jax.configs import transfer_mr_skipgram


def get_config():
  config = transfer_mr_skipgram.get_config()
  config.data.kind = 'tsv'
  config.data.path = '../shared/data/sst2/train.tsv'
  config.data.dev_path = '../shared/data/sst2/dev.tsv'
  config.data.test_path = '../shared/data/sst2/test.tsv'
  config.data.text_field = 'sentence'
  config.data.label_field = 'label'
  config.transfer.strategies = 'finetune,feature_extraction'
  config.train.epochs = 2                # 60k short examples: 1,212 steps of 50 a pass
  return config
