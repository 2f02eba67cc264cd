#!/usr/bin/env bash
# The GPU figures of docs/performance.md as one prepared call on one GPU. Nothing starts, and
# nothing keeps running, past BUDGET_S seconds (default 480: the call ends within ~8 minutes
# whatever the machine's compile times); what did not fit says "skipped". In order:
#   1. `bench --track fineweb10b` of the FP8 tricks (GPT-2 small, bf16 compute over f32 master
#      weights, BATCH=64 sequences of 1024: one GPU's share of the track's 512 on 8 GPUs):
#      fp8-head with --breakdown (the head was 26% of the baseline's step), then fp8-mlp;
#      ~1.5 minutes on an H100 (two processes, each ~15 s of compilation, the breakdown ~40 s);
#   2. every trick alone against the baseline, in one process (tests/benchmarks/trick_costs.py):
#      step time and the step program's peak memory as ratios to the baseline's, the FP8 tricks
#      first; it stops starting configurations ~TAIL_S (default 20) seconds before the budget.
#      ~10-15 s a configuration (compilation; XLA reuses its autotuning within the process);
#   3. side-by-side seeds throughput: SEEDS_CMD (below) if set, else part 5;
#   4. the figures measured before, if time is left (PARTS may ask for them alone, with the
#      budget raised): the window-attention trick's masked attention through cuDNN against XLA
#      (gpu_masked_attention.py), `bench` of the baseline (--breakdown), `muon,rotary,
#      wsd-schedule` and the CPU track's fastest stack, and STEPS (300) real steps of GPT-2
#      small on the `wiki` track's shards (~1M GPT-2 tokens: the GPU machine has no internet,
#      so no FineWeb; the run sees the shards ~9 times);
#   5. side-by-side seeds throughput (tests/benchmarks/side_by_side.py), if time is left.
#   6. memory (only when PARTS names it: PARTS=memory, ~3 minutes on an H100): `bench` at BATCH
#      with train.remat off, dots and full (step time, the step program's peak, the device's
#      peak, the activations kept), then the track's 8 x BATCH in 8 microbatches, and in 16
#      with remat full: the figures docs/performance.md computes for a 24 GB card.
#
# Usage, from the repo root, with the wiki data made here (`python -m speedrun data wiki`) and
# copied into a folder that travels with the tree (SPEEDRUN_DATA_DIR, default .gpudata; only
# part 4's run reads it):
#   bash tests/benchmarks/gpu_check.sh OUTDIR
# Everything printed is also written under OUTDIR (default gpu-check), one file per command.
# PARTS (default "fp8 tricks seeds attention stacks run") picks parts, e.g. PARTS="attention
# stacks run" BUDGET_S=420 for the earlier figures alone. Smaller settings for a smoke test
# anywhere: TRACK, BATCH, BENCH_STEPS, STEPS, RUN_BATCH (the run's sequences per step, default
# 32), e.g. TRACK=wiki-bytes BATCH=4 BENCH_STEPS=1 PARTS="fp8 tricks seeds" on a CPU.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SPEEDRUN_DATA_DIR=${SPEEDRUN_DATA_DIR:-$PWD/.gpudata}
PY=${PY:-python3}
TRACK=${TRACK:-fineweb10b}
BATCH=${BATCH:-64}
STEPS=${STEPS:-300}
BENCH_STEPS=${BENCH_STEPS:-10}
BUDGET_S=${BUDGET_S:-480}
TAIL_S=${TAIL_S:-20}
PARTS=${PARTS:-fp8 tricks seeds attention stacks run}
# Side-by-side seeds throughput: the command that measures it (run as is from the repo root,
# its output saved as side-by-side-seeds.txt) once `bench` has the flag for it. Empty: skipped.
SEEDS_CMD=${SEEDS_CMD:-}
SECOND_WAVE=muon,rotary,wsd-schedule,batch-schedule,polar-express,normuon,window-attention,key-offset

want() { [[ " $PARTS " == *" $1 "* ]]; }

# timed NAME FILE CMD...: run CMD, printing and saving its output, within what is left of the
# budget (killed at the budget; not started with under 30 s left)
timed() {
  local name=$1 file=$2; shift 2
  local left=$((BUDGET_S - SECONDS))
  if [ "$left" -lt 30 ]; then
    echo "=== skipped ${name}: ${left}s of the ${BUDGET_S}s budget left" | tee -a "$out/skipped.txt"
    return 0
  fi
  echo "=== ${name} (at ${SECONDS}s of ${BUDGET_S}s)"
  timeout -k 10 "$left" "$@" 2>&1 | tee "$out/$file"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "=== ${name}: stopped at the ${BUDGET_S}s budget" | tee -a "$out/$file" "$out/skipped.txt"
  fi
  return 0
}

