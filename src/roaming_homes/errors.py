"""Exit codes and the one error type whose message is what the user sees.

The codes are the contract of DESIGN.md: the same for every command that syncs, so scripts,
systemd and the daemon can act on them without parsing text.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    IN_SYNC = 0
    NEEDS_USER = 1  # conflicts or skipped items remain
    PARTIAL = 2  # some items failed to transfer
    FAILED = 3  # fatal unison error, ssh authentication refused, version mismatch
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

