#!/bin/bash
# The accelerator checks, in priority order, each under its own time limit (about 7 minutes
# in all on one H200, 9-10 with skip-gram's default and the novels), for a short lease on a
# GPU machine:
#
#   bash benchmarks/accelerator_session.sh OUT_DIR DATA_DIR [GENSIM_WORKERS]
#
# DATA_DIR holds pretrain_en/ and word_eval/ (copies of ../shared/data's), and english_novels/
# if it fits the lease's transfer (74 MB; 29 MB as a .tar.gz to unpack there). Every benchmark
# writes OUT_DIR/<name>.json; the output is the log. What each prints and why is in the
# README's results, "On an accelerator". JAX does not preallocate the GPU, so the PyTorch
# peers can run in the same process after ours.
set -u
OUT=${1:?OUT_DIR}; DATA=${2:?DATA_DIR}; WORKERS=${3:-$(nproc)}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
W="--wordsim $DATA/word_eval/EN-WS-353-ALL.txt --simlex $DATA/word_eval/EN-SIMLEX-999.txt"
stage() { echo; echo "=== $1 $(date +%T)"; }
stage 'GPT-2 small, batch 8, chunked loss, torch.compile peer'
timeout 150 python3 benchmarks/accelerator_mfu.py --steps 30 --batch 8 --peer torch_compile \
  --trace "$OUT/trace_b8" --json "$OUT/mfu_b8.json"
cp "$OUT"/trace_b8/plugins/profile/*/*.trace.json.gz "$OUT/trace_b8.json.gz" 2>/dev/null
stage 'GPT-2 small, batch 16, chunked loss vs plain logits'
timeout 60 python3 benchmarks/accelerator_mfu.py --steps 30 --batch 16 --json "$OUT/mfu_b16.json"
timeout 60 python3 benchmarks/accelerator_mfu.py --steps 30 --batch 16 --loss_chunk 0 \
  --json "$OUT/mfu_b16_plain.json"
stage 'the chunked loss alone vs plain logits (8192 rows)'
timeout 60 python3 benchmarks/chunked_loss.py --rows 8192 --reps 10 --json "$OUT/chunked_loss.json"
stage 'word vectors: skip-gram (shared draws) and CBOW vs gensim, pretrain_en x 5 epochs'
timeout 100 python3 benchmarks/skipgram_vs_gensim.py --config skipgram_shared \
  --corpus "$DATA/pretrain_en" --unit paragraph --epochs 5 --workers "$WORKERS" $W \
  --json "$OUT/skipgram.json"
timeout 80 python3 benchmarks/skipgram_vs_gensim.py --mode cbow --corpus "$DATA/pretrain_en" \
  --unit paragraph --epochs 5 --workers "$WORKERS" $W --json "$OUT/cbow.json"
stage "word vectors: skip-gram's default (word2vec's order, the XLA step), pretrain_en x 5"
timeout 90 python3 benchmarks/skipgram_vs_gensim.py --skip-gensim --corpus "$DATA/pretrain_en" \
  --unit paragraph --epochs 5 $W --json "$OUT/skipgram_default.json"
if [ -d "$DATA/english_novels" ]; then    # #20's goal: >= 10M words/s on one H200, end to end
  stage 'word vectors: skip-gram and CBOW on the novels (13.9M words), 1 epoch'
  timeout 120 python3 benchmarks/skipgram_vs_gensim.py --config skipgram_shared \
    --corpus "$DATA/english_novels" --epochs 1 --workers "$WORKERS" $W \
    --json "$OUT/skipgram_novels.json"
  timeout 90 python3 benchmarks/skipgram_vs_gensim.py --mode cbow --skip-gensim \
    --corpus "$DATA/english_novels" --epochs 1 $W --json "$OUT/cbow_novels.json"
  # the large-batch recipe (README, "The cross term"): level with batch 2 on the CPU
  timeout 90 python3 benchmarks/skipgram_vs_gensim.py --mode cbow --skip-gensim \
    --corpus "$DATA/english_novels" --epochs 1 $W --override train.batch_size=64 \
    --override optim.row_cap=1 --override optim.row_cap_mode=curvature \
    --override optim.row_cap_cross=0.1 --override optim.learning_rate=0.075 \
    --json "$OUT/cbow_novels_b64.json"
  # skip-gram's (shared draws, k 0.05, α0 0.05; README: WordSim-353 +0.06, SimLex-999 -0.012)
  timeout 90 python3 benchmarks/skipgram_vs_gensim.py --config skipgram_shared --skip-gensim \
    --corpus "$DATA/english_novels" --epochs 1 $W --override train.batch_size=64 \
    --override optim.row_cap=1 --override optim.row_cap_mode=curvature \
    --override optim.row_cap_cross=0.05 --override optim.learning_rate=0.05 \
    --json "$OUT/skipgram_novels_b64.json"
  # word2vec's order at batch 64 (configs/skipgram_large_batch.py; README: at or above batch
  # 2 on both sets after one epoch on the CPU); its XLA step is what many devices would run
  timeout 90 python3 benchmarks/skipgram_vs_gensim.py --config skipgram_large_batch \
    --skip-gensim --corpus "$DATA/english_novels" --epochs 1 $W \
    --json "$OUT/skipgram_large_batch_novels.json"
fi
stage 'checkpoint overlap: a 1.14 GB state, saves 500 steps apart'
timeout 45 python3 benchmarks/checkpoint_overlap.py --params_m 100 --steps 1500 --every 500 \
  --json "$OUT/checkpoint.json"
stage 'GPT-2 small, batch 32, torch.compile peer'
timeout 200 python3 benchmarks/accelerator_mfu.py --steps 30 --batch 32 --peer torch_compile \
  --json "$OUT/mfu_b32.json"
stage done
