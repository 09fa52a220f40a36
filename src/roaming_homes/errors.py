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


class Reason(enum.StrEnum):
    """Why a pass did not simply end in sync. Decided where the evidence is read (ssh's output
    in `transport`, unison's in `unison`, the guards' verdicts in `guards`); state, status,
    notifications and the daemon consume it and never read those texts again."""

    NONE = ""
    SERVER_UNREACHABLE = "server-unreachable"
    HOST_KEY = "host-key"  # the server's host key is unknown or changed
    AUTH_REFUSED = "auth-refused"  # the server refused the login
    SSH_FAILED = "ssh-failed"  # ssh failed otherwise (not installed, bad options)
    CONNECTION_LOST = "connection-lost"
    VERSION_MISMATCH = "version-mismatch"  # the two unisons cannot talk to each other
    DISK_FULL = "disk-full"
    REPLICA = "replica"  # refused: a replica is missing, emptied or not the one of the last pass
    LOSSES = "losses"  # refused: the plan deletes or overwrites too much
    UNISON_FAILED = "unison-failed"
