"""scripts/publish_watch.sh, one pass at a time (ONCE=1): it publishes a sweep's finished runs, regenerates the
tables and commits them, and waits while a page has edits of its own that are not committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.test_published import block, copy_run, row_of

PAGE = "# Results\n\n<!-- table:seeds:f begin -->\n<!-- table:seeds:f end -->\n"


# CI runs the suite with an empty HOME: no git identity unless the tests give one
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **IDENTITY}).stdout


@pytest.fixture()
def checkout(tmp_path):
    """A git checkout holding the watcher, a README with one generated table and a docs page, all committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "publish_watch.sh", repo / "scripts")
    (repo / "README.md").write_text(PAGE)
    (repo / "docs").mkdir()
    (repo / "docs" / "notes.md").write_text("notes\n")
    (repo / ".gitignore").write_text("outputs/\nbloodcls\n")
    wrapper = repo / "bloodcls"  # BLOODCLS: this interpreter's bloodcls, whatever the checkout's .venv
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bloodcls "$@"\n')
    wrapper.chmod(0o755)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "start")
    return repo


def _watch_once(repo: Path) -> str:
    env = {**os.environ, **IDENTITY, "ONCE": "1", "BLOODCLS": str(repo / "bloodcls"), "PYTHONWARNINGS": "ignore"}
    # a glob, as scripts/study_stretch.py's sweeps are watched: every sweep folder that matches, as they appear
    out = subprocess.run(["bash", str(repo / "scripts" / "publish_watch.sh"), "outputs/sweep*:results/f"], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_watcher_commits_a_finished_run_with_its_table_and_waits_on_uncommitted_pages(reference_run, checkout):
    run, results = reference_run
    name = f"{results['experiment']}_s{results['seed']}"
    copy_run(run, checkout / "outputs" / "sweep" / "runs" / f"0_{name}")
    commits = _git(checkout, "rev-list", "--count", "HEAD")

    (checkout / "docs" / "notes.md").write_text("notes, edited by hand\n")
    assert "waiting: README.md or docs/ has uncommitted edits" in _watch_once(checkout)
    assert _git(checkout, "rev-list", "--count", "HEAD") == commits  # nothing committed beside a page's own edit
    assert (checkout / "results" / "f" / f"{name}.json").exists()  # published, not yet committed

    _git(checkout, "commit", "-qam", "the page's own edit")
    assert f"committed {name}" in _watch_once(checkout)
    assert _git(checkout, "log", "-1", "--format=%s").startswith(f"Published: {name} ")
    committed = set(_git(checkout, "show", "--name-only", "--format=", "HEAD").split())
    assert {"README.md", f"results/f/{name}.json"} <= committed and "docs/notes.md" not in committed
    assert _git(checkout, "status", "--porcelain") == ""  # the sweep folder is ignored; everything else is in
    row = row_of(block((checkout / "README.md").read_text(), "seeds:f"), results["experiment"])
    assert row[4] == f"{100 * results['test']['acc']:.2f}"  # the table reads the run's own test accuracy
    assert json.loads((checkout / "results" / "f" / f"{name}.json").read_text())["seed"] == results["seed"]

    head = _git(checkout, "rev-parse", "HEAD")
    assert _watch_once(checkout) == ""  # nothing new: no commit, nothing said
    assert _git(checkout, "rev-parse", "HEAD") == head

    later = f"{results['experiment']}_s{results['seed'] + 1}"  # a sweep started after the watcher
    copy_run(run, checkout / "outputs" / "sweep_later" / "runs" / f"0_{later}", seed=results["seed"] + 1)
    assert f"committed {later}" in _watch_once(checkout)
    assert (checkout / "results" / "f" / f"{later}.json").exists()
