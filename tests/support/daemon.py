"""`roaming-homes daemon` as a subprocess of a test, with its log in a file to await lines in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.fsmonitor import monitors_of
from tests.support.homes import CLI, Setup
from tests.support.procfs import parent_of, processes
from tests.support.waiting import wait_for


class DaemonProcess:
    def __init__(self, user: Setup, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        """`prefix` runs the daemon through another command that execs it (e.g. `nsenter`),
        so that the process started is the daemon itself."""
        self.log_file = user.base / "daemon.log"
        self.sync_log = user.state_dir / "sync.log"
        self.runtime = str(user.runtime)  # the shared connection's master names its socket there
        self.sshd_log = user.sshd.log_file if user.sshd is not None else None
        with open(self.log_file, "wb") as log:
            # faulthandler: a daemon stuck in a test is made to print every thread's stack
            self.proc = subprocess.Popen([*prefix, *CLI, "daemon"],
                                         env={**user.env, "PYTHONFAULTHANDLER": "1",
                                              **(env or {})},
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30, count: int = 1) -> None:
        try:
            wait_for(lambda: self.log.count(text) >= count or self.proc.poll() is not None,
                     timeout, f"{text!r} in the daemon's log")
        except AssertionError as exc:  # what the daemon did meanwhile says why
            raise AssertionError(f"{exc}; {self.stuck()}") from None
        assert self.log.count(text) >= count, f"daemon exited {self.proc.returncode}: {self.log}"

    def stuck(self) -> str:
        """What a daemon that did not get on is doing: the programs it runs and the shared
        connection's master (in the background: not below it), each with its state and what it
        waits in; every thread's stack (it is ended for that: SIGABRT, with faulthandler on);
        its log, sync.log and the end of the server's sshd log."""
        table = {pid: read for pid, read in processes("stat", "cmdline", "wchan")}
        below, running, masters = {self.proc.pid}, [], []
        for pid, read in sorted(table.items()):  # a child starts after its parent: a higher pid
            command, state = _command(read["cmdline"]), _state(read)
            if parent_of(read["stat"]) in below:
                below.add(pid)
                running.append(f"{pid} ({state}): {command}")
            elif "ControlMaster=yes" in command and self.runtime in command:
                masters.append(f"{pid} ({state}): {command}")
        if self.proc.poll() is None:
            self.signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        synced = self.sync_log.read_text(errors="replace") if self.sync_log.exists() else ""
        sshd = (self.sshd_log.read_text(errors="replace")
                if self.sshd_log is not None and self.sshd_log.exists() else "")
        return (f"its programs: {running}; masters: {masters}; the daemon's log ends: "
                f"{self.log[-6000:]}; sync.log ends: {synced[-3000:]}; sshd's log ends: "
                f"{sshd[-2000:]}")

    def signal(self, signo: int) -> None:
        os.kill(self.proc.pid, signo)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


# How long a real-time daemon's first pass may take in a test before it counts as stuck. That
# pass starts both monitors and makes four ssh exchanges over the shared connection (the
# listing, unison's session, the marker, the record). Clean-clone CI runs once saw each take
# 6-10 s under full load: the server account's shell read this machine's ~/.bashrc, whose
# `pyenv rehash` takes a lock, and sessions run side by side waited for each other. The test
# sshd's sessions no longer read it (`SshServer._set_env`).
FIRST_PASS = 30


StartDaemon = Callable[..., DaemonProcess]  # the `start_daemon` fixtures


def appears(path: Path, content: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.read_text() == content
        except OSError:
            return False

    return check


def watching(user: Setup, tag: str, **sync: object) -> Callable[[StartDaemon], DaemonProcess]:
    """Configure real-time mode (with an interval too long to explain any propagation)."""
    user.configure(sync={"watch": True, "interval": 3600, **sync})

    def start(start_daemon: StartDaemon, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = start_daemon(user, env)
        daemon.wait_for_log("in sync", timeout=FIRST_PASS)
        wait_for(lambda: len(monitors_of(user.home, tag)) == 2, 30, "a monitor on each end")
        return daemon

    return start


def stop_as_logout(started: Sequence[DaemonProcess]) -> None:
    """Stop the daemons a test started (ours only, by PID) as logout does: SIGTERM, then up to
    60 s for the final pass; whatever is left is killed. A daemon that does not stop in time
    fails the test (TimeoutExpired) after it is killed."""
    for daemon in started:
        try:
            if daemon.proc.poll() is None:
                daemon.signal(signal.SIGTERM)
                daemon.wait(60)
        finally:
            daemon.close()


def _command(cmdline: bytes) -> str:
    return cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _state(read: dict[str, bytes]) -> str:
    """A process's state letter (R running, S sleeping, T stopped, ...) and its wait channel."""
    state = read["stat"].rsplit(b")", 1)[1].split()[0].decode()
    return f"{state} in {read['wchan'].decode(errors='replace') or '-'}"