bench() {  # bench FILE TRICKS [FLAGS...]: one `bench` process of TRACK at BATCH
  local file=$1 tricks=$2; shift 2
  timed "bench ${TRACK} ${tricks:-baseline} $*" "$file" \
    $PY -m speedrun bench --track "$TRACK" ${tricks:+--tricks "$tricks"} "$@" \
    --set train.batch_size="$BATCH" --steps "$BENCH_STEPS"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } | tee "$out/device.txt"

# 1. the FP8 tricks, each as `bench` prints it
if want fp8; then
  bench bench-fp8-head.txt fp8-head --breakdown
  bench bench-fp8-mlp.txt fp8-mlp
fi

# 2. every trick alone: step time and peak memory as ratios to the baseline, one process
if want tricks; then
  timed "every trick alone against the baseline" trick-costs.txt \
    $PY tests/benchmarks/trick_costs.py --track "$TRACK" --set train.batch_size="$BATCH" \
    --steps 5 --out "$out" --budget-s $((BUDGET_S - SECONDS - TAIL_S))
fi

# 3. side-by-side seeds throughput: empty until SEEDS_CMD is set
if want seeds; then
  if [ -n "$SEEDS_CMD" ]; then
    timed "side-by-side seeds throughput" side-by-side-seeds.txt bash -c "$SEEDS_CMD"
  else
    echo "=== side-by-side seeds throughput: at the end (part 5), as SEEDS_CMD is empty"
  fi
fi

# 4. the figures measured before, as time allows
if want attention; then
  timed "masked attention (window-attention's kernel): cuDNN against XLA" masked-attention.txt \
    $PY tests/benchmarks/gpu_masked_attention.py
fi
if want stacks; then
  bench bench-baseline.txt "" --breakdown  # where the baseline's step goes
  bench bench-muon_rotary_wsd-schedule.txt muon,rotary,wsd-schedule
  bench "bench-${SECOND_WAVE//,/_}.txt" "$SECOND_WAVE"
fi
if want run; then
  # GPT-2 small (fineweb10b's model and optimizer) on wiki's GPT-2 tokens, no record (not a track)
  timed "run: GPT-2 small, ${STEPS} steps on the wiki shards" run-gpt2-small-wiki.txt \
    $PY -m speedrun run --track wiki --seed 0 --no-record --steps "$STEPS" \
    --set model.n_layer=12 --set model.n_head=12 --set model.d_model=768 \
    --set model.seq_len=1024 --set model.compute_dtype=bfloat16 \
    --set optim.lr=6e-4 --set optim.warmup_steps=30 --set optim.min_lr_frac=0 \
    --set train.batch_size="${RUN_BATCH:-32}" --set train.eval_every=50 \
    --set train.loss_chunk=8192 --set train.val_batch_size=16 --set train.log_every=25
fi
# 5. side-by-side seeds throughput (tests/benchmarks/side_by_side.py): seeds per hour screening
#    `muon,rotary,wsd-schedule` (130 steps) on `wiki-bytes`, SBS_COUNTS seeds in one program
#    against 2 one after another (first and last); wiki-bytes builds its own data (under a second).
#    Alone: PARTS=seeds. A smoke test on a CPU: SBS_STEPS=2 SBS_COUNTS=1,2.
if want seeds && [ -z "$SEEDS_CMD" ]; then
  timed "side-by-side seeds throughput" side-by-side-seeds.txt \
    $PY tests/benchmarks/side_by_side.py --steps "${SBS_STEPS:-130}" \
    --counts "${SBS_COUNTS:-1,2,4,8,16,32}" --out "$out"
fi
# 6. memory: remat and microbatches, each in its own process (a process's peak only grows)
if want memory; then
  for remat in off dots full; do
    bench "bench-remat-${remat}.txt" "" --set train.remat="$remat"
  done
  for accum in "8 off" "16 full"; do
    set -- $accum
    timed "bench ${TRACK} baseline, $((BATCH * 8)) sequences in $1 microbatches, remat $2" \
      "bench-accum-$1-remat-$2.txt" $PY -m speedrun bench --track "$TRACK" \
      --set train.batch_size=$((BATCH * 8)) --set train.grad_accum="$1" --set train.remat="$2" \
      --steps 3
  done
fi
echo "=== done at ${SECONDS}s (budget ${BUDGET_S}s); files under $out"
