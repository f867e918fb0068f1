"""``python -m gristmill`` is the ``gristmill`` command."""

from .cli import main

raise SystemExit(main())
