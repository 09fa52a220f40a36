"""Real-time mode (issue 9): propagation latency and idle CPU, watch mode against interval mode.

Both modes run as users run them: `roaming-homes daemon` (the real CLI) over a loopback sshd
whose ssh user has our unison-fsmonitor on its PATH, as the README asks of a server.

- Latency: a new file written in the local home, until it exists in the server home; one write
  at a time, each at a random moment, `writes` of them. Interval mode is measured with a short
  `sync.interval` (60 s would take an hour for 50 writes); for 60 s the expected figures are
  computed from the measured no-change pass time instead (see `expected_interval_latency`).
- Idle CPU: user + system CPU of every process of ours on both ends (the daemon, unison, ssh,
  the monitors, sshd and what it runs, including children that ended meanwhile) over a
  window of an unchanged home, scaled to an hour.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess, appears
from tests.support.fsmonitor import local_monitors_of, monitors_tagged, write_wrapper
from tests.support.homes import CLI, Setup
from tests.support.procfs import parent_of, processes
from tests.support.sshd import SshServer
from tests.support.waiting import wait_for

from bench import trees
from bench.measure import Row, timed
from roaming_homes.session.state import StateStore

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Plan:
    writes: int  # latency samples per mode
    latency_interval: int  # sync.interval of the measured interval mode
    idle_sizes: tuple[int, ...]
    idle_interval: int  # sync.interval of interval mode while idle
    idle_seconds: float  # window of watch mode; interval mode: this many seconds of passes

    @classmethod
    def full(cls) -> Plan:
        return cls(writes=50, latency_interval=2, idle_sizes=(10_000, 100_000),
                   idle_interval=60, idle_seconds=180)

    @classmethod
    def quick(cls) -> Plan:
        return cls(writes=10, latency_interval=1, idle_sizes=(1_000,), idle_interval=2,
                   idle_seconds=6)


# --- deciding (pure) --------------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (0-1) of `values`, interpolated between neighbours."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_interval_latency(interval: float, pass_time: float, share: float) -> float:
    """Latency quantile of interval mode, from how the daemon schedules passes.

    The next pass starts `interval` seconds after the previous one ended, so passes start every
    `interval + pass_time`; a write at a random moment waits a uniform share of that period for
    the next start, then one pass. (A write caught by a running pass that already scanned its
    directory waits a little longer; at these pass times that is within the noise.)
    """
    return share * (interval + pass_time) + pass_time


def cpu_seconds(stat: str) -> float:
    """utime + stime + cutime + cstime of one /proc/PID/stat line, in seconds.

    The children's part counts what ended meanwhile (each unison of interval mode).
    """
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


# --- doing ------------------------------------------------------------------------------------

def _processes(marker: bytes, sshd_pid: int) -> list[int]:
    """Our client processes (their environment has `marker`) and the sshd with its children."""
    parents = {pid: parent_of(read["stat"]) for pid, read in processes("stat")}

    def descends_from_sshd(pid: int) -> bool:
        while pid > 1:
            if pid == sshd_pid:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid, read in processes("environ")
            if marker in read["environ"] or descends_from_sshd(pid)]


def _total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
    return total


def _loopback(workdir: Path, env: dict[str, str]) -> SshServer:
    return SshServer(workdir, env=env).start()


class World:
    """An sshd whose ssh user finds our monitor, and users synced over it (several computers of
    one user are users whose `server_home` is the same directory)."""

    def __init__(self, base: Path,
                 serve: Callable[[Path, dict[str, str]], SshServer] | None = None) -> None:
        """`serve` starts the sshd in a directory, with these variables for its sessions
        (default: on loopback); the world stops it by `SshServer.stop`."""
        self.base = base
        self.bin = base / "bin"
        self.tag = uuid.uuid4().hex  # finds this run's monitors, not those of a parallel run
        write_wrapper(self.bin, tag=self.tag)
        self.path = f"{self.bin}:{SYSTEM_PATH}"
        self.sshd = (serve or _loopback)(base / "sshd", {"PATH": self.path})
        self.users: list[Setup] = []
        self.daemons: list[DaemonProcess] = []
        self.watching: dict[int, Setup] = {}  # daemon PID -> its user, in real-time mode

    def user(self, name: str) -> Setup:
        setup = Setup(self.base / name, self.sshd)
        setup.env["PATH"] = self.path
        (setup.home / "Documents").mkdir(exist_ok=True)
        self.users.append(setup)
        return setup

    def start(self, user: Setup, watch: bool, interval: int,
              **sections: dict[str, Any]) -> DaemonProcess:
        """The user's daemon, once its first pass is done (and, watching, both its monitors
        run: its own here, and one more of this run's on the server)."""
        user.configure(**sections, sync={"watch": watch, "interval": interval,
                                         "logout_timeout": 60})
        daemon = DaemonProcess(user)
        self.daemons.append(daemon)
        daemon.wait_for_log("in sync", timeout=600)
        if watch:
            self.watching[daemon.proc.pid] = user
            wait_for(lambda: (len(local_monitors_of(user.home)) == 1
                              and len(monitors_tagged(self.tag)) == len(self.watching)), 120,
                     "a monitor on each end")
            assert "falling back" not in daemon.log, daemon.log
        return daemon

    def stop(self, daemon: DaemonProcess) -> None:
        daemon.signal(signal.SIGTERM)
        daemon.wait(120)
        user = self.watching.pop(daemon.proc.pid, None)
        wait_for(lambda: (len(monitors_tagged(self.tag)) <= len(self.watching)
                          and not (user and local_monitors_of(user.home))), 30,
                 "the monitors to end")

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc.poll() is None:
                self.stop(daemon)
            daemon.close()
        for user in self.users:
            user.close()
        self.sshd.stop()


