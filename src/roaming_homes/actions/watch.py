"""Real-time mode: file monitors on both sides say what changed, and each change is synced by
one guarded pass over just those paths.

unison's own `-repeat watch` propagates every cycle at once, with no way to see its plan first,
so it cannot be guarded (a deletion made in small batches would never be stopped). Here the loop
is ours: our `unison-fsmonitor` runs in tree mode (its `TREE` command) on this computer and, over
the shared ssh connection, on the server; when either reports changes, `engine.guarded_pass`
syncs those paths (`-path`) with every guard of a single pass, the loss guard's sliding window
(`sync.guard_window`) adding up the deletions of successive cycles. A full guarded pass starts
the session and repeats every `sync.rescan_interval` seconds, for changes no monitor saw.

A new small file made here does not wait for unison's exchange (about sixteen round trips):
`sending` sends it on its own in one, and a guarded pass over such files settles them into
unison's archives soon after (`Wake.SETTLE`).

Idle, the loop sleeps in `select` on the monitors' pipes: an unchanged home costs nothing.

What a cycle carried from here to the server, the server's monitor reports back a moment later
(its echo; what the cycle fetched from there is not expected back). That report is held for
`ECHO_WINDOW` seconds (`Echoes`) and goes with the next cycle, or on its own once the window is
over, instead of starting a pass at once: over a slow link that pass (unison's whole exchange,
for nothing) held up the next change made here by seconds. Nothing reported is dropped: a
change made there by another computer meanwhile is synced at most `ECHO_WINDOW` seconds later,
as any change reported.

The server's monitor is started with `--idle-timeout server.watch_idle_timeout` and ends the
session's ssh connection there when this computer says nothing for that long (it vanished:
lid closed, network down); a thread of the session sends it a keep-alive (`WAIT`, which every
version of the monitor takes without a word) every fifth of that, passes or not.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from roaming_homes.actions import sending
from roaming_homes.actions import sync as engine
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import COMPLETED, Reason, Result, SyncOutcome, result_of
from roaming_homes.paths import Locations, is_below
from roaming_homes.relative import collapse
from roaming_homes.safety.guards import is_excluded
from roaming_homes.session import progress
from roaming_homes.session.lock import STOP_GRACE, SyncLock
from roaming_homes.session.state import StateStore
from roaming_homes.unison import frontends, profile, push, runner
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.fsmonitor import quote, split_on_space, unquote
from roaming_homes.unison.ignore import is_ignored

log = logging.getLogger(__name__)

OutcomeSink = Callable[[SyncOutcome], None]
ProgressSink = Callable[[progress.Progress], None]
LineSink = Callable[[str], None]
MONITOR = "unison-fsmonitor"
_REPLICA = "0" * 32  # the one replica each monitor watches (its archive-hash slot)
_EXIT_WAIT = 5.0  # seconds a monitor that closed its output gets to exit
_ANSWER_TIMEOUT = 30.0  # seconds a monitor may take to answer (a large tree is walked at START)
KEEPALIVES = 5  # keep-alives sent to the server's monitor within its idle timeout
ECHO_WINDOW = 5.0  # seconds a report of what the last cycle wrote on the server is held


class Wake(enum.Enum):
    """What ends the loop's sleep: the states it moves through between passes."""

    CHANGES = "changes"  # the monitors reported changed paths: a pass over just those
    RESCAN = "rescan"  # the full rescan is due, or a monitor lost events: a full pass
    SETTLE = "settle"  # new files sent on their own are due for unison's pass (`push`)
    STOP = "stop"  # the daemon stops the session (or makes way for a pass of the user's)


@dataclass
class WatchResult:
    """Why real-time mode ended. `fallback`: it cannot run here; sync by interval instead."""

    reason: str
    fallback: bool = False
    outcome: SyncOutcome | None = None  # the failure that ended it (offline, busy, fatal)


@dataclass
class Echoes:
    """The server's reports of paths the last cycle wrote there, held until the next cycle or
    the end of `ECHO_WINDOW` (see the module's docstring)."""

    paths: tuple[str, ...] = ()  # what changed here, in the last cycle that transferred
    until: float = 0.0  # monotonic end of the window
    held: list[str] = field(default_factory=list)

    def expect(self, paths: tuple[str, ...], now: float) -> None:
        """A cycle over `paths` transferred: their echoes may come."""
        self.paths, self.until = paths, now + ECHO_WINDOW

    def take(self, reported: list[str], now: float) -> list[str]:
        """What of the server's report to sync now: all of it, unless every path lies below
        what the last cycle synced and its window is open (then it is held)."""
        if reported and now < self.until and all(is_below(p, self.paths) for p in reported):
            self.held.extend(reported)
            return []
        return reported

    def due(self, now: float) -> bool:
        return bool(self.held) and now >= self.until

    def release(self) -> list[str]:
        """The held paths, to sync with the cycle about to run (or its full pass)."""
        held, self.held = self.held, []
        return held


