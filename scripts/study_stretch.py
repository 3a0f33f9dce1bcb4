"""One stretch of work on the CPU study table (docs/results/study-fp32-cpu.md): train, one run at a time on every
core, the runs its footings have not published yet, continuing any that a stopped stretch left.

    nohup .venv/bin/python scripts/study_stretch.py >> ~/bloodcls-outputs/stretch.log 2>&1 &
    .venv/bin/python scripts/study_stretch.py --dry-run        # what it would do, and why

Each stretch starts with this one command, on a rebuilt machine as on a kept one. It creates what a rebuild takes
away (the worktree at the footing's commit, its `outputs` link, the data), then walks QUEUE in order: a run with a
record in results/ is done; a run folder with results.json waits for its publishing; one with a last.ckpt
continues (`train.py resume=`); anything else starts as a one-job sweep named <prefix>_<experiment>_s<seed>_<time>.
How many runs train side by side (--lanes, the cores shared out among them) is chosen by what was measured on each
kind of processor, 128 px fp32 epochs (docs/results/study-fp32-cpu.md): where torch's kernels use AVX512, two
threads on one run are about twice one (232–269 s/epoch alone, 486–521 s per run side by side), so one run at a
time on every core finishes each run within a stretch at the same throughput; on AVX2 only, two threads on one run
are about 1.5x one (432–437 s/epoch alone, 616–723 s per run side by side, stretch 7), so one run per core trains
about 1.3x as many epochs an hour, and two 128 px runs of 12–15 epochs still finish within a three-hour stretch. scripts/publish_watch.sh publishes each finished run and commits it:

    nohup scripts/publish_watch.sh 'outputs/sweeps/study_fp32_cpu*:results/study-fp32-cpu' \
        'outputs/sweeps/running_bn_fp32_cpu*:results/study-running_bn-fp32-cpu' >> publish_watch.log 2>&1 &
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bloodcls from this checkout, as `python scripts/...` runs it

from bloodcls.runs.status import read_status, still_running  # noqa: E402
from bloodcls.training.compute import cpu_capability  # noqa: E402

COMMIT = "272a52c"  # the footings' commit: their runs all train on this code
STUDY, OLD = "study-fp32-cpu", "study-running_bn-fp32-cpu"
# (footing, experiment) in the order they train: every experiment each footing.json plans (baseline_64 is
# published on both), the 128 px choice's pairs (old recipe against new) first, then the rows without a figure on
# this recipe
QUEUE = [(OLD, "baseline_64"), (STUDY, "baseline_64"), (OLD, "baseline_aug"), (STUDY, "baseline_aug"),
         (STUDY, "baseline_128"), (OLD, "baseline_128"), (STUDY, "skip"), (STUDY, "hybrid"), (STUDY, "unet"),
         (STUDY, "inception")]
# What a footing's sweep command sets for the sweep as a whole; the stretch sets these per run itself
PER_SWEEP = ("experiments", "seeds", "jobs", "threads", "name")
POLL_S = 60.0  # how often a full set of lanes is looked at again


def footing_command(results: Path, footing: str) -> tuple[str, list[int], list[str]]:
    """(sweep-name prefix, seeds, training overrides) from the footing's own sweep command in its footing.json,
    the one home of how its runs train."""
    spec = json.loads((results / footing / "footing.json").read_text())
    args = shlex.split(spec["sweep"])[2:]  # after `python sweep.py`
    name = next(a.split("=", 1)[1] for a in args if a.startswith("name="))
    return name, list(spec["seeds"]), [a for a in args if a.split("=", 1)[0] not in PER_SWEEP]


def run_folder(out: Path, prefix: str, experiment: str, seed: int) -> Path | None:
    """The newest run folder of this run under any sweep of the prefix (the one a stopped stretch left)."""
    found = sorted((out / "sweeps").glob(f"{prefix}*/runs/*_{experiment}_s{seed}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def alive(folder: Path) -> bool:
    """Whether the training process the run's status.json names still runs on this machine."""
    return still_running(read_status(folder) or {}) is not None


