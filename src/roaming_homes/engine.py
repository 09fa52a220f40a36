"""One sync pass: guards -> server reachable -> unison -> outcome -> state.

The engine knows nothing of D-Bus, systemd or terminals: it returns a `SyncOutcome`, and the
CLI or the daemon decide what to show. Output lines are handed to an optional callback.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roaming_homes import config as config_mod
from roaming_homes import guards, progress, transport, unison
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.guards import SyncLock, is_excluded
from roaming_homes.paths import Locations, is_below, xdg_user_dirs
from roaming_homes.state import StateStore, ensure_private_dir, write_atomic

LineSink = Callable[[str], None]

RESULTS = {
    ExitCode.IN_SYNC: "in-sync",
    ExitCode.NEEDS_USER: "conflicts",
    ExitCode.PARTIAL: "partial",
    ExitCode.FAILED: "failed",
    ExitCode.REFUSED: "refused",
    ExitCode.TRY_LATER: "offline",
}
_CONNECTION_LOST = ("Lost connection with the server", "Connection to the server lost")
_ARCHIVE_MISMATCH = ("inconsistent state", "archive file is missing on some hosts")
_STALE_LOCK = "archives are locked"
_INTERRUPTED = "stopped before it finished (time was up); the next pass completes it"
# unison's own guards (confirmbigdel, mountpoint) abort before propagating anything.
_UNISON_REFUSALS = ("completely emptied", "is designated as a mountpoint")


@dataclass
class SyncOutcome:
    """What one pass did; this is what `sync --json`, `status` and the history show."""

    result: str
    exit_code: int
    message: str
    started: str
    finished: str
    duration: float
    server: str
    transferred: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: list[str] = field(default_factory=list)
    failed_paths: list[str] = field(default_factory=list)
    first_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _relative_to_home(path: Path, home: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(home.resolve())
    except ValueError:
        return None
    return str(rel) if str(rel) != "." else None


def sync_paths(config: Config, locations: Locations) -> tuple[list[str], list[str]]:
    """The paths to sync and warnings about XDG directories that were left out."""
    configured = config["sync"]["paths"]
    if configured:
        return list(configured), []
    paths, warnings = [], []
    for rel in xdg_user_dirs(locations):
        if not (locations.home / rel).is_dir():
            continue
        if problem := config_mod.check_relative_path(rel):
            warnings.append(f"XDG user directory skipped: {problem}")
            continue
        paths.append(rel)
    return paths, warnings


def build_plan(config: Config, locations: Locations, server: transport.Server,
               socket: Path | None, paths: list[str]) -> unison.Plan:
    """What unison is told for `paths` (as `sync_paths` resolved them for this pass)."""
    # Our own state, archives and lock never travel, whatever `paths` says.
    # The replica marker sits at the root and is never synced either: each side keeps its own.
    own_dirs = (locations.state_dir, locations.runtime_dir)
    own = [".unison", guards.MARKER] + [
        rel for rel in (_relative_to_home(p, locations.home) for p in own_dirs) if rel]
    ignores = list(dict.fromkeys([*config["sync"]["ignore_paths"], *own]))
    return unison.Plan(
        local_root=str(locations.home),
        server_root=server.unison_root,
        paths=tuple(paths),
        ignore_paths=tuple(ignores),
        ignore_names=tuple(config["sync"]["ignore_names"]),
        prefer=config["sync"]["prefer"],
        sshargs=() if server.is_local else tuple(transport.ssh_options(server, socket)),
        label=f"roaming-homes: {locations.user} <-> {server.label}",
        backups=config["sync"]["backups"],
    )


def _is_first_run(store: StateStore, key: str, unison_dir: Path) -> bool:
    """No archive for this pair of roots yet (or state lost): unison takes the union."""
    return not any(unison_dir.glob("ar*")) or not store.is_synced(key)


def _unison_refusal(lines: list[str]) -> str | None:
    """unison's confirmbigdel/mountpoint abort as one line (with the paths it names)."""
    for index, line in enumerate(lines):
        if any(marker in line for marker in _UNISON_REFUSALS):
            text = line.strip()
            if text.endswith(":"):  # "The following paths have been completely emptied …:"
                named = [n.strip() for n in
                         itertools.takewhile(lambda n: n.startswith("  '"), lines[index + 1:])]
                text += " " + ", ".join(named)
            return text
    return None


