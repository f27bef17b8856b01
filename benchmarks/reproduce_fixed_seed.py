"""Fixed-seed results of a checkout, to compare two checkouts of the project (issue #12).

  python benchmarks/reproduce_fixed_seed.py --out /tmp/repro_new     # in this checkout
  (cd OLD_CHECKOUT && python /path/to/benchmarks/reproduce_fixed_seed.py --out /tmp/repro_old)

Runs, from fixed seeds: skip-gram on gensim's Lee corpus (sha256 of the
exported vectors), MR (`../shared/data/rt_polarity`) with deterministic
random 100-d vectors as the pretrained source — scratch, fine-tuning, feature
extraction, discriminative LR and gradual unfreezing, seed 0, 2 epochs —
DANN (movie reviews → MR, 60 steps, both conditions) and 30 steps of the
Transformer LM (held-out loss). Prints one JSON line; identical lines mean the
restructure did not change the computation. Works with the config spelling of
either side of the #12 rename (`pretrained.*`/`init.*`).
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

sys.path.insert(0, os.getcwd())
import numpy as np  # noqa: E402

import train  # noqa: E402
from configs import dann_mr, lm_transformer, skipgram, transfer_mr_skipgram  # noqa: E402
from translearn_jax.export.word2vec_format import save_word2vec  # noqa: E402

MR = '../shared/data/rt_polarity'


def setf(c, new: str, old: str, value):
  """Sets field `new`, or `old` in a checkout from before the #12 rename."""
  node, name = c, (old if old in c else new)
  *parents, leaf = name.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value


def set_source(c, path):
  (c.init if 'init' in c else c.pretrained).path = path


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  out = p.parse_args().out
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  res = {}
  c = skipgram.get_config()
  c.data.kind, c.data.path = 'text', 'gensim:lee_background.cor'
  setf(c, 'train.epochs', 'epochs', 2)
  c.progress, c.eval.analogy = False, ''
  train.run(c, f'{out}/sg')
  res['skipgram_vectors_sha256'] = hashlib.sha256(open(f'{out}/sg/vectors.txt', 'rb').read()
                                                  ).hexdigest()
  if not os.path.isdir(MR):
    print(json.dumps(res))
    return
  words = sorted({w for line in open(f'{MR}/rt-polarity.pos', encoding='latin-1')
                  for w in line.lower().split()})[:5000]
  rng = np.random.default_rng(0)
  save_word2vec(f'{out}/v.txt', words, rng.normal(size=(len(words), 100)).astype(np.float32))
  c = transfer_mr_skipgram.get_config()
  set_source(c, f'{out}/v.txt')
  c.compare_scratch, c.seeds, c.train.epochs = True, 1, 2
  c.transfer.strategies = 'finetune,feature_extraction,discriminative,gradual_unfreezing'
  res['mr'] = {row['strategy']: row['test'] for row in train.run(c, f'{out}/mr')['rows']}
  c = dann_mr.get_config()
  set_source(c, f'{out}/v.txt')
  c.seeds, c.train.steps = 1, 60
  res['dann'] = [row['test'] for row in train.run(c, f'{out}/dann')['rows']]
  c = lm_transformer.get_config()
  setf(c, 'train.steps', 'max_steps', 30)
  c.progress = False
  res['lm_valid_loss'] = train.run(c, f'{out}/lm')['valid']['loss']
  print(json.dumps(res))


if __name__ == '__main__':
  main()
