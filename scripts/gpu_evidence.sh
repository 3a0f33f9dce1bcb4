#!/usr/bin/env bash
# Reproduce the GPU evidence of docs/results/ on one CUDA machine with the real files in ~/.medmnist.
#   scripts/gpu_evidence.sh bench <out dir>            benchmark: every experiment, plain vs. fast path (+ ablation)
#   scripts/gpu_evidence.sh sweep <out dir> [args...]  the seven experiments (+ skip_robust) x seeds 0,1,2 on
#                                                       the fast path; skip and skip_robust also under the shift suite
#   scripts/gpu_evidence.sh carry <out dir>            install the carried wheels (.whl/) into /tmp/site once and
#                                                       move the carried part of the PBC pack (.pbc1/ .pbc2/ .pbc3/,
#                                                       one per call: a call carries 64 MiB at most) to ~/pbc
#   scripts/gpu_evidence.sh probe <out dir>            steps/s of 8 training processes on the GPU, without and with
#                                                       CUDA MPS; leaves the MPS daemon running if it is faster
#   scripts/gpu_evidence.sh recipes <out dir>          issue 11: build the files from ~/pbc, then at once (Hydra
#                                                       joblib): the seven experiments x 3 seeds with recipe=study,
#                                                       the layer ablation of recipe=keras on baseline_64/128 x 3 seeds,
#                                                       and recipe=strong on skip x 3 seeds; tables into <out dir>.
#                                                       BUDGET_S (default 420) bounds the training, then what finished
#                                                       is reported.
#   scripts/gpu_evidence.sh smoke <out dir>            one-epoch trainer=gpu runs on small synthetic files (a strong-recipe
#                                                       skip run and a two-job sweep): checks the GPU path in ~1 minute
#   scripts/gpu_evidence.sh study <out dir>            issue 11 in one call after `carry`: build the files, start CUDA MPS,
#                                                       then at once the seven experiments x seeds 0-2 with recipe=study
#                                                       (STUDY_JOBS side by side, default all 21) and recipe=strong on skip
#                                                       x 3 seeds; BUDGET_S (default 480) bounds it all, then what finished
#                                                       is reported into <out dir>/readme_gpu.md with device, commit, date.
#                                                       STUDY_ARGS go to the study sweep only (e.g. +ablation=precise_bn).
#   scripts/gpu_evidence.sh speed <out dir>            issue 13, in about 11 minutes after `carry`: build the files, time
#                                                       the one-seed seven-experiment sweep end to end (jobs side by side,
#                                                       trainer=gpu), `bench --all` (plain / fast / fast + CUDA graphs, with
#                                                       TFLOP/s and % of bf16 peak), then seeds 1-2 of the study table if
#                                                       BUDGET_S (default 600) leaves time; every number, with device,
#                                                       commit and date, into <out dir>/readme_gpu.md.
# On a machine without hydra/omegaconf/medmnist/thop/kornia, carry their wheels in .whl/ and run every
# stage with PYTHONPATH=/tmp/site:$PWD (docs/results/index.md, "Running the evidence on a lent GPU").
# Seed 0 runs alone and sequentially (the timed one-seed sweep); seeds 1 and 2 then run as a second
# sweep with JOBS jobs at once on the same GPU (Hydra joblib launcher); one report covers all 21 runs.
set -uo pipefail
first_table() { awk '/^\| experiment/{f=1} f&&!/^\|/{exit} f' "$1"; }  # the first Markdown table of a report
stage=${1:?bench or sweep}; out=${2:?output folder}; shift 2
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
case "$stage" in
  bench)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/gpu.csv"
    # STEPS unset: every repetition is a full epoch; set it to time that many steps and estimate the epoch.
    $PY -m bloodcls bench --all --reps ${REPS:-2} --workers ${WORKERS:-8} ${STEPS:+--steps $STEPS} \
        --json "$out/bench.json" "$@" 2>&1 | grep -v -i warn | tee "$out/bench.log"
    $PY -m bloodcls bench experiment=skip --ablate ${COMPILE_ABLATE:+--compile-ablate} --reps ${REPS:-2} \
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
  carry)
    if [ ! -d /tmp/site ] && ls .whl/*.whl > /dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    fi
    mkdir -p ~/pbc && for d in .pbc*/; do mv "$d"* ~/pbc/ 2>/dev/null; done; ls -la ~/pbc | tee "$out/pbc.txt"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
    ;;
  probe)
    $PY scripts/mps_probe.py --procs 8 --seconds 6 --label no_mps | tee "$out/probe.jsonl"
    nvidia-cuda-mps-control -d && sleep 1
    $PY scripts/mps_probe.py --procs 8 --seconds 6 --label mps | tee -a "$out/probe.jsonl"
    $PY - "$out/probe.jsonl" <<'PY' || { echo quit | nvidia-cuda-mps-control; echo "MPS off"; }
