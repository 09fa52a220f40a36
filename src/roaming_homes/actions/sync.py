"""One sync pass: guards -> server reachable -> unison -> outcome -> state.

The engine knows nothing of D-Bus, systemd or terminals: it returns a `SyncOutcome`, and the
CLI or the daemon decide what to show. Output lines are handed to an optional callback.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from roaming_homes import config as config_mod
from roaming_homes.actions import computers, conflict_copies, leftovers
from roaming_homes.config import Config
from roaming_homes.errors import DiskFull, ExitCode, RoamingHomesError
from roaming_homes.outcome import COMPLETED, Reason, Result, SyncOutcome, result_of
from roaming_homes.paths import Locations, is_below, xdg_user_dirs
from roaming_homes.relative import collapse
from roaming_homes.safety import backups, guards, refused
from roaming_homes.safety.baseline import BaselineStore
from roaming_homes.safety.guards import is_excluded
from roaming_homes.server import records
from roaming_homes.server.records import Confirmation, ServerHome
from roaming_homes.session import pause, progress, unchanged
from roaming_homes.session.computer import Computer, this_computer
from roaming_homes.session.lock import SyncLock
from roaming_homes.session.state import (
    LogWriter,
    StateStore,
    ensure_private_dir,
    write_atomic,
)
from roaming_homes.text import escape, printable
from roaming_homes.unison import bulk, dialogue, frontends, output, profile
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import count_files

LineSink = Callable[[str], None]
log = logging.getLogger(__name__)
_T = TypeVar("_T")
# unison's own output, line by line (shown with -v; always in sync.log)
unison_output = logging.getLogger("roaming_homes.unison.output")

# Both ways out of a loss refusal; restoring first: forcing by habit is what the guard is against.
REFUSAL_ACTION = ("roaming-homes restore --refused  (or, if the deletions are intended: "
                  "roaming-homes sync --force; what already went through: roaming-homes "
                  "restore --since TIME)")
_INTERRUPTED = "stopped before it finished (time was up); the next pass completes it"


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def _relative_to_home(path: Path, home: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(home.resolve())
    except ValueError:
        return None
    return str(rel) if str(rel) != "." else None


# Synced by default with the XDG user directories: settings of the user's own that travel well
# between computers (no keys, no caches, nothing tied to one machine).
DEFAULT_DOTFILES = (".gitconfig", ".vimrc")


def sync_paths(config: Config, locations: Locations) -> tuple[list[str], list[str]]:
    """The paths to sync and warnings about XDG directories that were left out.

    By default: the user's XDG user directories, whether they exist here, on the server or on
    neither (a new laptop receives the home; one made later is synced from then on), and
    DEFAULT_DOTFILES. A directory that exists on no side costs nothing."""
    configured = config["sync"]["paths"]
    if configured:
        return list(configured), []
    paths, warnings = [], []
    for rel in xdg_user_dirs(locations):
        if problem := config_mod.check_relative_path(rel):
            warnings.append(f"XDG user directory skipped: {problem}")
            continue
        paths.append(rel)
    return [*paths, *DEFAULT_DOTFILES], warnings


def build_plan(config: Config, locations: Locations, server: transport.Server,
               socket: Path | None, paths: list[str]) -> profile.Plan:
    """What unison is told for `paths` (as `sync_paths` resolved them for this pass)."""
    # Our own state, archives and lock never travel, whatever `paths` says.
    # The replica marker sits at the root and is never synced either: each side keeps its own;
    # nor is what the computers tell each other there (server.records).
    own_dirs = (locations.state_dir, locations.runtime_dir)
    own = [".unison", guards.MARKER, records.DIRECTORY] + [
        rel for rel in (_relative_to_home(p, locations.home) for p in own_dirs) if rel]
    ignores = list(dict.fromkeys([*config["sync"]["ignore_paths"], *own]))
    return profile.Plan(
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


def _listed(paths: Sequence[str]) -> str:
    """The first five of `paths`, escaped, for a one-line message."""
    return ", ".join(escape(path) for path in paths[:5]) + (" …" if len(paths) > 5 else "")


def _need_you(count: int, conflicts: Sequence[str]) -> str:
    return (f"{count} conflict(s) need you: {_listed(conflicts)} (see `roaming-homes "
            "conflicts`)")


def _unsynced(errors: Sequence[str]) -> str:
    return (f"{len(errors)} item(s) not synced for an error on one side (unreadable, or not a "
            f"file, folder or link; the reason is in the sync log): {_listed(errors)}")


def _classify(run: dialogue.Run, summary: output.Summary) -> tuple[Result, str, Reason]:
    code = run.returncode
    troubles = summary.troubles
    if code == 0:
        if summary.nothing_to_do:
            return Result.IN_SYNC, "in sync: nothing to do", Reason.NONE
        return (Result.IN_SYNC, f"in sync: {summary.transferred} item(s) transferred",
                Reason.NONE)
    errors = ("; " + _unsynced(summary.errors)) if summary.errors else ""
    if code == 1 and (summary.conflicts or not summary.errors):
        return Result.CONFLICTS, (_need_you(len(summary.conflicts) or summary.skipped,
                                            summary.conflicts) + errors), Reason.NONE
    if code == 1:  # skipped for errors alone: nothing to choose, something to look at
        return Result.PARTIAL, _unsynced(summary.errors), Reason.NONE
    reason = next((_REASONS[t] for t in _REASON_ORDER if t in troubles), Reason.UNISON_FAILED)
    if code == 2 and summary.failed_paths and set(summary.failed_paths) <= set(summary.changed):
        return Result.PARTIAL, (f"{summary.failed} item(s) kept changing while they were "
                                f"copied (being saved?): {_listed(summary.failed_paths)}; the "
                                f"next pass syncs them{errors}"), reason
    if code == 2:
        return Result.PARTIAL, (f"{summary.failed} item(s) failed to transfer: "
                                f"{_listed(summary.failed_paths)}{errors}"), reason
    if run.declined is not None:
        return Result.FAILED, ("unison asked a question roaming-homes does not answer; "
                               "nothing was synced (see the log)"), reason
    fatal = summary.fatal or next((line for line in reversed(run.lines) if line.strip()), "")
    if output.Trouble.MARKER_VANISHED in troubles:
        return Result.REFUSED, (f"a replica lost its marker {guards.MARKER} while unison "
                                "looked at it (unmounted?); nothing was synced. Once it is "
                                "back, sync again"), Reason.REPLICA
    if output.Trouble.CONNECTION_LOST in troubles:
        return Result.OFFLINE, f"connection to the server lost: {fatal}", reason
    if code < 0:
        return Result.FAILED, f"unison was killed by signal {-code}", reason
    return Result.FAILED, f"unison failed: {fatal or f'exit code {code}'}", reason


def still_left(outcome: SyncOutcome, left: SyncOutcome | None,
               only: tuple[str, ...]) -> SyncOutcome:
    """A real-time cycle's outcome (a pass over `only`) with what `left`, the outcome the
    session's passes came to before it, leaves elsewhere: conflicts and items not synced that
    this cycle did not look at are still there, and `status`, `conflicts` and the notifications
    go on showing them until a pass that looks at them settles them."""
    if left is None or outcome.result not in COMPLETED:
        return outcome
    conflicts = [path for path in left.conflicts
                 if not is_below(path, only) and path not in outcome.conflicts]
    failed = [path for path in left.failed_paths
              if not is_below(path, only) and path not in outcome.failed_paths]
    if not conflicts and not failed:
        return outcome
    said = [_need_you(len(conflicts), conflicts)] if conflicts else []
    said += [f"{len(failed)} item(s) not synced: {_listed(failed)} (see the sync log)"
             ] if failed else []
    result = (Result.PARTIAL if failed or outcome.result is Result.PARTIAL
              else Result.CONFLICTS)
    return replace(outcome, result=result,
                   message=f"{'; '.join(said)}; this cycle: {outcome.message}",
                   conflicts=outcome.conflicts + conflicts,
                   failed_paths=outcome.failed_paths + failed, failed=outcome.failed + len(failed))


# The reason a failed run gives, for the troubles unison reported (the first that applies).
_REASONS = {output.Trouble.DISK_FULL: Reason.DISK_FULL,
            output.Trouble.VERSION_MISMATCH: Reason.VERSION_MISMATCH,
            output.Trouble.CONNECTION_LOST: Reason.CONNECTION_LOST}
_REASON_ORDER = tuple(_REASONS)


def outcomes(server: transport.Server) -> Callable[..., SyncOutcome]:
    """A maker of outcomes for a pass (or watch cycle) that starts now."""
    started, clock = _now(), time.monotonic()

    def outcome(result: Result, message: str, **counts: Any) -> SyncOutcome:
        return SyncOutcome(result=result, message=message,
                           started=started, finished=_now(),
                           duration=round(time.monotonic() - clock, 3), server=server.label,
                           **counts)

    return outcome


def run_pass(config: Config, locations: Locations, *, first_run: bool = False,
             force: bool = False,
             on_progress: Callable[[progress.Progress], None] | None = None,
             abort: threading.Event | None = None, lock_wait: float = 0,
             unless_paused: bool = False) -> SyncOutcome:
    """Run one pass and record it. Never raises for an expected failure: see the outcome.

    While unison runs, `on_progress` gets snapshots and progress.json is kept up to date.
    `abort` (set by another thread) stops the pass cleanly, e.g. when a logout's time is up;
    `lock_wait` is how long to wait for another pass of this user to finish. `force` lets this
    one pass propagate what the loss guard would refuse (sync.max_delete, sync.max_change); it
    never overrides the replica markers (`first_run` is the way back there). `unless_paused`:
    a pass nobody asked for (the daemon's, a login hook's) does not run while syncing is
    paused; its outcome says so (result paused, not recorded: it says nothing of the home).
    """
    server = transport.Server.from_config(config["server"])
    outcome = outcomes(server)
    if is_excluded(locations.user, config["sync"]["excluded_users"]):
        return outcome(Result.EXCLUDED, f"user {locations.user} is excluded "
                       "(sync.excluded_users): nothing synced")
    if unless_paused and (held := pause.paused(locations)) is not None:
        return outcome(Result.PAUSED, f"syncing is {held.line()}: nothing synced "
                       f"({pause.RESUME_COMMAND} to sync again)", action=pause.RESUME_COMMAND)
    lock = SyncLock(locations.lock_file)
    try:
        lock.acquire(wait=lock_wait)
    except RoamingHomesError as exc:
        return outcome(Result.BUSY if exc.code == ExitCode.TRY_LATER else Result.FAILED,
                       exc.message)
    store = StateStore(locations.state_dir)
    tracker = progress.Tracker(locations, on_progress)
    try:
        job = Pass(config, locations, server, store, abort, lock.fileno, tracker.wrap(_ignore),
                   tracker)
        result = guarded_pass(job, outcome, first_run=first_run, force=force)
        # Named after the front-end that served it (`_prepare` chose it): for support.
        return record(store, replace(result, server=job.server.label))
    finally:
        tracker.close()
        lock.release()


def _ignore(_line: str) -> None:
    pass


def record(store: StateStore, result: SyncOutcome) -> SyncOutcome:
    """`result`, recorded in the state. When the state cannot be written (a full disk), the
    failure that says so instead, with the counts of what the pass did: it is not recorded
    (there is no room), so the state stays as the last pass that could write it left it."""
    try:
        store.record(result)
    except DiskFull as exc:
        return replace(result, result=Result.FAILED, reason=Reason.DISK_FULL,
                       message=exc.message, action="")
    return result


@dataclass
class DryRun:
    """What a pass would do: unison's plan, whether it is a first sync (a union), and what the
    guards would say. `outcome`: why no plan could be made (offline, busy, a replica refused)."""

    items: list[output.PlanItem]
    first: bool = False
    refusal: str = ""
    following: str = ""  # a deletion confirmed on another computer this pass would follow
    outcome: SyncOutcome | None = None


def dry_run(config: Config, locations: Locations) -> DryRun:
    """Ask unison for its plan, weigh it like a pass, and answer "quit": nothing changes, nothing
    is recorded."""
    server = transport.Server.from_config(config["server"])
    outcome = outcomes(server)
    lock = SyncLock(locations.lock_file)
    try:
        lock.acquire()
    except RoamingHomesError as exc:
        return DryRun([], outcome=outcome(Result.BUSY if exc.code == ExitCode.TRY_LATER
                                          else Result.FAILED, exc.message))
    try:
        job = Pass(config, locations, server, StateStore(locations.state_dir),
                   lock_fd=lock.fileno)
        prepared = _prepare(job, False, outcome)
        if isinstance(prepared, SyncOutcome):
            return DryRun([], outcome=prepared)
        judge = _Judge(job, prepared, force=False, dry=True)
        run, summary = _run_unison(job, prepared.first, _ignore, judge, prepared.extra)
    finally:
        lock.release()
    if refusal := _server_refusal(job, prepared, run.lines):
        return DryRun([], outcome=outcome(Result.REFUSED, refusal, reason=Reason.REPLICA))
    if run.declined is None and run.returncode >= 2:  # unison failed before it had a plan
        result, message, reason = _classify(run, summary)
        return DryRun([], outcome=outcome(result, message, reason=reason))
    refused = judge.refusal.message(judge.limits, server.label) if judge.refusal else ""
    followed = judge.following
    return DryRun(judge.items, prepared.first, refused,
                  f"{followed.name} at {progress.human_time(followed.time)}" if followed else "")


@dataclass
class Pass:
    """What every pass (or real-time cycle) of one session works with; the lock is held."""

    config: Config
    locations: Locations
    server: transport.Server
    store: StateStore
    abort: threading.Event | None = None
    lock_fd: int | None = None
    # unison's output and our notes, line by line, for the progress tracker
    on_output: LineSink = _ignore
    tracker: progress.Tracker | None = None  # what a first sync's bulk copy reports to


@dataclass
class _Prepared:
    """A pass that may start: the profile is written, the server answers, the guards agree."""

    key: str  # the pair of roots, as remembered in the state
    first: bool
    plan: profile.Plan
    socket: Path | None
    paths: tuple[str, ...]  # every synced path (the plan may name only some: a real-time cycle)
    # The replicas as the guards saw them before unison. Over ssh the server reports its own
    # replica as unison connects (guards.guard_command): that report is read from unison's
    # output, and is missing here until unison has run.
    found: dict[str, guards.Probe]
    ids: dict[str, str]  # side -> the replica id recorded at the last good pass ("": none)
    extra: list[str]  # unison arguments the guards add (-servercmd, -mountpoint, ...)
    nonce: str  # this pass's mark on the server's report
    baselines: BaselineStore  # the loss guard's baseline, read when unison asks
    computer: Computer
    stills: _Stills | None  # a whole pass's digests (`session.unchanged`), when it takes them
    # this side's listing for a first sync's bulk copy, started before connecting (`_copy_planned`)
    listing: _Meanwhile[bulk.Listing] | None = None


def _prepare(job: Pass, first_run: bool, outcome: Callable[..., SyncOutcome],
             only: tuple[str, ...] | None = None,
             probe_server: bool = False) -> _Prepared | SyncOutcome:
    """Everything before unison runs; an outcome when the pass cannot (or must not) run.

    `only` restricts the pass to these paths (a real-time cycle). Over ssh the server's replica
    is judged by the server itself when unison connects, in the same ssh session (one command
    per pass, not two). `probe_server` also asks it here first: `resolve` hands unison over to
    the user, who should get our message rather than unison's lost connection.
    """
    config, locations, server = job.config, job.locations, job.server
    found_paths, warnings = sync_paths(config, locations)
    paths = tuple(found_paths)
    for warning in warnings:
        log.debug("%s", warning)
    early = _early_digest(job, paths) if only is None else None
    computer = this_computer(locations, config["client"]["name"])
    # unison's archives are keyed by the computer's id: a new id (a cloned home) is a new pair.
    # The server is named as it is whichever front-end serves this pass (its archives are too,
    # see guards.SERVER_NAME): a switch of front-ends is an ordinary pass, and the pair is
    # known before one answers. So is this side's root (`build_plan`: the home).
    key = pair_key(computer, str(locations.home), server)
    first = first_run or _is_first_run(job.store, key, locations.unison_dir)
    listing = _early_listing(job, paths) if only is None and first else None
    try:
        server, socket = frontends.connect(server, locations.control_dir)
    except transport.ConnectError as exc:
        return outcome(result_of(exc.reason), exc.message, reason=exc.reason,
                       notes=list(exc.details), action=exc.action)
    job.server = server  # the front-end that answered serves the rest of the pass
    plan = build_plan(config, locations, server, socket, list(only or paths))
    try:
        text = profile.build_profile(plan)
    except profile.ProfileValueError as exc:
        return outcome(Result.CONFIG_ERROR, str(exc))
    _write_profile(locations.unison_dir / f"{profile.PROFILE}.prf", text)
    ensure_private_dir(locations.backup_dir)
    found = {side: guards.probe_local(Path(root), paths)
             for side, root in _counted_here(plan, server).items()}
    rules = unchanged.rules_of(key, paths, plan.ignore_paths, plan.ignore_names)
    nonce = guards.new_nonce()
    try:
        stills = _stills(job, plan, socket, rules, first, early) if early is not None else None
        if not server.is_local and probe_server:
            found["server"] = _probe_server(server, socket, paths, nonce, job.abort)
    except transport.ConnectError as exc:
        if job.abort is not None and job.abort.is_set():
            return outcome(Result.INTERRUPTED, _INTERRUPTED)
        return outcome(result_of(exc.reason), exc.message, reason=exc.reason)
    recorded = job.store.replicas(key)
    ids = {side: recorded.get(f"{side}_id", "") for side in ("local", "server")}
    if refusal := _replica_refusal(found, ids, first, _names(plan, server)):
        log.debug("%s", refusal)
        return outcome(Result.REFUSED, refusal, reason=Reason.REPLICA)
    extra: list[str] = []
    if not server.is_local:
        command = guards.guard_command(server.home, paths, nonce,
                                       None if first else (ids["server"] or None),
                                       backups.server_dir(server.home),
                                       digest=stills is not None and stills.wants_report,
                                       chores=_chores(server, locations, computer, first))
        extra += ["-servercmd", profile.escape_sshargs([command])]
    if not first and all(ids.values()):
        # unison checks the markers again after its own scan: a share that vanishes
        # between our probe and its update detection still stops the pass.
        extra += ["-mountpoint", guards.MARKER]
    baselines = baseline_store(job, plan, paths)
    return _Prepared(key, first, plan, socket, paths, found, ids, extra, nonce, baselines,
                     computer, stills, listing)


def baseline_store(job: Pass, plan: profile.Plan, paths: tuple[str, ...]) -> BaselineStore:
    """The loss guard's baseline and window for the home's synced `paths` (`plan`'s rules)."""
    return BaselineStore(job.locations.state_dir, (plan.local_root, job.server.stable_root),
                         paths, plan.ignore_paths, plan.ignore_names)


def guard_limits(config: Config) -> guards.Limits:
    wanted = config["sync"]
    return guards.Limits(wanted["max_delete"], wanted["max_change"], wanted["guard_window"])


def pair_key(computer: Computer, local_root: str, server: transport.Server) -> str:
    """The pair of roots a pass syncs, as the state remembers it (its replica ids)."""
    return f"{computer.id}: {local_root} <-> {server.stable_root}"


@dataclass
class _Stills:
    """A whole pass's stat digests, taken before unison looks (`session.unchanged`)."""

    rules: str  # what a record of them is valid for
    record: unchanged.Record | None  # the last pass with nothing to do left it, if any
    digests: dict[str, unchanged.Digest]  # this computer's sides ("local"; "server" if local)
    # the server's, asked before unison when this side is as recorded; with no record, it
    # comes with the guard's report over ssh (`wants_report`), or was taken here (local)
    asked: unchanged.Digest | None = None
    wants_report: bool = False
    costs: unchanged.Costs = field(default_factory=unchanged.Costs)  # as `_stills` left them

    @property
    def nothing_changed(self) -> bool:
        """Both sides as the record has them: unison would have nothing to do."""
        local = self.digests.get("local")
        return (self.record is not None and local is not None and self.asked is not None
                and (self.record.local, self.record.server) == (local.value, self.asked.value))


@dataclass(frozen=True)
class _Early:
    """What a whole pass's digests start from (`_early_digest`), read once."""

    record: unchanged.Record | None  # as the last pass with nothing to do left it, if any
    quiet: bool  # the last pass had nothing to do (`_had_nothing_to_do`)
    costs: unchanged.Costs  # as the passes before left them
    started: float  # time.monotonic() when this side's digest was started
    digest: _Meanwhile[unchanged.Digest | None]  # this side's, taken while the pass connects


def _early_digest(job: Pass, paths: Sequence[str]) -> _Early | None:
    """This side's digest, started before the pass connects, when digests may pay: a record to
    compare with (unison may be skipped), or a last pass that had nothing to do (this one may
    record). A run of passes that move something takes none: each would walk both trees.
    Asking the shared connection and looking at the login take process starts that a small
    home's digest runs beside. `_stills` decides what it is for; not wanted after all (a
    record for other rules), it is left to end on its own."""
    state_dir, now, wanted = job.locations.state_dir, time.time(), job.config["sync"]
    record, quiet = unchanged.load(state_dir), _had_nothing_to_do(job.store)
    if record is None and not quiet:
        return None
    costs = unchanged.load_costs(state_dir)
    if wanted["skip_unchanged"] == "never" or (
            wanted["skip_unchanged"] == "auto"
            and not costs.pays(now, wanted["rescan_interval"])):
        return None
    plan = build_plan(job.config, job.locations, job.server, None, list(paths))
    return _Early(record, quiet, costs, time.monotonic(),
                  _Meanwhile("local digest", unchanged.local_digest, plan.local_root,
                             plan.paths, plan.ignore_paths, plan.ignore_names))


def _early_listing(job: Pass, paths: tuple[str, ...]) -> _Meanwhile[bulk.Listing] | None:
    """This side's listing for a first sync's bulk copy (`_copy_planned`), started before a
    first sync connects when it may copy: its walk (0.4 s at 100 000 files) then runs while
    the shared connection logs in and is measured, not after. Taken earlier, it only makes the
    time longer in which a file written here shows in the copy's check (`_on_the_copy`: unison
    then reads every file)."""
    if not _may_copy(job):
        return None
    plan = build_plan(job.config, job.locations, job.server, None, list(paths))
    return _Meanwhile("local listing", bulk.local_listing, plan.local_root, plan.paths,
                      plan.ignore_paths, plan.ignore_names)


def _stills(job: Pass, plan: profile.Plan, socket: Path | None, rules: str,
            first: bool, early: _Early) -> _Stills | None:
    """The digests of a whole pass (`_early_digest` found they may pay); None when the record
    is not for this pass (a first sync, other rules, too old) and the last pass moved
    something."""
    now, wanted = time.time(), job.config["sync"]
    record = early.record
    if record is not None and (first or not record.fits(rules, now, wanted["rescan_interval"])):
        record = None
    quiet = early.quiet
    if record is None and not quiet:
        return None
    server, costs = job.server, early.costs
    # A home the last pass found still is likely still: the server is asked for its digest
    # while this side's is taken, not after (on a big home each takes most of a second). Once
    # this side turns out changed, the answer is not needed; that costs the server one digest
    # each time a still home changes, not one a pass.
    asking = (_Meanwhile("server digest", _ask_digest, job, socket, plan.paths)
              if record is not None and not server.is_local and quiet else None)
    digests = {side: early.digest.result() if side == "local"
               else unchanged.local_digest(root, plan.paths, plan.ignore_paths,
                                           plan.ignore_names)
               for side, root in _counted_here(plan, server).items()}
    taken = {side: digest for side, digest in digests.items() if digest is not None}
    if len(taken) < len(digests):
        log.debug("no stat digest of %s (GNU find missing or failing): unison looks",
                  ", ".join(sorted(set(digests) - set(taken))))
        return None
    stills = _Stills(rules, record, taken, costs=costs)
    if record is None:  # the last pass had nothing to do: this one may record
        stills.wants_report = not server.is_local
    elif record.local == stills.digests["local"].value:
        if server.is_local:
            stills.asked = stills.digests.get("server")
        else:
            stills.asked = (asking.result() if asking is not None
                            else _ask_digest(job, socket, plan.paths))
        stills.costs = replace(costs, check=time.monotonic() - early.started, checked=now)
        unchanged.save_costs(job.locations.state_dir, stills.costs)
    # else this side changed: the pass will move it, and has nothing to record
    return stills


class _Meanwhile(Generic[_T]):
    """`call(*args)` in a thread of its own, while this one does something else (the server's
    answer to one exchange while this side walks its tree)."""

    def __init__(self, name: str, call: Callable[..., _T], *args: Any) -> None:
        self._value: _T | None = None
        self._error: BaseException | None = None
        # A daemon thread: a pass that does not need the answer does not wait for it to end.
        self._thread = threading.Thread(target=self._run, args=(call, *args), name=name,
                                        daemon=True)
        self._thread.start()

    def _run(self, call: Callable[..., _T], *args: Any) -> None:
        try:
            self._value = call(*args)
        except Exception as exc:  # handed to the caller of `result`, where it is handled
            self._error = exc

    def result(self) -> _T:
        """What `call` returned; raises what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(_T, self._value)


def _ask_digest(job: Pass, socket: Path | None,
                paths: Sequence[str]) -> unchanged.Digest | None:
    """The server's digest now, in one exchange over the shared connection."""
    nonce = guards.new_nonce()
    try:
        answer = transport.run_remote(job.server, socket,
                                      unchanged.check_script(job.server.home, paths, nonce),
                                      job.abort)
    except transport.ConnectError as exc:
        if result_of(exc.reason) is Result.OFFLINE:
            # The link went down (the shared connection's keep-alives ended it): the pass ends
            # offline now, as a unison run would, rather than start unison on the dead link
            # and wait for a new connection to time out as well.
            raise
        log.debug("the server's digest: %s", exc.message)  # unison's run will say it
        return None
    return unchanged.parse_check(answer, nonce)


def _had_nothing_to_do(store: StateStore) -> bool:
    last = store.last()
    return last is not None and last.result == Result.IN_SYNC and not last.transferred


def _names(plan: profile.Plan, server: transport.Server) -> dict[str, str]:
    return {"local": plan.local_root, "server": server.label}


def _replica_refusal(found: dict[str, guards.Probe], ids: dict[str, str], first: bool,
                     names: dict[str, str]) -> str | None:
    """Why replicas like `found` must not be synced: missing (on any pass) or not the
    replicas of the last pass (their markers; not on a first pass)."""
    return guards.missing_refusal(found, names) or (
        None if first else guards.marker_refusal(ids, found, names))


def _counted_here(plan: profile.Plan, server: transport.Server) -> dict[str, str]:
    """The replicas this computer looks at itself (side -> root): the local home, and the
    server's too when it is a local directory (over ssh the server reports its own)."""
    return {"local": plan.local_root, **({"server": server.local_root} if server.is_local else {})}


def _write_profile(path: Path, text: str) -> None:
    """Write unison's profile unless it already says exactly this (most passes: it does)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)


def prepare_interactive(config: Config, locations: Locations) -> _Prepared:
    """`_prepare` for `resolve` (the caller holds the lock). Raises RoamingHomesError when the
    pass could not run or the guards refuse it."""
    server = transport.Server.from_config(config["server"])
    job = Pass(config, locations, server, StateStore(locations.state_dir))
    prepared = _prepare(job, False, outcomes(server), probe_server=True)
    if isinstance(prepared, SyncOutcome):
        raise RoamingHomesError(prepared.message, prepared.exit_code)
    unchanged.drop(locations.state_dir)  # the user's unison may change anything
    return prepared


class _Judge:
    """The loss guard of one pass: weighs unison's plan when unison asks, and says whether it
    may propagate (`dialogue.run`'s `decide`)."""

    def __init__(self, job: Pass, prepared: _Prepared, force: bool, dry: bool = False,
                 confirms: bool = False) -> None:
        self.job, self.prepared, self.force, self.dry = job, prepared, force, dry
        self.confirms = confirms  # a forced pass records its deletions for the other computers
        self.limits = guard_limits(job.config)
        self.losses: dict[str, guards.Losses] = {}
        self.refusal: guards.Refusal | None = None
        self.confirmed: list[str] = []  # forced: the deletions on the server it confirms
        self.confirmation: str | None = None  # their record's name on the server
        self.following: Confirmation | None = None  # a deletion confirmed on another computer
        self.items: list[output.PlanItem] = []  # the plan, as unison listed it
        # What the earlier runs of this pass planned (`again`): a later plan is judged with it,
        # and the window records them all.
        self.before: dict[str, guards.Losses] = {}
        self.before_items: list[output.PlanItem] = []
        # unison's run on a first sync's bulk copy (`unison.bulk`): its stand-in fingerprints
        # make every copied file look equal to its source, so any item in its plan means a
        # difference it must not act on (it would copy a time or a mode between two files it
        # wrongly takes for the same): the run stops before propagating, and `copy_differs`
        # sends the pass to unison's usual first sync.
        self.copy_check = False
        self.copy_differs = False

    def weigh(self, side: str, path: str) -> int:
        """Files below `path` on `side` (which still holds them): counted where this computer
        can see them, else as the baseline knew them."""
        plan = self.prepared.plan
        root = _counted_here(plan, self.job.server).get(side)
        if root is None:
            return self.prepared.baselines.current().below(path)
        return count_files(Path(root), [path], plan.ignore_paths, plan.ignore_names)

    def again(self) -> None:
        """Before another unison run in this pass: what this one planned counts as done."""
        self.before, self.before_items = self.losses, self.items

    def __call__(self, items: Sequence[output.PlanItem]) -> bool:
        planned = guards.plan_losses(items, self.weigh, self.prepared.paths)
        self.losses = guards.joined(self.before, planned)
        paths = {item.path for item in items}
        self.items = [item for item in self.before_items if item.path not in paths] + [*items]
        if self.prepared.first:
            return True
        baseline = self.prepared.baselines.current()
        recent = guards.joined(baseline.window(time.time(), self.limits.window), self.before)
        refusal = guards.loss_refusal(planned, recent, baseline.total, self.limits)
        if refusal is None:
            return True
        if self.force:  # the user confirms: the other computers will follow
            self.confirmed = guards.deleted_paths(items, "server")
            if self.confirmed and self.confirms:
                # Recorded before anything propagates: a computer watching in real time
                # judges the deletions as soon as they reach the server.
                job, prepared = self.job, self.prepared
                self.confirmation = computers.confirm(
                    ServerHome(job.server, prepared.socket, job.abort), prepared.computer,
                    self.confirmed, self.confirmation)
            return True
        self.following = self._confirmed_elsewhere(refusal, items, recent, baseline.total)
        self.refusal = None if self.following else refusal
        return self.refusal is None

    def decide(self, items: Sequence[output.PlanItem]) -> bool:
        """`dialogue.run`'s answer: the guard's, never "propagate" in a dry run, and never on
        a bulk copy that unison finds different from its source (`copy_check`)."""
        if self.copy_check and items:
            self.copy_differs = True
            return False
        return self(items) and not self.dry

    def _confirmed_elsewhere(self, refusal: guards.Refusal, items: Sequence[output.PlanItem],
                             recent: dict[str, guards.Losses], total: int) -> Confirmation | None:
        """A deletion confirmed on another computer that this refusal is: everything this pass
        would delete here was deleted there by the user's say-so, and nothing else is beyond
        the limits. None (refuse as ever) otherwise."""
        if refusal.side != "local" or refusal.loss is not guards.Loss.DELETE or refusal.gone:
            return None
        rest = {**self.losses, "local": replace(self.losses["local"], deleted=0)}
        if guards.loss_refusal(rest, recent, total, self.limits) is not None:
            return None
        job, prepared = self.job, self.prepared
        return computers.confirmed_elsewhere(
            ServerHome(job.server, prepared.socket, job.abort), prepared.computer,
            guards.deleted_paths(items, "local"), job.store.whole_pass_started())


def guarded_pass(job: Pass, outcome: Callable[..., SyncOutcome], *, first_run: bool = False,
                 force: bool = False, only: tuple[str, ...] | None = None,
                 winner: str | None = None, sent: int = 0) -> SyncOutcome:
    """One pass under the lock the caller holds: prepared, guarded on unison's plan, and what
    it leaves for the next pass's guards written (the caller records its outcome, `record`).

    `only` restricts it to some of the synced paths (a real-time cycle, a restore); the guards
    judge it like any pass. `winner` ("local" or "server") makes that side's version of every
    path in the pass win (unison -force; what the other side loses goes to its backups). `sent`:
    files of `only` that real-time mode sent on their own before this pass settles them,
    counted as transferred. A file of ours that cannot be written (a full disk) ends it failed,
    naming the file.
    """
    try:
        return _guarded_pass(job, outcome, first_run, force, only, winner, sent)
    except DiskFull as exc:
        return outcome(Result.FAILED, exc.message, reason=Reason.DISK_FULL)


def _guarded_pass(job: Pass, outcome: Callable[..., SyncOutcome], first_run: bool,
                  force: bool, only: tuple[str, ...] | None,
                  winner: str | None, sent: int) -> SyncOutcome:
    prepared = _prepare(job, first_run, outcome, only)
    if isinstance(prepared, SyncOutcome):
        return prepared
    stills = prepared.stills if winner is None else None
    if stills is not None and stills.nothing_changed:
        return _unchanged_pass(job, prepared, outcome)
    unchanged.drop(job.locations.state_dir)
    first, winning = prepared.first, _winning(prepared.plan, winner)
    extra = [*prepared.extra, *winning]
    judge = _Judge(job, prepared, force, confirms=winner is None)  # a restore confirms none
    with job.store.open_log() as transcript:
        sink = _pass_sink(job, transcript)

        def run_unison(first: bool, more: tuple[str, ...] = (),
                       watch: LineSink | None = None) -> tuple[dialogue.Run, output.Summary]:
            return _run_unison(job, first, sink if watch is None else _both(sink, watch), judge,
                               [*extra, *more])

        transcript.write(f"--- pass started (pid {os.getpid()}, first run: {first}) ---")
        unison_started = time.monotonic()
        try:
            run, summary = (_first_runs(job, prepared, sink, judge, run_unison, extra,
                                        may_copy=winner is None)
                            if first and only is None else run_unison(first))
        except transport.ConnectError as exc:
            sink(f"--- pass ended: {result_of(exc.reason)} ---")
            return outcome(result_of(exc.reason), exc.message, reason=exc.reason)
        unison_took = time.monotonic() - unison_started
        if job.abort is not None and job.abort.is_set():
            return outcome(Result.INTERRUPTED, _INTERRUPTED,
                           transferred=summary.transferred)
        run, summary, first = _retried(run, summary, first, run_unison, sink)
        run, summary = _changed_again(job, prepared, sink, judge, run, summary, winning)
        run, summary = _older_props_win(job, prepared, sink, first, judge.items, run, summary)
        if sent:
            summary.transferred += sent
            summary.nothing_to_do = False
        result = _judged(job, prepared, run, summary, first, judge, outcome)
        if stills is not None and not first and result.result == Result.IN_SYNC \
                and not judge.items:
            _record_unchanged(job, stills, prepared.found.get("server"), unison_took)
        if winner is None:
            _note_settled(result, judge.items)
        sink(f"--- pass ended: {result.result} ---")
    if renamed := _tell_the_others(job, prepared, judge, result):
        result.transferred += _send_copies(job, prepared, renamed)
    if result.result in COMPLETED:
        _clean_leftovers(job, prepared, judge.items)
        _prune_backups(job, prepared)
    return result


def _pass_sink(job: Pass, transcript: LogWriter) -> LineSink:
    """Where a pass's lines go: sync.log (read with cat, less, a mail: printable), the debug
    log, and the caller's `on_output`."""
    def sink(line: str) -> None:
        transcript.write(printable(line))
        unison_output.debug("%s", line)
        job.on_output(line)
    return sink


def _winning(plan: profile.Plan, winner: str | None) -> tuple[str, ...]:
    """unison's options that make `winner`'s version of every path win (none for None). No
    conflict copies: the other side's versions go to its backups, as in any pass."""
    if winner is None:
        return ()
    return ("-force", plan.local_root if winner == "local" else plan.server_root,
            "-copyonconflict=false")


def _chores(server: transport.Server, locations: Locations, computer: Computer,
            first: bool) -> str:
    """What the guard command also does on the server before unison's server starts: remove
    the temporary files of killed passes, and on a first sync the bulk copy's directory."""
    chores = leftovers.server_script(server.home, leftovers.recalled(locations.state_dir))
    return chores + bulk.server_cleanup(server.home, computer.id) if first else chores


def _first_runs(job: Pass, prepared: _Prepared, sink: LineSink, judge: _Judge,
                run_unison: Callable[..., tuple[dialogue.Run, output.Summary]],
                extra: list[str], may_copy: bool) -> tuple[dialogue.Run, output.Summary]:
    """A whole first sync: `sync.first_paths` first, else (`may_copy`) the bulk copy into a side
    that holds no file; then unison's run, which counts what they moved too."""
    early = _run_first_paths(job, prepared.plan, sink, judge, extra)
    copied = _bulk_copy(job, prepared, sink) if may_copy and early is None else None
    judge.copy_check = copied is not None
    relisting = _Relisting(job, prepared)
    try:
        run, summary = (run_unison(True, (bulk.FASTER,), relisting) if copied is not None
                        else run_unison(True))
    finally:
        judge.copy_check = False
    if copied is not None and not (job.abort is not None and job.abort.is_set()):
        run, summary = _on_the_copy(copied, judge.copy_differs, relisting, run, summary,
                                    run_unison, sink)
    if run.returncode in (0, 1):  # unison has its archives: no copy will be taken up
        _copy_over(job)
    for before in (early, copied):
        if before is not None and before.transferred:
            summary.transferred += before.transferred
            summary.nothing_to_do = False
    return run, summary


@dataclass
class _Copied:
    """A first sync's bulk copy that ended well (`unison.bulk`)."""

    source: bulk.Listing  # what was copied, as listed at the source before the copy
    transferred: int  # files and links


def _bulk_copy(job: Pass, prepared: _Prepared, sink: LineSink) -> _Copied | None:
    """A first sync into a side that holds no file (or only what a copy of ours that was cut
    off put there): rsync copies the other side's files there (`unison.bulk`); None when it
    does not apply or did not end well (unison copies then)."""
    planned = _copy_planned(job, prepared)
    if planned is None:
        return None
    way, source = planned.way, planned.source
    files, size = bulk.totals(planned.todo)
    server, plan, state_dir = job.server, prepared.plan, job.locations.state_dir
    sink(f"first sync: copying {files} file(s), {progress.human_bytes(size)}, {way.value} "
         "with rsync; unison then builds its archives on the copy")
    if job.tracker is not None:
        job.tracker.bulk(files, size, sending=way is bulk.Direction.UP)
    temp, names, partial = state_dir / "bulk", state_dir / "bulk-files", _partial_dir(job)
    server_temp = bulk.server_temp(prepared.computer.id)
    try:
        bulk.fresh_temp(temp)
        partial.mkdir(mode=0o700, exist_ok=True)
        listed = bulk.list_of(sorted(source))
        if way is bulk.Direction.UP:
            transport.run_remote(server, prepared.socket,
                                 bulk.list_script(server.home, server_temp), job.abort,
                                 data=listed)
        else:
            bulk.write_list(names, listed)
        bulk.remember(state_dir, prepared.key, way)
        argv = bulk.rsync_argv(way, server, shell=planned.shell,
                               files_from=names, local_root=plan.local_root,
                               temps=(temp, server_temp),
                               partial=partial, timeout=transport.silence_bound(server))
        ended, said = bulk.run_rsync(argv, job.abort, job.tracker.copied
                                     if job.tracker is not None else _no_bytes)
    except (OSError, DiskFull, transport.ConnectError) as exc:  # ConnectError: leaving the list
        ended, said = bulk.Copy.FAILED, str(exc)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        names.unlink(missing_ok=True)
    if ended is bulk.Copy.DONE:
        _copy_over(job)
        return _Copied(source, files)
    log.info("rsync: %s", printable(said.strip().splitlines()[-1] if said.strip() else ""))
    if (ended is bulk.Copy.FAILED and prepared.socket is not None
            and not transport.master_answers(server, prepared.socket)):
        # The connection went under the copy (a link that went down: ssh's keep-alives ended
        # it). As when a unison run loses its connection, the pass ends offline; a unison
        # started now would wait for a new connection to time out first. The next first pass
        # takes the copy up where it stopped.
        sink("first sync: the connection to the server was lost during rsync's copy")
        raise transport.ConnectError("connection to the server lost during the first "
                                     "sync's copy", Reason.CONNECTION_LOST)
    if ended is not bulk.Copy.STOPPED:  # stopped (a logout): the next first pass takes it up
        _copy_over(job)
    sink(f"first sync: rsync's copy ended {ended.value}; unison copies what is missing")
    return None


@dataclass(frozen=True)
class _CopyPlan:
    way: bulk.Direction
    source: bulk.Listing  # the side copied from, as listed now
    todo: bulk.Listing  # what of it the other side lacks
    shell: str  # rsync's -e (`bulk.rsh`)


def _copy_planned(job: Pass, prepared: _Prepared) -> _CopyPlan | None:
    """Whether this first pass copies, and how; None when it does not (unison's first sync
    does all)."""
    server = job.server
    shell = None if server.is_local else bulk.rsh(server, prepared.socket)
    if shell is None or not _may_copy(job):
        return None
    resuming = bulk.resumed(job.locations.state_dir, prepared.key)
    # Both sides listed at once (at 100 000 files each listing takes a second or more), this
    # side's mostly while the pass connected (`_early_listing`). When this side turns out to
    # hold too few files to be worth a copy, the server's listing is not waited for: it cost
    # the server one listing on a first sync.
    listing = _Meanwhile("server listing", _server_listing, job, prepared)
    here = (prepared.listing.result() if prepared.listing is not None
            else _local_listing(prepared))
    # Unless a copy is to be taken up, a home that holds files here could only be copied up.
    if resuming is None and bulk.holds_files(here) and not bulk.worth_copying(here):
        return None
    there = listing.result()
    way = None if there is None else bulk.direction(here, there, resuming)
    if there is None or way is None:
        return None
    source, target = (here, there) if way is bulk.Direction.UP else (there, here)
    if resuming is None and not bulk.worth_copying(source):
        log.debug("first sync: %d file(s), too few for a bulk copy to pay",
                  bulk.totals(source)[0])
        return None
    return _CopyPlan(way, source, {path: entry for path, entry in source.items()
                                   if not (path in target and entry.same_as(target[path]))},
                     shell)


def _may_copy(job: Pass) -> bool:
    """Whether a first sync may copy with rsync at all (`unison.bulk`): by the settings, the
    server (its front-end) and this computer."""
    server, wanted = job.server, job.config["sync"]
    return (not server.is_local and wanted["bulk_first_sync"] and not wanted["first_paths"]
            and ":" not in server.host and shutil.which("rsync") is not None)


def _partial_dir(job: Pass) -> Path:
    """Where rsync keeps the file it was copying here when a copy is cut off (`--partial-dir`),
    for the copy that takes it up."""
    return job.locations.state_dir / "bulk-partial"


def _copy_over(job: Pass) -> None:
    """No copy to take up: its record and its partial file go."""
    bulk.forget(job.locations.state_dir)
    shutil.rmtree(_partial_dir(job), ignore_errors=True)


def _no_bytes(_done: int, _files: int) -> None:
    pass


def _local_listing(prepared: _Prepared) -> bulk.Listing:
    """This side's replica's entries by unison's rules."""
    plan = prepared.plan
    return bulk.local_listing(plan.local_root, prepared.paths, plan.ignore_paths,
                              plan.ignore_names)


def _server_listing(job: Pass, prepared: _Prepared) -> bulk.Listing | None:
    """The server replica's entries by unison's rules, in one exchange (None: not there)."""
    plan = prepared.plan
    try:
        answer = transport.run_remote_bytes(
            job.server, prepared.socket,
            bulk.server_script(job.server.home, prepared.paths), job.abort)
    except transport.ConnectError as exc:
        log.debug("the server's listing: %s", exc.message)
        return None
    return bulk.parse_server_listing(answer, plan.ignore_paths, plan.ignore_names)


def _on_the_copy(copied: _Copied, differs: bool, relisting: _Relisting, run: dialogue.Run,
                 summary: output.Summary,
                 run_unison: Callable[..., tuple[dialogue.Run, output.Summary]],
                 sink: LineSink) -> tuple[dialogue.Run, output.Summary]:
    """After unison built its archives on the copy without reading the files: they hold only
    if unison found nothing to do (not `differs`), and both sides still held exactly what was
    copied, as it was, once unison had looked at them (`bulk.same_as_copied` on `relisting`);
    otherwise unison's first sync runs again the usual way, reading every file."""
    if differs:
        sink("first sync: unison found the copy different from its source; unison reads every "
             "file again")
        return run_unison(True)
    if run.returncode == 0:
        here, there = relisting.result()
        if there is not None and bulk.same_as_copied(copied.source, here, there):
            return run, summary
    sink("first sync: a file changed since it was copied (or unison did not finish); unison "
         "reads every file again")
    return run_unison(True)


class _Relisting:
    """Both sides listed (at once: at 100 000 files each listing takes a second or more) for
    the check of a copy (`_on_the_copy`), as soon as unison's run on the copy has scanned both
    sides: once it says `Reconciling changes` (a `LineSink`), rather than after it reconciled
    and wrote its archives (3-4 s at 100 000 files over `broadband`).

    That is soon enough: what the check is for is a file unison's archives would take for the
    copy's while it is not (a stand-in fingerprint recorded for a file written before unison
    looked at it). A file written after unison's scan differs from what its archives recorded,
    and the next pass reads and syncs it as any change."""

    Taken = tuple[_Meanwhile[bulk.Listing], _Meanwhile[bulk.Listing | None]]

    def __init__(self, job: Pass, prepared: _Prepared) -> None:
        self._job, self._prepared = job, prepared
        self._taken: _Relisting.Taken | None = None

    def __call__(self, line: str) -> None:
        if self._taken is None and progress.phase_of(line) == "reconciling":
            self._taken = self._take()

    def _take(self) -> _Relisting.Taken:
        return (_Meanwhile("local listing", _local_listing, self._prepared),
                _Meanwhile("server listing", _server_listing, self._job, self._prepared))

    def result(self) -> tuple[bulk.Listing, bulk.Listing | None]:
        """Both sides' listings: this side's, the server's (None: it could not be listed).
        Taken now when unison never said it reconciles."""
        here, there = self._taken or self._take()
        return here.result(), there.result()


def _both(first: LineSink, second: LineSink) -> LineSink:
    def sink(line: str) -> None:
        first(line)
        second(line)
    return sink


def _retried(run: dialogue.Run, summary: output.Summary, first: bool,
             run_unison: Callable[..., tuple[dialogue.Run, output.Summary]],
             sink: LineSink) -> tuple[dialogue.Run, output.Summary, bool]:
    """A run again, when it failed in a way a second run gets past: a lock left by a killed
    pass, or archives that disagree. Returns the last run and whether it was a first sync."""
    if run.returncode == 3 and output.Trouble.ARCHIVES_LOCKED in summary.troubles:
        # Our flock is held, and unison inherits it: no other unison of ours can be using
        # these archives, so the lock is a leftover of a killed pass.
        sink("stale unison lock left by an interrupted pass: removing it (-ignorelocks)")
        run, summary = run_unison(first, ("-ignorelocks",))
    disagree = output.Trouble.ARCHIVES_DISAGREE in summary.troubles
    if run.returncode == 3 and not first and disagree:
        # One side lost its archive (reinstalled server, restored backup): a union sync is
        # the safe way back; it never deletes.
        sink("archives disagree; retrying as a first sync (-ignorearchives)")
        first = True
        run, summary = run_unison(first)
    return run, summary, first


# How long a file that changed while unison copied it is left alone before it is copied again.
SETTLE = 1.0


def _changed_again(job: Pass, prepared: _Prepared, sink: LineSink, judge: _Judge,
                   run: dialogue.Run, summary: output.Summary, winning: tuple[str, ...]
                   ) -> tuple[dialogue.Run, output.Summary]:
    """The items of a run that failed only because their file changed while unison copied it (a
    file still being saved), synced again over just those paths (with the pass's `winning`
    options, `_winning`), judged with the rest of the pass: the pass ends with them. Once: a
    file that changes again waits for the next pass.

    A name a profile cannot hold (a control character) is synced again with its folder
    (`profile.nameable`), unless the pass forces a side: forcing its neighbours too would put
    that side's version over changes the pass was not about. It then waits for the next
    pass."""
    if run.returncode != 2 or not summary.changed:
        return run, summary
    sink(f"{len(summary.changed)} item(s) changed while unison copied them: syncing them again")
    if (job.abort or threading.Event()).wait(SETTLE):  # stopped meanwhile
        return run, summary
    judge.again()
    again_over = summary.changed if winning else collapse(
        profile.nameable(path, prepared.paths) for path in summary.changed)
    converged = _converge(job, prepared, again_over, sink, winning, judge=judge)
    if converged is None or converged[0].returncode not in (0, 1, 2):
        return run, summary
    retried, again = set(summary.changed), converged[1]
    summary.failed_paths = [path for path in summary.failed_paths
                            if path not in retried] + again.failed_paths
    summary.failed, summary.changed = len(summary.failed_paths), again.changed
    summary.transferred += again.transferred
    summary.skipped += again.skipped
    for path in again.conflicts:
        output.add_once(summary.conflicts, path)
    for path in again.errors:
        output.add_once(summary.errors, path)
    code = 2 if summary.failed_paths else 1 if summary.skipped or summary.errors else 0
    return replace(run, returncode=code), summary


NOTHING_CHANGED = "in sync: nothing changed on either side since the last pass"


def _unchanged_pass(job: Pass, prepared: _Prepared,
                    outcome: Callable[..., SyncOutcome]) -> SyncOutcome:
    """A pass in which neither side changed: unison is not run; what every completed pass
    does besides (this computer's record for the others, pruning backups) is still done."""
    with job.store.open_log() as transcript:
        transcript.write(f"--- pass (pid {os.getpid()}): neither side changed since the last "
                         "pass that had nothing to do; unison not run ---")
    result = outcome(Result.IN_SYNC, NOTHING_CHANGED)
    home = ServerHome(job.server, prepared.socket, job.abort)
    computers.publish(job.locations, home, prepared.computer, result, job.store.last_success())
    _prune_backups(job, prepared)
    return result


def _record_unchanged(job: Pass, stills: _Stills, probe: guards.Probe | None,
                      unison_took: float) -> None:
    """After a whole pass that ended in sync with nothing to do (no plan; not a first sync):
    both digests taken at its start, if both were settled (`session.unchanged`), for the
    next pass to compare with; and what unison's pass cost, for the next to weigh."""
    state_dir = job.locations.state_dir
    unchanged.save_costs(state_dir, replace(stills.costs, unison=unison_took))
    local = stills.digests.get("local")
    server = (stills.asked if stills.asked is not None
              else stills.digests.get("server") if job.server.is_local
              else None if probe is None else probe.digest)
    if local is None or server is None or not (local.settled and server.settled):
        return
    record = unchanged.Record(stills.rules, local.value, server.value, time.time())
    try:
        unchanged.save(state_dir, record)
    except DiskFull:
        log.debug("no room to record the digests: the next pass runs unison")


def _clean_leftovers(job: Pass, prepared: _Prepared, items: Sequence[output.PlanItem]) -> None:
    """unison's temporary files of killed passes, in the folders of this pass's plan (`leftovers`):
    here at once; on the server, the next pass's server command cleans them."""
    folders = sorted({os.path.dirname(item.path) for item in items})
    try:
        if not job.server.is_local:
            leftovers.remember(job.locations.state_dir, folders)
        removed = leftovers.clean_local(Path(prepared.plan.local_root), folders)
        if job.server.is_local:
            removed += leftovers.clean_local(Path(job.server.local_root), folders)
    except OSError as exc:
        log.warning("unison's temporary files not cleaned: %s", exc)
        return
    if removed:
        log.info("removed %d temporary file(s) of interrupted transfers", removed)


def _converge(job: Pass, prepared: _Prepared, paths: list[str], sink: LineSink,
              more: tuple[str, ...] = (), judge: _Judge | None = None
              ) -> tuple[dialogue.Run, output.Summary] | None:
    """One more guarded unison run over just `paths` (with the options `more`; judged by `judge`,
    the pass's, or one of its own), so that the pass ends with them settled, not the next one;
    None when unison's profile cannot hold a name."""
    profile_file = job.locations.unison_dir / f"{profile.PROFILE}.prf"
    try:
        text = profile.build_profile(replace(prepared.plan, paths=tuple(paths)))
    except profile.ProfileValueError as exc:  # a name unison's profile cannot hold
        log.warning("left for the next pass: %s", exc)
        return None
    write_atomic(profile_file, text)
    try:
        return _run_unison(job, False, sink, judge or _Judge(job, prepared, False),
                           [*prepared.extra, *more])
    finally:
        write_atomic(profile_file, profile.build_profile(prepared.plan))


def _send_copies(job: Pass, prepared: _Prepared, paths: list[str]) -> int:
    """The conflict copies this pass renamed (each is on one side only) to the other side, so
    that the pass ends with both sides equal. Returns the items it transferred."""
    with job.store.open_log() as transcript:
        sink = _pass_sink(job, transcript)
        sink(f"conflict copies: {len(paths)} to the other side")
        converged = _converge(job, prepared, paths, sink)
    if converged is None:
        return 0
    run, summary = converged
    if run.returncode != 0:
        log.warning("conflict copies not synced yet (unison exit code %d): the next pass "
                    "syncs them", run.returncode)
    return summary.transferred


def _identical_elsewhere(items: Sequence[output.PlanItem]) -> list[str]:
    """Conflicts between identical contents: only the properties (times, permissions) differ.

    A first sync shows them for files copied without their times (`cp`, a download, a restored
    backup); unison compared the contents already, so no data is at stake in either choice.
    """
    return [item.path for item in items
            if item.direction is output.Direction.CONFLICT
            and item.local is output.Content.PROPS and item.server is output.Content.PROPS]


def _older_props_win(job: Pass, prepared: _Prepared, sink: LineSink, first: bool,
                     items: Sequence[output.PlanItem], run: dialogue.Run,
                     summary: output.Summary) -> tuple[dialogue.Run, output.Summary]:
    """A first sync's conflicts between identical files, left by `prefer = none`, settled: the
    older time wins (most likely the original's, the newer one is the copy's), on both sides,
    in this pass. (`prefer = newer` settles them already, the other way.)"""
    if not first or job.config["sync"]["prefer"] != "none" or not summary.conflicts:
        return run, summary
    same = [path for path in _identical_elsewhere(items) if path in summary.conflicts]
    if not same:
        return run, summary
    sink(f"first sync: {len(same)} identical file(s) with other times or permissions here "
         "and on the server: the older one's kept on both sides")
    converged = _converge(job, prepared, same, sink, ("-prefer", "older"))
    if converged is None or converged[0].returncode != 0:
        return run, summary
    summary.conflicts = [path for path in summary.conflicts if path not in same]
    summary.skipped = max(0, summary.skipped - len(same))
    summary.transferred += converged[1].transferred
    if run.returncode == 1 and not summary.skipped:
        run = replace(run, returncode=0)
    return run, summary


def _note_settled(result: SyncOutcome, items: Sequence[output.PlanItem]) -> None:
    """Record the conflicts `sync.prefer` settled in this pass (they need nobody, but nobody
    should be surprised by a conflict copy either)."""
    if result.result not in COMPLETED:
        return
    result.settled = [path for path in conflict_copies.settled_conflicts(items)
                      if path not in result.conflicts]
    if result.settled:
        names = ", ".join(escape(n) for n in result.settled[:5]) + (
            " …" if len(result.settled) > 5 else "")
        result.message = (f"{result.message}; {len(result.settled)} conflict(s) settled by "
                          f"sync.prefer, both versions kept: {names}")


def _prune_backups(job: Pass, prepared: _Prepared) -> None:
    """Backup retention on both sides (at most daily: `backups.prune_if_due`)."""
    remote = (None if job.server.is_local
              else backups.Remote(job.server, prepared.socket, job.abort))
    sync_config = job.config["sync"]
    try:
        backups.prune_if_due(job.locations.state_dir, job.locations.backup_dir, remote,
                             sync_config["backup_days"], sync_config["backup_max_bytes"],
                             time.time())
    except OSError as exc:
        log.warning("backups not pruned: %s", exc)


def _tell_the_others(job: Pass, prepared: _Prepared, judge: _Judge,
                     result: SyncOutcome) -> list[str]:
    """What the user's other computers learn from this pass: a mass deletion the user
    confirmed here (recorded again now that it is done: a pass of theirs that began before
    then had not seen it), and this computer's record. A pass that followed a confirmation
    made elsewhere says so. Returns the paths of the conflict copies it named (see
    `_name_conflict_copies`)."""
    if result.result not in COMPLETED:  # the server's replica may not be the right one
        return []
    home = ServerHome(job.server, prepared.socket, job.abort)
    if judge.confirmation is not None:
        computers.confirm(home, prepared.computer, judge.confirmed, judge.confirmation)
    renamed = _name_conflict_copies(job, prepared, judge.items)
    if (followed := judge.following) is not None:
        note = (f"following a deletion confirmed on {followed.name} at "
                f"{progress.human_time(followed.time)}: {judge.losses['local'].deleted} "
                "file(s), kept in backups")
        result.notes.append(note)
        result.message = f"{result.message}; {note}"
    computers.publish(job.locations, home, prepared.computer, result, job.store.last_success())
    return renamed


def _name_conflict_copies(job: Pass, prepared: _Prepared,
                          items: Sequence[output.PlanItem]) -> list[str]:
    """Rename the copies unison kept of overwritten versions after their computer and time,
    and give a version brought back to a side that had deleted it its own name again
    (`conflict_copies.restore_local`). Returns the paths renamed."""
    overwritten = conflict_copies.overwritten_versions(items)
    restored = conflict_copies.restored_versions(items)
    server, me, root = job.server, prepared.computer, Path(prepared.plan.local_root)
    renamed = [p for side, p in restored
               if side == "local" and conflict_copies.restore_local(root, p)]
    for path in (p for side, p in overwritten if side == "local"):
        renamed += conflict_copies.rename_local(root, path, me.name)
    there = [p for side, p in overwritten if side == "server"]
    back_there = [p for side, p in restored if side == "server"]
    if not there and not back_there:
        return renamed
    other = (conflict_copies.last_other(ServerHome(server, prepared.socket, job.abort), me.id)
             if there else "")
    if not server.is_local:
        return renamed + conflict_copies.rename_remote(server, prepared.socket, there, other,
                                                       back_there)
    renamed += [p for p in back_there
                if conflict_copies.restore_local(Path(server.local_root), p)]
    for path in there:
        renamed += conflict_copies.rename_local(Path(server.local_root), path, other)
    return renamed




def _judged(job: Pass, prepared: _Prepared, run: dialogue.Run, summary: output.Summary,
            first: bool, judge: _Judge, outcome: Callable[..., SyncOutcome]) -> SyncOutcome:
    """The outcome of a guarded run, and what it leaves for the next pass's guards."""
    if refusal := _server_refusal(job, prepared, run.lines):
        log.debug("%s", refusal)
        return outcome(Result.REFUSED, refusal, reason=Reason.REPLICA)
    if judge.refusal is not None and run.declined is not output.Question.OTHER:
        message = judge.refusal.message(judge.limits, job.server.label)
        log.debug("%s", message)
        refused.save(job.locations.state_dir, prepared.key, judge.refusal)
        return outcome(Result.REFUSED, message, action=REFUSAL_ACTION,
                       reason=Reason.LOSSES)
    result = _finish(job.store, prepared.key, run, summary, first, outcome)
    # Configured paths that exist nowhere are most likely typos; defaults may simply not exist.
    explicit = job.config["sync"]["paths"]
    absent = guards.absent_paths(prepared.paths, prepared.found)
    if len(absent) == len(prepared.paths):
        result.notes.append("nothing to sync: none of the synced paths exists here or on the "
                            "server (sync.paths)")
    for path in absent if explicit else ():
        meant = guards.likely_meant(path, _existing_names(job, path))
        note = (f"sync.paths: {escape(path)!r} exists neither here nor on the server"
                + (f" (did you mean {escape(meant)!r}?)" if meant else ""))
        log.debug("%s", note)
        result.notes.append(note)
    if result.result in COMPLETED:
        _remember(job, prepared, judge, summary.nothing_to_do,
                  complete=result.result != Result.PARTIAL, started=result.started)
    return result


def _existing_names(job: Pass, path: str) -> list[str]:
    """The names beside `path` in the local home (where a typo's intended name lives)."""
    parent = job.locations.home / os.path.dirname(path)
    prefix = os.path.dirname(path)
    try:
        return [os.path.join(prefix, name) for name in os.listdir(parent)]
    except OSError:
        return []


def _probe_server(server: transport.Server, socket: Path | None, paths: Sequence[str],
                  nonce: str, abort: threading.Event | None) -> guards.Probe:
    """The server replica's report, asked over ssh before unison runs."""
    answer = transport.run_remote(server, socket, guards.report_script(server.home, paths,
                                                                       nonce), abort)
    probe = guards.parse_report(answer.splitlines(), nonce, len(paths))
    if probe is None:
        raise transport.ConnectError(f"could not inspect the server home {server.label}: "
                                     "unexpected answer", Reason.SSH_FAILED)
    return probe


def _server_refusal(job: Pass, prepared: _Prepared, lines: list[str]) -> str | None:
    """Why the server's guard refused the run whose output is `lines`, if it did; takes in
    the server's report from that output either way."""
    if job.server.is_local:
        return None
    probe = guards.parse_report(lines, prepared.nonce, len(prepared.paths))
    if probe is not None:
        prepared.found["server"] = probe
    found = {"server": probe} if probe is not None else {}
    names = _names(prepared.plan, job.server)
    if refusal := _replica_refusal(found, prepared.ids, prepared.first, names):
        return refusal
    if probe is None and any(line.startswith(guards.REPORT) for line in lines):
        return (f"the server home {job.server.label} sent a report this pass did not ask for; "
                "nothing was synced")
    return None


def _write_marker(side: str, job: Pass, prepared: _Prepared) -> str:
    """Give the replica on `side` a new marker; returns the id it has now ("" on failure)."""
    server, replica_id = job.server, guards.new_replica_id()
    try:
        if side == "server" and not server.is_local:
            script = guards.write_marker_script(server.home, replica_id)
            return guards.parse_marker(
                transport.run_remote(server, prepared.socket, script)) or ""
        root = prepared.plan.local_root if side == "local" else server.local_root
        guards.write_local_marker(Path(root), replica_id)
    except (OSError, RoamingHomesError) as exc:
        log.warning("could not write the replica marker on the %s side: %s", side, exc)
        return ""
    return replica_id


def _remember(job: Pass, prepared: _Prepared, judge: _Judge, unchanged: bool,
              complete: bool, started: str) -> None:
    """After a pass that ran: write missing replica markers and record both replicas' ids
    (for the next pass's marker check); add what it deleted and overwrote to the window; after
    a complete pass that changed something, take a new baseline. A forced pass was confirmed
    and a first pass is a union: the window starts afresh after either. A whole pass (every
    synced path) that began at `started` saw every deletion confirmed elsewhere before then."""
    entry = {}
    for side in ("local", "server"):
        probe = prepared.found.get(side)
        replica_id = ("" if probe is None
                      else probe.marker or _write_marker(side, job, prepared))
        if replica_id or prepared.ids[side]:
            entry[f"{side}_id"] = replica_id or prepared.ids[side]
    job.store.set_replicas(prepared.key, entry)
    if not unchanged:  # nothing moved: the baseline and its window stay (not even read)
        _remember_losses(job, prepared, judge, remeasure=complete)
    if judge.refusal is None and prepared.plan.paths == prepared.paths:
        # A whole pass went through: nothing it refused before is held back any more.
        refused.clear(job.locations.state_dir, prepared.key)
        job.store.set_whole_pass_started(started)


def _remember_losses(job: Pass, prepared: _Prepared, judge: _Judge, remeasure: bool) -> None:
    """The window and baseline after a pass that moved something (see `_remember`)."""
    store = prepared.baselines
    baseline = store.current()
    if judge.force or judge.following or prepared.first:
        baseline.recent = []  # confirmed, or a union that was never judged: a new window
    else:
        baseline.add_losses(judge.losses, time.time(), job.config["sync"]["guard_window"])
    store.save(store.measure(baseline.recent) if remeasure else baseline)


def _finish(store: StateStore, key: str, run: dialogue.Run, summary: output.Summary, first: bool,
            outcome: Callable[..., SyncOutcome]) -> SyncOutcome:
    """The outcome of a run; remembers that the roots have archives now."""
    result, message, reason = _classify(run, summary)
    if result in COMPLETED:
        store.mark_synced(key)
    return outcome(result, message, transferred=summary.transferred, skipped=summary.skipped,
                   failed=summary.failed + len(summary.errors), conflicts=summary.conflicts,
                   failed_paths=summary.failed_paths + summary.errors, first_run=first,
                   reason=reason)


def _run_first_paths(job: Pass, plan: profile.Plan, sink: LineSink, judge: _Judge,
                     extra: list[str]) -> output.Summary | None:
    """On a first run, a pass over just `sync.first_paths`, so that they arrive before the rest.

    Paths outside the synced paths are left out (with a line saying so): they would otherwise
    start syncing something the configuration does not sync.
    """
    early = []
    for path in job.config["sync"]["first_paths"]:
        if is_below(path, plan.paths):
            early.append(path)
        else:
            sink(f"sync.first_paths: {path!r} is not below a synced path; left out")
    if not early:
        return None
    profile_file = job.locations.unison_dir / f"{profile.PROFILE}.prf"
    try:
        write_atomic(profile_file, profile.build_profile(replace(plan, paths=tuple(early))))
    except profile.ProfileValueError as exc:
        sink(f"sync.first_paths left out: {exc}")
        return None
    sink(f"first sync: {', '.join(early)} before the rest (sync.first_paths)")
    try:
        return _run_unison(job, True, sink, judge, extra)[1]
    finally:
        write_atomic(profile_file, profile.build_profile(plan))


def _run_unison(job: Pass, first: bool, sink: LineSink, judge: _Judge,
                extra: list[str]) -> tuple[dialogue.Run, output.Summary]:
    argv = profile.build_argv(job.config["sync"]["unison"], first, extra)
    if first:
        sink(progress.FIRST_RUN_LINE)
    fds = () if job.lock_fd is None else (job.lock_fd,)
    try:
        env = profile.environment(job.locations, judge.prepared.computer.id)
        run = dialogue.run(argv, env, sink, judge.decide, job.abort, fds)
    except FileNotFoundError:
        message = f"Fatal error: unison program not found: {argv[0]} (sync.unison)"
        sink(message)
        run = dialogue.Run(3, [message])
    return run, output.parse_output(run.lines)
