"""The old versions unison keeps on both sides: where they are, what they are, which to drop.

unison 2.52 with `backuplocation = central` and `maxbackups = N` keeps them under the file's
own path in the backup directory: the newest old version under the file's own name, older ones
as `.bak.1.NAME`, `.bak.2.NAME` … (the higher the number, the older), and renumbers them all
when a newer one comes (docs/unison.md §4). A backup keeps its version's modification time;
its ctime is when unison last moved it (made it a backup, or renumbered it).

Locally they are in the state directory (`Locations.backup_dir`); on the server in the server
home's `.roaming-homes/backup/` (`server_dir`), which is never synced and never counted. With
`server.root` both unisons run here and share the local directory: there is no server side.

Names travel as bytes (NUL-separated) and are decoded with surrogateescape, so a name that is
not UTF-8 is still found, fetched and removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
import tarfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from roaming_homes.errors import RoamingHomesError
from roaming_homes.server.records import DIRECTORY
from roaming_homes.session.state import write_atomic
from roaming_homes.unison import ssh

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"\.bak\.([0-9]+)\.(.+)", re.S)
DAY = 86400.0
STATE_FILE = "backups.json"  # in the state dir: when retention last ran, the sizes it measured
PRUNE_EVERY = DAY  # retention lists every backup of both sides: not something for every pass


IN_SERVER_HOME = f"{DIRECTORY}/backup"  # the server's backups, relative to its home


def server_dir(home: str) -> str:
    """Where the server's unison keeps its backups: in the server home, never synced."""
    return f"{home.rstrip('/')}/{IN_SERVER_HOME}"


def parse_name(name: str) -> tuple[str, int]:
    """The file name a backup is of, and its number: 0 for the newest old version (the file's
    own name), N for `.bak.N.NAME` (older the higher N)."""
    match = _NUMBERED.fullmatch(name)
    if match is None:
        return name, 0
    return match.group(2), int(match.group(1))


@dataclass(frozen=True)
class Version:
    """One kept old version of a file."""

    side: str  # "local" or "server": the side whose backups hold it
    path: str  # the file's path, relative to the home
    stored: str  # the backup's path, relative to the backup directory
    index: int  # unison's number: 0 the newest old version, 1, 2 … older
    size: int
    mtime: float  # the version's own modification time
    ctime: float  # when unison last moved it (made it a backup, or renumbered it)
    superseded: float = 0.0  # when it stopped being current (`dated`)
    number: int = 0  # 1 for the newest kept version of its path, 2 … (what `--version` takes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_of(side: str, stored: str, size: int, mtime: float, ctime: float) -> Version | None:
    """The version a backup file is; None for a name that cannot be one of ours."""
    parts = stored.split("/")
    if not stored or stored.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    name, index = parse_name(parts[-1])
    return Version(side, "/".join([*parts[:-1], name]), stored, index, size, mtime, ctime)


def dated(versions: Iterable[Version]) -> list[Version]:
    """`versions` with `superseded` (when each stopped being current) and `number` set.

    The newest old version of a path stopped being current when unison moved it into the
    backups (its ctime); an older one when the next newer was written (that one's mtime), or
    earlier: renumbering moves every backup of a path, so their ctimes only say "no later than".
    Numbers count the path's versions on both sides, newest first, by modification time.
    """
    groups: dict[str, list[Version]] = {}
    for version in versions:
        groups.setdefault(version.path, []).append(version)
    found: list[Version] = []
    for path_versions in groups.values():
        for side in ("local", "server"):
            newer: Version | None = None
            for version in sorted((v for v in path_versions if v.side == side),
                                  key=lambda v: v.index):
                when = version.ctime if newer is None else min(version.ctime, newer.mtime)
                found.append(replace(version, superseded=when))
                newer = version
    by_path: dict[str, list[Version]] = {}
    for version in sorted(found, key=lambda v: (-v.mtime, v.side, v.index)):
        by_path.setdefault(version.path, []).append(
            replace(version, number=len(by_path.get(version.path, [])) + 1))
    return [v for group in by_path.values() for v in group]


def to_prune(versions: Sequence[Version], now: float, days: float,
             max_bytes: int) -> list[Version]:
    """The versions of one side that retention drops: superseded more than `days` ago, and
    beyond `max_bytes` when counted newest first (the oldest go first)."""
    cutoff, total, drop = now - days * DAY, 0, []
    for version in sorted(dated(versions), key=lambda v: (v.superseded, -v.index),
                          reverse=True):
        if version.superseded < cutoff or total + version.size > max_bytes:
            drop.append(version)
        else:
            total += version.size
    return drop


# --- the local side ------------------------------------------------------------------------------

def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink():
                yield str(path.relative_to(root)), info


def local_versions(root: Path, side: str = "local") -> list[Version]:
    """Every version kept in the local backup directory `root`."""
    found = (version_of(side, stored, info.st_size, info.st_mtime, info.st_ctime)
             for stored, info in _walk(root))
    return [v for v in found if v is not None]