import json, sys
rows = {r["label"]: r["steps_per_s_total"] for r in map(json.loads, open(sys.argv[1]))}
print("MPS", "on" if rows.get("mps", 0) > 1.2 * rows.get("no_mps", 0) else "off", rows)
sys.exit(0 if rows.get("mps", 0) > 1.2 * rows.get("no_mps", 0) else 1)
PY
    ;;
  recipes)
    t0=$(date +%s)
    $PY ~/pbc/make_bloodmnist.py --pack ~/pbc --root ~/.medmnist --sizes 64 128 > "$out/data.log" 2>&1 || { tail "$out/data.log"; exit 1; }
    budget=$(( ${BUDGET_S:-420} - ($(date +%s) - t0) ))
    echo "data built in $(( $(date +%s) - t0 )) s; training budget $budget s" | tee "$out/walltimes.txt"
    common=(trainer=gpu logger=csv trainer.enable_progress_bar=false trainer.enable_model_summary=false hydra/launcher=joblib)
    g=outputs/gpu11
    start=$(date +%s)
    timeout -s INT -k 20 $budget $PY train.py -m experiment=skip recipe=strong seed=0,1,2 "${common[@]}" \
      hydra.launcher.n_jobs=3 hydra.sweep.dir=$g/strong > "$out/strong.log" 2>&1 &
    timeout -s INT -k 20 $budget $PY sweep.py name=gpu11_study recipe=study seeds=[0,1,2] wandb_report=false "${common[@]}" \
      hydra.launcher.n_jobs=${STUDY_JOBS:-7} > "$out/study.log" 2>&1 &
    timeout -s INT -k 20 $budget $PY train.py -m recipe=keras +ablation=bn_momentum,init,bn_eps,no_early_stop \
      experiment=baseline_128,baseline_64 seed=0,1,2 "${common[@]}" hydra.launcher.n_jobs=${ABLATION_JOBS:-5} \
      hydra.sweep.dir=$g/ablation > "$out/ablation.log" 2>&1 &
    wait
    echo "training wall (all three groups at once): $(( $(date +%s) - start )) s" | tee -a "$out/walltimes.txt"
    $PY sweep.py report_only=true dir=outputs/sweeps/gpu11_study wandb_report=false > /dev/null 2>&1
    cp outputs/sweeps/gpu11_study/report.md "$out/study_report.md"
    $PY -m bloodcls ablation $g outputs/sweeps/gpu11_study --json "$out/groups.json" | tee "$out/groups.md"
    tar czf "$out/runs.tgz" --exclude='*.ckpt' --exclude='wandb' $g outputs/sweeps/gpu11_study
    tail -n 5 "$out"/strong.log "$out"/ablation.log "$out"/study.log
    ;;
  smoke)
    $PY -c "from tests.synthetic import write_synthetic_npz as w; [w('/tmp/syn', s, (40, 10, 10)) for s in (64, 128)]"
    q=(trainer=${TRAINER:-gpu} trainer.max_epochs=1 data.root=/tmp/syn logger=csv trainer.enable_progress_bar=false)
    rm -rf /tmp/smoke_strong; timeout 150 $PY train.py experiment=skip recipe=strong "${q[@]}" hydra.run.dir=/tmp/smoke_strong > "$out/smoke.log" 2>&1 \
      && timeout 150 $PY sweep.py name=smoke experiments=[baseline_64,inception] seeds=[0] jobs=2 wandb_report=false "${q[@]}" \
      >> "$out/smoke.log" 2>&1
    rc=$?; grep -v -i warn "$out/smoke.log" | tail -n 25; echo "smoke exit $rc"; exit $rc
    ;;
  study)
    t0=$(date +%s)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # 24 processes share 16 cores; the data and augmentation are on the GPU
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "${BLOODCLS_COMMIT:-unknown}")
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    [ -f ~/.medmnist/bloodmnist_128.npz ] || $PY ~/pbc/make_bloodmnist.py --pack ~/pbc --root ~/.medmnist --sizes 64 128 \
      > "$out/data.log" 2>&1 || { tail "$out/data.log"; exit 1; }
    md5sum ~/.medmnist/bloodmnist_64.npz ~/.medmnist/bloodmnist_128.npz > "$out/data_md5.txt" 2>/dev/null
    mps=off; command -v nvidia-cuda-mps-control > /dev/null && nvidia-cuda-mps-control -d && mps=on && sleep 1
    budget=$(( ${BUDGET_S:-480} - ($(date +%s) - t0) ))
    echo "data ready after $(( $(date +%s) - t0 )) s; MPS $mps; training budget $budget s" | tee "$out/walltimes.txt"
    common=(trainer=${TRAINER:-gpu} logger=csv trainer.enable_progress_bar=false trainer.enable_model_summary=false)
    start=$(date +%s)
    timeout -s INT -k 30 $budget $PY sweep.py name=gpu11_study recipe=study seeds=[0,1,2] jobs=${STUDY_JOBS:-21} \
      wandb_report=false "${common[@]}" $STUDY_ARGS "$@" > "$out/study.log" 2>&1 &
    timeout -s INT -k 30 $budget $PY train.py -m experiment=skip recipe=strong seed=0,1,2 "${common[@]}" "$@" \
      hydra/launcher=joblib hydra.launcher.n_jobs=3 hydra.sweep.dir=outputs/gpu11/strong > "$out/strong.log" 2>&1 &
    wait
    echo "training wall (both groups at once): $(( $(date +%s) - start )) s" | tee -a "$out/walltimes.txt"
    [ $mps = on ] && echo quit | nvidia-cuda-mps-control
    $PY sweep.py report_only=true dir=outputs/sweeps/gpu11_study wandb_report=false > /dev/null 2>&1
    cp outputs/sweeps/gpu11_study/report.md "$out/study_report.md"
    $PY -m bloodcls ablation outputs/gpu11 outputs/sweeps/gpu11_study --json "$out/groups.json" > "$out/groups.md"
    { echo "# GPU evidence: $gpu, commit $commit, $(date -u "+%Y-%m-%d %H:%M") UTC, MPS $mps"; echo;
      cat "$out/walltimes.txt"; echo; echo "## recipe=study, seven experiments x seeds 0-2"; echo;
      first_table "$out/study_report.md"; echo; echo "## experiment x recipe"; echo; cat "$out/groups.md"; } > "$out/readme_gpu.md"
    tar czf "$out/runs.tgz" --exclude='*.ckpt' --exclude='wandb' outputs/gpu11 outputs/sweeps/gpu11_study
    cat "$out/readme_gpu.md"; tail -n 3 "$out/strong.log" "$out/study.log"
    echo "total $(( $(date +%s) - t0 )) s"
    ;;
  speed)
    # Dry run on a CPU with synthetic files: TRAINER=cpu BENCH_ARGS="data.root=..." ... speed <out> data.root=...
    t0=$(date +%s)
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo "${BLOODCLS_COMMIT:-unknown}")
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    md="$out/readme_gpu.md"
    echo "# GPU evidence: $gpu, commit $commit, $(date -u +%Y-%m-%d)" > "$md"
    [ -f ~/.medmnist/bloodmnist_128.npz ] || $PY ~/pbc/make_bloodmnist.py --pack ~/pbc --root ~/.medmnist --sizes 64 128 \
      > "$out/data.log" 2>&1 || { tail "$out/data.log"; exit 1; }
    echo "data ready after $(( $(date +%s) - t0 )) s" | tee "$out/walltimes.txt"
    # 1. the one-seed sweep, start to report, all seven jobs side by side (sweep.py jobs=auto on trainer=gpu)
    s0=$(date +%s)
    timeout -s INT -k 20 ${SWEEP_S:-300} $PY sweep.py name=speed_seed0 seeds=[0] trainer=${TRAINER:-gpu} logger=csv \
      trainer.enable_progress_bar=false trainer.enable_model_summary=false wandb_report=false "$@" \
      > "$out/sweep_seed0.log" 2>&1
    rc=$?
    s1=$(date +%s)
    echo "one-seed seven-experiment sweep, start to report: $((s1 - s0)) s (exit $rc)" | tee -a "$out/walltimes.txt"
    cp outputs/sweeps/speed_seed0/report.md "$out/sweep_seed0_report.md" 2>/dev/null
    { echo; echo "## One-seed sweep (seven experiments, jobs side by side): $((s1 - s0)) s start to report"; echo;
      first_table "$out/sweep_seed0_report.md"; } >> "$md"
    # 2. the benchmark: plain vs. fast vs. fast + CUDA graphs, every experiment
    timeout -s INT -k 20 ${BENCH_S:-200} $PY -m bloodcls bench --all --reps ${REPS:-2} --steps ${STEPS:-150} \
      --workers ${WORKERS:-8} --json "$out/bench.json" $BENCH_ARGS 2>&1 | grep -v -i warn | tee "$out/bench.log"
    { echo; echo "## bloodcls bench --all (steps ${STEPS:-150} x ${REPS:-2} reps per path)"; echo;
      first_table "$out/bench.log"; grep "fast/plain training" "$out/bench.log"; } >> "$md"
    # 3. seeds 1-2 of the study table with the current defaults, if the budget leaves time
    left=$(( ${BUDGET_S:-600} - ($(date +%s) - t0) ))
    if [ $left -gt 120 ]; then
      timeout -s INT -k 20 $left $PY sweep.py name=speed_seeds12 seeds=[1,2] trainer=${TRAINER:-gpu} logger=csv \
        trainer.enable_progress_bar=false trainer.enable_model_summary=false wandb_report=false "$@" \
        > "$out/sweep_seeds12.log" 2>&1
      mkdir -p outputs/sweeps/speed_all/runs
      for d in outputs/sweeps/speed_seed0/runs/*/ outputs/sweeps/speed_seeds12/runs/*/; do
        cp -r "$d" outputs/sweeps/speed_all/runs/; done
      cp outputs/sweeps/speed_seed0/sweep.json outputs/sweeps/speed_all/sweep.json
      $PY sweep.py report_only=true dir=outputs/sweeps/speed_all wandb_report=false > /dev/null 2>&1
      cp outputs/sweeps/speed_all/report.md "$out/study_3seeds_report.md"
      { echo; echo "## Study table, seeds 0-2 (what finished within the budget)"; echo;
        first_table "$out/study_3seeds_report.md"; } >> "$md"
    fi
    tar czf "$out/runs.tgz" --exclude='*.ckpt' --exclude='wandb' outputs/sweeps
    echo "total $(( $(date +%s) - t0 )) s" | tee -a "$out/walltimes.txt"
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
