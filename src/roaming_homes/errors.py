"""Exit codes and the one error type whose message is what the user sees.

The codes are documented in the README (Exit codes): the same for every command that syncs,
so scripts, systemd and the daemon can act on them without parsing text.
"""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    IN_SYNC = 0
    NEEDS_USER = 1  # conflicts or skipped items remain
    PARTIAL = 2  # some items failed to transfer
    FAILED = 3  # fatal unison error, ssh authentication refused, version mismatch, disk full
    REFUSED = 4  # a safety guard refused; nothing was changed
    USAGE = 64
    TRY_LATER = 75  # server unreachable, or another sync of this user runs
    CONFIG = 78


class RoamingHomesError(Exception):
    """An error that ends a command with a one-line message and a documented exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigError(RoamingHomesError):
    """Bad configuration: the message names the file, the key and, where known, the line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.CONFIG)


class DiskFull(RoamingHomesError):
    """A file of ours could not be written: the file system that holds it is full (or the
    user's quota is used up). A pass ends failed (exit 3, reason disk-full) naming the file; the
    file is as it was before (every write is atomic), and the next pass tries again."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"disk full on this computer ({path})", ExitCode.FAILED)
        self.path = path
