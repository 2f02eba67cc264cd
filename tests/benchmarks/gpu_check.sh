#!/usr/bin/env bash
# The GPU figures of docs/performance.md as one short script (about 5 minutes on one H100,
# compilation included):
#   0. the window-attention trick's masked attention through cuDNN against XLA (loss and
#      gradients, tests/benchmarks/gpu_masked_attention.py);
#   1. `bench --track fineweb10b` (GPT-2 small, bf16 compute over f32 master weights) for the
#      baseline (with `--breakdown`: where its step goes), `muon,rotary,wsd-schedule`, and the
#      CPU track's fastest stack: tokens/s, MFU against the device's dense bf16 datasheet peak
#      (the measured bf16 matmul printed beside it), peak memory, the attention kernel. Batch:
#      64 sequences of 1024, the per-GPU share of the track's 512 on 8 GPUs (BATCH=N);
#   2. STEPS (300) real steps of the same GPT-2 small configuration on the `wiki` track's shards
#      (~1M GPT-2 tokens: the GPU machine has no internet, so no FineWeb; at 32 x 1024 tokens a
#      step the run sees the shards ~9 times, so its loss falls lower than unseen FineWeb would
#      give): the loss falling at that speed.
#
# Usage, from the repo root, with the wiki data made here (`python -m speedrun data wiki`) and
# copied into a folder that travels with the tree (SPEEDRUN_DATA_DIR, default .gpudata):
#   bash tests/benchmarks/gpu_check.sh OUTDIR
# Everything printed is also written under OUTDIR (default gpu-check).
# Smaller settings for a smoke test anywhere: BATCH, BENCH_STEPS, STEPS, RUN_BATCH (the run's
# sequences per step, default 32), e.g. BATCH=1 BENCH_STEPS=1 STEPS=2 RUN_BATCH=2 on a CPU.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SPEEDRUN_DATA_DIR=${SPEEDRUN_DATA_DIR:-$PWD/.gpudata}
PY=${PY:-python3}
BATCH=${BATCH:-64}
STEPS=${STEPS:-300}
BENCH_STEPS=${BENCH_STEPS:-10}
SECOND_WAVE=muon,rotary,wsd-schedule,batch-schedule,polar-express,normuon,window-attention,key-offset

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } | tee "$out/device.txt"

echo "=== masked attention (window-attention's kernel): cuDNN against XLA"
$PY tests/benchmarks/gpu_masked_attention.py 2>&1 | tee "$out/masked-attention.txt"

for tricks in "" muon,rotary,wsd-schedule "$SECOND_WAVE"; do
  name=${tricks:-baseline}
  breakdown=; [ -z "$tricks" ] && breakdown=--breakdown  # where the baseline's step goes
  echo "=== bench fineweb10b ${name}"
  $PY -m speedrun bench --track fineweb10b ${tricks:+--tricks "$tricks"} $breakdown \
      --set train.batch_size="$BATCH" --steps "$BENCH_STEPS" 2>&1 \
    | tee "$out/bench-${name//,/_}.txt"
done

# GPT-2 small (fineweb10b's model and optimizer) on wiki's GPT-2 tokens, no record (not a track)
echo "=== run: GPT-2 small, ${STEPS} steps on the wiki shards"
$PY -m speedrun run --track wiki --seed 0 --no-record --steps "$STEPS" \
    --set model.n_layer=12 --set model.n_head=12 --set model.d_model=768 \
    --set model.seq_len=1024 --set model.compute_dtype=bfloat16 \
    --set optim.lr=6e-4 --set optim.warmup_steps=30 --set optim.min_lr_frac=0 \
    --set train.batch_size="${RUN_BATCH:-32}" --set train.eval_every=50 --set train.loss_chunk=8192 \
    --set train.val_batch_size=16 --set train.log_every=25 2>&1 | tee "$out/run-gpt2-small-wiki.txt"
