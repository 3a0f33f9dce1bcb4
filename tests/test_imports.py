"""Imports point one way: every import in bloodcls/ (module level and inside functions) goes down the layers
below, or stays inside its own package without closing a circle.

LAYERS is the one statement of the order, bottom first. A unit may import its own modules and any unit of a
lower layer; units of one layer never import each other (data and models know nothing of one another).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

ROOT = "bloodcls"  # the package itself: only ``bloodcls/__init__.py``, not everything under it

LAYERS: list[tuple[str, ...]] = [
    ("bloodcls.errors",),  # UserError: one paragraph, exit 2
    ("bloodcls.common",),  # shared leaves: run-folder layout, checkpoint files, tensors, TTA, tables, statistics
    ("bloodcls.config", "bloodcls.schema"),  # composing the config; the values users may set
    ("bloodcls.data", "bloodcls.models", "bloodcls.runs", "bloodcls.uncertainty"),  # the data; the networks and their
    # metadata; run records; calibration, abstention and the out-of-distribution gate (tensor maths)
    ("bloodcls.training", "bloodcls.inference"),  # Lightning training; a trained model used without Lightning,
    # and a finished run folder opened for every reader above (bloodcls.inference.finished_run)
    ("bloodcls.robustness",),  # the shift suite over finished runs
    ("bloodcls.analysis",),  # reports over finished runs and sweep folders (they read only what runs left on disk)
    ("bloodcls.sweeps",),  # launching, resuming and watching sweeps, their lock; a sweep ends by writing its report
    (ROOT,),  # the package's front: `from bloodcls import Classifier` (the Python API in inference, imported lazily)
    ("bloodcls.cli",),  # the bloodcls command: one module per subcommand, arguments only
    ("bloodcls.__main__",),  # python -m bloodcls: runs the command
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer index, unit) of a module: the longest LAYERS entry it is, or lies inside."""
    found = [(len(u), i, u) for i, layer in enumerate(LAYERS) for u in layer
             if module == u or (u != ROOT and module.startswith(u + "."))]
    return max(found)[1:] if found else None


def imports(path: Path, name: str, modules: set[str]) -> list[tuple[int, str]]:
    """(line, imported bloodcls module) for every import statement in the file, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from bloodcls import robustness` imports the module bloodcls.robustness
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else base))
    return [(line, m) for line, m in found if m == "bloodcls" or m.startswith("bloodcls.")]


def graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    files = {module_name(p, root): p for p in sorted((root / "bloodcls").rglob("*.py"))}
    return {name: imports(path, name, set(files)) for name, path in files.items()}


def violations(root: Path) -> list[str]:
    """Every import against LAYERS, every module outside them, and every circle of imports."""
    edges = graph(root)
    found = []
    for source, targets in edges.items():
        here = unit_of(source)
        if here is None:
            found.append(f"{source} lies in no layer: add its package to LAYERS in tests/test_imports.py")
            continue
        for line, target in targets:
            there = unit_of(target)
            if there is None or there[1] == here[1]:
                continue
            if there[0] >= here[0]:
                how = "a unit of its own layer" if there[0] == here[0] else "a higher layer"
                found.append(f"{source}:{line} imports {target}, {how} ({there[1]} is in layer {there[0]}, "
                             f"{here[1]} in layer {here[0]})")
    found += [" -> ".join(c) for c in cycles({s: [t for _, t in ts if t in edges] for s, ts in edges.items()})]
    return found


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, []):
                groups.append(sorted(group) + [min(group)])
    for v in edges:
        if v not in index:
            visit(v)
    return groups


def test_imports_point_down_the_layers():
    assert violations(REPO) == []


def test_the_check_fails_on_an_upward_import_and_a_circle(tmp_path):
    """The same check on a copy of the package with one upward import, then one circle, added."""
    for path in (REPO / "bloodcls").rglob("*.py"):
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    datamodule = tmp_path / "bloodcls" / "data" / "datamodule.py"  # the old offender, back inside a function
    datamodule.write_text(datamodule.read_text() + "\n\ndef late():\n    from bloodcls.inference.images import load_image\n")
    (found,) = violations(tmp_path)
    assert found.startswith("bloodcls.data.datamodule:") and "imports bloodcls.inference.images, a higher layer" in found
    schema, config = tmp_path / "bloodcls" / "schema.py", tmp_path / "bloodcls" / "config.py"
    schema.write_text(schema.read_text() + "\n\ndef late():\n    from bloodcls.config import compose_config\n")
    config.write_text(config.read_text() + "\n\ndef late():\n    import bloodcls.schema\n")
    found = violations(tmp_path)
    assert "bloodcls.config -> bloodcls.schema -> bloodcls.config" in found
    assert any(f.startswith("bloodcls.schema:") and "a unit of its own layer" in f for f in found)


def test_predict_and_the_demo_start_without_lightning():
    """They are kept light on purpose: a move must not make them pull in Lightning, Hydra or SciPy."""
    code = ("import sys, bloodcls.cli.predict, bloodcls.cli.demo, bloodcls.cli.export; print(sorted({m.split('.')[0] for m in "
            "sys.modules} & {'lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'scipy', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_py_reads_its_arguments_before_torch_is_imported():
    """train.py replays resume= overrides (bloodcls.runs.resume) and registers resolvers before Hydra starts."""
    code = ("import sys, bloodcls.config, bloodcls.runs.resume; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'lightning', 'hydra'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_sweep_and_its_readers_start_without_lightning():
    """The sweep's parent process only launches, watches and reports (its jobs import Lightning themselves), and
    reports and tables read run folders: none of them pays for importing Lightning (seconds a process), nor does a
    bad sweep argument before its one paragraph. Hydra still finds the datamodules by their package names."""
    code = ("import sys, bloodcls.cli.sweep, bloodcls.sweeps.launch, bloodcls.analysis.report_markdown, "
            "bloodcls.cli.tables; light = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', "
            "'pytorch_lightning', 'torchmetrics'}); from hydra.utils import get_class; "
            "print(light, get_class('bloodcls.data.BloodMNISTDataModule').__name__, "
            "get_class('bloodcls.data.FolderDataModule').__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] BloodMNISTDataModule FolderDataModule"
