#!/usr/bin/env bash
# Reproduce the README's GPU evidence on one CUDA machine with the real files in ~/.medmnist.
#   scripts/gpu_evidence.sh bench <out dir>            benchmark: every experiment, plain vs. fast path (+ ablation)
#   scripts/gpu_evidence.sh sweep <out dir> [args...]  the seven experiments (+ skip_robust) x seeds 0,1,2 on
#                                                       the fast path; skip and skip_robust also under the shift suite
# Seed 0 runs alone and sequentially (the timed one-seed sweep); seeds 1 and 2 then run as a second
# sweep with JOBS jobs at once on the same GPU (Hydra joblib launcher); one report covers all 21 runs.
set -uo pipefail
stage=${1:?bench or sweep}; out=${2:?output folder}; shift 2
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
case "$stage" in
  bench)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.csv"
    # STEPS unset: every repetition is a full epoch; set it to time that many steps and estimate the epoch.
    $PY -m bloodcls.bench --all --reps ${REPS:-2} --workers ${WORKERS:-8} ${STEPS:+--steps $STEPS} \
        --json "$out/bench.json" "$@" 2>&1 | grep -v -i warn | tee "$out/bench.log"
    $PY -m bloodcls.bench experiment=skip --ablate ${COMPILE_ABLATE:+--compile-ablate} --reps ${REPS:-2} \
        --steps ${ABLATE_STEPS:-60} --workers ${WORKERS:-8} --json "$out/bench_ablate.json" "$@" 2>&1 \
        | grep -v -i warn | tee "$out/bench_ablate.log"
    ;;
  sweep)
    exps=${EXPERIMENTS:-[baseline_64,baseline_128,baseline_aug,unet,inception,skip,hybrid,skip_robust]}
    common=(experiments=$exps robustness=${ROBUSTNESS:-[skip,skip_robust]} trainer=${TRAINER:-gpu} logger=csv
            trainer.enable_progress_bar=false trainer.enable_model_summary=false wandb_report=false)
    start=$(date +%s)
    $PY sweep.py name=gpu_seed0 seeds=[0] "${common[@]}" "$@" 2>&1 | grep -v -i warn | tee "$out/sweep_seed0.log"
    mid=$(date +%s)
    $PY sweep.py name=gpu_seeds12 seeds=[1,2] "${common[@]}" hydra/launcher=joblib hydra.launcher.n_jobs=${JOBS:-8} "$@" \
        2>&1 | grep -v -i warn | tee "$out/sweep_seeds12.log"
    end=$(date +%s)
    echo "seed-0 sweep wall: $((mid - start)) s; seeds 1-2 sweep wall: $((end - mid)) s" | tee "$out/walltimes.txt"
    # one report over all runs
    all=outputs/sweeps/gpu_all
    mkdir -p $all/runs
    cp -r outputs/sweeps/gpu_seed0/runs/* outputs/sweeps/gpu_seeds12/runs/* $all/runs/
    $PY - <<'PY'
import json, pathlib
a = json.loads(pathlib.Path("outputs/sweeps/gpu_seed0/sweep.json").read_text())
b = json.loads(pathlib.Path("outputs/sweeps/gpu_seeds12/sweep.json").read_text())
a["seeds"] = a["seeds"] + b["seeds"]
wall = a.pop("train_wall_s")
a["note"] = f"seed 0: one job at a time ({wall:.0f} s); seeds 1-2: joblib, several jobs at once ({b['train_wall_s']:.0f} s)"
pathlib.Path("outputs/sweeps/gpu_all/sweep.json").write_text(json.dumps(a, indent=2))
PY
    $PY sweep.py report_only=true dir=$all wandb_report=false | tee -a "$out/walltimes.txt"
    tar czf "$out/sweeps.tgz" --exclude='*.ckpt' --exclude='wandb' outputs/sweeps
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
