"""Unresolved conflicts: list them with both sides' details, and resolve them by hand.

The list comes from the last pass (state.json); the details (mtime and size on each side) are
measured now: locally with stat, on the server with one `stat` over the shared ssh connection.
`resolve` runs unison interactively on the same profile as the automatic passes, under the
sync lock, so automatic syncs skip (exit 75) while the user decides.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from roaming_homes.actions import conflict_copies
from roaming_homes.actions import sync as engine
from roaming_homes.actions.computers import known
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import COMPLETED, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.server.records import last_other
from roaming_homes.session.computer import this_computer
from roaming_homes.session.lock import SyncLock, lock_holder, make_way
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape
from roaming_homes.unison import frontends, profile, runner
from roaming_homes.unison import ssh as transport

log = logging.getLogger(__name__)

GUI = "unison-gtk"


@dataclass(frozen=True)
class Side:
    mtime: float | None  # None: absent (or unknown when the server is offline)
    size: int | None
    by: str = ""  # the computer whose version it is, as far as known


@dataclass(frozen=True)
class Conflict:
    path: str
    local: Side
    server: Side

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stat_script(root: str, paths: Sequence[str]) -> str:
    """sh that prints `mtime size` (or `-`) for each path below root, one line each."""
    q = shlex.quote
    lines = [f"cd {q(root)} || exit 1"]
    lines += [f"stat -c '%Y %s' -- {q(p)} 2>/dev/null || echo -" for p in paths]
    return "; ".join(lines)


def parse_stat(output: str, count: int) -> list[Side]:
    """Read `stat_script`'s answer; missing or odd lines read as unknown."""
    sides = []
    lines = output.splitlines()
    for index in range(count):
        fields = lines[index].split() if index < len(lines) else []
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            sides.append(Side(float(fields[0]), int(fields[1])))
        else:
            sides.append(Side(None, None))
    return sides


def _stat_local(root: Path, path: str) -> Side:
    try:
        st = (root / path).lstat()
    except OSError:
        return Side(None, None)
    return Side(float(int(st.st_mtime)), st.st_size)


def last_known_conflicts(history: Sequence[SyncOutcome]) -> list[str]:
    """The conflicts of the latest pass that ran unison to the end (exit 0, 1 or 2).

    A pass that was skipped (offline, busy) or refused did not look at the files: the
    conflicts found before it are still there.
    """
    for entry in reversed(history):
        if entry.result in COMPLETED:
            return entry.conflicts
    return []


def list_conflicts(config: Config, locations: Locations) -> tuple[list[Conflict], str]:
    """The conflicts the last completed pass left, with both sides' details, and a note if the
    server side could not be inspected (offline)."""
    paths = last_known_conflicts(StateStore(locations.state_dir).history())
    if not paths:
        return [], ""
    server = transport.Server.from_config(config["server"])
    note = ""
    if server.is_local:
        remote = [_stat_local(Path(server.local_root), p) for p in paths]
    else:
        try:
            server, socket = frontends.connect(server, locations.control_dir)
            output = transport.run_remote(server, socket, stat_script(server.home, paths))
            remote = parse_stat(output, len(paths))
        except RoamingHomesError as exc:
            note = f"server side unknown: {exc.message}"
            remote = [Side(None, None)] * len(paths)
    here, there = _authors(config, locations)
    return [Conflict(p, replace(_stat_local(locations.home, p), by=here), replace(r, by=there))
            for p, r in zip(paths, remote, strict=True)], note


def _authors(config: Config, locations: Locations) -> tuple[str, str]:
    """Who made each side's version: this computer here; on the server, the user's other
    computer that synced last (from the records the last pass brought back)."""
    here = this_computer(locations, config["client"]["name"])
    there = last_other(known(locations), here.id)
    return here.name, there.name if there else ""


def resolver_argv(program: str, env: Mapping[str, str],
                  which: Callable[[str], str | None] = shutil.which,
                  extra: Sequence[str] = ()) -> list[str]:
    """The graphical unison when there is a display and it is installed, else the text UI."""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        gui = which(GUI)
        if gui:
            return [gui, profile.PROFILE, *extra]
    return profile.build_argv(program, first_run=False, extra=extra, guarded=False)


def resolve(config: Config, locations: Locations) -> SyncOutcome:
    """Run the interactive unison under the sync lock, then one ordinary pass to record the
    outcome; returns that pass's outcome. Raises RoamingHomesError when nothing ran."""
    if daemon_pid := lock_holder(locations.daemon_lock_file):
        make_way(locations, daemon_pid)  # real-time mode holds the lock for good
    lock = SyncLock(locations.lock_file)
    lock.acquire("resolve")
    try:
        prepared = engine.prepare_interactive(config, locations)
        argv = resolver_argv(config["sync"]["unison"], os.environ, extra=prepared.extra)
        log.info("opening %s on the roaming-homes profile; automatic syncs wait until it is "
                 "closed", os.path.basename(argv[0]))
        fds = () if lock.fileno is None else (lock.fileno,)
        try:
            code = runner.run(argv, env=profile.environment(locations, prepared.computer.id),
                              pass_fds=fds, check=False).returncode
        except FileNotFoundError:
            raise RoamingHomesError(f"unison program not found: {argv[0]} (sync.unison)",
                                    ExitCode.FAILED) from None
        if code < 0 or code == 3:
            raise RoamingHomesError(f"{argv[0]} ended with exit code {code}", ExitCode.FAILED)
    finally:
        lock.release()
    return engine.run_pass(config, locations)


