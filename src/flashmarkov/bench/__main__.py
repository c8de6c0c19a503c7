"""``python -m flashmarkov.bench <op> [options]``."""

from .runner import main

raise SystemExit(main())