def _classify(run: unison.Run, summary: unison.Summary) -> tuple[ExitCode, str]:
    code = run.returncode
    if code == 0:
        if summary.nothing_to_do:
            return ExitCode.IN_SYNC, "in sync: nothing to do"
        return ExitCode.IN_SYNC, f"in sync: {summary.transferred} item(s) transferred"
    if code == 1:
        names = ", ".join(summary.conflicts[:5]) + (" …" if len(summary.conflicts) > 5 else "")
        return ExitCode.NEEDS_USER, (f"{len(summary.conflicts) or summary.skipped} conflict(s) "
                                     f"need you: {names} (see `roaming-homes conflicts`)")
    if code == 2:
        names = ", ".join(summary.failed_paths[:5])
        return ExitCode.PARTIAL, f"{summary.failed} item(s) failed to transfer: {names}"
    fatal = summary.fatal or next((line for line in reversed(run.lines) if line.strip()), "")
    if refusal := _unison_refusal(run.lines):
        return ExitCode.REFUSED, (f"unison refused: {refusal} Nothing was synced. If the "
                                  "deletions are intended, run `roaming-homes sync --force`")
    if any(marker in fatal for marker in _CONNECTION_LOST):
        return ExitCode.TRY_LATER, f"connection to the server lost: {fatal}"
    if code < 0:
        return ExitCode.FAILED, f"unison was killed by signal {-code}"
    return ExitCode.FAILED, f"unison failed: {fatal or f'exit code {code}'}"


def _outcomes(server: transport.Server) -> Callable[..., SyncOutcome]:
    """A maker of outcomes for a pass (or watch cycle) that starts now."""
    started, clock = _now(), time.monotonic()

    def outcome(code: ExitCode, message: str, result: str | None = None,
                **counts: Any) -> SyncOutcome:
        return SyncOutcome(result=result or RESULTS[code], exit_code=int(code), message=message,
                           started=started, finished=_now(),
                           duration=round(time.monotonic() - clock, 3), server=server.label,
                           **counts)

    return outcome


def run_pass(config: Config, locations: Locations, *, first_run: bool = False,
             force: bool = False, on_line: LineSink | None = None,
             on_progress: Callable[[progress.Progress], None] | None = None,
             abort: threading.Event | None = None, lock_wait: float = 0) -> SyncOutcome:
    """Run one pass and record it. Never raises for an expected failure: see the outcome.

    While unison runs, `on_progress` gets snapshots and progress.json is kept up to date.
    `abort` (set by another thread) stops the pass cleanly, e.g. when a logout's time is up;
    `lock_wait` is how long to wait for another pass of this user to finish. `force` lets this
    one pass propagate mass deletions (sync.max_delete, unison's confirmbigdel); it never
    overrides the replica markers (`first_run` is the way back there).
    """
    server = transport.Server.from_config(config["server"])
    outcome = _outcomes(server)
    if is_excluded(locations.user, config["sync"]["excluded_users"]):
        return outcome(ExitCode.IN_SYNC, f"user {locations.user} is excluded "
                       "(sync.excluded_users): nothing synced", result="excluded")
    lock = SyncLock(locations.lock_file)
    try:
        lock.acquire(wait=lock_wait)
    except RoamingHomesError as exc:
        return outcome(exc.code, exc.message, result="busy")
    store = StateStore(locations.state_dir)
    tracker = progress.Tracker(locations, on_progress)
    try:
        result = _locked_pass(config, locations, server, store, first_run,
                              tracker.wrap(on_line or _ignore), outcome, abort, force=force,
                              lock_fd=lock.fileno)
        store.record(result.to_dict())
        return result
    finally:
        tracker.close()
        lock.release()


