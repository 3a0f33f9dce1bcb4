"""The development page's layout section names every module of the package, one line each, and nothing that is gone."""

import re

from tests.helpers import REPO

LAYOUT_PAGE = REPO / "docs" / "guide" / "development.md"


def layout_section() -> str:
    text = LAYOUT_PAGE.read_text()
    section = text[text.index("## Layout"):]
    end = section.find("\n## ", 1)
    return section if end < 0 else section[:end]


def test_layout_matches_the_tree():
    named = re.findall(r"^(bloodcls/\S+\.py)", layout_section(), re.M)
    tree = {str(p.relative_to(REPO)) for p in (REPO / "bloodcls").rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    assert len(named) == len(set(named))  # one line per module
    assert set(named) == tree


def test_no_module_is_much_over_300_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "bloodcls").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 310} == {}
