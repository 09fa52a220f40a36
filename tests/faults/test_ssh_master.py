"""The shared ssh connection's master dies or hangs between passes (issue 15, item 4).

A pass starts an ssh master (`ControlMaster=yes -f -N`) whose socket lives in the user's
runtime directory, and later passes go through it. Here the test kills (SIGKILL) or freezes
(SIGSTOP) that master: the next passes must notice, remove the stale socket, stop a hung
master and open a new one, each within a bound, and leave no ssh or sshd process behind.

The test signals only processes that name its own control socket (a `/tmp/rh-XXXX` directory
of this test alone), through a pidfd opened before it checks the command line again, so a
reused PID can never be hit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes.unison import mux
from roaming_homes.unison.mux import Master
from tests.support.daemon import DaemonProcess, appears, stop_as_logout
from tests.support.fsmonitor import monitors_of
from tests.support.homes import CLI, Setup
from tests.support.procfs import processes
from tests.support.waiting import wait_for

PASSES = 10


def _argv(cmdline: bytes) -> list[bytes]:
    return cmdline.rstrip(b"\0").split(b"\0")


def _names_control_dir(user: Setup, argv: list[bytes]) -> bool:
    """An ssh whose command line names this user's control directory (ours alone)."""
    control_dir = os.fsencode(user.runtime / "roaming-homes") + b"/"
    return os.path.basename(argv[0]) == b"ssh" and any(control_dir in arg for arg in argv)


def ssh_processes(user: Setup) -> list[int]:
    """ssh processes of this user's shared connection: the master and its clients (a zombie
    has an empty command line and is not counted: it holds no connection)."""
    return sorted(pid for pid, read in processes("cmdline")
                  if _names_control_dir(user, _argv(read["cmdline"])))


def masters(user: Setup) -> list[int]:
    return sorted(pid for pid, read in processes("cmdline")
                  if _names_control_dir(user, argv := _argv(read["cmdline"]))
                  and b"ControlMaster=yes" in argv)


def sessions(user: Setup) -> list[int]:
    """The per-connection sshd processes of this test's own sshd."""
    assert user.sshd is not None
    return user.sshd.connection_pids()


def running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here reaps orphans lazily)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