def _ignore(_line: str) -> None:
    pass


@dataclass
class _Prepared:
    """A pass that may start: the profile is written, the server answers, the guards agree."""

    key: str  # the pair of roots, as remembered in the state
    first: bool
    plan: unison.Plan
    server: transport.Server
    socket: Path | None
    # The replicas as the guards saw them before unison. Over ssh the server judges its own
    # replica as unison connects (guards.guard_command): its probe is then read from
    # unison's output, and is missing here until unison has run.
    found: dict[str, guards.Probe]
    recorded: dict[str, Any]  # what the guards remembered from the last good pass
    extra: list[str]  # unison arguments the guards add (-servercmd, -mountpoint, ...)
    verdict: Callable[[dict[str, guards.Probe]], str | None]  # why replicas like these are refused
    caches: dict[str, guards.DirCache]  # the walks of the replicas counted on this computer


def _prepare(config: Config, locations: Locations, server: transport.Server,
             store: StateStore, first_run: bool, on_line: LineSink,
             outcome: Callable[..., SyncOutcome], force: bool = False,
             abort: threading.Event | None = None,
             probe_server: bool = False) -> _Prepared | SyncOutcome:
    """Everything before unison runs; an outcome when the pass cannot (or must not) run.

    Over ssh the server's replica is judged by the server itself when unison connects, in the
    same ssh session (one command per pass, not two). `probe_server` also probes it here
    first: `resolve` hands unison over to the user, who should get our message rather than
    unison's lost connection, and real-time mode judges the server before it starts a unison
    that runs for hours.
    """
    paths, warnings = sync_paths(config, locations)
    for warning in warnings:
        on_line(warning)
    if not paths:
        return outcome(ExitCode.IN_SYNC, "nothing to sync: none of the configured paths exist "
                       "(set sync.paths)")
    try:
        socket = transport.connect(server, locations.control_dir)
    except RoamingHomesError as exc:
        return outcome(exc.code, exc.message)
    plan = build_plan(config, locations, server, socket, paths)
    try:
        profile = unison.build_profile(plan)
    except unison.ProfileValueError as exc:
        return outcome(ExitCode.CONFIG, str(exc), result="config-error")
    _write_profile(locations.unison_dir / f"{unison.PROFILE}.prf", profile)
    ensure_private_dir(locations.backup_dir)
    key = f"{plan.local_root} <-> {plan.server_root}"
    first = first_run or _is_first_run(store, key, locations.unison_dir)
    args = (plan.paths, plan.ignore_paths, plan.ignore_names)
    roots = _counted_here(plan, server)
    caches = {side: guards.DirCache(locations.state_dir / f"counts-{side}.json", [root, *args])
              for side, root in roots.items()}
    found = {side: guards.probe_local(Path(root), *args, caches[side])
             for side, root in roots.items()}
    recorded = store.replicas(key)
    # A large server replica is counted with a cache (guards.CACHED_COUNT_FROM).
    cached = (isinstance(recorded.get("server_files"), int)
              and recorded["server_files"] >= guards.CACHED_COUNT_FROM)
    if not server.is_local and probe_server:
        try:
            found["server"] = _probe_server(plan, server, socket, abort, cached)
        except RoamingHomesError as exc:
            if abort is not None and abort.is_set():
                return outcome(ExitCode.TRY_LATER, _INTERRUPTED, result="interrupted")
            return outcome(exc.code, exc.message)
    ids = {side: recorded.get(f"{side}_id", "") for side in ("local", "server")}
    counts = {side: recorded[f"{side}_files"] for side in ("local", "server")
              if isinstance(recorded.get(f"{side}_files"), int) and not force}
    names = {"local": plan.local_root, "server": server.label}
    max_delete = config["sync"]["max_delete"]

    def verdict(replicas: dict[str, guards.Probe]) -> str | None:
        if first:
            return None
        return (guards.marker_refusal(ids, replicas, names)
                or guards.deletion_refusal(counts, replicas, names, max_delete))

    if refusal := verdict(found):
        on_line(refusal)
        return outcome(ExitCode.REFUSED, refusal)
    extra: list[str] = []
    if not server.is_local:
        judge = {} if first else {
            "expect_marker": ids["server"] or None,
            "min_files": (guards.deletion_floor(counts["server"], max_delete)
                          if "server" in counts else None)}
        probe = guards.probe_script(server.home, *args, **judge, cached=cached)
        extra += ["-servercmd", unison.escape_sshargs([guards.guard_command(probe)])]
    if not first and all(ids.values()):
        # unison checks the markers again after its own scan: a share that vanishes
        # between our probe and its update detection still stops the pass.
        extra += ["-mountpoint", guards.MARKER]
    if force:
        extra.append("-confirmbigdel=false")
    return _Prepared(key, first, plan, server, socket, found, recorded, extra, verdict,
                     caches)


