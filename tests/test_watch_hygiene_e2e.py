"""A real-time session whose computer vanished leaves nothing running on the server (issue 19,
item 4): a real `roaming-homes daemon` in real-time mode against a real sshd.

- Gone without closing (lid closed, network down): the computer's link freezes mid-pass (the
  relay its ssh goes through is stopped). sshd is left at its defaults (no ClientAliveInterval):
  nothing tells it the computer is gone. The server's monitor hears no keep-alive within
  `server.watch_idle_timeout`, ends the session's connection and exits; the `unison -server` of
  the pass cut off mid-transfer ends with the connection.
- Gone closing its connection (its ssh killed): the server's side ends at once.

Processes are found in this test's own sshd's process tree, never elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, stop_as_logout
from tests.support.homes import Setup
from tests.support.procfs import parent_of, processes
from tests.support.sshd import SshServer
from tests.support.transfer import MB, THROTTLE, random_files
from tests.support.waiting import wait_for

BOUND = 5  # server.watch_idle_timeout of these tests, seconds
SLACK = 10  # for the connection's end to reach every process of it, on a loaded machine


def server_side(sshd: SshServer) -> dict[str, list[int]]:
    """The monitors, unison servers and connection processes below this test's sshd."""
    assert sshd.proc is not None
    table = {pid: read for pid, read in processes("stat", "cmdline")}
    parents = {pid: parent_of(read["stat"]) for pid, read in table.items()}

    def below_sshd(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == sshd.proc.pid:  # type: ignore[union-attr]
                return True
        return False

    found: dict[str, list[int]] = {"monitor": [], "unison": [], "connection": []}
    for pid, read in table.items():
        if not below_sshd(pid):
            continue
        argv = read["cmdline"].split(b"\0")
        if any(b"roaming_homes.unison.fsmonitor" in arg for arg in argv):
            found["monitor"].append(pid)
        elif os.path.basename(argv[0]).startswith(b"unison") and b"-server" in argv:
            found["unison"].append(pid)
        elif parents.get(pid) == sshd.proc.pid:
            found["connection"].append(pid)
    return found


def _alive(pids: dict[str, list[int]]) -> list[int]:
    """Those of `pids` still running (the daemon may meanwhile have started a new session,
    with processes of its own)."""
    return [pid for group in pids.values() for pid in group if Path(f"/proc/{pid}").exists()]


def _relayed(count_file: Path) -> int:
    try:
        return int(json.loads(count_file.read_text())["up"])
    except (OSError, ValueError, KeyError):
        return 0


def _with_pid(part: bytes) -> list[int]:
    return [pid for pid, read in processes("cmdline") if part in read["cmdline"]]


@pytest.fixture
def daemon(watched: Setup) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    stop_as_logout(started)


def _start(user: Setup, started: list[DaemonProcess], **server: object) -> DaemonProcess:
    assert user.sshd is not None
    user.configure(server={"watch_idle_timeout": BOUND, **server},
                   sync={"watch": True, "interval": 3600, "logout_timeout": 10})
    (user.home / "Documents" / "a.txt").write_text("a")
    daemon = DaemonProcess(user)
    started.append(daemon)
    daemon.wait_for_log("in sync", timeout=60)
    wait_for(lambda: server_side(user.sshd)["monitor"], 30,  # type: ignore[arg-type]
             "the server's monitor")
    return daemon


def test_a_computer_gone_mid_pass_leaves_no_monitor_or_unison_server_on_the_server(
        watched: Setup, daemon: list[DaemonProcess], tmp_path: Path) -> None:
    sshd = watched.sshd
    assert sshd is not None and "ClientAlive" not in sshd.config_file.read_text()
    count = tmp_path / "relay.json"
    relay = f"{THROTTLE} 127.0.0.1 {sshd.port} {MB} {count}"
    _start(watched, daemon, ssh_options=[*sshd.ssh_options(), "-o",
                                         f"ProxyCommand={sys.executable} {relay}"])
    random_files(watched.home / "Documents" / "big", 1, 40 * MB)  # some 40 s at 1 MB/s
    wait_for(lambda: server_side(sshd)["unison"] and _relayed(count) > 2 * MB, 60,
             "a pass mid-transfer")
    proxies = _with_pid(str(count).encode())
    assert proxies
    try:
        before = server_side(sshd)
        assert before["monitor"] and before["unison"] and before["connection"], before
        for pid in proxies:  # the computer's link goes silent; nothing is closed
            os.kill(pid, signal.SIGSTOP)
        gone = time.monotonic()
        wait_for(lambda: not _alive(before), BOUND + SLACK,
                 "the server's monitor, unison server and connection to end")
        assert time.monotonic() - gone >= BOUND - 1  # the bound ended it, nothing sooner
    finally:
        for pid in proxies:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_computer_whose_ssh_is_killed_leaves_nothing_on_the_server(
        watched: Setup, daemon: list[DaemonProcess]) -> None:
    sshd = watched.sshd
    assert sshd is not None
    _start(watched, daemon, watch_idle_timeout=3600)  # no bound helps here: the close does
    masters = [pid for pid in _with_pid(b"ControlMaster=yes")
               if str(watched.runtime).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert masters
    before = server_side(sshd)
    assert before["monitor"] and before["connection"], before
    for pid in masters:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(before), SLACK, "the server's monitor and connection to end")
