"""sweep.py: a tiny real sweep on synthetic data, and report-only mode on hand-made run folders."""

import csv
import json
import math
import time
from pathlib import Path

import pytest
from PIL import Image

from bloodcls.analysis.report import build_report
from bloodcls.common.stats import mcnemar, mean_std, paired_t_test
from bloodcls.data import CLASS_NAMES
from bloodcls.sweeps.launch import main as sweep_main
from bloodcls.sweeps.settings import parse_args
from tests.conftest import FAST
from tests.helpers import no_data, run_cli

pytestmark = pytest.mark.xdist_group("tiny_sweep")  # one worker pays for the shared sweep


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()


def test_the_shared_sweep_stays_on_one_worker(request):
    """Under `make test` (xdist, --dist loadgroup) every test of the group runs on one worker, so the suite trains
    tiny_sweep once. pytest 9.2 with pytest-xdist 3.8.0 stopped grouping without a word (pytest-xdist#1386): each
    worker trained the sweep again, 90 s of the suite's 13 minutes."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup")
    assert request.node.nodeid.endswith("@tiny_sweep"), (
        f"{request.node.nodeid}: pytest-xdist did not group this test; pytest {pytest.__version__} may be one it "
        "cannot group with (pyproject.toml's dev extra pins pytest below 9.2)")


@pytest.mark.slow
def test_tiny_sweep_reports_mean_and_std(tiny_sweep):
    proc, sweep_dir = tiny_sweep
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[sweep] job 4/4" in proc.stdout and "elapsed" in proc.stdout
    assert not (sweep_dir / "sweep.lock").exists()  # held while the sweep ran, released after its report
    text = (sweep_dir / "report.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| baseline_64 |") or ln.startswith("| inception |")]
    assert len(rows) == 2 * 4  # performance, macro, per-class and trust tables
    perf = [ln for ln in rows if " ± " in ln]
    assert perf and all("| 2 |" in ln for ln in perf[:2])  # two seeds each
    assert "CPU" in text and "MD5" in text and "commit" in text
    trust = next(ln for ln in text.splitlines()[text.splitlines().index("## Trust in a prediction (test split; mean ± std "
                                                                         "over seeds)"):] if ln.startswith("| inception |"))
    assert trust.count(" ± ") == 6 and "| 2 |" in trust  # ECE before/after, AURC, acc@90, far-OOD AUROC, gate rate
    for name in ("acc_vs_params", "acc_vs_macs", "per_class_f1", "confusion_best", "curves", "sample_predictions",
                 "reliability_best_run"):
        _assert_png(sweep_dir / "figures" / f"{name}.png")


@pytest.mark.slow
def test_tables_agree_with_each_run(tiny_sweep):
    _, sweep_dir = tiny_sweep
    results = [json.loads(p.read_text()) for p in sorted((sweep_dir / "runs").glob("*/results.json"))]
    assert len(results) == 4
    with open(sweep_dir / "performance.csv") as fh:
        perf = {r["experiment"]: r for r in csv.DictReader(fh)}
    report = json.loads((sweep_dir / "report.json").read_text())
    by_exp = {r["experiment"]: r for r in report["tables"]["performance"]}
    for exp in ("baseline_64", "inception"):
        accs = [100 * r["test"]["acc"] for r in results if r["experiment"] == exp]
        mean, std = mean_std(accs)
        assert float(perf[exp]["acc_mean"]) == pytest.approx(mean)
        assert by_exp[exp]["acc_mean"] == pytest.approx(mean) and by_exp[exp]["acc_std"] == pytest.approx(std)
        params = {r["efficiency"]["params_trainable"] for r in results if r["experiment"] == exp}
        assert float(perf[exp]["params_m"]) == pytest.approx(params.pop() / 1e6)
    with open(sweep_dir / "per_class_f1.csv") as fh:
        pc = {r["experiment"]: r for r in csv.DictReader(fh)}
    f1 = [r["test"]["scores"]["test/f1/monocyte"] for r in results if r["experiment"] == "inception"]
    assert float(pc["inception"]["monocyte"]) == pytest.approx(sum(f1) / len(f1))


def _fake_run(folder: Path, exp: str, seed: int, acc: float, preds: list[int], labels: list[int]) -> None:
    folder.mkdir(parents=True)
    cm = [[0] * 8 for _ in range(8)]
    for p, y in zip(preds, labels, strict=True):
        cm[y][p] += 1
    scores = {"test/acc": acc, "test/precision": acc, "test/recall": acc, "test/f1": acc}
    scores.update({f"test/f1/{c}": acc for c in CLASS_NAMES})
    (folder / "results.json").write_text(json.dumps({
        "status": "completed", "experiment": exp, "seed": seed,
        "test": {"acc": acc, "f1": acc, "scores": scores, "confusion_matrix": cm, "predictions": preds,
                 "labels": labels},
        "efficiency": {"params_trainable": 36828, "memory_mib": 0.14, "macs": 61.2e6, "epochs_run": 3,
                       "train_time_s": 10.0, "test_time_s": 1.0, "trust_time_s": 4.5},
        "history": [{"epoch": 0, "train/loss": 1.0, "val/loss": 1.2, "train/acc": 0.5, "val/acc": 0.4}],
        "data": {"path": "/nonexistent.npz", "md5": "abc"},
        "environment": {"device": "Fake GPU", "commit": "deadbeef", "date": "2026-01-01T00:00:00+00:00"},
    }))


def test_report_only_with_a_failed_job(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    labels = [i % 8 for i in range(40)]
    right = list(labels)
    wrong_10 = [(y + 1) % 8 if i < 10 else y for i, y in enumerate(labels)]
    wrong_2 = [(y + 1) % 8 if i < 2 else y for i, y in enumerate(labels)]
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"experiments": ["skip", "inception", "unet"], "seeds": [0, 1]}))
    _fake_run(sweep / "runs" / "0_skip_s0", "skip", 0, 1.0, right, labels)
    _fake_run(sweep / "runs" / "1_skip_s1", "skip", 1, 0.95, wrong_2, labels)
    _fake_run(sweep / "runs" / "2_inception_s0", "inception", 0, 0.75, wrong_10, labels)
    _fake_run(sweep / "runs" / "3_inception_s1", "inception", 1, 0.75, wrong_10, labels)
    failed = sweep / "runs" / "4_unet_s0"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("experiment_name: unet\nseed: 0\n")
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "CUDA out of memory"}))

    code = sweep_main(["report_only=true", f"dir={sweep}", "wandb_report=false"])
    assert code == 1  # a job did not finish
    text = (sweep / "report.md").read_text()
    assert "97.50 ± 3.54" in text  # skip: 100 and 95
    assert "75.00 ± 0.00" in text
    assert "| 4_unet_s0 | unet | 0 | failed | CUDA out of memory |" in text
    assert "| – | unet | 1 | not started |" in text
    rep = build_report(sweep)
    sig = rep.significance
    assert (sig["best"], sig["runner_up"]) == ("skip", "inception")
    # each of the 40 test images once: skip right more often on images 0-9 (inception wrong there on both seeds)
    assert sig["mcnemar"]["a_only"] == 10 and sig["mcnemar"]["b_only"] == 0 and sig["mcnemar"]["n_pairs"] == 40
    assert sig["mcnemar"]["pvalue"] == pytest.approx(2 / 2**10) and sig["significant"]
    assert "McNemar test over the 40 test images, each counted once (2 runs of each model" in text
    assert "Paired t-test" in text
    assert "| test time (s) | study | trust fit (s) |" in text and "| 1.00 | 6.01 | 4.50 |" in text  # skip: test, the study's, trust fit
    assert "[sweep] report:" in capsys.readouterr().out


def test_the_report_counts_each_test_image_once_whatever_the_seeds(tmp_path):
    """The same predictions from one seed and from three: the same McNemar counts and p-value (A alone right on 10
    images, B alone on 2: p = 158 / 4096), never a smaller p for repeating the same test images."""
    labels = [i % 8 for i in range(20)]
    a = [(y + 1) % 8 if i in (10, 11) else y for i, y in enumerate(labels)]
    b = [(y + 1) % 8 if i < 10 else y for i, y in enumerate(labels)]
    found = []
    for seeds in ([0], [0, 1, 2]):
        sweep = tmp_path / f"seeds{len(seeds)}"
        (sweep / "runs").mkdir(parents=True)
        (sweep / "sweep.json").write_text(json.dumps({"experiments": ["skip", "unet"], "seeds": seeds}))
        for s in seeds:
            _fake_run(sweep / "runs" / f"{2 * s}_skip_s{s}", "skip", s, 0.9, a, labels)
            _fake_run(sweep / "runs" / f"{2 * s + 1}_unet_s{s}", "unet", s, 0.5, b, labels)
        found.append(build_report(sweep).significance["mcnemar"])
    assert [mc["pvalue"] for mc in found] == pytest.approx([158 / 4096] * 2)
    assert [(mc["a_only"], mc["b_only"], mc["n_pairs"], mc["runs"]) for mc in found] == [(10, 2, 20, 1), (10, 2, 20, 3)]


def test_statistics_helpers():
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert paired_t_test([0.9], [0.8]) is None
    assert paired_t_test([0.90, 0.92, 0.91], [0.80, 0.83, 0.81]) < 0.01
    res = mcnemar([True] * 10 + [False] * 2, [False] * 10 + [True] * 2)
    assert (res["a_only"], res["b_only"]) == (10, 2) and res["pvalue"] == pytest.approx(0.0386, abs=1e-3)


def test_sweep_arguments_split():
    settings, overrides = parse_args(["experiments=[skip,unet]", "seeds=[3]", "trainer.max_epochs=1", "logger=csv"])
    assert list(settings.experiments) == ["skip", "unet"] and list(settings.seeds) == [3]
    assert overrides == ["trainer.max_epochs=1", "logger=csv"]


@pytest.mark.slow
def test_unknown_experiment_is_a_clear_error(tmp_path):
    proc = run_cli("sweep.py", "experiments=[resnet]", f"paths.log_dir={tmp_path}", *no_data(tmp_path))
    assert proc.returncode == 2 and "Unknown experiment(s) ['resnet']" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_report_adds_the_shift_suite(tiny_sweep):
    _, sweep_dir = tiny_sweep
    sweep_main(["report_only=true", f"dir={sweep_dir}", "robustness=[inception]", "wandb_report=false"])
    scored = sorted(sweep_dir.glob("runs/*/robustness/robustness.json"))
    assert [p.parent.parent.name.split("_", 1)[1] for p in scored] == ["inception_s0", "inception_s1"]
    report = json.loads((sweep_dir / "report.json").read_text())
    (row,) = report["tables"]["robustness"]
    payloads = [json.loads(p.read_text()) for p in scored]
    assert row["experiment"] == "inception" and row["seeds"] == 2
    assert row["shifted_acc_mean"] == pytest.approx(100 * sum(p["mean_acc"] for p in payloads) / 2)
    assert "Robustness to lab variability" in (sweep_dir / "report.md").read_text()


@pytest.mark.slow
def test_sigterm_stops_every_job_and_still_reports(synthetic_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import REPO

    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "sweep.py"), "experiments=[baseline_64,inception]", "seeds=[0,1]", "name=stopped",
         "trainer.max_epochs=500", "callbacks.early_stopping=null", f"data.root={synthetic_root}", "data.img_size=28",
         "logger=csv", f"paths.log_dir={tmp_path}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweep_dir = tmp_path / "sweeps" / "stopped"
    deadline = time.time() + 120
    while not list(sweep_dir.glob("runs/*/csv/metrics.csv")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)

    def processes() -> list[tuple[int, str]]:
        rows = subprocess.run(["ps", "-ww", "-eo", "pgid=,args="], capture_output=True, text=True).stdout.splitlines()
        return [(int(r.split(None, 1)[0]), r.split(None, 1)[1]) for r in rows if len(r.split(None, 1)) == 2]

    (job_group,) = {g for g, args in processes() if "train.py" in args and str(sweep_dir) in args}
    assert sum(g == job_group for g, _ in processes()) >= 3  # the multirun and its joblib workers
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=150)
    assert proc.returncode == 1, out[-3000:]  # jobs did not finish, but the sweep reported
    assert "SIGTERM: stopping the jobs" in out
    text = (sweep_dir / "report.md").read_text()
    assert "Jobs that did not finish" in text
    # nothing of the sweep keeps running, launcher workers included
    time.sleep(1)
    assert job_group not in {g for g, _ in processes()}


@pytest.mark.slow
def test_report_tables_go_to_a_wandb_summary_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "mysweep"
    labels = [i % 8 for i in range(16)]
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"experiments": ["skip", "inception"], "seeds": [0]}))
    _fake_run(sweep / "runs" / "0_skip_s0", "skip", 0, 1.0, labels, labels)
    _fake_run(sweep / "runs" / "1_inception_s0", "inception", 0, 0.5, [0] * 16, labels)
    assert sweep_main(["report_only=true", f"dir={sweep}"]) == 0
    (run,) = (sweep / "wandb").glob("offline-run-*")
    log_file = next(run.glob("run-*.wandb"))
    deadline = time.time() + 60
    while b"report/performance" not in log_file.read_bytes() and time.time() < deadline:
        time.sleep(0.5)
    blob = log_file.read_bytes()
    for key in (b"report/performance", b"report/macro", b"report/per_class_f1", b"mysweep-report", b"mysweep"):
        assert key in blob, key


def test_a_timm_backbone_is_ranked_beside_the_study_rows(tmp_path):
    """resnet18_64 has no study figure: its row shows dashes there, and it still enters the significance test."""
    sweep = tmp_path / "sweep"
    labels = [i % 8 for i in range(40)]
    wrong_6 = [(y + 1) % 8 if i < 6 else y for i, y in enumerate(labels)]
    (sweep / "runs").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"experiments": ["baseline_64", "resnet18_64"], "seeds": [0]}))
    _fake_run(sweep / "runs" / "0_baseline_64_s0", "baseline_64", 0, 0.85, wrong_6, labels)
    _fake_run(sweep / "runs" / "1_resnet18_64_s0", "resnet18_64", 0, 1.0, labels, labels)
    assert sweep_main(["report_only=true", f"dir={sweep}", "wandb_report=false"]) == 0
    rep = build_report(sweep)
    assert (rep.significance["best"], rep.significance["runner_up"]) == ("resnet18_64", "baseline_64")
    row = next(ln for ln in (sweep / "report.md").read_text().splitlines() if ln.startswith("| resnet18_64 |"))
    assert "100.00" in row and "88.66" not in row


def test_jobs_share_the_gpu_through_joblib(monkeypatch):
    import bloodcls.sweeps.settings as sweep_mod
    from bloodcls.sweeps.settings import train_command

    def launcher(args):
        settings, overrides = parse_args(args)
        cmd = train_command(settings, overrides, Path("/tmp/s"))
        return [c for c in cmd if c.startswith(("hydra/launcher=", "hydra.launcher.n_jobs=", "threads="))]

    monkeypatch.setattr(sweep_mod.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sweep_mod, "usable_cpus", lambda: 2)
    assert launcher(["trainer=gpu", "seeds=[0]"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=7"]
    assert launcher(["trainer=gpu"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=8"]  # 21 jobs, 8 at once
    # The CPU: one single-thread job per usable CPU, the threads set to match
    assert launcher(["seeds=[0]"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]
    assert launcher(["seeds=[0]", "threads=2"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=2"]
    assert launcher(["jobs=2", "seeds=[0]"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"]
    monkeypatch.setattr(sweep_mod, "usable_cpus", lambda: 16)
    assert launcher(["seeds=[0]"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=7", "threads=2"]
    monkeypatch.setattr(sweep_mod, "usable_cpus", lambda: 1)
    assert launcher(["seeds=[0]"]) == []  # one CPU: one job at a time
    assert launcher(["trainer=gpu", "hydra/launcher=submitit_local"]) == ["hydra/launcher=submitit_local"]


@pytest.mark.slow
def test_bad_jobs_value_is_a_clear_error(tmp_path):
    proc = run_cli("sweep.py", "jobs=0", "experiments=[inception]", "seeds=[0]", f"paths.log_dir={tmp_path}",
                   *no_data(tmp_path))
    assert proc.returncode == 2 and "jobs=0: give a whole number" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sweeps").exists()


def test_a_bad_value_stops_the_sweep_before_any_job(tmp_path):
    from bloodcls.schema import ConfigError  # sweep.py turns it into its message and exit 2

    with pytest.raises(ConfigError, match=r"data.batch_size=0 \(expected a whole number >= 1"):
        sweep_main(["data.batch_size=0", "experiments=[inception,skip]", "seeds=[0]", f"paths.log_dir={tmp_path}",
                    *no_data(tmp_path)])
    assert not (tmp_path / "sweeps").exists()