def _counted_here(plan: unison.Plan, server: transport.Server) -> dict[str, str]:
    """The replicas whose files this computer counts itself (side -> root): the local home,
    and the server's too when it is a local directory (over ssh the server counts its own)."""
    return {"local": plan.local_root, **({"server": server.local_root} if server.is_local else {})}


def _write_profile(path: Path, text: str) -> None:
    """Write unison's profile unless it already says exactly this (most passes: it does)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)


def prepare_interactive(config: Config, locations: Locations, on_line: LineSink) -> _Prepared:
    """`_prepare` for `resolve` (the caller holds the lock). Raises RoamingHomesError when the
    pass could not run or the guards refuse it."""
    server = transport.Server.from_config(config["server"])
    prepared = _prepare(config, locations, server, StateStore(locations.state_dir), False,
                        on_line, _outcomes(server), probe_server=True)
    if isinstance(prepared, SyncOutcome):
        raise RoamingHomesError(prepared.message, ExitCode(prepared.exit_code))
    return prepared


def _locked_pass(config: Config, locations: Locations, server: transport.Server,
                 store: StateStore, first_run: bool, on_line: LineSink,
                 outcome: Callable[..., SyncOutcome],
                 abort: threading.Event | None, *, force: bool = False,
                 lock_fd: int | None = None) -> SyncOutcome:
    prepared = _prepare(config, locations, server, store, first_run, on_line, outcome, force,
                        abort)
    if isinstance(prepared, SyncOutcome):
        return prepared
    first, extra = prepared.first, prepared.extra
    fds = () if lock_fd is None else (lock_fd,)
    with store.open_log() as log:
        def sink(line: str) -> None:
            log.write(line)
            on_line(line)

        def run_unison(first: bool, more: tuple[str, ...] = ()) -> tuple[unison.Run,
                                                                        unison.Summary]:
            return _run_unison(config, locations, first, sink, abort, [*extra, *more], fds)

        log.write(f"--- pass started (pid {os.getpid()}, first run: {first}) ---")
        early = (_run_first_paths(config, prepared.plan, locations, sink, abort, extra, fds)
                 if first else None)
        run, summary = run_unison(first)
        if early:
            summary.transferred += early.transferred
        if abort is not None and abort.is_set():
            return outcome(ExitCode.TRY_LATER, _INTERRUPTED, result="interrupted",
                           transferred=summary.transferred)
        if run.returncode == 3 and _STALE_LOCK in summary.fatal:
            # Our flock is held, and unison inherits it: no other unison of ours can be using
            # these archives, so the lock is a leftover of a killed pass.
            sink("stale unison lock left by an interrupted pass: removing it (-ignorelocks)")
            run, summary = run_unison(first, ("-ignorelocks",))
        if run.returncode == 3 and not first and _archives_disagree(summary):
            # One side lost its archive (reinstalled server, restored backup): a union sync is
            # the safe way back; it never deletes.
            sink("archives disagree; retrying as a first sync (-ignorearchives)")
            first = True
            run, summary = run_unison(first)
        if refusal := _server_refusal(prepared, run.lines):
            sink(refusal)
            return outcome(ExitCode.REFUSED, refusal)
        result = _finish(store, prepared.key, run, summary, first, outcome)
        if result.exit_code in (ExitCode.IN_SYNC, ExitCode.NEEDS_USER, ExitCode.PARTIAL):
            _remember_replicas(store, prepared, summary.nothing_to_do, sink)
    return result


def _probe_server(plan: unison.Plan, server: transport.Server, socket: Path | None,
                  abort: threading.Event | None, cached: bool) -> guards.Probe:
    """Marker and file count of the server's replica, asked over ssh before unison runs."""
    script = guards.probe_script(server.home, plan.paths, plan.ignore_paths, plan.ignore_names,
                                 cached=cached)
    answer = transport.run_remote(server, socket, script, abort)
    probe = guards.parse_probe(answer)
    if probe is None:
        raise RoamingHomesError(f"could not inspect the server home {server.label}: "
                                f"unexpected answer {answer.strip()[:200]!r}",
                                ExitCode.FAILED)
    return probe


