"""``bloodcls sweep``: the study's experiments over several seeds, then its tables and figures; ``python sweep.py``
at the top of the checkout is the same.

    bloodcls sweep                                                   # 7 experiments x seeds 0, 1, 2
    bloodcls sweep experiments=[baseline_64,inception] seeds=[0,1] trainer.max_epochs=1
    bloodcls sweep report_only=true dir=outputs/sweeps/<name>        # rebuild a report

Arguments only; the work is done by :mod:`bloodcls.sweeps.launch`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from bloodcls.errors import report_user_errors

USAGE = """usage: bloodcls sweep [key=value ...]

The study's experiments over several seeds as one Hydra multirun of train.py, then the report. The sweep's own
keys and their defaults are conf/sweep.yaml's, below; every other argument is a training override handed to each
job as `bloodcls train` takes it (`bloodcls train --cfg job <overrides>` prints the config a job gets).

examples:
  bloodcls sweep
  bloodcls sweep experiments=[baseline_64,inception] seeds=[0,1] trainer.max_epochs=1
  bloodcls sweep report_only=true dir=outputs/sweeps/<name>
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from bloodcls.config import CONFIG_DIR

        print(f"{USAGE}\n{CONFIG_DIR}/sweep.yaml:\n\n{(Path(CONFIG_DIR) / 'sweep.yaml').read_text()}", end="")
        return 0
    from bloodcls.sweeps.launch import main as run_sweep

    return report_user_errors(run_sweep)(argv)
