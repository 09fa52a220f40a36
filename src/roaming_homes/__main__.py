"""Allow ``python -m roaming_homes``."""

from roaming_homes.cli import main

raise SystemExit(main())
