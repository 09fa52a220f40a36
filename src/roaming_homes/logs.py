"""Logging for the command line and the session service: one handler on stderr for the
`roaming_homes` loggers (every module logs to `logging.getLogger(__name__)`).

Levels: DEBUG is unison's own output and the details of a pass (`-v`); INFO is what the
session service has to say (the default); WARNING and above always show (`-q` shows only
those). Under systemd, whose journal reads stderr, each line starts with its syslog priority
(`<4>` …, see sd-daemon(3)) and carries no program name: the journal adds it.
"""

from __future__ import annotations

import logging
import os
import sys

from roaming_homes.text import printable

# syslog priorities of the logging levels (sd-daemon(3) line prefixes)
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = printable(record.getMessage())  # unison's lines carry file names
        if self.journal:
            return f"<{_PRIORITIES.get(record.levelno, 6)}>{message}"
        return f"roaming-homes: {message}"


def _stderr_is_journal() -> bool:
    """Whether stderr is the journal's stream ($JOURNAL_STREAM names its device and inode)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


def setup(level: int) -> None:
    """Send the `roaming_homes` loggers' records of `level` and above to stderr."""
    logger = logging.getLogger("roaming_homes")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(_stderr_is_journal()))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
