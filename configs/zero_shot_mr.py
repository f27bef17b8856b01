"""Zero-shot MR sentence polarity: no labelled example is used for training.

  python train.py --config configs/zero_shot_mr.py --workdir /tmp/zs_vec \
    --config.init.kind=word2vec --config.init.path=runs/sg_novels/vectors.txt
  python train.py --config configs/zero_shot_mr.py --workdir /tmp/zs_lm \
    --config.init.kind=lm --config.init.path=/tmp/lm_novels

The source (`init.kind`) chooses the method. `word2vec`: cosine between a
sentence's mean word vector and each label's description vector. `lm`: the
LM's log-probability of each label's verbalisation after the sentence, raw and
calibrated by the content-free prior.
Accuracy is reported next to the majority-class baseline of the same split.
"""

import ml_collections

from translearn_jax.configs import transfer_mr_skipgram


def get_config() -> ml_collections.ConfigDict:
  base = transfer_mr_skipgram.get_config()
  config = ml_collections.ConfigDict()
  config.family = 'zero_shot'
  config.data = base.data                # MR, read as Latin-1; same split as the transfer runs
  config.eval_split = 'test'             # 'all' | 'train' | 'dev' | 'test'
  config.init = ml_collections.ConfigDict()   # the pretrained source; its kind picks the method
  config.init.kind = 'word2vec'          # 'word2vec' (embedding similarity) | 'lm' (verbalisations)
  config.init.path = '/tmp/skipgram/vectors.txt'
  config.init.binary = False             # word2vec binary; else text: word2vec, fastText, GloVe
  config.init.unicode_errors = 'strict'  # words not UTF-8: 'strict' (an error) | 'replace' | 'ignore'
  config.zero_shot = ml_collections.ConfigDict()
  config.zero_shot.descriptions = ('negative=bad terrible awful boring dull worst;'
                                   'positive=good great excellent wonderful enjoyable best')
  config.zero_shot.verbalisations = 'negative= It was terrible.;positive= It was great.'
  config.zero_shot.max_tokens = 128      # context used for LM scoring (texts cut from the left)
  return config
