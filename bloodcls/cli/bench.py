"""``bloodcls bench``: time the plain DataLoader path against the fast path, same model and batch size, one process.

    bloodcls bench experiment=inception [--all] [--reps 3] [--steps N] [--workers 4] [--ablate]
                   [--threads 1 2] [--device cpu] [--json bench.json] [hydra overrides ...]

Arguments only; the work is done by :mod:`bloodcls.training.benchmark`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bloodcls.cli import summary
from bloodcls.config import override_key
from bloodcls.errors import UserError, report_user_errors
from bloodcls.models.study import EXPERIMENTS
from bloodcls.runs.environment import environment, resolve_device
from bloodcls.training.benchmark import bench_experiment, format_table, peak_tflops
from bloodcls.training.compute import usable_cpus


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bloodcls bench", description=summary(__doc__))
    parser.add_argument("--all", action="store_true", help="every study experiment")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per repetition (default: a full epoch on CUDA, 10 on the CPU)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the plain path")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path's model")
    parser.add_argument("--ablate", action="store_true", help="also time fp32 and NCHW variants of the fast path "
                        "(and torch.compile with --compile-ablate)")
    parser.add_argument("--compile-ablate", action="store_true", help="add the torch.compile variant to --ablate")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts to time every path at (default: 1 and 2, up to the usable CPUs)")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    parser.add_argument("--json", default=None, help="write the full report here")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        raise UserError(f"Unknown option(s) {bad}; see `bloodcls bench --help`.")
    device = resolve_device(args.device)
    if args.steps is None and device.type == "cpu":
        args.steps = 10
    if args.workers is None:
        args.workers = min(8, max(1, usable_cpus() - 1))
    if args.threads is None:
        args.threads = sorted({1, min(2, usable_cpus())})
    if any(t < 1 for t in args.threads):
        raise UserError(f"--threads {args.threads}: give whole numbers >= 1, e.g. --threads 1 2.")
    experiments = list(EXPERIMENTS)
    chosen = [o.split("=", 1)[1] for o in overrides if override_key(o) == "experiment"]
    overrides = [o for o in overrides if override_key(o) != "experiment"]
    if not args.all:
        experiments = chosen or ["skip"]
    env = environment(device)
    report = {"environment": env, "peak_bf16_tflops": peak_tflops(env["device"]) if device.type == "cuda" else None,
              "args": vars(args), "overrides": overrides, "experiments": []}
    for exp in experiments:
        report["experiments"].append(bench_experiment(exp, overrides, device, args))
    print(f"\nbloodcls bench on {env['device']} (commit {env['commit']}, {env['date']}), batch "
          f"{report['experiments'][0]['batch_size']}, median of {args.reps}")
    print(format_table(report))
    for row in report["experiments"]:
        aug = ", ".join(f"{k} {v:.2f} ms" for k, v in row["augmentation_ms_per_batch"].items())
        graphs = f" ({row['speedup_train_graphs']:.2f}x with CUDA graphs)" if "speedup_train_graphs" in row else ""
        print(f"{row['experiment']}: fast/plain training {row['speedup_train']:.2f}x{graphs} (fast/tensor fp32 NCHW, "
              f"like with like: {row['speedup_train_vs_fp32']:.2f}x), inference {row['speedup_infer']:.2f}x; "
              f"augmentation per batch: {aug}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0

