"""`roaming-homes daemon` as a subprocess of a test, with its log in a file to await lines in."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.homes import CLI, Setup
from tests.support.waiting import wait_for


class DaemonProcess:
    def __init__(self, user: Setup, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        """`prefix` runs the daemon through another command that execs it (e.g. `nsenter`),
        so that the process started is the daemon itself."""
        self.log_file = user.base / "daemon.log"
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen([*prefix, *CLI, "daemon"],
                                         env={**user.env, **(env or {})},
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
            raise AssertionError(f"{exc}; the daemon's log ends: {self.log[-3000:]}") from None
        assert self.log.count(text) >= count, f"daemon exited {self.proc.returncode}: {self.log}"

    def signal(self, signo: int) -> None:
        os.kill(self.proc.pid, signo)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def appears(path: Path, content: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.read_text() == content
        except OSError:
            return False

    return check


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
