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

from roaming_homes.actions import sync as engine
from roaming_homes.actions.computers import known
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import COMPLETED, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session.computer import this_computer
from roaming_homes.session.lock import SyncLock, lock_holder, make_way
from roaming_homes.session.state import StateStore
from roaming_homes.unison import profile, runner
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
            socket = transport.connect(server, locations.control_dir)
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
    others = [r for r in known(locations) if r.id != here.id and r.last_success]
    there = max(others, key=lambda r: r.last_success or "").name if others else ""
    return here.name, there


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
