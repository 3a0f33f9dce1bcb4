"""Shift suite: how far a trained classifier's accuracy falls under lab variability.

``python -m bloodcls.robustness <run folder | checkpoint | multirun folder> [...]`` scores the test
split clean and under every shift of :mod:`bloodcls.robustness.shifts` at severities 1..5, and writes
``robustness.json`` and ``robustness.png`` (accuracy vs. severity, one line per shift) into
``<run>/robustness/`` (or ``--out``). :func:`evaluate` is the library entry point (``sweep.py``).

Determinism: the shifted images depend only on the seed, the shift, the severity and the image's
position in the split: shifts run on fixed chunks of :data:`CHUNK` images, each with its own CPU
generator, so the batch size and the device (CPU or GPU) do not change which images a model sees.
"""

from bloodcls.robustness.cli import main
from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.runs import load_model, load_split, score_run
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import CHUNK, EXAMPLES_FILE, JSON_FILE, OUT_DIR, PNG_FILE, evaluate
from bloodcls.robustness.tables import summary_table
from bloodcls.runs.rundir import find_checkpoints

__all__ = ["CHUNK", "EXAMPLES_FILE", "JSON_FILE", "OUT_DIR", "PNG_FILE", "SEVERITIES", "SHIFTS", "evaluate",
           "find_checkpoints", "load_model", "load_split", "main", "plot", "plot_examples", "score_run", "summary_table"]