def _server_refusal(prepared: _Prepared, lines: list[str]) -> str | None:
    """Why the server's guard refused the run whose output is `lines`, if it did; takes in
    the server's probe from that output either way."""
    if (probe := guards.parse_probe(lines)) is not None:
        prepared.found["server"] = probe
    if not guards.refused(lines):
        return None
    report = "; ".join(line[len(guards.REPORT):] for line in lines
                       if line.startswith(guards.REPORT))
    return prepared.verdict(prepared.found) or (
        f"the server home {prepared.server.label} failed its safety check ({report}); "
        "nothing was synced")


def _write_marker(side: str, prepared: _Prepared, sink: LineSink) -> str:
    """Give the replica on `side` a new marker; returns the id it has now ("" on failure)."""
    server, replica_id = prepared.server, guards.new_replica_id()
    try:
        if side == "server" and not server.is_local:
            script = guards.write_marker_script(server.home, replica_id)
            return guards.parse_marker(
                transport.run_remote(server, prepared.socket, script)) or ""
        root = prepared.plan.local_root if side == "local" else server.local_root
        guards.write_local_marker(Path(root), replica_id)
    except (OSError, RoamingHomesError) as exc:
        sink(f"could not write the replica marker on the {side} side: {exc}")
        return ""
    return replica_id


def _remember_replicas(store: StateStore, prepared: _Prepared, unchanged: bool,
                       sink: LineSink) -> None:
    """After a good pass: write missing replica markers, and record both replicas' ids and
    file counts for the guards of the next pass."""
    plan, server, recorded = prepared.plan, prepared.server, prepared.recorded
    entry: dict[str, Any] = {}
    for side in ("local", "server"):
        probe = prepared.found.get(side)
        replica_id = "" if probe is None else probe.marker or _write_marker(side, prepared, sink)
        if replica_id or recorded.get(f"{side}_id"):
            entry[f"{side}_id"] = replica_id or recorded[f"{side}_id"]
    args = (plan.paths, plan.ignore_paths, plan.ignore_names)
    if unchanged:
        counts = {side: probe.files for side, probe in prepared.found.items()}
    else:
        roots = _counted_here(plan, server)
        counts = {side: guards.count_files(Path(roots[side]), *args, prepared.caches[side])
                  for side in roots}
    # After a pass both replicas hold the same files: over ssh (without a report from the
    # server) the local count stands for both rather than walking the server's tree again.
    counts.setdefault("server", counts["local"])
    entry.update({f"{side}_files": count for side, count in counts.items()})
    store.set_replicas(prepared.key, entry)


def _archives_disagree(summary: unison.Summary) -> bool:
    return any(m in summary.fatal for m in _ARCHIVE_MISMATCH)


