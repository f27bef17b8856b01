"""Skip-gram throughput and quality: ours vs gensim's Word2Vec, same run.

  python benchmarks/skipgram_vs_gensim.py [--corpus ../shared/data/english_novels]
      [--unit paragraph] [--epochs 1] [--json results.json]

Both train on the same token lists (our tokenizer; documents split at 10,000
words, gensim's limit) with sg=1, negative=5, window=5, dim=100, min_count=5,
sample=1e-3, linear LR decay from 0.025, on the machine's cores (gensim:
`--workers`, default 2). words/s = corpus words × epochs / training wall time;
for gensim the wall time of `train()` after `build_vocab()`, for ours of
`train_on_corpus()` after the corpus is encoded (both include their own
setup: gensim's thread start-up, our compilation). Evaluation: WordSim-353 and
SimLex-999 Spearman ρ (pairs with OOV words skipped, as gensim does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from benchmarks import common  # noqa: E402
from translearn_jax.data import readers  # noqa: E402
from translearn_jax.data.vocab import encode_corpus, tokenize  # noqa: E402
from translearn_jax.evaluation import word_vectors  # noqa: E402
from translearn_jax.pretraining import word2vec  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, '..', '..', 'shared', 'data'))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--corpus', default=os.path.join(SHARED, 'english_novels'))
  ap.add_argument('--kind', default='text')
  ap.add_argument('--unit', default='paragraph', help="text unit: 'line', 'paragraph', 'file'")
  ap.add_argument('--epochs', type=int, default=1)
  ap.add_argument('--mode', default='skipgram', choices=['skipgram', 'cbow'],
                  help='cbow: CBOW with mean of contexts, alpha 0.05 (word2vec defaults)')
  ap.add_argument('--config', default='', choices=('',) + common.WORD2VEC_CONFIGS,
                  help="ours: the shipped config it starts from (default: configs/skipgram.py, "
                       "or configs/cbow.py with --mode cbow); skipgram_shared: the shared "
                       "draws that were configs/skipgram.py's until 2026-12-04")
  ap.add_argument('--workers', type=int, default=2)
  ap.add_argument('--wordsim', default=os.path.join(SHARED, 'word_eval', 'EN-WS-353-ALL.txt'))
  ap.add_argument('--simlex', default=os.path.join(SHARED, 'word_eval', 'EN-SIMLEX-999.txt'))
  ap.add_argument('--skip-gensim', action='store_true')
  ap.add_argument('--json', default='')
  ap.add_argument('--seed', type=int, default=1,
                  help="both sides' seed (ours: config.seed; gensim: Word2Vec(seed=))")
  ap.add_argument('--override', action='append', default=[],
                  help='our config override FIELD=VALUE (e.g. batch_size=4)')
  ap.add_argument('--compilation-cache', default='',
                  help="JAX's persistent compilation cache for our programs, as `python train.py` "
                       "keeps one by default ('': off, every program compiled, the default "
                       "here): a second run of the same settings loads them instead")
  args = ap.parse_args()
  if args.compilation_cache:
    from translearn_jax.training import compilation_cache
    compilation_cache.configure(args.compilation_cache)
  for p in (args.wordsim, args.simlex):
    if not os.path.exists(p):
      args.wordsim, args.simlex = 'gensim:wordsim353.tsv', 'gensim:simlex999.txt'

  spec = readers.TextSpec(kind=args.kind, path=args.corpus, unit=args.unit)
  t0 = time.perf_counter()
  docs = list(readers.read_documents(spec))
  read_s = time.perf_counter() - t0

  name = args.config or args.mode
  if (name == 'cbow') != (args.mode == 'cbow'):
    ap.error(f'--config {name} is not a {args.mode} config')
  config = common.shipped_config(name)   # α0: 0.025 skip-gram, 0.05 CBOW (word2vec's)
  config.data.kind, config.data.path, config.data.unit = args.kind, args.corpus, args.unit
  config.train.epochs = args.epochs
  alpha = 0.025 if args.mode == 'skipgram' else 0.05    # gensim's: word2vec's defaults
  config.progress = False
  config.export.format = ''
  config.eval.similarity = f'wordsim353={args.wordsim},simlex999={args.simlex}'
  config.eval.analogy = ''
  config.train.checkpoint_every_steps = 10**9
  config.seed = args.seed
  common.override(config, args.override)

  t0 = time.perf_counter()
  corpus = encode_corpus(docs, min_count=config.vocab.min_count)
  ours_prep = time.perf_counter() - t0
  with tempfile.TemporaryDirectory() as workdir, common.steal_share() as ours_steal:
    summary = word2vec.train_on_corpus(config, corpus, workdir)
  ours = {
      'words_per_s': corpus.raw_words * args.epochs / summary['wall_seconds'],
      'seconds': summary['wall_seconds'], 'prep_seconds': ours_prep,
      # after the first (compiling) call: what the wall figure's fixed costs (init,
      # compilation, the final checkpoint) hide on a short run
      'steady_words_per_s': summary['words_per_sec'],
      'wordsim353': summary['eval']['wordsim353']['spearman'],
      'simlex999': summary['eval']['simlex999']['spearman'],
      'vocab': len(corpus.vocab), 'steal': ours_steal['steal']}
  timing = dict(summary.get('timing', {}))
  timing['setup_seconds'] = summary['wall_seconds'] - timing.get('loop_seconds', 0.0)

  gensim = None
  if not args.skip_gensim:
    from gensim.models import Word2Vec
    t0 = time.perf_counter()
    sentences = []
    for d in docs:
      toks = tokenize(d)
      sentences.extend(toks[i:i + 10000] for i in range(0, len(toks), 10000))
    model = Word2Vec(sg=int(args.mode == 'skipgram'), cbow_mean=1, negative=5, window=5,
                     vector_size=100, min_count=5, sample=1e-3, alpha=alpha,
                     min_alpha=alpha * 1e-4, workers=args.workers, seed=args.seed)
    model.build_vocab(sentences)
    g_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    with common.steal_share() as g_steal:
      model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
    g_train = time.perf_counter() - t0
    words, vecs = model.wv.index_to_key, model.wv.vectors
    gensim = {
        'words_per_s': corpus.raw_words * args.epochs / g_train, 'seconds': g_train,
        'prep_seconds': g_prep,
        'wordsim353': word_vectors.evaluate_similarity(words, vecs, args.wordsim).spearman,
        'simlex999': word_vectors.evaluate_similarity(words, vecs, args.simlex).spearman,
        'vocab': len(words), 'steal': g_steal['steal']}

  print(f'\ncorpus: {args.corpus} ({len(docs)} documents, {corpus.raw_words:,} words, '
        f'read in {read_s:.1f}s), epochs={args.epochs}, {args.mode} neg=5 window=5 dim=100 '
        'min_count=5 sample=1e-3')
  print(f'{"":<10} {"words/s":>10} {"train s":>8} {"prep s":>7} {"vocab":>7} '
        f'{"WS-353":>7} {"SimLex":>7} {"steal":>6}')
  rows = [('ours', ours)] + ([('gensim', gensim)] if gensim else [])
  for name, r in rows:
    print(f'{name:<10} {r["words_per_s"]:>10,.0f} {r["seconds"]:>8.1f} {r["prep_seconds"]:>7.1f} '
          f'{r["vocab"]:>7} {r["wordsim353"]:>7.4f} {r["simlex999"]:>7.4f} '
          f'{"" if r["steal"] is None else format(r["steal"], ".1%"):>6}')
  steady = ours['steady_words_per_s']
  steady = 'n/a (the run was one call)' if steady is None else f'{steady:,.0f} words/s'
  print(f'ours after compiling: {steady} (the wall figure '
        'above counts initialisation, compilation and the final checkpoint; gensim\'s counts '
        'its train() call)')
  print('ours, where the wall time went: ' + ', '.join(
      f'{k.replace("_seconds", "")} {v:.2f}s' for k, v in timing.items()) +
      ' (setup: initialisation before the loop; input: waiting for the next block; '
      'first_call: compilation and the first call)')
  out = {'corpus': args.corpus, 'corpus_words': corpus.raw_words, 'train.epochs': args.epochs,
         'ours_words_per_s': ours['words_per_s'], 'ours_wordsim353': ours['wordsim353'],
         'ours_steady_words_per_s': ours['steady_words_per_s'], 'overrides': args.override,
         'ours_timing': timing,
         'ours_simlex999': ours['simlex999'], 'ours_steal': ours['steal'],
         'compilation_cache': args.compilation_cache}
  if gensim:
    ratio = ours['words_per_s'] / gensim['words_per_s']
    print(f'ratio ours/gensim words/s: {ratio:.3f}; '
          f'WordSim-353 gap (ours - gensim): {ours["wordsim353"] - gensim["wordsim353"]:+.4f}')
    out.update(gensim_words_per_s=gensim['words_per_s'], ratio=ratio,
               gensim_wordsim353=gensim['wordsim353'], gensim_simlex999=gensim['simlex999'],
               gensim_steal=gensim['steal'])
  if args.json:
    metrics.write_json(args.json, out)


if __name__ == '__main__':
  main()
