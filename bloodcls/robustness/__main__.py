"""``python -m bloodcls.robustness``."""

import sys

from bloodcls.robustness.cli import main

main(sys.argv[1:])