EDITED = 5  # files the edits of `latencies(edits=True)` go to in turn


UNTOUCHED = 200  # files beside them that no write touches


def edited_files(user: Setup) -> list[Path]:
    """The files `latencies(edits=True)` edits, among UNTOUCHED others, all made before the
    daemon starts, so that its first pass syncs them. The others make it a home: the loss
    guard adds up the overwrites of the last `sync.guard_window`, each edit one, and refuses
    more than half of a home's files (and more than 10) overwritten."""
    docs = user.home / "Documents"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(UNTOUCHED):
        (docs / f"untouched-{i}.txt").write_text("untouched")
    files = [docs / f"edited-{i}.txt" for i in range(EDITED)]
    for path in files:
        path.write_text("before")
    return files


def latencies(world: World, user: Setup, writes: int, spread: float,
              edits: bool = False) -> list[float]:
    """Seconds from a local write until it is on the server: of a new file each time, or
    (`edits`) of new contents in one of the files `edited_files` made."""
    rng = random.Random(9)
    docs, server_docs = user.home / "Documents", user.server_home / "Documents"
    found = []
    for i in range(writes):
        time.sleep(rng.uniform(0.2, 0.2 + spread))
        name = f"edited-{i % EDITED}.txt" if edits else f"latency-{time.monotonic_ns()}-{i}.txt"
        text = f"edit {i}" if edits else "x"
        written = time.monotonic()
        (docs / name).write_text(text)
        wait_for(appears(server_docs / name, text), 120, f"{name} on the server")
        found.append(time.monotonic() - written)
    return found


def latency_rows(world: World, plan: Plan) -> list[Row]:
    user = world.user("latency")
    watch_daemon = world.start(user, watch=True, interval=3600)
    watched = latencies(world, user, plan.writes, 1.0)
    world.stop(watch_daemon)
    interval_daemon = world.start(user, watch=False, interval=plan.latency_interval)
    polled = latencies(world, user, plan.writes, plan.latency_interval)
    world.stop(interval_daemon)
    pass_time = statistics.median(
        timed([*CLI, "sync"], user.env) for _ in range(5))
    what = f"local write → file on the server, over {plan.writes} writes"
    short = f"interval mode, `sync.interval = {plan.latency_interval}` (measured)"
    rows = [Row("7", f"{what}, watch mode, p50", "s", [percentile(watched, 0.5)],
                [percentile(polled, 0.5)], short, limit=2),
            Row("7", f"{what}, watch mode, p99", "s", [percentile(watched, 0.99)],
                [percentile(polled, 0.99)], short, limit=5)]
    for share, name in ((0.5, "p50"), (0.99, "p99")):
        rows.append(Row("7", f"… interval mode, `sync.interval = 60`, {name}", "s",
                        [expected_interval_latency(60, pass_time, share)],
                        note=f"computed: {share:g} x (60 s + pass) + pass, no-change pass "
                        f"{pass_time:.3f} s measured"))
    return rows


