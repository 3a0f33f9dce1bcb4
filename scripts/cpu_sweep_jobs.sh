#!/usr/bin/env bash
# jobs=auto on a CPU: two single-thread jobs side by side vs one two-thread job at a time, same sweep
# (docs/results/cpu-fast-path.md). Pause other work on the machine first: this times wall clock.
#   scripts/cpu_sweep_jobs.sh [OUT] [extra sweep overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/sweep_jobs}; shift || true
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
# a two-experiment, one-epoch sweep by default (EXPS, SEEDS to change it)
COMMON=("experiments=${EXPS:-[baseline_64,baseline_64_robust]}" "seeds=${SEEDS:-[0]}" trainer.max_epochs=1 logger=csv
        trainer.enable_progress_bar=false "paths.log_dir=$OUT" "$@")
for mode in "jobs=2 threads=1" "jobs=1 threads=2"; do
  name=$(echo "$mode" | tr ' =' '__')
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  env -u OMP_NUM_THREADS "$PY" sweep.py "${COMMON[@]}" $mode name="$name" > "$OUT/$name.log" 2>&1
  echo "$mode: $(echo "$(date +%s.%N) - $t0" | bc) s" | tee -a "$OUT/times.txt"
done