def plan(results: Path, out: Path, threads: int, stamp: str) -> list[tuple[str, list[str] | None]]:
    """(what and why, the command in the runner) for every run of QUEUE, in order; the command is None for a run
    with nothing to do here, [] for one training now in another process."""
    steps: list[tuple[str, list[str] | None]] = []
    for footing, experiment in QUEUE:
        prefix, seeds, overrides = footing_command(results, footing)
        for seed in seeds:
            name = f"{footing}: {experiment} seed {seed}"
            if (results / footing / f"{experiment}_s{seed}.json").is_file():
                steps.append((f"{name}: published", None))
                continue
            folder = run_folder(out, prefix, experiment, seed)
            if folder is not None and (folder / "results.json").is_file():
                steps.append((f"{name}: finished in {folder}, to be published", None))
            elif folder is not None and alive(folder):
                steps.append((f"{name}: training now in {folder}", []))  # [] : wait for it
            elif folder is not None and (folder / "checkpoints" / "last.ckpt").is_file():
                steps.append((f"{name}: continues {folder}",
                              ["train.py", f"resume={folder}", f"threads={threads}"]))
            else:
                steps.append((f"{name}: starts", [
                    "sweep.py", f"experiments=[{experiment}]", f"seeds=[{seed}]", "jobs=1", f"threads={threads}",
                    *overrides, f"name={prefix}_{experiment}_s{seed}_{stamp}"]))
    return steps


def prepare(runner: Path, out: Path) -> None:
    """What a rebuilt machine lacks: the runner worktree at COMMIT, its outputs link, the data."""
    out.mkdir(parents=True, exist_ok=True)
    if not runner.exists():
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
        subprocess.run(["git", "worktree", "add", str(runner), COMMIT], cwd=REPO, check=True)
    if not (runner / "outputs").exists():
        (runner / "outputs").symlink_to(out)
    subprocess.run(["make", "data"], cwd=REPO, check=True)


def auto_lanes(cpus: int) -> int:
    """Runs side by side by default: one on every core where AVX512 kernels scale to two threads, else one a core."""
    return 1 if cpu_capability().startswith("AVX512") else max(1, cpus)


def run_key(why: str) -> str:
    """"<footing>: <experiment> seed <n>", the run a plan step is about."""
    return ": ".join(why.split(": ")[:2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", type=Path, default=Path.home() / "runner")
    parser.add_argument("--out", type=Path, default=Path.home() / "bloodcls-outputs")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--lanes", type=int, help="runs side by side (default: by processor, see above)")
    parser.add_argument("--threads", type=int, help="threads per run (default: the cores shared among the lanes)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    lanes = args.lanes or auto_lanes(cpus)
    threads = args.threads or max(1, cpus // lanes)
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M}"
    if args.dry_run:
        print(f"{lanes} run(s) side by side, {threads} thread(s) each ({cpu_capability()}, {cpus} cores)")
        for why, cmd in plan(args.results, args.out, threads, stamp):
            print(why + (f"\n    {' '.join(cmd)}" if cmd else ""))
        return 0
    prepare(args.runner, args.out)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    mine: dict[str, subprocess.Popen] = {}  # the runs this process started, by run_key, while they train
    failed = 0
    while True:  # re-planned every pass: a run published meanwhile, or left by another stretch, is skipped
        for key, proc in list(mine.items()):
            if proc.poll() is not None:
                del mine[key]
                if proc.returncode != 0:
                    print(f"[stretch] {key}: exited with {proc.returncode}; starting no more (its log says why)",
                          flush=True)
                    failed = failed or proc.returncode
        steps = [(run_key(why), why, cmd) for why, cmd in plan(args.results, args.out, threads, stamp)
                 if cmd is not None]
        elsewhere = [why for key, why, cmd in steps if cmd == [] and key not in mine]  # another process trains it
        ready = [(key, why, cmd) for key, why, cmd in steps if cmd and key not in mine]
        if not mine and not elsewhere and (failed or not ready):
            print(f"[stretch] {'stopped' if failed else 'nothing left to train'}", flush=True)
            return failed
        if not failed and ready and len(mine) + len(elsewhere) < lanes:
            key, why, cmd = ready[0]
            print(f"[stretch] {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {why}", flush=True)
            mine[key] = subprocess.Popen([sys.executable, *cmd], cwd=args.runner, env=env)
            continue  # the next lane, if one is free (a run of mine is never started twice: it is keyed in mine)
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
