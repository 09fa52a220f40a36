"""Conflict copies that say where they came from.

When both sides changed a file and `sync.prefer` picks one, unison keeps the other version as a
copy beside it, named `report (conflict_on_2026-11-29).odt`: nothing says whose version it is,
and a second conflict the same day has no name of its own. After the pass, each copy is renamed
after the computer whose version it keeps and that version's time:
`report (conflict from desk-ana 2026-11-29 10-22).odt` — readable, sortable, and without a
character that another file system refuses (no `:`). The next pass syncs it like any file.

A copy made on this computer keeps this computer's version. A copy made on the server keeps the
server's version, which the user's other computer that synced last brought there (from the
records on the server); when none is known, "the server".
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.safety.guards import item_loss
from roaming_homes.server import records
from roaming_homes.server.records import ComputerRecord, ServerHome
from roaming_homes.text import escape
from roaming_homes.unison import ssh
from roaming_homes.unison.output import Content, Direction, PlanItem

log = logging.getLogger(__name__)

_UNISON_COPY = re.compile(r"^(?P<stem>.*) \(conflict_on_\d{4}-\d\d-\d\d\)(?P<ext>\.[^.]*)?$")
# unison (2.52, copyonconflict) writes the version it brings back to a side that deleted the
# file under this name instead of the file's own, and records the file's own name in its
# archive: left so, the next pass deletes the file everywhere and only this copy stays.
_WAS_DELETED = re.compile(
    r"^(?P<stem>.*) \(conflict_on_\d{4}-\d\d-\d\d_was_deleted\)(?P<ext>\.[^.]*)?$")
_CHANGED = (Content.CHANGED, Content.CHANGED_LINK, Content.FILE, Content.LINK)


def overwritten_versions(items: Sequence[PlanItem]) -> list[tuple[str, str]]:
    """(side, path) of each item whose changed version on `side` the plan overwrites or deletes
    (a file, a link or a directory): a conflict that `prefer` settled, where unison keeps a copy
    on that side."""
    found = []
    for item in items:
        lost = item_loss(item)
        kept = item.local if lost and lost[0] == "local" else item.server
        if lost is not None and kept not in (Content.UNCHANGED, Content.DELETED):
            found.append((lost[0], item.path))
    return found


def restored_versions(items: Sequence[PlanItem]) -> list[tuple[str, str]]:
    """(side, path) of each item deleted on `side` whose changed version on the other side the
    plan brings back there: a modify/delete conflict that `prefer` settled for the change."""
    found = []
    for item in items:
        if (item.direction is Direction.TO_LOCAL and item.local is Content.DELETED
                and item.server in _CHANGED):
            found.append(("local", item.path))
        elif (item.direction is Direction.TO_SERVER and item.server is Content.DELETED
              and item.local in _CHANGED):
            found.append(("server", item.path))
    return found


def settled_conflicts(items: Sequence[PlanItem]) -> list[str]:
    """The paths of the plan that changed on both sides and still go one way: conflicts that
    `prefer` settled (an unsettled one has the direction CONFLICT)."""
    return [item.path for item in items
            if item.direction in (Direction.TO_SERVER, Direction.TO_LOCAL)
            and item.local is not Content.UNCHANGED and item.server is not Content.UNCHANGED]


# A copy's name as we give it: "stem (conflict from COMPUTER DATE HH-MM DIGEST)ext". A name that
# already carries such a part is a copy: a copy of it is named after the original stem (no
# nesting).
_OUR_COPY = re.compile(r" \(conflict from .* \d{4}-\d\d-\d\d \d\d-\d\d(?: [0-9a-f]{8})?\)$")
DIGEST_LENGTH = 8


def digest_of(path: Path) -> str:
    """The short content digest that a copy's name carries ("" for what is not a file)."""
    if not path.is_file() or path.is_symlink():
        return ""
    hashed = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hashed.update(chunk)
    return hashed.hexdigest()[:DIGEST_LENGTH]


def copy_name(original: str, computer: str, mtime: float, digest: str) -> str:
    """The name of a conflict copy of `original` (a name, not a path) that keeps `computer`'s
    version of `mtime`. The content digest makes the name unique: two computers that settle
    the same conflict never give different contents the same name, and the same content the
    same name (which unison sees as equal). A copy of a copy is named after the original."""
    stem, dot, ext = original.rpartition(".")
    if not stem or stem.endswith("/"):  # no extension (".bashrc", "Makefile")
        stem, dot, ext = original, "", ""
    stem = _OUR_COPY.sub("", stem) or stem
    stamp = time.strftime("%Y-%m-%d %H-%M", time.localtime(mtime))
    mark = f" {digest}" if digest else ""
    return f"{stem} (conflict from {computer} {stamp}{mark}){dot}{ext}"


def new_name(copy: str, original: str, computer: str, mtime: float,
             digest: str = "") -> str | None:
    """The name for unison's copy `copy` of `original` (both names, not paths), or None when
    `copy` is not a copy of it."""
    match = _UNISON_COPY.match(copy)
    if match is None or match["stem"] + (match["ext"] or "") != original:
        return None
    return copy_name(original, computer, mtime, digest)


