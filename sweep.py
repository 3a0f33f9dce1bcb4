"""Run the study's seven experiments over several seeds and rebuild its tables and figures.

    python sweep.py                                          # 7 experiments x seeds 0, 1, 2
    python sweep.py experiments=[baseline_64,inception] seeds=[0,1] trainer.max_epochs=1
    python sweep.py report_only=true dir=outputs/sweeps/<name>

The same as `bloodcls sweep ...` (bloodcls.cli.sweep).
"""

import sys

from bloodcls.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
