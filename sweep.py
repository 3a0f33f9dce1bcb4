"""Run the study's seven experiments over several seeds and rebuild its tables and figures.

    python sweep.py                                          # 7 experiments x seeds 0, 1, 2
    python sweep.py experiments=[baseline_64,inception] seeds=[0,1] trainer.max_epochs=1
    python sweep.py report_only=true dir=outputs/sweeps/<name>
"""

from __future__ import annotations

import sys

from bloodcls.analysis.sweep import main
from bloodcls.errors import report_user_errors


@report_user_errors
def cli() -> int:
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(cli())
