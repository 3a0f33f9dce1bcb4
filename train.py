"""Train one of the study's models: `python train.py model=inception`, `python train.py experiment=skip`,
or sweep with Hydra multirun: `python train.py -m model=baseline,unet,inception,skip,hybrid`.

The same as `bloodcls train ...` (bloodcls.cli.train).
"""

import sys

from bloodcls.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
