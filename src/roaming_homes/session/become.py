"""`sudo roaming-homes check --user NAME`: root becomes another user before looking at anything.

The process drops to that user's uid, gid and groups first, then takes the environment from
their passwd entry (HOME, USER, LOGNAME; XDG base directories derived from that home), so
every file is opened, and ssh and unison run, as that user: nothing of theirs is read as root,
and nothing is created in their home that they could not have created themselves.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.paths import RUN_USER

log = logging.getLogger(__name__)

# The caller's session, never the user's: their runtime dir, bus, agent and per-user XDG dirs.
# XDG_CONFIG_DIRS and XDG_DATA_DIRS are the system's and stay.
_CALLERS = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
            "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "SSH_AUTH_SOCK", "MAIL")


def become(name: str) -> pwd.struct_passwd:
    """Drop this (root) process to user `name` for good; returns their passwd entry.

    Not root, or no such user: a one-line RoamingHomesError (exit 64)."""
    if os.geteuid() != 0:
        raise RoamingHomesError(f"--user {name}: only root may check another user's set-up "
                                f"(sudo roaming-homes check --user {name}, or run "
                                "`roaming-homes check` as that user)", ExitCode.USAGE)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RoamingHomesError(f"--user {name}: no such user", ExitCode.USAGE) from None
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)  # as root this sets the real, effective and saved uid
    except OSError as exc:
        raise RoamingHomesError(f"--user {name}: cannot become {name}: {exc.strerror}",
                                ExitCode.FAILED) from None
    if (os.getuid(), os.geteuid()) != (entry.pw_uid, entry.pw_uid):
        raise RoamingHomesError(f"--user {name}: still running as uid {os.geteuid()}",
                                ExitCode.FAILED)
    _take_environment(entry)
    log.debug("running as %s (uid %d, gid %d, home %s)", entry.pw_name, entry.pw_uid,
              entry.pw_gid, entry.pw_dir)
    return entry


def _take_environment(entry: pwd.struct_passwd) -> None:
    """The user's own variables instead of the caller's (a login would set the same)."""
    for variable in _CALLERS:
        os.environ.pop(variable, None)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    runtime = RUN_USER / str(entry.pw_uid)
    if _theirs(runtime, entry.pw_uid):  # logged in: their service manager is reachable
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _theirs(path: Path, uid: int) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid
