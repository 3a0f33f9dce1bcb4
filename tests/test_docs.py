"""The docs: a README that is a front page, every page under docs/ in the nav, and a strict MkDocs build."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO


def nav_pages(nav) -> list[str]:
    """Every page the nav of mkdocs.yml names, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in nav_pages(v)]
    return [p for item in nav for p in nav_pages(item)]


def load_nav() -> list[str]:
    # mkdocs.yml may carry !!python tags in other projects; this one is plain YAML.
    return nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the guide and the evidence belong in docs/"


def test_readme_keeps_the_quick_start_and_its_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make train" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()  # the README's test command is what CI runs


def test_every_page_under_docs_is_in_the_nav():
    nav = load_nav()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert "index.md" not in pages, "the README is the home page (scripts/mkdocs_hooks.py); docs/index.md would hide it"
    assert pages - set(nav) == set(), "pages missing from the nav of mkdocs.yml"
    assert set(nav) - pages == {"index.md"}, "nav entries without a page"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs / mkdocs-material not installed (pip install -e '.[dev]')")
def test_docs_build_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()  # the README, as the home page
    assert (tmp_path / "site" / "guide" / "development" / "index.html").is_file()


def _group_row(page: str, group: str) -> str:
    return next(line for line in page.splitlines() if line.startswith(f"| `{group}/` |"))


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "callbacks", "recipe", "ablation", "trainer", "logger"])
def test_the_configuration_page_lists_every_option_of_a_group(group):
    page = (REPO / "docs" / "guide" / "configuration.md").read_text()
    row = _group_row(page, group)
    options = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
    assert {o for o in options if f"`{o}`" not in row} == set()
    if group == "callbacks":  # every callback of the default set, named by its key
        default = yaml.safe_load((REPO / "conf" / "callbacks" / "default.yaml").read_text())
        assert "`trust`" in row and "callbacks.trust=null" in row and len(default) == 4


def test_the_trust_guide_states_the_gates_tolerance_bound():
    """The page quotes the rank that the gate's own code picks on 1,712 validation scores (the scores 1..n, so the
    threshold it returns is its rank)."""
    import torch

    from bloodcls.uncertainty.ood import accept_threshold

    n = 1712  # validation images
    k = int(accept_threshold(torch.arange(1, n + 1, dtype=torch.float64)))
    assert 0.95 * n < k < n  # a tolerance bound: above the plain 95 % quantile's rank
    page = (REPO / "docs" / "guide" / "trust.md").read_text()
    assert "tolerance bound" in page and f"{k:,}" in page and f"{100 * k / n:.1f} %" in page
    assert "accepts 95 % of the validation images" not in page


def test_config_and_compute_comments_link_results_instead_of_quoting_them():
    """A comment says why and links the results page (docs/results/...): no bare accuracies or speed-ups."""
    figure = re.compile(r"\d+(\.\d+)? ?%|\d+(\.\d+)?(x|×)\b|\d+(\.\d+)? points")
    files = [*(REPO / "conf" / "experiment").glob("*.yaml"), *(REPO / "conf" / "recipe").glob("*.yaml"),
             REPO / "bloodcls" / "training" / "compute.py"]
    found = [f"{f.name}: {line.strip()}" for f in files for line in f.read_text().splitlines()
             if "#" in line and figure.search(line.split("#", 1)[1])]
    assert found == []
