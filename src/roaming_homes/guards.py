"""Checks that decide whether a pass may run at all: excluded users and the per-user lock.

The lock is an `flock` on $XDG_RUNTIME_DIR/roaming-homes.lock. The kernel drops it when the
holder dies, so a killed sync never leaves a stale lock behind, and unlike `pgrep` it cannot
mistake another program (or another user's sync) for ours.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from roaming_homes.errors import ExitCode, RoamingHomesError


def is_excluded(user: str, excluded_users: list[str]) -> bool:
    return user in excluded_users


class SyncLock:
    """Exclusive: a second holder is told at once (exit 75), or after waiting `wait` seconds.

    The same lock, with its own file and `busy` text, keeps a user to one daemon.
    """

    def __init__(self, path: Path, busy: str = "another sync of this user is running") -> None:
        self.path = path
        self.busy = busy
        self._fd: int | None = None

    def acquire(self, what: str = "sync", wait: float = 0) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while not _try_flock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                holder = lock_holder(self.path)
                by = f" (pid {holder})" if holder else ""
                raise RoamingHomesError(f"{self.busy}{by}; lock {self.path}",
                                        ExitCode.TRY_LATER)
            time.sleep(0.2)  # flock has no timeout of its own; polling keeps the bound
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_holder(path: Path) -> int | None:
    """PID holding an flock on `path`, read from /proc/locks without touching the lock."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks a blocked waiter)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].lower() == wanted:
            return int(fields[4])
    return None