def _finish(store: StateStore, key: str, run: unison.Run, summary: unison.Summary, first: bool,
            outcome: Callable[..., SyncOutcome]) -> SyncOutcome:
    """The outcome of a run (or watch cycle); remembers that the roots have archives now."""
    code, message = _classify(run, summary)
    if code in (ExitCode.IN_SYNC, ExitCode.NEEDS_USER, ExitCode.PARTIAL):
        store.mark_synced(key)
    return outcome(code, message, transferred=summary.transferred, skipped=summary.skipped,
                   failed=summary.failed, conflicts=summary.conflicts,
                   failed_paths=summary.failed_paths, first_run=first)


def _run_first_paths(config: Config, plan: unison.Plan, locations: Locations, sink: LineSink,
                     abort: threading.Event | None, extra: list[str] | None = None,
                     fds: tuple[int, ...] = ()) -> unison.Summary | None:
    """On a first run, a pass over just `sync.first_paths`, so that they arrive before the rest.

    Paths outside the synced paths are left out (with a line saying so): they would otherwise
    start syncing something the configuration does not sync.
    """
    early = []
    for path in config["sync"]["first_paths"]:
        if is_below(path, plan.paths):
            early.append(path)
        else:
            sink(f"sync.first_paths: {path!r} is not below a synced path; left out")
    if not early:
        return None
    profile = locations.unison_dir / f"{unison.PROFILE}.prf"
    try:
        write_atomic(profile, unison.build_profile(replace(plan, paths=tuple(early))))
    except unison.ProfileValueError as exc:
        sink(f"sync.first_paths left out: {exc}")
        return None
    sink(f"first sync: {', '.join(early)} before the rest (sync.first_paths)")
    try:
        return _run_unison(config, locations, True, sink, abort, extra, fds)[1]
    finally:
        write_atomic(profile, unison.build_profile(plan))


def _run_unison(config: Config, locations: Locations, first: bool, sink: LineSink,
                abort: threading.Event | None, extra: list[str] | None = None,
                fds: tuple[int, ...] = ()) -> tuple[unison.Run, unison.Summary]:
    argv = unison.build_argv(config["sync"]["unison"], first, extra or ())
    if first:
        sink(progress.FIRST_RUN_LINE)
    try:
        run = unison.run(argv, unison.environment(locations), sink, abort, fds)
    except FileNotFoundError:
        message = f"Fatal error: unison program not found: {argv[0]} (sync.unison)"
        sink(message)
        run = unison.Run(3, [message])
    return run, unison.parse_output(run.lines)


# --- real-time mode ---------------------------------------------------------------------------

OutcomeSink = Callable[[SyncOutcome], None]
CYCLE_QUIET = 0.5  # seconds without output after a cycle's last line: unison is waiting
STOP_GRACE = 10.0  # seconds unison gets to end after SIGINT before its group is killed
BUSY_POLL = 0.2  # seconds between looks at a running or ending cycle


@dataclass
class WatchResult:
    """Why real-time mode ended. `fallback`: it cannot run here; sync by interval instead."""

    reason: str
    fallback: bool = False
    outcome: SyncOutcome | None = None  # the failure that ended it (offline, busy, fatal)


def run_watch(config: Config, locations: Locations, stop: threading.Event, *,
              on_outcome: OutcomeSink | None = None,
              on_line: LineSink | None = None) -> WatchResult:
    """Keep the home in sync in real time with `unison -repeat watch` until `stop` is set.

    Holds the sync lock throughout. Every cycle in which unison propagated something (and the
    first full scan) is recorded in the state like a pass and handed to `on_outcome`. unison
    is restarted every `sync.rescan_interval` seconds for a full rescan. Returns when stopped,
    when unison ends on its own (the outcome says why), or with `fallback` when there is no
    usable unison-fsmonitor on this computer or on the server.
    """
    server = transport.Server.from_config(config["server"])
    if is_excluded(locations.user, config["sync"]["excluded_users"]):
        return WatchResult(f"user {locations.user} is excluded (sync.excluded_users)")
    monitor = unison.find_fsmonitor(config["sync"]["unison"], os.environ.get("PATH", ""))
    if monitor is None:
        return WatchResult(f"no {unison.FSMONITOR} on this computer (not on PATH nor beside "
                           f"{config['sync']['unison']})", fallback=True)
    lock = SyncLock(locations.lock_file)
    try:
        lock.acquire("watch")
    except RoamingHomesError as exc:
        return WatchResult(exc.message, outcome=_outcomes(server)(exc.code, exc.message,
                                                                  result="busy"))
    store = StateStore(locations.state_dir)
    session = _WatchSession(config, locations, server, store, stop, on_outcome or _ignore_outcome,
                            on_line or _ignore)
    waker = threading.Thread(target=session.wake_on_stop, name="watch-waker", daemon=True)
    waker.start()
    try:
        return session.run()
    finally:
        session.finished.set()
        lock.release()


