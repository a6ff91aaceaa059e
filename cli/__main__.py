"""``python -m berth.cli``."""

from .main import main

raise SystemExit(main())
