"""The README's layout section names every module of the package, one line each, and nothing that is gone."""

import re

from tests.helpers import REPO


def test_readme_layout_matches_the_tree():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    named = re.findall(r"^(bloodcls/\S+\.py)", layout, re.M)
    tree = {str(p.relative_to(REPO)) for p in (REPO / "bloodcls").rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    assert len(named) == len(set(named))  # one line per module
    assert set(named) == tree


def test_no_module_is_much_over_300_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "bloodcls").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 310} == {}