def _ignore_outcome(_outcome: SyncOutcome) -> None:
    pass


class _WatchSession:
    """unison -repeat watch, restarted for rescans, its output cut into cycles."""

    def __init__(self, config: Config, locations: Locations, server: transport.Server,
                 store: StateStore, stop: threading.Event, on_outcome: OutcomeSink,
                 on_line: LineSink) -> None:
        self.config, self.locations, self.server, self.store = config, locations, server, store
        self.stop, self.on_outcome, self.on_line = stop, on_outcome, on_line
        self.lines: queue.Queue[str | None] = queue.Queue()  # the current unison's output
        self.finished = threading.Event()

    def wake_on_stop(self) -> None:
        """Wake the idle session at once when `stop` is set (runs in its own thread).

        The session blocks on its lines queue until the next rescan is due; "" in the queue
        (never an output line) makes it look at `stop`. Should `run_watch` end without a stop,
        this thread notices `finished` within one rescan interval (callers that set `stop`
        once the watch is over, as the daemon does, end it at once).
        """
        while not self.stop.wait(self.config["sync"]["rescan_interval"]):
            if self.finished.is_set():
                return
        self.lines.put("")

    def record(self, outcome: SyncOutcome) -> None:
        self.store.record(outcome.to_dict())
        self.on_outcome(outcome)

    def run(self) -> WatchResult:
        while not self.stop.is_set():
            outcome = _outcomes(self.server)
            prepared = _prepare(self.config, self.locations, self.server, self.store, False,
                                self.on_line, outcome, probe_server=True)
            if isinstance(prepared, SyncOutcome):
                self.record(prepared)
                return WatchResult(prepared.message, outcome=prepared)
            if prepared.first:
                # -ignorearchives would hold for every cycle of the session and never let a
                # deletion through: make the first sync an ordinary pass.
                first = _locked_pass(self.config, self.locations, self.server, self.store,
                                     True, self.on_line, outcome, self.stop)
                self.record(first)
                if first.exit_code not in (ExitCode.IN_SYNC, ExitCode.NEEDS_USER,
                                           ExitCode.PARTIAL):
                    return WatchResult(first.message, outcome=first)
                continue
            result = self.watch(prepared)
            if result is not None:
                return result
        return WatchResult("stopped")

    def watch(self, prepared: _Prepared) -> WatchResult | None:
        """One unison process; None when it was restarted for a rescan."""
        key = prepared.key
        # The guards judged the replicas in `_prepare`; within the session unison's own
        # (confirmbigdel, the marker as mountpoint) guard every cycle.
        argv = unison.build_argv(self.config["sync"]["unison"], False,
                                 [*unison.WATCH_ARGS, *prepared.extra])
        rescan_at = time.monotonic() + self.config["sync"]["rescan_interval"]
        self.lines = lines = queue.Queue()
        with self.store.open_log() as log:
            log.write(f"--- watch started (pid {os.getpid()}) ---")
            proc = unison.spawn(argv, unison.environment(self.locations))
            reader = threading.Thread(target=unison.read_lines, args=(proc, lines.put),
                                      daemon=True)
            reader.start()
            cycle = _Cycle(self.server)
            ended_by_us = False
            interrupted_at: float | None = None
            stop_seen: float | None = None
            first_cycle = True
            while True:
                # Idle between cycles (and not ending) nothing is due but the next rescan or a
                # stop (which `wake_on_stop` announces): do not wake before, an idle home should
                # cost nothing (bench/, row 8).
                busy = not cycle.reported or stop_seen is not None or interrupted_at is not None
                try:
                    line = lines.get(timeout=BUSY_POLL if busy
                                     else max(0.0, rescan_at - time.monotonic()))
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log.write(line)
                    self.on_line(line)
                    if line.startswith(unison.CYCLE_START) and cycle.ended:
                        cycle = _Cycle(self.server)
                    cycle.add(line)
                if cycle.ended and not cycle.reported and cycle.quiet():
                    done = cycle.outcome(self.store, key)
                    if first_cycle or done.transferred or done.skipped or done.failed:
                        self.record(done)
                        if done.transferred and done.exit_code in (ExitCode.IN_SYNC,
                                                                   ExitCode.NEEDS_USER):
                            # the next start's mass-deletion check compares with this
                            _remember_replicas(self.store, prepared, False, log.write)
                    first_cycle = False
                now = time.monotonic()
                if self.stop.is_set() and stop_seen is None:
                    stop_seen = now
                want_end = stop_seen is not None or now >= rescan_at
                # Between cycles unison only waits: interrupting it then loses nothing. A stop
                # waits for a running cycle, but not for long.
                idle = cycle.reported or (stop_seen is not None and now - stop_seen > STOP_GRACE)
                if want_end and interrupted_at is None and idle:
                    ended_by_us = True
                    interrupted_at = time.monotonic()
                    _signal(proc, signal.SIGINT)
                elif interrupted_at and time.monotonic() - interrupted_at > STOP_GRACE:
                    _signal(proc, signal.SIGKILL, group=True)
            proc.wait()
            reader.join(timeout=5)
            log.write(f"--- watch ended (unison exit code {proc.returncode}) ---")
        if ended_by_us:
            return WatchResult("stopped") if self.stop.is_set() else None
        return self.ended_alone(proc.returncode, cycle, prepared)

    def ended_alone(self, returncode: int, cycle: _Cycle, prepared: _Prepared) -> WatchResult:
        lines = cycle.lines[cycle.reported_lines:]  # what came after the last recorded cycle
        summary = unison.parse_output(lines)
        if problem := unison.monitor_problem(summary):
            return WatchResult(f"real-time mode unavailable: {problem} (is {unison.FSMONITOR} "
                               "on the PATH of the ssh user on the server?)", fallback=True)
        if refusal := _server_refusal(prepared, lines):
            outcome = cycle.make_outcome(ExitCode.REFUSED, refusal)
        elif _archives_disagree(summary):
            outcome = _locked_pass(self.config, self.locations, self.server, self.store, True,
                                   self.on_line, _outcomes(self.server), self.stop)
        else:
            outcome = _finish(self.store, prepared.key, unison.Run(returncode, lines), summary,
                              False, cycle.make_outcome)
        self.record(outcome)
        return WatchResult(outcome.message, outcome=outcome)


class _Cycle:
    """The output lines of one watch cycle: Looking for changes ... summary (+ details)."""

    def __init__(self, server: transport.Server) -> None:
        self.make_outcome = _outcomes(server)
        self.lines: list[str] = []
        self.ended = False
        self.reported_lines = 0  # lines already turned into an outcome
        self.last = time.monotonic()

    @property
    def reported(self) -> bool:
        return self.reported_lines > 0

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.last = time.monotonic()
        self.ended = self.ended or unison.ends_cycle(line)

    def quiet(self) -> bool:
        return time.monotonic() - self.last >= CYCLE_QUIET

    def outcome(self, store: StateStore, key: str) -> SyncOutcome:
        self.reported_lines = len(self.lines)
        summary = unison.parse_output(self.lines)
        run = unison.Run(unison.cycle_returncode(summary), self.lines)
        return _finish(store, key, run, summary, False, self.make_outcome)


def _signal(proc: subprocess.Popen[bytes], signum: int, group: bool = False) -> None:
    """Signal unison (or its whole group: ssh and the local monitor), if it still runs."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
