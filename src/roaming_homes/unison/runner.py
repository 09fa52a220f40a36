"""The one place that starts unison, ssh and the programs around them (file monitors, the
resolver, the server probes of `check`): every command is logged with its argv (DEBUG, shown by
`-v`) before it runs, so what roaming-homes did can always be replayed by hand."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def _logged(argv: Sequence[str]) -> list[str]:
    log.debug("running: %s", shlex.join(argv))
    return list(argv)


def run(argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run`, logged; `check` defaults to False (callers judge the exit code)."""
    options.setdefault("check", False)
    return subprocess.run(_logged(argv), **options)


def start(argv: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen`, logged."""
    return subprocess.Popen(_logged(argv), **options)
