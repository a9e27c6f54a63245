"""Entry point of `python -m models` (see models/cli.py)."""

from models.cli import main

raise SystemExit(main())