def _idle_cpu(world: World, user: Setup, seconds: float, passes: int = 0) -> float:
    """CPU seconds per hour of everything of ours, both ends, while the home stays unchanged.

    Watch mode: over `seconds`. Interval mode (`passes`): from the end of one pass to the end
    of `passes` more, so that the window holds whole periods whatever the pass time.
    """
    marker = f"XDG_RUNTIME_DIR={user.runtime}".encode() + b"\0"
    assert world.sshd.proc is not None
    sshd_pid = world.sshd.proc.pid
    store = StateStore(user.state_home / "roaming-homes")

    def next_pass() -> None:
        seen = store.load()["last"]["finished"]
        wait_for(lambda: store.load()["last"]["finished"] != seen, 600, "the next pass")

    if passes:
        next_pass()
    before, started = _total_cpu(_processes(marker, sshd_pid)), time.monotonic()
    if passes:
        for _ in range(passes):
            next_pass()
    else:
        time.sleep(seconds)  # the measurement itself: nothing to await, time has to pass
    after, elapsed = _total_cpu(_processes(marker, sshd_pid)), time.monotonic() - started
    return (after - before) * 3600 / elapsed


def idle_rows(world: World, plan: Plan, pool: trees.Pool) -> list[Row]:
    rows = []
    for size in plan.idle_sizes:
        user = world.user(f"idle-{size}")
        trees.small_files(user.home / "Documents", size, pool)
        trees.copy_tree(user.home / "Documents", user.server_home / "Documents")
        timed([*CLI, "sync"], user.env)  # the first sync: archives on both ends
        daemon = world.start(user, watch=True, interval=3600)
        time.sleep(2)  # let the monitors' start-up settle before the window opens
        watching = _idle_cpu(world, user, plan.idle_seconds)
        world.stop(daemon)
        daemon = world.start(user, watch=False, interval=plan.idle_interval)
        polling = _idle_cpu(world, user, plan.idle_seconds,
                            passes=round(plan.idle_seconds / plan.idle_interval))
        world.stop(daemon)
        count = f"{size:,}".replace(",", " ")
        rows.append(Row("8", f"idle CPU per hour, unchanged home of {count} files, watch mode",
                        "s", [watching], [polling],
                        f"interval mode, `sync.interval = {plan.idle_interval}`",
                        target=0.01 if size >= 100_000 else None,
                        note=f"over {plan.idle_seconds:g} s, scaled"))
    return rows


def measure(base: Path, plan: Plan, pool: trees.Pool) -> list[Row]:
    world = World(base / "rt")
    try:
        return [*latency_rows(world, plan), *idle_rows(world, plan, pool)]
    finally:
        world.close()


NOTES = """\
Real-time mode (rows 7, 8): both modes run as `roaming-homes daemon` over the loopback sshd,
whose ssh user has our `unison-fsmonitor` on its PATH; real-time mode syncs each change with one
guarded pass over the changed paths.
- **Latency**: one new file at a time, written at a random moment, until it exists on the
  server (polled every 50 ms). Interval mode is measured with a short interval; for the
  default 60 s it is computed from the measured no-change pass time (a write waits a uniform
  share of `interval + pass` for the next pass, then one pass).
- **Idle CPU**: user + system time from `/proc/PID/stat` (children that ended included) of the
  daemon and everything it runs (unison, ssh, both monitors), sshd and what it runs for the user
  (`unison -server`, the server's monitor), over a window of an unchanged home (interval mode:
  from the end of a pass to the end of a later one), scaled to one hour.
"""
