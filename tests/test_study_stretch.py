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


def test_lanes_train_that_many_runs_side_by_side_until_none_is_left(tmp_path, monkeypatch):
    """Each lane takes the next run not yet started; a run this process started is never started twice."""
    done = tmp_path / "log"
    done.mkdir()
    code = ("import pathlib, sys, time; d = pathlib.Path(sys.argv[1]); (d / (sys.argv[2] + '.start')).touch(); "
            "time.sleep(0.6); (d / (sys.argv[2] + '.end')).touch()")

    def fake_plan(results, out, threads, stamp):
        return [(f"f: run{i} seed 0: published", None) if (done / f"run{i}.end").exists() else
                (f"f: run{i} seed 0: starts", ["-c", code, str(done), f"run{i}"]) for i in range(3)]

    main = SCRIPT["main"]
    for name, value in (("plan", fake_plan), ("prepare", lambda runner, out: None), ("POLL_S", 0.05)):
        monkeypatch.setitem(main.__globals__, name, value)
    assert main(["--lanes", "2", "--runner", str(tmp_path), "--out", str(tmp_path)]) == 0
    spans = [((done / f"run{i}.start").stat().st_mtime, (done / f"run{i}.end").stat().st_mtime) for i in range(3)]
    assert spans[0][0] < spans[0][1] and spans[1][0] < spans[0][1]  # runs 0 and 1 side by side
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05  # run 2 waited for a free lane


def test_lanes_by_processor_and_the_run_a_step_is_about():
    main = SCRIPT["main"]
    lanes = main.__globals__["auto_lanes"](2)
    assert lanes == (1 if main.__globals__["cpu_capability"]().startswith("AVX512") else 2)
    assert main.__globals__["run_key"]("study-fp32-cpu: skip seed 2: continues /a/b") == "study-fp32-cpu: skip seed 2"
