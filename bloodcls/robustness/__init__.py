"""Shift suite: how far a trained classifier's accuracy falls under lab variability.

``bloodcls robustness <run folder | checkpoint | multirun folder> [...]`` scores the test split clean and
under every shift of :mod:`bloodcls.robustness.shifts` at severities 1..5, and writes ``robustness.json``
and ``robustness.png`` (accuracy vs. severity, one line per shift) into ``<run>/robustness/`` (or
``--out``). :func:`evaluate` scores one model; :func:`score_targets` scores finished runs (``sweep.py``);
the command line is :mod:`bloodcls.cli.robustness`.

Determinism: the shifted images depend only on the seed, the shift, the severity and the image's
position in the split: shifts run on fixed chunks of :data:`CHUNK` images, each with its own CPU
generator, so the batch size and the device (CPU or GPU) do not change which images a model sees.
"""

from bloodcls.robustness.plots import plot, plot_examples
from bloodcls.robustness.scoring import SuiteOptions, score_run, score_targets, suite_options
from bloodcls.robustness.shifts import SEVERITIES, SHIFTS
from bloodcls.robustness.suite import CHUNK, evaluate
from bloodcls.robustness.tables import summary_table

__all__ = ["CHUNK", "SEVERITIES", "SHIFTS", "SuiteOptions", "evaluate", "plot", "plot_examples", "score_run",
           "score_targets", "suite_options", "summary_table"]