class MonitorGone(Exception):
    """A monitor ended, failed or cannot watch (the message says why)."""


class MonitorLink:
    """One `unison-fsmonitor` in tree mode, spoken to over its pipes: on this computer a child
    process, on the server a command over ssh. Runs in a process group of its own."""

    def __init__(self, argv: list[str], where: str) -> None:
        self.where = where
        self.proc = runner.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.fd = self.proc.stdout.fileno()
        self._buffer = b""
        self.fspath = ""  # the root the monitor watches below (set by `start`)
        # An exchange (a command and its answer) is never cut by a keep-alive (`keepalive`).
        self.lock = threading.Lock()
        self.started = False

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise MonitorGone(f"the monitor {self.where} ended") from exc

    def has_line(self) -> bool:
        return b"\n" in self._buffer

    def read_line(self, timeout: float = _ANSWER_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise MonitorGone(f"the monitor {self.where} did not answer")
            self.fill()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="surrogateescape")

    def fill(self) -> None:
        """Read what the monitor wrote (call when its pipe is readable)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_EXIT_WAIT)  # its exit status says why: 127, not found
            missing = self.proc.returncode == 127
            raise MonitorGone(f"the monitor {self.where} ended"
                              + (" (is it installed there?)" if missing else ""))
        self._buffer += chunk

    def expect_ok(self, what: str) -> None:
        answer = self.read_line()
        while answer.startswith("CHANGES "):
            # said before our command cancelled the wait: the changes stay pending in the
            # monitor, which says so again after the next WAIT
            answer = self.read_line()
        if answer != "OK":
            command, detail = split_on_space(answer)
            if command == "ERROR":
                raise MonitorGone(f"the monitor {self.where} refused {what}: {unquote(detail)}")
            raise MonitorGone(f"the monitor {self.where} answered {what} unexpectedly")

    def start(self, fspath: str, paths: list[str]) -> None:
        """Watch `paths` below `fspath` (whole trees), then wait for changes."""
        with self.lock:
            self.fspath = fspath
            if self.read_line() != "VERSION 1":
                raise MonitorGone(f"the monitor {self.where} speaks another protocol")
            self.send("TREE")
            self.expect_ok("tree mode (an older unison-fsmonitor?)")
            for path in paths:
                self.send(f"START {_REPLICA} {quote(fspath)} {quote(path)}")
                self.expect_ok("to watch")
            self.send("DONE")
            self.send(f"WAIT {_REPLICA}")
            self.started = True

    def rewatch(self, path: str) -> None:
        """Watch a start path again, after it was deleted, replaced or created: the watches
        below it went with the old directory, and nothing above it is watched."""
        with self.lock:
            self.send(f"START {_REPLICA} {quote(self.fspath)} {quote(path)}")
            self.expect_ok("to watch")
            self.send("DONE")
            self.send(f"WAIT {_REPLICA}")

    def changes(self) -> list[str]:
        """After the monitor said CHANGES: the changed paths; then it is waited on again.

        A keep-alive (a WAIT) that reached the monitor after it said CHANGES makes it say so
        again, before it answers our CHANGES: such repeats are skipped."""
        with self.lock:
            line = self.read_line()
            command, detail = split_on_space(line)
            if command == "ERROR":
                raise MonitorGone(f"the monitor {self.where} failed: {unquote(detail)}")
            if command != "CHANGES":
                raise MonitorGone(f"the monitor {self.where} said something unexpected")
            self.send(f"CHANGES {_REPLICA}")
            paths = []
            while (line := self.read_line()) != "DONE":
                command, arg = split_on_space(line)
                if command == "CHANGES":
                    continue
                if command != "RECURSIVE":
                    raise MonitorGone(f"the monitor {self.where} said something unexpected")
                paths.append(unquote(arg))
            self.send(f"WAIT {_REPLICA}")
            return paths

    def keepalive(self) -> None:
        """Tell the monitor this computer is still there, between exchanges: a WAIT for what
        is waited for already (every version takes it without a word, unless it has changes
        to report, which it then says again; `changes` skips the repeat)."""
        with self.lock:
            if self.started:
                self.send(f"WAIT {_REPLICA}")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def local_monitor() -> list[str]:
    """Our own monitor, from the Python that runs us (the one on PATH may not know TREE)."""
    return [sys.executable, "-m", "roaming_homes.unison.fsmonitor"]


def remote_monitor(server: transport.Server) -> list[str]:
    """The server's monitor: it ends the session's connection there when this computer has
    been silent for `server.watch_idle_timeout` seconds (an older one ignores the option).
    `exec`, so that the login shell that sshd runs it with does not stay as a process of its
    own for the whole session (dash does not replace itself; every shell knows `exec`)."""
    return ["exec", MONITOR, "--idle-timeout", str(server.watch_idle_timeout)]


def run_watch(config: Config, locations: Locations, stop: threading.Event, *,
              on_outcome: OutcomeSink | None = None,
              on_progress: ProgressSink | None = None) -> WatchResult:
    """Keep the home in sync in real time until `stop` is set.

    Holds the sync lock throughout. The first full pass, and every cycle that transferred,
    refused or failed something, is recorded in the state like a pass and handed to
    `on_outcome`. Returns when stopped, when a pass ends in a way interval mode must handle
    (offline, busy, a fatal error: the outcome says), or with `fallback` when a monitor cannot
    run here or on the server.
    """
    server = transport.Server.from_config(config["server"])
    if is_excluded(locations.user, config["sync"]["excluded_users"]):
        return WatchResult(f"user {locations.user} is excluded (sync.excluded_users)")
    lock = SyncLock(locations.lock_file)
    try:
        lock.acquire("watch")
    except RoamingHomesError as exc:
        busy = Result.BUSY if exc.code == ExitCode.TRY_LATER else Result.FAILED
        return WatchResult(exc.message, outcome=engine.outcomes(server)(busy, exc.message))
    abort = threading.Event()
    job = engine.Pass(config, locations, server, StateStore(locations.state_dir), abort,
                      lock.fileno)
    session = _Session(job, stop, on_outcome or _ignore_outcome, on_progress)
    waker = threading.Thread(target=session.wake_on_stop, name="watch-waker", daemon=True)
    waker.start()
    try:
        return session.run()
    finally:
        session.close()
        lock.release()


def _ignore_outcome(_outcome: SyncOutcome) -> None:
    pass


# A cycle's outcome that ends real-time mode: interval mode (and the daemon's health) handle
# these, and a replica that is not the right one. Conflicts, partial passes and the loss guard's
# refusals do not end it: the guard holds back what it refused, other changes go on.
_ENDS_WATCH = frozenset({Result.OFFLINE, Result.BUSY, Result.INTERRUPTED, Result.FAILED,
                         Result.CONFIG_ERROR})


def _wanted(changed: list[str], paths: list[str], plan: profile.Plan) -> tuple[str, ...]:
    """The paths a cycle syncs for these reported ones: below the synced paths, not ignored,
    nameable in a profile, the fewest that cover them all."""
    return tuple(collapse(profile.nameable(p, paths) for p in changed
                          if is_below(p, paths)
                          and not is_ignored(p, plan.ignore_paths, plan.ignore_names)))


def _ends_watch(outcome: SyncOutcome) -> bool:
    return outcome.result in _ENDS_WATCH or outcome.reason == Reason.REPLICA


class _Session:
    """The monitors, the pending changes and the passes of one real-time session."""

    def __init__(self, job: engine.Pass, stop: threading.Event, on_outcome: OutcomeSink,
                 on_progress: ProgressSink | None) -> None:
        self.job, self.stop, self.on_outcome = job, stop, on_outcome
        self.on_progress = on_progress
        self.monitors: list[MonitorLink] = []  # this computer's, then the server's
        self.echoes = Echoes()
        # What the session's passes came to so far (`engine.still_left`): a cycle looks at
        # some paths only, and what it did not look at is as the last pass left it.
        self.left: SyncOutcome | None = None
        self.wake_r, self.wake_w = os.pipe()
        self.finished = threading.Event()
        # The waker writes to wake_w while close() may close it: a descriptor closed and then
        # reused (by a Popen's error pipe) must never receive the wake-up byte.
        self._wake_lock = threading.Lock()

    def keep_alive(self, monitor: MonitorLink, every: float) -> None:
        """Send `monitor` a keep-alive every `every` seconds until the session ends (runs in
        its own thread), so that the server's monitor knows this computer is still there
        through idle hours and long passes alike."""
        while not self.finished.wait(every):
            try:
                monitor.keepalive()
            except MonitorGone:
                return  # the loop finds out on its own

    def wake_on_stop(self) -> None:
        """Wake the loop at once when `stop` is set; abort a cycle still running STOP_GRACE
        seconds later (runs in its own thread). Should the session end without a stop, this
        thread notices within one rescan interval (the daemon sets `stop` once the watch is
        over, which ends it at once); idle, it must not wake on a timer of its own."""
        while not self.stop.wait(self.job.config["sync"]["rescan_interval"]):
            if self.finished.is_set():
                return
        with self._wake_lock, contextlib.suppress(OSError):
            if not self.finished.is_set():
                os.write(self.wake_w, b"s")
        if not self.finished.wait(STOP_GRACE):
            assert self.job.abort is not None
            self.job.abort.set()

    def close(self) -> None:
        with self._wake_lock:
            self.finished.set()
            for fd in (self.wake_r, self.wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        for monitor in self.monitors:
            monitor.close()

    def record(self, outcome: SyncOutcome) -> SyncOutcome:
        """Record a cycle like a pass and report it; returns what was reported (a full disk
        turns it into that failure, which ends real-time mode like any failure)."""
        outcome = engine.record(self.job.store, outcome)
        self.on_outcome(outcome)
        return outcome

    def pass_(self, only: tuple[str, ...] | None = None, always: bool = False,
              winner: str | None = None, sent: int = 0) -> SyncOutcome:
        """One guarded pass, with its progress published like any pass's (`status` shows a
        pass running; a big first sync is announced). It is recorded (`always`, or when it
        transferred or did not simply end in sync) before its progress goes: whoever follows
        the progress finds the outcome once the pass is over. `winner`: as for
        `engine.guarded_pass`; `sent`: files sent on their own that it settles, counted as
        transferred (that is when `status` and the history hear of them)."""
        tracker = progress.Tracker(self.job.locations, self.on_progress)
        job = replace(self.job, on_output=tracker.wrap(self.job.on_output), tracker=tracker)
        try:
            own = engine.guarded_pass(job, engine.outcomes(self.job.server), only=only,
                                      winner=winner, sent=sent)
            outcome = own if only is None else engine.still_left(own, self.left, only)
            if outcome.result in COMPLETED:
                self.left = outcome
            if always or own.transferred or own.result != Result.IN_SYNC:
                outcome = self.record(outcome)
            return outcome
        finally:
            tracker.close()

    def run(self) -> WatchResult:
        job = self.job
        paths, _ = engine.sync_paths(job.config, job.locations)
        try:
            self._start_monitors(paths)
        except transport.ConnectError as exc:  # the server cannot be used: interval mode's case
            failed = engine.outcomes(job.server)(result_of(exc.reason), exc.message,
                                                 reason=exc.reason, notes=list(exc.details),
                                                 action=exc.action)
            self.record(failed)  # said like a pass's: the daemon's health, a notification
            return WatchResult(exc.message, outcome=failed)
        except (MonitorGone, OSError) as exc:
            return WatchResult(f"real-time mode unavailable: {exc}", fallback=True)
        first = self.pass_(always=True)
        if _ends_watch(first):
            return WatchResult(first.message, outcome=first)
        return self._loop(paths)

    def _start_monitors(self, paths: list[str]) -> None:
        job = self.job
        server = job.server
        local = MonitorLink(local_monitor(), "on this computer")
        self.monitors.append(local)
        local.start(str(job.locations.home), paths)
        if server.is_local:
            remote = MonitorLink(local_monitor(), "of the server directory")
            fspath = server.local_root
        else:
            server, socket = frontends.connect(server, job.locations.control_dir)
            # The passes of this session go through the front-end its monitor watches from
            # (it hears only of writes made through its own mount of shared storage); when
            # that one fails, the session ends and the next one chooses again.
            job.server = replace(server, hosts=(server.host,))
            remote = MonitorLink(transport.remote_command(server, socket, remote_monitor(server)),
                                 f"on the server {server.host}")
            fspath = server.home
        self.monitors.append(remote)
        remote.start(fspath, paths)
        if not server.is_local:
            threading.Thread(target=self.keep_alive, name="watch-keepalive", daemon=True,
                             args=(remote, server.watch_idle_timeout / KEEPALIVES)).start()

    def _loop(self, paths: list[str]) -> WatchResult:
        rescan = self.job.config["sync"]["rescan_interval"]
        rescan_at = time.monotonic() + rescan
        plan = engine.build_plan(self.job.config, self.job.locations, self.job.server, None,
                                 paths)
        outbox = sending.Outbox(self.job, plan, paths)
        outbox.learn()
        while True:
            try:
                wake, here, there = self._wait(rescan_at, outbox)
                match wake:
                    case Wake.STOP:
                        self._settle(outbox, list(outbox.ledger))
                        return WatchResult("stopped")
                    case Wake.RESCAN:
                        outcome = self._settle(outbox, list(outbox.ledger))
                        if outcome is None or outcome.result in COMPLETED:
                            outcome = self.pass_()
                            if outcome.result in COMPLETED:
                                outbox.learn()  # what the full pass synced is known now
                        rescan_at = time.monotonic() + rescan
                    case Wake.SETTLE:
                        outcome = self._settle(outbox, list(outbox.ledger)) or self.left
                    case Wake.CHANGES:
                        outcome = self._changes(outbox, here, there, paths, plan)
                if outcome is None:
                    continue
            except MonitorGone as exc:
                return WatchResult(f"real-time mode interrupted: {exc}")
            if _ends_watch(outcome):
                return WatchResult(outcome.message, outcome=outcome)

    def _changes(self, outbox: sending.Outbox, here: list[str], there: list[str],
                 paths: list[str], plan: profile.Plan) -> SyncOutcome | None:
        """A cycle over what the monitors reported (`here`: this computer's; `there`: the
        server's): new small files made here are sent on their own (`sending`), and the rest
        synced by a pass over just those paths (files sent before and changed again settled
        first). None when there was nothing to sync."""
        changed = here + there
        sent = outbox.send(here, there)
        wanted = _wanted([p for p in changed if p not in sent], paths, plan)
        if not wanted:
            return None
        # watched afresh before the pass looks: what changes after it is seen
        self._rewatch([p for p in wanted if p in paths])
        settled = self._settle(outbox, [p for p in outbox.ledger if is_below(p, wanted)])
        if settled is not None and settled.result not in COMPLETED:
            # what it did not settle stays out of unison's rules: a plain pass would copy
            # files refused deleting there back here, as new on the server
            wanted = tuple(p for p in wanted if p not in outbox.ledger)
            if not wanted or _ends_watch(settled):
                return settled
        outcome = self.pass_(wanted)
        if outcome.result in COMPLETED:
            outbox.synced(changed)
        if outcome.transferred:
            # what changed here went to the server: its monitor will echo it (what came from
            # there did not: another computer's next edit of it must not wait)
            self.echoes.expect(_wanted(here, paths, plan), time.monotonic())
        return outcome

    def _settle(self, outbox: sending.Outbox, paths: list[str]) -> SyncOutcome | None:
        """Settle files sent on their own (`paths`, from the ledger): a pass over each group
        that `Outbox.groups` makes, with that group's winner. What a pass that did not
        complete was over stays in the ledger, for the next time. None when `paths` is
        empty."""
        if not paths:
            return None
        outcome = None
        for winner, group in outbox.groups(paths).items():
            forced = None if winner is push.Winner.UNISON else winner.value
            outcome = self.pass_(tuple(group), winner=forced, sent=len(group))
            if outcome.result not in COMPLETED:
                outbox.unsettled()
                return outcome
            outbox.settled(group, winner)
        return outcome

    def _rewatch(self, starts: list[str]) -> None:
        """Start paths that changed themselves (a synced folder deleted, replaced or made):
        both monitors watch them afresh."""
        for path in starts:
            for monitor in self.monitors:
                monitor.rewatch(path)

    def _wait(self, rescan_at: float,
              outbox: sending.Outbox) -> tuple[Wake, list[str], list[str]]:
        """What wakes the loop next: paths the monitors report (this computer's, then the
        server's, its echoes of the last cycle held, `Echoes`), the rescan falling due (or a
        monitor that lost events: "" among the paths), the files sent on their own falling due
        for settling, or the stop."""
        fds = [m.fd for m in self.monitors] + [self.wake_r]
        while True:
            if self.stop.is_set():
                return Wake.STOP, [], []
            now = time.monotonic()
            reports = [m.changes() if m.has_line() else [] for m in self.monitors]
            if any("" in report for report in reports):
                self.echoes.release()  # the full pass covers them
                return Wake.RESCAN, [], []
            *ours, reported = reports
            here = [path for report in ours for path in report]
            # what was sent on its own: its settling pass looks at the server's side
            there = self.echoes.take([p for p in reported if p not in outbox.ledger], now)
            if here or there or self.echoes.due(now):
                return Wake.CHANGES, here, there + self.echoes.release()
            if rescan_at <= now:
                self.echoes.release()
                return Wake.RESCAN, [], []
            if outbox.due(now):
                return Wake.SETTLE, [], []
            wake_at = min(rescan_at, self.echoes.until) if self.echoes.held else rescan_at
            if (settle_at := outbox.settle_at()) is not None:
                wake_at = min(wake_at, settle_at)
            ready = select.select(fds, [], [], wake_at - now)[0]
            for monitor in self.monitors:
                if monitor.fd in ready:
                    monitor.fill()