def last_other(home: ServerHome, me: str) -> str:
    """The user's other computer that synced last (whose version the server most likely holds),
    from the records on the server now (this computer's copy of them may be older)."""
    try:
        found = records.parse_lines(home.read("computers", records.RECORD_LIMIT * 1000),
                                    ComputerRecord)
    except (RoamingHomesError, OSError):
        found = []
    other = records.last_other(found, me)
    return other.name if other else "the server"


def rename_local(root: Path, path: str, computer: str) -> list[str]:
    """Rename unison's copies of `path` below `root` (see `new_name`); returns their new paths."""
    directory = root / os.path.dirname(path)
    original = os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    renamed = []
    for name in names:
        with_time = _stat_mtime(directory / name)
        target = None if with_time is None else new_name(name, original, computer, with_time,
                                                         digest_of(directory / name))
        if target is not None and not (directory / target).exists():
            (directory / name).rename(directory / target)
            renamed.append(os.path.join(os.path.dirname(path), target))
    return renamed


def was_deleted_copy(name: str, original: str) -> bool:
    """Whether `name` is where unison put the version of `original` it brought back."""
    match = _WAS_DELETED.match(name)
    return match is not None and match["stem"] + (match["ext"] or "") == original


def restore_local(root: Path, path: str) -> bool:
    """Give the version unison brought back to `path` (below `root`) its own name again
    (`_WAS_DELETED`); whether it did."""
    directory = root / os.path.dirname(path)
    original = os.path.basename(path)
    if os.path.lexists(root / path):
        return False
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    for name in names:
        if was_deleted_copy(name, original):
            (directory / name).rename(root / path)
            return True
    return False


def _stat_mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


def rename_remote(server: ssh.Server, socket: Path | None, paths: Sequence[str],
                  computer: str, restored: Sequence[str] = ()) -> list[str]:
    """The same on the server, in two round trips: list unison's copies, rename them; for the
    `restored` paths, the version brought back gets its own name again (`restore_local`).
    Returns the paths that have a new name."""
    q = shlex.quote
    listing = "; ".join(
        f"cd {q(server.home)} && cd -- {q(os.path.dirname(p) or '.')} && for f in "
        f"{q(os.path.basename(p).rpartition('.')[0] or os.path.basename(p))}' (conflict_on_'*; "
        f"do [ -e \"$f\" ] && printf '%s\\0%s\\0%s\\0%s\\0' {q(p)} \"$(stat -c %Y -- \"$f\")\" "
        "\"$({ [ -f \"$f\" ] && [ ! -L \"$f\" ] && sha256sum < \"$f\"; } | cut -c1-8)\" "
        "\"$f\"; done" for p in dict.fromkeys([*paths, *restored]))
    try:
        answer = ssh.run_remote(server, socket, f"{listing}; true")
        moves = _remote_moves(answer.split("\0"), computer, set(restored))
        if moves:
            ssh.run_remote(server, socket, "; ".join(
                f"cd {q(server.home)} && mv -n -- {q(old)} {q(new)}" for old, new in moves)
                + "; true")
    except (RoamingHomesError, ValueError) as exc:
        log.debug("conflict copies on the server keep unison's names: %s", exc)
        return []
    return [new for _old, new in moves]


def _remote_moves(fields: Sequence[str], computer: str,
                  restored: set[str]) -> list[tuple[str, str]]:
    """(from, to) below the server home for each copy the listing found: fields are path,
    mtime, digest and the copy's name, four at a time."""
    moves = []
    for index in range(0, len(fields) - 3, 4):
        path, mtime, digest, name = fields[index:index + 4]
        folder, original = os.path.dirname(path), os.path.basename(path)
        if path in restored and was_deleted_copy(name, original):
            moves.append((os.path.join(folder, name), path))
            continue
        target = new_name(name, original, computer, float(mtime or 0),
                          digest if re.fullmatch(r"[0-9a-f]{8}", digest) else "")
        if target is not None:
            moves.append((os.path.join(folder, name), os.path.join(folder, target)))
    return moves


def keep_server_copy(server: ssh.Server, socket: Path | None, path: str, computer: str,
                     mtime: float) -> str:
    """Copy the server's version of `path` beside it as a conflict copy of `computer`'s (its
    time and content kept); returns the copy's path. Raises RoamingHomesError when the server's
    version is not a regular file or cannot be copied."""
    q = shlex.quote
    name = os.path.basename(path)
    if server.is_local:
        source = Path(server.local_root, path)
        digest = digest_of(source)
        if not digest:
            raise RoamingHomesError(f"{escape(path)}: the server's version is not a file",
                                    ExitCode.USAGE)
        target = os.path.join(os.path.dirname(path), copy_name(name, computer, mtime, digest))
        if not Path(server.local_root, target).exists():
            shutil.copy2(source, Path(server.local_root, target))
        return target
    answer = ssh.run_remote(server, socket, f"cd {q(server.home)} && [ -f {q(path)} ] && "
                            f"[ ! -L {q(path)} ] && sha256sum < {q(path)} || echo -")
    digest = answer.strip()[:DIGEST_LENGTH]
    if not re.fullmatch(r"[0-9a-f]{8}", digest):
        raise RoamingHomesError(f"{escape(path)}: the server's version is not a file",
                                    ExitCode.USAGE)
    target = os.path.join(os.path.dirname(path), copy_name(name, computer, mtime, digest))
    ssh.run_remote(server, socket, f"cd {q(server.home)} && cp -p -n -- {q(path)} {q(target)}")
    return target