# --- resolving without a UI -------------------------------------------------------------------

KEEP = ("both", "local", "server", "newer")
LOCK_WAIT = 300.0  # seconds to wait for a pass of the session daemon's to end


@dataclass(frozen=True)
class Choice:
    """How one conflict is settled: `winner`'s version keeps the name on both sides; with
    `copy`, the server's version is first kept beside it as a conflict copy."""

    path: str
    winner: str  # "local" | "server"
    copy: bool = False


def choose(conflict: Conflict, keep: str) -> Choice:
    """The choice `keep` ("both", "local", "server", "newer") makes for `conflict`. A side
    that is absent (deleted there) loses to one that has the file for "newer" and "both"
    (nothing to keep two of). Raises RoamingHomesError when the sides are unknown."""
    local, server = conflict.local.mtime, conflict.server.mtime
    if keep in ("local", "server"):
        return Choice(conflict.path, keep)
    if local is None and server is None:
        raise RoamingHomesError(f"{escape(conflict.path)}: neither side's version could be "
                                "looked at; choose --keep local or server", ExitCode.TRY_LATER)
    if local is None or server is None:
        return Choice(conflict.path, "local" if server is None else "server")
    if keep == "both":
        return Choice(conflict.path, "local", copy=True)
    return Choice(conflict.path, "local" if local >= server else "server")


def resolve_paths(config: Config, locations: Locations, paths: Sequence[str],
                  keep: str) -> SyncOutcome:
    """Settle the conflicts at `paths` (relative to the home) as `keep` says, then run one
    ordinary pass (which records what is left and brings a kept copy to this computer); returns
    that pass's outcome, or the failed settling pass's. Raises RoamingHomesError for a path
    that is not an unresolved conflict, or when the server could not be looked at."""
    found, note = list_conflicts(config, locations)
    known_paths = {c.path: c for c in found}
    if unknown := [p for p in paths if p not in known_paths]:
        raise RoamingHomesError(f"not an unresolved conflict: {', '.join(map(escape, unknown))} "
                                "(see roaming-homes conflicts)", ExitCode.USAGE)
    if note and keep != "local" and keep != "server":
        raise RoamingHomesError(note, ExitCode.TRY_LATER)
    choices = [choose(known_paths[p], keep) for p in dict.fromkeys(paths)]
    # With the session daemon, wait for a pass of its own to end (as `sync` does): a click on
    # a notification must not fail because a scheduled pass happens to run.
    lock_wait = 0.0
    if daemon_pid := lock_holder(locations.daemon_lock_file):
        make_way(locations, daemon_pid)  # real-time mode holds the lock for good
        lock_wait = LOCK_WAIT
    failed = _settle(config, locations, choices, known_paths, lock_wait)
    if failed is not None:
        return failed
    outcome = engine.run_pass(config, locations, lock_wait=lock_wait)
    if outcome.result in COMPLETED:
        outcome.message = f"{_kept(choices, keep)}; {outcome.message}"
    return outcome


def _settle(config: Config, locations: Locations, choices: Sequence[Choice],
            known_paths: Mapping[str, Conflict], lock_wait: float) -> SyncOutcome | None:
    """The settling passes, under the lock: one per winning side, over just those paths (the
    losing versions go to that side's backups). The failed pass's recorded outcome, or None."""
    server = transport.Server.from_config(config["server"])
    lock = SyncLock(locations.lock_file)
    lock.acquire("resolve", wait=lock_wait)
    try:
        store = StateStore(locations.state_dir)
        job = engine.Pass(config, locations, server, store, lock_fd=lock.fileno)
        if copies := [c for c in choices if c.copy]:
            _keep_server_copies(config, locations, server, copies, known_paths)
        for winner in ("local", "server"):
            only = tuple(c.path for c in choices if c.winner == winner)
            if not only:
                continue
            result = engine.guarded_pass(job, engine.outcomes(server), only=only, winner=winner)
            if result.result not in COMPLETED or result.conflicts:
                return engine.record(store, result)
    finally:
        lock.release()
    return None


def _keep_server_copies(config: Config, locations: Locations, server: transport.Server,
                        copies: Sequence[Choice], known_paths: Mapping[str, Conflict]) -> None:
    """Copy the server's versions beside them (the next pass brings the copies here)."""
    other = _authors(config, locations)[1] or "the server"
    server, socket = frontends.connect(server, locations.control_dir)
    for choice in copies:
        mtime = known_paths[choice.path].server.mtime or 0.0
        copy = conflict_copies.keep_server_copy(server, socket, choice.path, other, mtime)
        log.info("the server's version of %s is kept as %s", escape(choice.path), escape(copy))


def _kept(choices: Sequence[Choice], keep: str) -> str:
    names = ", ".join(escape(c.path) for c in choices[:5]) + (" …" if len(choices) > 5 else "")
    if keep == "both":
        return f"kept both versions of {names} (the other as a conflict copy)"
    sides = {c.winner for c in choices}
    side = ("this computer's" if sides == {"local"} else "the server's" if sides == {"server"}
            else "the newer")
    return f"kept {side} version of {names} (the other in the backups)"
