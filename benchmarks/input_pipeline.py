"""Input pipeline on one CPU core: pretokenised shards vs the in-memory `LMStream`.

  python benchmarks/input_pipeline.py [--corpus ../shared/data/pretrain_en] [--repeat 1] \
      [--shards 8] [--seq_len 1024] [--rows 8] [--rounds 10] [--steps 2000] [--json out.json]

Pretokenises the corpus (`../shared/data/pretrain_en` when present, else a
synthetic Zipfian one; `--repeat` concatenates it that many times) with a
sentencepiece tokenizer trained on a sample of it (or `--tokenizer`) into a
temporary directory (`data.pretokenized.pretokenize`, timed). Then, pinned to
one CPU (`os.sched_setaffinity`), it times `make_batch` over consecutive
batches (epochs wrap) of a GPT-2-small-like shape — seq_len 1024, 8 rows per
process batch, grad_accum 1 — for `ShardedTokenStream` (memory-mapped shards,
one process) and for `LMStream` over the same tokens in memory, in
alternating rounds (`common.interleaved`; medians compared). Tokens counted
are the model's input tokens, rows × seq_len per batch, as the training loop
counts them. Prints tokens/s against the 2M tokens/s target, the ratio to the
in-memory stream, and the time of a resume (a fresh stream's first batch at
the middle of epoch 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import interleaved  # noqa: E402
from translearn_jax.data import pretokenized, readers  # noqa: E402
from translearn_jax.data.lm_data import LMStream, pack  # noqa: E402
from translearn_jax.data.tokenizer import Tokenizer, load_tokenizer  # noqa: E402
from translearn_jax.training import metrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data', 'pretrain_en'))
SHARED_FILES = ','.join(os.path.join(SHARED, f) for f in
                        ('abc_news.txt', 'brown.txt', 'state_union.txt', 'webtext.txt'))
TARGET = 2e6   # tokens/s of one process's input pipeline


def synthetic_docs(n_docs: int = 60000, seed: int = 0):
  """Zipfian 'words' over a 20k vocabulary, documents of 5-80 words."""
  rng = np.random.default_rng(seed)
  words = [f'w{i}' for i in range(20000)]
  for _ in range(n_docs):
    ids = np.minimum(rng.zipf(1.2, rng.integers(5, 80)), 20000) - 1
    yield ' '.join(words[i] for i in ids)


def documents(corpus: str, repeat: int):
  for _ in range(repeat):
    if corpus == 'synthetic':
      yield from synthetic_docs()
    else:
      yield from readers.read_documents(readers.TextSpec(kind='text', path=corpus))


def pin_one_cpu():
  """Pins this thread (the one that times) to one allowed CPU; returns it (None: cannot)."""
  try:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu
  except (AttributeError, OSError):
    return None


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--corpus', default=SHARED_FILES if os.path.isdir(SHARED) else 'synthetic',
                  help="a text path spec, or 'synthetic'")
  ap.add_argument('--repeat', type=int, default=1, help='the corpus this many times over')
  ap.add_argument('--tokenizer', default='', help='an existing tokenizer (default: train one)')
  ap.add_argument('--vocab_size', type=int, default=8000)
  ap.add_argument('--shards', type=int, default=8)
  ap.add_argument('--seq_len', type=int, default=1024)
  ap.add_argument('--rows', type=int, default=8, help='rows per process batch')
  ap.add_argument('--rounds', type=int, default=10)
  ap.add_argument('--steps', type=int, default=2000, help='batches per round')
  ap.add_argument('--json', default='')
  args = ap.parse_args(argv)

  if args.tokenizer:
    tok = load_tokenizer(args.tokenizer)
  else:
    t0 = time.perf_counter()
    sample = [d for _, d in zip(range(20000), documents(args.corpus, 1))]
    tok = Tokenizer.train(sample, args.vocab_size)
    print(f'trained a {tok.vocab_size}-piece tokenizer on {len(sample)} documents in '
          f'{time.perf_counter() - t0:.1f}s')
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'tok')
    t0 = time.perf_counter()
    index = pretokenized.pretokenize(documents(args.corpus, args.repeat), tok, out, args.shards)
    pre_s = time.perf_counter() - t0
    n_tokens = index['train_tokens']
    print(f'pretokenised {index["train_documents"]} documents, {n_tokens} tokens into '
          f'{args.shards} {index["dtype"]} shards in {pre_s:.1f}s '
          f'({n_tokens / pre_s / 1e6:.2f}M tokens/s, all cores)')

    cpu = pin_one_cpu()
    sharded = pretokenized.ShardedTokenStream(out, args.seq_len, args.rows, 1, 10 ** 6, seed=0)
    in_memory = np.concatenate([np.fromfile(os.path.join(out, e['file']),
                                            np.dtype(index['dtype']).newbyteorder('<'))
                                for e in index['shards']]).astype(np.int32)
    memory = LMStream(pack(in_memory, args.seq_len), args.rows, 1, 10 ** 6, seed=0)

    def stepper(stream):
      per_epoch = stream.batches_per_epoch
      return (lambda i: stream.make_batch(i // per_epoch, i % per_epoch)), (lambda: None)

    times = interleaved({'sharded': stepper(sharded), 'in_memory': stepper(memory)},
                        warmup=20, rounds=args.rounds, steps=args.steps)
    tokens_per_round = args.steps * args.rows * args.seq_len
    rate = {k: tokens_per_round / float(np.median(v)) for k, v in times.items()}
    t0 = time.perf_counter()
    fresh = pretokenized.ShardedTokenStream(out, args.seq_len, args.rows, 1, 10 ** 6, seed=0)
    fresh.make_batch(3, fresh.batches_per_epoch // 2)
    resume_ms = 1e3 * (time.perf_counter() - t0)

  result = {
      'corpus': args.corpus, 'repeat': args.repeat, 'tokens': n_tokens,
      'vocab_size': tok.vocab_size, 'dtype': index['dtype'], 'shards': args.shards,
      'seq_len': args.seq_len, 'rows': args.rows, 'batches_per_epoch':
      sharded.batches_per_epoch, 'cpu': cpu, 'pretokenize_s': pre_s,
      'pretokenize_tokens_per_sec': n_tokens / pre_s,
      'sharded_tokens_per_sec': rate['sharded'], 'in_memory_tokens_per_sec': rate['in_memory'],
      'sharded_over_in_memory': rate['sharded'] / rate['in_memory'],
      'target_tokens_per_sec': TARGET, 'sharded_over_target': rate['sharded'] / TARGET,
      'resume_ms': resume_ms}
  print(f'one CPU ({cpu}), seq_len {args.seq_len} x {args.rows} rows: pretokenised '
        f'{rate["sharded"] / 1e6:.1f}M tokens/s ({rate["sharded"] / TARGET:.1f}x the '
        f'{TARGET / 1e6:.0f}M target), in-memory LMStream {rate["in_memory"] / 1e6:.1f}M '
        f'tokens/s, ratio {result["sharded_over_in_memory"]:.2f}; resume at epoch 3 in '
        f'{resume_ms:.1f} ms')
  if args.json:
    metrics.write_json(args.json, result)
  return result


if __name__ == '__main__':
  main()
