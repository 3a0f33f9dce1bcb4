"""``python -m bloodcls <command> ...``: the same as the ``bloodcls`` console script."""

from bloodcls.cli import main

raise SystemExit(main())
