"""``published=results/<footing>``: a sweep leaves to a footing the jobs it already holds a record of.

The records under ``results/`` outlive the machine; sweep folders do not. After a rebuild, the footing's own sweep
command (in its ``footing.json``) with ``published=results/<footing>`` trains only what is missing, where otherwise
it would train the published runs again or need a hand-made list of experiments and seeds per restart. The jobs are
checked against the footing (recipe, precision, kind of device) before any starts: ``bloodcls publish`` refuses a
run that differs, but only after its hours of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bloodcls.analysis.published import load_footing, precision_label
from bloodcls.common.rundir import job_folders
from bloodcls.common.sweepdir import RUNS_DIR, published_jobs
from bloodcls.errors import UserError
from bloodcls.sweeps.jobs import job_identity


def leave_to_footing(plan: dict[str, Any], footing: str | Path, sweep_dir: Path) -> dict[str, Any]:
    """The plan with ``published``: the footing, and the jobs it holds a record of that this sweep has not started
    (a job left to the footing once stays left; a job of this sweep that it published since stays the sweep's)."""
    if plan.get("folds"):
        raise UserError(f"published={footing} with folds={plan['folds']}: k-fold runs are not published (a footing "
                        "keeps one record per experiment and seed of the whole split), so there is nothing to leave "
                        "out. Drop published= for a k-fold sweep.")
    records = {(r.experiment, r.seed) for r in load_footing(footing).records}
    started = {ident[:2] for folder in job_folders(sweep_dir / RUNS_DIR) if (ident := job_identity(folder))}
    before = published_jobs(plan)
    left = [(e, int(s)) for e in plan["experiments"] for s in plan["seeds"]
            if (e, int(s)) in before or ((e, int(s)) in records and (e, int(s)) not in started)]
    return {**plan, "published": {"footing": str(footing), "jobs": [list(job) for job in left]}}


def check_matches_footing(footing: str | Path, cfgs: list[DictConfig], device: str) -> None:
    """Refuse jobs whose recipe, training precision or kind of device differ from the footing's."""
    spec = load_footing(footing).identity()
    for cfg in cfgs:
        _check_one(footing, spec, cfg, device)


def _check_one(footing: str | Path, spec: dict[str, Any], cfg: DictConfig, device: str) -> None:
    have = {"recipe": cfg.get("recipe_name"), "precision": cfg.trainer.get("precision"), "device": device}
    differ = [key for key in have if spec.get(key) is not None and _label(key, spec[key]) != _label(key, have[key])]
    if differ:
        raise UserError(
            f"published={footing}: its runs are {_about(spec)}, but these jobs would train {_about(have)}, so "
            f"{'their ' + ' and '.join(differ) + (' differs' if len(differ) == 1 else ' differ')} and none of them "
            "could be published there. Give the footing's own sweep command (the `sweep` of its footing.json, with "
            f"trainer.precision={spec.get('precision')} pinned rather than auto), or leave published= out.")


def _label(key: str, value: Any) -> str:
    return precision_label(value) if key == "precision" else str(value)


def _about(identity: dict[str, Any]) -> str:
    return (f"recipe {identity.get('recipe')}, {_label('precision', identity.get('precision'))}, "
            f"{identity.get('device')}")
