"""Shift suite: how far a trained classifier's accuracy falls under lab variability.

``python -m bloodcls.robustness <run folder | checkpoint | multirun folder> [...]`` scores the test
split clean and under every shift of :mod:`bloodcls.robustness.shifts` at severities 1..5, and writes
``robustness.json`` and ``robustness.png`` (accuracy vs. severity, one line per shift) into
``<run>/robustness/`` (or ``--out``). :func:`evaluate` scores one model; :func:`score_targets` scores runs
(``sweep.py``); the command line is :mod:`bloodcls.robustness.cli`.

Determinism: the shifted images depend only on the seed, the shift, the severity and the image's
position in the split: shifts run on fixed chunks of :data:`CHUNK` images, each with its own CPU
generator, so the batch size and the device (CPU or GPU) do not change which images a model sees.
"""

from bloodcls.common.rundir import find_checkpoints
from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.runs import load_model, load_split, score_run, score_targets, suite_options
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import CHUNK, EXAMPLES_FILE, JSON_FILE, OUT_DIR, PNG_FILE, evaluate
from bloodcls.robustness.tables import summary_table

__all__ = ["CHUNK", "EXAMPLES_FILE", "JSON_FILE", "OUT_DIR", "PNG_FILE", "SEVERITIES", "SHIFTS", "evaluate",
           "find_checkpoints", "load_model", "load_split", "plot", "plot_examples", "score_run", "score_targets",
           "suite_options", "summary_table"]