class Held:
    """A pidfd on a master of this test's user: signals reach exactly that process, or none."""

    def __init__(self, user: Setup, pid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        # Checked after the pidfd is open: had the PID been reused, the pidfd would point at
        # the dead master and every signal through it would fail.
        assert pid in masters(user), f"{pid} is not a master of this test"

    def signal(self, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.fd, signo)

    def close(self) -> None:
        """Teardown: end it if it still runs (SIGCONT first, or a stopped one stays stopped)."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        os.close(self.fd)


@pytest.fixture
def held() -> Iterator[list[Held]]:
    """Masters the test froze or killed; whatever is left of them is ended in teardown."""
    grabbed: list[Held] = []
    yield grabbed
    for master in grabbed:
        master.close()


def the_master(user: Setup, held: list[Held]) -> Held:
    """The one master of this user's shared connection, held for signals and teardown."""
    found = wait_for(lambda: masters(user), 10, "the shared connection's master")
    assert len(found) == 1, f"more than one master: {found}"
    [pid] = found
    master = Held(user, pid)
    held.append(master)
    return master


def lock_is_free(user: Setup) -> bool:
    """Whether nobody holds the sync lock (taken and released at once)."""
    with open(user.runtime / "roaming-homes.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
    return True


def counts(user: Setup) -> tuple[int, int]:
    """ssh processes of the shared connection, sshd sessions of this test's sshd."""
    return len(ssh_processes(user)), len(sessions(user))


def within(now: tuple[int, int], bound: tuple[int, int]) -> bool:
    return all(n <= b for n, b in zip(now, bound, strict=True))


def test_a_killed_master_is_replaced_and_ten_passes_leak_no_ssh_or_sshd(
        victim: Setup, held: list[Held]) -> None:
    docs = victim.home / "Documents"
    docs.mkdir()
    (docs / "a.txt").write_text("start")
    assert victim.sync().returncode == 0
    before = wait_for(lambda: (c := counts(victim)) == (1, 1) and c, 10,
                      "one master and its one sshd session")
    master = the_master(victim, held)
    master.signal(signal.SIGKILL)  # its socket stays behind: stale
    wait_for(lambda: not running(master.pid) and not sessions(victim), 10,
             "the killed master and its sshd session to end")

    seen = []
    for n in range(PASSES):
        # A new size each time: unison's fast check may miss a same-size edit in the same second.
        (docs / "a.txt").write_text(f"pass {n}" + "." * n)
        started = time.monotonic()
        result = victim.sync(timeout=60)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, f"pass {n}: {result.stderr}"
        assert elapsed < 15, f"pass {n} took {elapsed:.1f} s"
        # Settled: a pass's own ssh clients have ended; what stays is the shared connection.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: within(counts(victim), before), 3,
                         "the pass's processes to end")
        seen.append(counts(victim))

    assert all(within(c, before) for c in seen), \
        f"ssh/sshd processes after each pass {seen}, before {before}"
    [new] = masters(victim)
    assert new != master.pid
    last = PASSES - 1
    assert (victim.server_home / "Documents" / "a.txt").read_text() == f"pass {last}" + "." * last


def test_a_frozen_master_is_stopped_and_replaced_within_the_bound(
        victim: Setup, held: list[Held]) -> None:
    docs = victim.home / "Documents"
    docs.mkdir()
    (docs / "a.txt").write_text("start")
    assert victim.sync().returncode == 0
    master = the_master(victim, held)
    master.signal(signal.SIGSTOP)
    (docs / "a.txt").write_text("after the freeze")

    started = time.monotonic()
    result = victim.sync(timeout=60)
    elapsed = time.monotonic() - started

    bound = victim.config["server"]["connect_timeout"] * 2 + 15
    assert result.returncode == 0, result.stderr
    assert elapsed < bound, f"a frozen master held the pass {elapsed:.1f} s (bound {bound} s)"
    assert lock_is_free(victim)
    assert victim.status()["running"] is False
    assert (victim.server_home / "Documents" / "a.txt").read_text() == "after the freeze"
    # The tool started the frozen master, so it stopped it; a new one serves the next passes.
    wait_for(lambda: not running(master.pid), 10, "the frozen master to be stopped")
    [new] = masters(victim)
    assert new != master.pid
    wait_for(lambda: counts(victim) == (1, 1), 10, "one master and its one sshd session")
    started = time.monotonic()
    assert victim.sync().returncode == 0
    assert time.monotonic() - started < 10
    assert masters(victim) == [new]


def test_the_health_check_answers_as_ssh_does_for_a_live_frozen_and_killed_master(
        victim: Setup, held: list[Held]) -> None:
    """`mux.alive`, asked on every pass instead of `ssh -O check`, against the real master:
    it answers as ssh does, where ssh answers at all (a frozen master it waits on for ever)."""
    docs = victim.home / "Documents"
    docs.mkdir()
    (docs / "a.txt").write_text("start")
    assert victim.sync().returncode == 0
    master = the_master(victim, held)
    [socket] = [p for p in (victim.runtime / "roaming-homes").iterdir() if p.is_socket()]

    def ssh_check() -> int:
        return subprocess.run(["ssh", "-S", str(socket), "-O", "check", "-l", "u", "h"],
                              capture_output=True, timeout=30, check=False).returncode

    assert mux.alive(socket, 5) is Master.ANSWERED and ssh_check() == 0
    master.signal(signal.SIGSTOP)
    started = time.monotonic()
    assert mux.alive(socket, 1.0) is Master.HUNG
    assert 1.0 <= time.monotonic() - started < 3
    master.signal(signal.SIGKILL)
    wait_for(lambda: not running(master.pid), 10, "the killed master to end")
    assert socket.exists()  # killed: nobody removed its socket
    assert mux.alive(socket, 5) is Master.STALE and ssh_check() == 255


@pytest.fixture
def daemon_of() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    stop_as_logout(started)


def test_a_watching_daemon_recovers_after_its_master_is_killed(
        watched: Setup, tag: str, held: list[Held], daemon_of: list[DaemonProcess]) -> None:
    watched.configure(sync={"watch": True, "interval": 3600})
    daemon = DaemonProcess(watched)
    daemon_of.append(daemon)
    daemon.wait_for_log("in sync")
    wait_for(lambda: len(monitors_of(watched.home, tag)) == 2, 30, "a monitor on each end")
    # The master and the server monitor's ssh (a client of the master), over one connection.
    before = wait_for(lambda: (c := counts(watched)) == (2, 1) and c, 10,
                      "the master, the server monitor's ssh and one sshd session")
    master = the_master(watched, held)

    master.signal(signal.SIGKILL)

    # Real-time mode ends with the server monitor's connection and starts again: a new
    # master, a new server monitor, a full pass; then changes propagate in seconds again.
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    (docs / "after.txt").write_text("after the kill")
    wait_for(appears(sdocs / "after.txt", "after the kill"), 30, "the file on the server")
    wait_for(lambda: masters(watched) and masters(watched) != [master.pid], 10,
             "a new master")
    wait_for(lambda: len(monitors_of(watched.home, tag)) == 2, 30, "a monitor on each end")
    (sdocs / "back.txt").write_text("from the server")
    wait_for(appears(docs / "back.txt", "from the server"), 15, "a server write on the laptop")
    wait_for(lambda: counts(watched) == before, 10,
             f"no more ssh/sshd processes than before the kill, {before}")
    assert daemon.proc.poll() is None


def test_processes_connecting_at_once_start_one_master_and_leak_nothing(
        victim: Setup, held: list[Held]) -> None:
    """`check`s (they take no sync lock) and a pass connect at once, first with no master, then
    with the socket of a killed one: one master results, and no other ssh or sshd stays."""
    (victim.home / "Documents").mkdir()
    for _ in range(3):
        procs = [subprocess.Popen([*CLI, *args], env=victim.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for args in (["check"], ["check"], ["check"], ["sync"])]
        codes = [proc.wait(timeout=60) for proc in procs]
        assert codes[-1] == 0, codes
        wait_for(lambda: counts(victim) == (1, 1), 10,
                 f"one master and its one sshd session (now {counts(victim)})")
        master = the_master(victim, held)
        master.signal(signal.SIGKILL)
        wait_for(lambda pid=master.pid: not running(pid) and not sessions(victim), 10,
                 "the killed master and its sshd session to end")
