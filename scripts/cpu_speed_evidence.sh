#!/usr/bin/env bash
# Like-with-like CPU speed (docs/results/cpu-fast-path.md, issue 29 item 5). Pause other work on the machine first
# (kill -STOP): this times wall clock.
#   1. bench: plain vs tensor_fp32 (the tensor loader in fp32 NCHW, the default before bf16) vs fast, one thread,
#      for baseline_64 and the study table's 128 px rows;
#   2. end to end: train.py for EPOCHS epochs of baseline_128 (no test), fp32 NCHW against today's default, the two
#      side by side on one thread each, as the table's jobs run. s/epoch comes from each run's progress lines.
#   scripts/cpu_speed_evidence.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/cpu_speed}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
git rev-parse --short HEAD > "$OUT/commit.txt"
date -u +%FT%TZ > "$OUT/started.txt"

for exp in ${EXPS:-baseline_64 baseline_128 baseline_aug unet inception}; do
  "${BLOODCLS:-.venv/bin/bloodcls}" bench "experiment=$exp" --device cpu --threads 1 --reps 3 --steps 4 --warmup 2 \
      --json "$OUT/bench_$exp.json" > "$OUT/bench_$exp.log" 2>&1
  tail -n 4 "$OUT/bench_$exp.log"
done

EPOCHS=${EPOCHS:-1}
common=(experiment=baseline_128 recipe=study seed=0 "trainer.max_epochs=$EPOCHS" test=false logger=csv
        trainer.enable_progress_bar=false "paths.log_dir=$OUT/e2e")
"$PY" train.py "${common[@]}" run_name=fp32_nchw trainer.precision=32-true data.channels_last=false \
    > "$OUT/e2e_fp32_nchw.log" 2>&1 &
"$PY" train.py "${common[@]}" run_name=default > "$OUT/e2e_default.log" 2>&1 &
wait
grep -h "s/epoch" "$OUT"/e2e_*.log
date -u +%FT%TZ > "$OUT/ended.txt"
