"""What a pass ended with, as data: `Result` (what happened), `Reason` (why, when it did not
simply end in sync) and `SyncOutcome` (the whole record).

Results and reasons are decided where the evidence is read (unison's output in `unison`, ssh's
in `unison.ssh`, the guards' verdicts in `safety`); state, status, notifications, the daemon and
the exit code consume them and never read those texts again. The exit code of a pass is a
function of its result, defined here once.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from roaming_homes.errors import ExitCode


class Result(enum.StrEnum):
    IN_SYNC = "in-sync"
    CONFLICTS = "conflicts"  # conflicts or skipped items remain for the user
    PARTIAL = "partial"  # some items failed to transfer
    FAILED = "failed"
    REFUSED = "refused"  # a safety guard refused; nothing was changed
    OFFLINE = "offline"  # the server could not be reached (or the connection was lost)
    BUSY = "busy"  # another pass of this user held the lock, or the server turned logins away
    EXCLUDED = "excluded"  # sync.excluded_users names this user
    CONFIG_ERROR = "config-error"
    INTERRUPTED = "interrupted"  # stopped before it finished (a logout's time was up)
    PAUSED = "paused"  # not run: syncing is paused (`roaming-homes pause`) and nobody asked
    NEVER_SYNCED = "never-synced"  # only in `status`: no pass has run yet


class Reason(enum.StrEnum):
    """Why a pass did not simply end in sync (the detail below a `Result`)."""

    NONE = ""
    SERVER_UNREACHABLE = "server-unreachable"
    # The server answered but turned the login away before authentication (sshd's MaxStartups
    # at a login storm): it is busy, not offline, and it is nobody's job to fix.
    SERVER_BUSY = "server-busy"
    HOST_KEY = "host-key"  # the server's host key is not known to this computer
    HOST_KEY_CHANGED = "host-key-changed"  # the server's host key is not the one known
    AUTH_REFUSED = "auth-refused"  # the server refused the login
    NO_TICKET = "no-ticket"  # the login uses Kerberos and there is no valid ticket: kinit
    SSH_FAILED = "ssh-failed"  # ssh failed otherwise (not installed, bad options)
    CONNECTION_LOST = "connection-lost"
    VERSION_MISMATCH = "version-mismatch"  # the two unisons cannot talk to each other
    DISK_FULL = "disk-full"
    REPLICA = "replica"  # refused: a replica is missing, emptied or not the one of the last pass
    LOSSES = "losses"  # refused: the plan deletes or overwrites too much
    UNISON_FAILED = "unison-failed"
    RUNTIME_DIR = "runtime-dir"  # a directory of ours is unusable or not ours alone


EXIT_CODES: dict[Result, ExitCode] = {
    Result.IN_SYNC: ExitCode.IN_SYNC,
    Result.EXCLUDED: ExitCode.IN_SYNC,
    Result.NEVER_SYNCED: ExitCode.IN_SYNC,
    Result.CONFLICTS: ExitCode.NEEDS_USER,
    Result.PARTIAL: ExitCode.PARTIAL,
    Result.FAILED: ExitCode.FAILED,
    Result.REFUSED: ExitCode.REFUSED,
    Result.OFFLINE: ExitCode.TRY_LATER,
    Result.BUSY: ExitCode.TRY_LATER,
    Result.INTERRUPTED: ExitCode.TRY_LATER,
    Result.PAUSED: ExitCode.TRY_LATER,
    Result.CONFIG_ERROR: ExitCode.CONFIG,
}

# A pass that synced: the last successful sync moves forward (conflicts are the user's to decide,
# everything else went through).
SUCCEEDED = frozenset({Result.IN_SYNC, Result.CONFLICTS})
# A pass whose unison run completed (some items may have failed): unison's archives are current.
COMPLETED = frozenset({Result.IN_SYNC, Result.CONFLICTS, Result.PARTIAL})
# Results the user has to act on.
ATTENTION = frozenset({Result.CONFLICTS, Result.PARTIAL, Result.FAILED, Result.REFUSED,
                       Result.CONFIG_ERROR})

# What to run when a result needs the user and the outcome names nothing better.
REMEDIES: dict[Result, str] = {
    Result.CONFLICTS: "roaming-homes conflicts",
    Result.PARTIAL: "roaming-homes -v sync",  # status adds where the sync log is
    Result.FAILED: "roaming-homes check",
    Result.REFUSED: "roaming-homes check",
    Result.CONFIG_ERROR: "roaming-homes config show",
    Result.NEVER_SYNCED: "roaming-homes sync",
}


def result_of(reason: Reason) -> Result:
    """The result of a pass that could not run for `reason`."""
    if reason in (Reason.SERVER_UNREACHABLE, Reason.CONNECTION_LOST):
        return Result.OFFLINE
    if reason is Reason.SERVER_BUSY:
        return Result.BUSY
    if reason in (Reason.REPLICA, Reason.LOSSES):
        return Result.REFUSED
    return Result.FAILED


@dataclass
class SyncOutcome:
    """What one pass did; this is what `sync --json`, `status` and the history show."""

    result: Result
    message: str
    started: str
    finished: str
    duration: float
    server: str
    transferred: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: list[str] = field(default_factory=list)  # left for the user
    # Conflicts `sync.prefer` settled in this pass (one version won, the other is kept as a
    # conflict copy or in the backups): nothing to do, but the user should know.
    settled: list[str] = field(default_factory=list)
    failed_paths: list[str] = field(default_factory=list)
    first_run: bool = False
    notes: list[str] = field(default_factory=list)  # what the user should know, one line each
    action: str = ""  # the command that helps, when the outcome names one (a refusal's way out)
    reason: Reason = Reason.NONE

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self.result]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(result=str(self.result), reason=str(self.reason),
                    exit_code=int(self.exit_code))
        return data

    @classmethod
    def from_dict(cls, data: Any) -> SyncOutcome | None:
        """An outcome read back from the state or history; None for anything of the wrong
        shape (a damaged or hand-edited file must not break `status` or the notifications)."""
        if not isinstance(data, dict):
            return None
        try:
            values: dict[str, Any] = {"result": Result(data["result"]),
                                      "reason": Reason(data.get("reason", ""))}
        except (KeyError, ValueError, TypeError):
            return None
        for item in fields(cls):
            if item.name in values or item.name not in data:
                continue
            value, default = data[item.name], getattr(_DEFAULTS, item.name)
            if not _same_shape(value, default):
                return None
            values[item.name] = value
        if any(name not in values for name in _REQUIRED):
            return None
        return cls(**values)


def _same_shape(value: Any, default: Any) -> bool:
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


_REQUIRED = ("message", "started", "finished", "duration", "server")
_DEFAULTS = SyncOutcome(Result.IN_SYNC, "", "", "", 0.0, "")
