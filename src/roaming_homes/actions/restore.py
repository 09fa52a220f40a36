"""Bringing files back.

`restore --refused` undoes what the loss guard refused to propagate. When the guard refuses a
pass, the side that would have lost the files still has them: the restore syncs just the
refused paths with that side's version winning (unison -force), so the deleted files come back
and the overwritten ones get their old content again; what the damaged side held is kept in
its backups, like everything a sync replaces.

`restore PATH` and `restore --since TIME` bring back versions kept in the backups of either
side (`backups`): they are written into the local home (or `--to DIR`), never over a live file
unless the user says so (`force`; the live file then goes to the local backups), and the next
pass syncs them like any new file.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from roaming_homes.actions import sync as engine
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations, is_below
from roaming_homes.safety import backups, refused
from roaming_homes.safety.backups import Version
from roaming_homes.session.computer import this_computer
from roaming_homes.session.lock import SyncLock
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape
from roaming_homes.unison import frontends
from roaming_homes.unison import ssh as transport

_RELATIVE = re.compile(r"([0-9]+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def restore_refused(config: Config, locations: Locations) -> SyncOutcome:
    """Put back what the last refused pass would have deleted or overwritten, from the side
    that still has it. Raises RoamingHomesError when nothing was refused (or the lock is
    held); the outcome is recorded like a pass."""
    pending = refused.load(locations.state_dir)
    if pending is None:
        raise RoamingHomesError("nothing to restore: the last pass was not refused by the "
                                "mass-deletion guard", ExitCode.IN_SYNC)
    server = transport.Server.from_config(config["server"])
    with SyncLock(locations.lock_file) as lock:
        store = StateStore(locations.state_dir)
        job = engine.Pass(config, locations, server, store, lock_fd=lock.fileno)
        outcome = engine.record(store, engine.guarded_pass(
            job, engine.outcomes(server), force=True, only=pending.paths, winner=pending.side))
    if outcome.result == Result.IN_SYNC:
        refused.clear(locations.state_dir, pending.key)
        outcome.message = (f"restored {len(pending.paths)} item(s) from "
                           f"{'the server' if pending.side == 'server' else 'this computer'}: "
                           f"{outcome.message}")
    return outcome


# --- kept versions ------------------------------------------------------------------------------

def parse_since(text: str, now: datetime | None = None) -> float:
    """A point in time as the user types it: `2h`, `30m`, `3d`, `1w` ago, or a local date and
    time (`2026-11-29`, `2026-11-29 10:00`, ISO 8601 with or without zone). Raises ValueError."""
    now = now or datetime.now().astimezone()
    if match := _RELATIVE.fullmatch(text.strip()):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        return (now - timedelta(seconds=seconds)).timestamp()
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.astimezone()  # the user's local time
    return when.timestamp()


def home_path(typed: str, home: Path, cwd: Path | None = None) -> str:
    """The path relative to the home of what the user typed (relative to `cwd`, or absolute).
    Raises RoamingHomesError (usage) for a path outside the home or the home itself."""
    absolute = Path(os.path.normpath(Path(cwd or Path.cwd(), typed)))
    for base in (home, home.resolve()):
        for candidate in (absolute, absolute.parent.resolve() / absolute.name):
            try:
                relative = candidate.relative_to(base)
            except ValueError:
                continue
            if str(relative) != ".":
                return str(relative)
    raise RoamingHomesError(f"{escape(typed)} is not inside the home {home}", ExitCode.USAGE)


@dataclass
class Kept:
    """The versions kept on both sides, and what could not be looked at."""

    versions: list[Version]
    notes: list[str] = field(default_factory=list)
    remote: backups.Remote | None = None
    computer: str = ""  # this computer's name: every local backup was made by its passes

    def to_dict(self, version: Version) -> dict[str, Any]:
        return {**version.to_dict(), "mtime": _iso(version.mtime),
                "replaced": _iso(version.superseded),
                "replaced_on": self.computer if version.side == "local" else None}


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def kept(config: Config, locations: Locations) -> Kept:
    """Every version kept on both sides (the server's through ssh, when it answers)."""
    server = transport.Server.from_config(config["server"])
    found = Kept(backups.local_versions(locations.backup_dir),
                 computer=this_computer(locations, config["client"]["name"]).name)
    if server.is_local:  # both unisons run here: their backups share the local directory
        found.versions = backups.dated(found.versions)
        return found
    try:
        remote = backups.Remote(*frontends.connect(server, locations.control_dir))
        found.versions += remote.versions()
        found.remote = remote
    except transport.ConnectError as exc:
        found.notes.append(f"the server's backups could not be looked at: {exc.message}")
    found.versions = backups.dated(found.versions)
    return found


def select(versions: Sequence[Version], path: str | None, since: float | None) -> list[Version]:
    """The versions of `path` (a file, or everything below a directory), or of every path,
    that stopped being current at or after `since`."""
    return sorted((v for v in versions
                   if (path is None or is_below(v.path, [path]))
                   and (since is None or v.superseded >= since)),
                  key=lambda v: (v.path, v.number))


# --- putting versions back ----------------------------------------------------------------------

@dataclass
class Restored:
    """What a restore did: the versions written (and where), the live files in the way."""

    placed: list[tuple[Version, Path]] = field(default_factory=list)
    in_the_way: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.NEEDS_USER if self.in_the_way or not self.placed else ExitCode.IN_SYNC

    def message(self, into_home: bool) -> str:
        if self.in_the_way:
            names = ", ".join(escape(str(p)) for p in self.in_the_way[:3])
            return (f"nothing restored: {len(self.in_the_way)} live file(s) in the way "
                    f"({names}{' …' if len(self.in_the_way) > 3 else ''}); restore elsewhere "
                    "with --to DIR, or replace them with --force (they go to the backups)")
        if not self.placed:
            return "nothing to restore: no kept version matches"
        then = "; the next pass syncs them" if into_home else ""
        return f"restored {len(self.placed)} file(s){then}"

    def to_dict(self, into_home: bool) -> dict[str, Any]:
        return {"restored": [{"path": v.path, "side": v.side, "number": v.number,
                              "mtime": _iso(v.mtime), "to": str(target)}
                             for v, target in self.placed],
                "in_the_way": [str(p) for p in self.in_the_way], "notes": self.notes,
                "message": self.message(into_home), "exit_code": int(self.exit_code)}


def choose(versions: Sequence[Version], number: int | None) -> list[Version]:
    """One version of each path: `number` (as listed), else the newest of those given."""
    chosen: dict[str, Version] = {}
    for version in sorted(versions, key=lambda v: v.number):
        if number is None:
            chosen.setdefault(version.path, version)
        elif version.number == number:
            chosen[version.path] = version
    return list(chosen.values())


def placements(chosen: Sequence[Version], path: str | None, home: Path,
               to: Path | None) -> list[tuple[Version, Path]]:
    """Where each chosen version goes: its own place in the home, or below `to` (the asked
    path's last component and what is below it, or every path in full without one)."""
    base = os.path.dirname(path) if path else ""
    return [(v, (to / os.path.relpath(v.path, base or ".")) if to else home / v.path)
            for v in chosen]


def _displace(backup_dir: Path, path: str, live: Path) -> None:
    """Move the live file at `path` into the local backups as their newest old version,
    renumbering the older ones as unison does."""
    kept_dir = Path(backup_dir, path).parent
    name = Path(path).name
    numbers = sorted((index for other, index in
                      (backups.parse_name(p.name) for p in kept_dir.glob(f".bak.*.{name}"))
                      if other == name and index), reverse=True)
    for index in numbers:
        os.replace(kept_dir / f".bak.{index}.{name}", kept_dir / f".bak.{index + 1}.{name}")
    if (kept_dir / name).exists():
        os.replace(kept_dir / name, kept_dir / f".bak.1.{name}")
    kept_dir.mkdir(parents=True, exist_ok=True)
    shutil.move(live, kept_dir / name)


def _write(target: Path, data: bytes, mtime: float, mode: int) -> None:
    """Write one version in one step (a temporary file beside it, renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.roaming-homes-restore")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode & 0o7777)
    os.utime(tmp, (time.time(), mtime))
    os.replace(tmp, target)


def _contents(found: Kept, backup_dir: Path,
              versions: Sequence[Version]) -> dict[str, tuple[bytes, float, int]]:
    """Each version's content, modification time and mode, by (side, stored path)."""
    contents = {}
    for version in (v for v in versions if v.side == "local"):
        source = backup_dir / version.stored
        info = source.stat()
        contents[f"local:{version.stored}"] = (source.read_bytes(), info.st_mtime, info.st_mode)
    there = [v for v in versions if v.side == "server"]
    if there and found.remote is not None:
        for stored, item in found.remote.fetch(there).items():
            contents[f"server:{stored}"] = item
    return contents


def put_back(found: Kept, locations: Locations, placed: Sequence[tuple[Version, Path]],
             force: bool, into_home: bool) -> Restored:
    """Write the versions where `placed` says, unless a live file is in the way (then nothing
    is written) and `force` is not given; with `force` a live file in the home goes to the
    local backups first."""
    result = Restored(notes=list(found.notes))
    blocked = [target for _v, target in placed if os.path.lexists(target)]
    unmovable = [t for t in blocked if t.is_dir() and not t.is_symlink()]
    if (blocked and not force) or unmovable:
        result.in_the_way = unmovable or blocked
        return result
    contents = _contents(found, locations.backup_dir, [v for v, _t in placed])
    for version, target in placed:
        item = contents.get(f"{version.side}:{version.stored}")
        if item is None:
            result.notes.append(f"{escape(version.path)}: its version could not be fetched")
            continue
        if into_home and os.path.lexists(target):
            _displace(locations.backup_dir, version.path, target)
        _write(target, *item)
        result.placed.append((version, target))
    return result


def restore_versions(config: Config, locations: Locations, path: str | None, *,
                     number: int | None = None, since: float | None = None,
                     to: Path | None = None, force: bool = False) -> Restored:
    """Bring back `path` (version `number`, else the newest kept), or every file deleted since
    `since`, into the home (under the sync lock) or below `to`."""
    found = kept(config, locations)
    candidates = select(found.versions, path, since)
    if since is not None:  # only what is gone: a file that is back (or was only changed) stays
        candidates = [v for v in candidates if not os.path.lexists(locations.home / v.path)]
    placed = placements(choose(candidates, number), path, locations.home, to)
    if to is not None:
        return put_back(found, locations, placed, force, into_home=False)
    with SyncLock(locations.lock_file):
        return put_back(found, locations, placed, force, into_home=True)
