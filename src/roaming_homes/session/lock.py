"""One user's session: the sync lock (who holds it, and why) and the daemon's make-way
handover, used by every entry point (sync, restore, resolve, the daemon, real-time mode).

The lock is an `flock` on $XDG_RUNTIME_DIR/roaming-homes.lock. The kernel drops it when the
holder dies, so a killed sync never leaves a stale lock behind, and unlike `pgrep` it cannot
mistake another program (or another user's sync) for ours.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.files import try_flock
from roaming_homes.paths import Locations, private_dir

# Seconds a real-time pass still running when the watch is stopped gets to finish before it is
# interrupted (cleanly: unison gets SIGINT); a command that asked the daemon to make way waits
# that long, and a little more, for the lock.
STOP_GRACE = 10.0
MAKE_WAY_MARGIN = 5.0


class SyncLock:
    """Exclusive: a second holder is told at once (exit 75), or after waiting `wait` seconds.

    The same lock, with its own file and `busy` text, keeps a user to one daemon.
    """

    def __init__(self, path: Path, busy: str | None = None) -> None:
        self.path = path
        self.busy = busy
        self._fd: int | None = None

    def acquire(self, what: str = "sync", wait: float = 0) -> None:
        private_dir(self.path.parent)
        try:
            # Never through a link: one placed there would have us truncate what it points to.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise RoamingHomesError(f"cannot use the lock {self.path}: {exc.strerror}",
                                    ExitCode.FAILED) from None
        deadline = time.monotonic() + wait
        while not try_flock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                held = lock_purpose(self.path)
                holder = held[0] if held else lock_holder(self.path)
                by = f" (pid {holder})" if holder else ""
                activity = _ACTIVITIES.get(held[1] if held else "", "sync")
                busy = self.busy or f"another {activity} of this user is running"
                raise RoamingHomesError(f"{busy}{by}; lock {self.path}",
                                        ExitCode.TRY_LATER)
            time.sleep(0.2)  # flock has no timeout of its own; polling keeps the bound
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        self._fd = fd

    @property
    def fileno(self) -> int | None:
        """The locked descriptor; a child that inherits it keeps the lock while it lives."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# How the purpose a holder wrote into the lock file is named to the user who is kept out.
_ACTIVITIES = {"resolve": "resolve", "watch": "real-time sync"}


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


def lock_purpose(path: Path) -> tuple[int, str] | None:
    """The holder of the lock on `path` and what it holds it for ("sync", "watch", ...).

    The holder writes "PID PURPOSE" into the file; the text counts only while that PID holds
    the lock (the file outlives its holders).
    """
    holder = lock_holder(path)
    if holder is None:
        return None
    try:
        pid, _, purpose = path.read_text().partition(" ")
    except OSError:
        return None
    return (holder, purpose.strip()) if pid == str(holder) else None


def make_way(locations: Locations, daemon_pid: int) -> bool:
    """Ask the daemon to free the sync lock if its real-time mode holds it (for a manual sync,
    a restore or a resolve): sends SIGUSR1 and waits until the lock is free, at most
    STOP_GRACE + MAKE_WAY_MARGIN seconds. The daemon then leaves it free for a moment and
    waits for whoever takes it. False when it was not watching."""
    if lock_purpose(locations.lock_file) != (daemon_pid, "watch"):
        return False
    os.kill(daemon_pid, signal.SIGUSR1)
    deadline = time.monotonic() + STOP_GRACE + MAKE_WAY_MARGIN
    while lock_holder(locations.lock_file) == daemon_pid and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