def remove_local(root: Path, versions: Iterable[Version]) -> None:
    """Delete `versions` from the local backup directory, then its emptied directories."""
    for version in versions:
        Path(root, version.stored).unlink(missing_ok=True)
    for directory, _dirs, _files in sorted(os.walk(root), reverse=True):
        if Path(directory) != root:
            with contextlib.suppress(OSError):  # not empty
                os.rmdir(directory)


# --- the server side -----------------------------------------------------------------------------

def list_script(directory: str) -> str:
    """sh for the server: every backup file below `directory` as `path NUL size NUL mtime NUL
    ctime NUL` (GNU find); nothing when there is no backup directory yet."""
    q = shlex.quote(directory)
    return (f"[ -d {q} ] || exit 0; cd {q} && "
            "find . -type f -printf '%P\\0%s\\0%T@\\0%C@\\0'")


def parse_listing(data: bytes, side: str = "server") -> list[Version]:
    """The versions in `list_script`'s answer (anything malformed is left out)."""
    fields = data.split(b"\0")
    found = []
    for at in range(0, len(fields) - 3, 4):
        stored = os.fsdecode(fields[at])
        try:
            size, mtime, ctime = int(fields[at + 1]), float(fields[at + 2]), float(fields[at + 3])
        except ValueError:
            continue
        if (version := version_of(side, stored, size, mtime, ctime)) is not None:
            found.append(version)
    return found


def _names(versions: Iterable[Version], prefix: str = "") -> bytes:
    """NUL-separated names for xargs -0 or tar -T; `prefix` "./" keeps a name that starts with
    "-" from being read as an option by tar."""
    return b"".join(os.fsencode(prefix + v.stored) + b"\0" for v in versions)


@dataclass
class Remote:
    """The server's backup directory, through the pass's (or the command's) ssh connection."""

    server: ssh.Server
    socket: Path | None
    abort: threading.Event | None = None

    @property
    def directory(self) -> str:
        return server_dir(self.server.home)

    def versions(self) -> list[Version]:
        return parse_listing(ssh.run_remote_bytes(self.server, self.socket,
                                                  list_script(self.directory), self.abort))

    def fetch(self, versions: Sequence[Version]) -> dict[str, tuple[bytes, float, int]]:
        """The contents, modification times and modes of `versions`, by stored path (one
        tar)."""
        script = (f"cd {shlex.quote(self.directory)} && tar -cf - --null --no-recursion "
                  "-T -")
        data = ssh.run_remote_bytes(self.server, self.socket, script, self.abort,
                                    data=_names(versions, "./"))
        wanted, found = {v.stored for v in versions}, {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                handle = archive.extractfile(member) if member.isfile() else None
                if name in wanted and handle is not None:
                    found[name] = (handle.read(), float(member.mtime), member.mode)
        return found

    def remove(self, versions: Sequence[Version]) -> None:
        """Delete `versions` on the server, then the emptied directories of the backups."""
        q = shlex.quote(self.directory)
        script = (f"cd {q} && xargs -0 rm -f -- && "
                  "find . -mindepth 1 -type d -empty -delete")
        ssh.run_remote_bytes(self.server, self.socket, script, self.abort,
                             data=_names(versions))


# --- retention -----------------------------------------------------------------------------------

def measured(state_dir: Path) -> dict[str, Any]:
    """What the last retention run recorded: `pruned` (its time) and `sizes` (side -> bytes
    kept); empty when it never ran (or the file is not ours)."""
    try:
        data = json.loads(Path(state_dir, STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _prune_side(versions: list[Version], now: float, days: float, max_bytes: int,
                remove: Any) -> int:
    """Apply retention to one side's `versions` with `remove`; the bytes that stay."""
    drop = to_prune(versions, now, days, max_bytes)
    if drop:
        remove(drop)
        log.info("backups: removed %d old version(s) (%d bytes)", len(drop),
                 sum(v.size for v in drop))
    gone = {v.stored for v in drop}
    return sum(v.size for v in versions if v.stored not in gone)


def prune_if_due(state_dir: Path, local_dir: Path, remote: Remote | None, days: float,
                 max_bytes: int, now: float) -> None:
    """Retention (`to_prune`) on both sides, at most once per PRUNE_EVERY; records the sizes
    kept for `status`. Run under the sync lock, after a pass: never while unison renumbers. A
    server that cannot be reached now is tried again at the next pass."""
    if now - float(measured(state_dir).get("pruned", 0)) < PRUNE_EVERY:
        return
    sizes = {"local": _prune_side(local_versions(local_dir), now, days, max_bytes,
                                  lambda drop: remove_local(local_dir, drop))}
    if remote is not None:
        try:
            sizes["server"] = _prune_side(remote.versions(), now, days, max_bytes,
                                          remote.remove)
        except RoamingHomesError as exc:
            log.warning("backups on the server not pruned: %s", exc.message)
            return
    write_atomic(Path(state_dir, STATE_FILE), json.dumps({"pruned": now, "sizes": sizes}))
