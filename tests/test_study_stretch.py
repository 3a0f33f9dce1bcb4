"""scripts/study_stretch.py, which starts every stretch of the CPU study table: what it trains next, and why."""

import json
import runpy
import shutil
import socket
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = runpy.run_path(str(REPO / "scripts" / "study_stretch.py"))


def test_the_queue_covers_every_planned_run_of_its_footings():
    for footing in {f for f, _ in SCRIPT["QUEUE"]}:
        spec = json.loads((REPO / "results" / footing / "footing.json").read_text())
        assert sorted(e for f, e in SCRIPT["QUEUE"] if f == footing) == sorted(spec["experiments"])
        prefix, seeds, overrides = SCRIPT["footing_command"](REPO / "results", footing)
        assert seeds == spec["seeds"] and f"name={prefix}" in spec["sweep"]
        # the footing's own overrides, the precision pinned, and nothing the stretch sets per run
        assert "trainer.precision=32-true" in overrides and all(o in spec["sweep"] for o in overrides)
        assert not [o for o in overrides if o.split("=")[0] in ("experiments", "seeds", "jobs", "threads", "name")]


def _run(out, sweep, name, path, text):
    """A run folder of a sweep under ``out`` holding one file."""
    folder = out / "sweeps" / sweep / "runs" / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / path).write_text(text)
    return folder


def test_published_finished_live_and_stopped_runs_each_get_their_step(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    for footing in ("study-fp32-cpu", "study-running_bn-fp32-cpu"):  # the footings' own sweep commands
        (results / footing).mkdir(parents=True)
        shutil.copy(REPO / "results" / footing / "footing.json", results / footing)
    for seed in (0, 1, 2):
        (results / "study-fp32-cpu" / f"baseline_64_s{seed}.json").write_text("{}")
    (results / "study-fp32-cpu" / "baseline_aug_s0.json").write_text("{}")
    _run(out, "study_fp32_cpu_a", "0_baseline_aug_s1", "results.json", "{}")
    stopped = _run(out, "study_fp32_cpu_b", "0_baseline_aug_s2", "checkpoints/last.ckpt", "x")
    # a live process on this host, as a training job is
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train.py"])
    try:
        live = _run(out, "running_bn_fp32_cpu_a", "0_baseline_64_s0", "status.json",
                    json.dumps({"status": "running", "pid": job.pid, "host": socket.gethostname()}))
        steps = dict(SCRIPT["plan"](results, out, 2, "T"))
    finally:
        job.kill()
        job.wait()
    assert steps["study-fp32-cpu: baseline_64 seed 2: published"] is None
    assert steps["study-fp32-cpu: baseline_aug seed 0: published"] is None
    assert any(k.startswith("study-fp32-cpu: baseline_aug seed 1: finished in") and v is None for k, v in steps.items())
    assert steps[f"study-fp32-cpu: baseline_aug seed 2: continues {stopped}"] == [
        "train.py", f"resume={stopped}", "threads=2"]
    assert steps[f"study-running_bn-fp32-cpu: baseline_64 seed 0: training now in {live}"] == []
    started = steps["study-running_bn-fp32-cpu: baseline_64 seed 1: starts"]
    assert started[:5] == ["sweep.py", "experiments=[baseline_64]", "seeds=[1]", "jobs=1", "threads=2"]
    assert "+ablation=running_bn" in started and started[-1] == "name=running_bn_fp32_cpu_baseline_64_s1_T"
    assert "+ablation=running_bn" not in steps["study-fp32-cpu: skip seed 0: starts"]
    # once its process is gone (a session's end kills it), the run is no longer waited for: it starts again here
    assert SCRIPT["alive"](live) is False
    assert dict(SCRIPT["plan"](results, out, 2, "T"))["study-running_bn-fp32-cpu: baseline_64 seed 0: starts"]
