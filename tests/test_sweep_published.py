"""``sweep.py published=results/<footing>``: after a machine is rebuilt, the footing's own sweep command trains only
the jobs the footing holds no record of, and refuses jobs that could not be published there before any starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bloodcls.analysis.published import publish
from bloodcls.common.sweepdir import planned_jobs
from bloodcls.errors import UserError
from bloodcls.sweeps.published import leave_to_footing
from tests.conftest import FAST
from tests.helpers import run_cli
from tests.test_published import copy_run

# What the footing below holds: the study recipe in fp32 on a CPU
FOOTING_RUN = {"experiment": "baseline_64", "img_size": 64, "recipe": "study", "compute__precision": "32-true", "compute__device": "cpu"}
TINY = ["experiments=[baseline_64]", "trainer.max_epochs=1", "logger=csv", "wandb_report=false",
        "jobs=1", *FAST]


def footing_with(reference_run, tmp_path: Path, seeds: list[int]) -> Path:
    """results/f holding a baseline_64 record for each seed (copies of the reference run, relabelled)."""
    footing = tmp_path / "results" / "f"
    for seed in seeds:
        publish(copy_run(reference_run[0], tmp_path / f"run_s{seed}", seed=seed, **FOOTING_RUN), footing)
    return footing


def started_job(sweep: Path, name: str, experiment: str, seed: int) -> None:
    """A job folder of the sweep as Hydra leaves it (its identity is in .hydra/overrides.yaml)."""
    hydra = sweep / "runs" / name / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(yaml.safe_dump([f"experiment={experiment}", f"seed={seed}"]))


def test_published_jobs_are_left_to_the_footing_but_a_job_the_sweep_started_stays_its_own(reference_run, tmp_path):
    footing = footing_with(reference_run, tmp_path, [0, 1])
    sweep = tmp_path / "sweep"
    started_job(sweep, "1_baseline_64_s1", "baseline_64", 1)  # started here, published since by the watcher
    plan = {"experiments": ["baseline_64", "skip"], "seeds": [0, 1, 2]}
    plan = leave_to_footing(plan, footing, sweep)
    assert plan["published"] == {"footing": str(footing), "jobs": [["baseline_64", 0]]}
    assert planned_jobs(plan) == [("baseline_64", 1, None), ("baseline_64", 2, None),
                                  ("skip", 0, None), ("skip", 1, None), ("skip", 2, None)]
    # a job once left to the footing stays left at every later resume, whatever the folders say
    assert leave_to_footing(plan, footing, sweep)["published"]["jobs"] == [["baseline_64", 0]]
    with pytest.raises(UserError, match="k-fold runs are not published"):
        leave_to_footing({**plan, "folds": 5}, footing, sweep)


def test_a_folder_that_is_no_footing_is_refused_before_anything_starts(tmp_path):
    proc = run_cli("sweep.py", *TINY, "seeds=[0]", f"published={tmp_path / 'nothing'}", f"paths.log_dir={tmp_path}",
                   "trainer.precision=32-true")
    assert proc.returncode != 0 and "is not a footing of published runs" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(("override", "named"), [("trainer.precision=auto", "precision differs"),
                                                 ("recipe=keras", "recipe differs")])
def test_jobs_that_could_not_be_published_there_are_refused_before_any_starts(reference_run, tmp_path, override,
                                                                               named):
    footing = footing_with(reference_run, tmp_path, [0])
    extra = [] if override.startswith("trainer.precision") else ["trainer.precision=32-true"]
    proc = run_cli("sweep.py", *TINY, "seeds=[0,1]", f"published={footing}", f"paths.log_dir={tmp_path}",
                   override, *extra)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert named in proc.stderr and "recipe study, fp32, cpu" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweeps").exists()


@pytest.mark.slow
def test_a_sweep_trains_only_what_its_footing_has_not_published(reference_run, synthetic_root, tmp_path):
    footing = footing_with(reference_run, tmp_path, [0])
    common = [f"data.root={synthetic_root}", f"paths.log_dir={tmp_path}"]
    proc = run_cli("sweep.py", *TINY, "seeds=[0,1]", f"published={footing}", "trainer.precision=32-true", "name=again",
                   *common)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of them already published in" in proc.stdout and "baseline_64 seed 0)" in proc.stdout
    sweep = tmp_path / "sweeps" / "again"
    assert sorted(p.name for p in (sweep / "runs").iterdir() if p.is_dir()) == ["0_baseline_64_s1"]
    report = (sweep / "report.md").read_text()
    assert "1 of 1 jobs finished" in report and "published before this sweep started them" in report
    plan = json.loads((sweep / "sweep.json").read_text())
    assert plan["published"]["jobs"] == [["baseline_64", 0]]
    assert plan["command"] is None and len(plan["commands"]) == 1  # what ran, not the multirun it would have run
    assert "train.py" in plan["commands"][0] and "seed=1" in plan["commands"][0] and "seed=0" not in plan["commands"][0]
    assert publish(sweep / "runs" / "0_baseline_64_s1", footing)[1] == "written"  # it belongs to the footing

    # the resume keeps the footing: seed 0 stays left to it, seed 1 is the sweep's (kept), seed 2 is added
    proc = run_cli("sweep.py", f"resume={sweep}", "seeds=[0,1,2]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 completed (kept), 0 to continue from their last checkpoint, 1 to start" in proc.stdout
    assert sorted(p.name for p in (sweep / "runs").iterdir() if p.is_dir()) == ["0_baseline_64_s1", "1_baseline_64_s2"]


def test_a_sweep_whose_every_job_is_published_trains_nothing_and_says_so(reference_run, synthetic_root, tmp_path):
    footing = footing_with(reference_run, tmp_path, [0])
    proc = run_cli("sweep.py", *TINY, "seeds=[0]", f"published={footing}", "trainer.precision=32-true", "name=done",
                   f"data.root={synthetic_root}", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of them already published in" in proc.stdout and "nothing left to train" in proc.stdout
    assert "Traceback" not in proc.stderr
    sweep = tmp_path / "sweeps" / "done"
    assert not any((sweep / "runs").glob("*_baseline_64_s*"))  # nothing trained
    assert "0 of 0 jobs finished" in (sweep / "report.md").read_text()
