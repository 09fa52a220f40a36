"""Counting the files of a replica, for the mass-deletion guard's baseline (`baseline.py`): how
many files the synced paths hold, and how many each directory holds directly; and finding the
files changed since a time (`changed_since`: what a session that ends offline leaves unsynced).

It runs after every pass that changed something, so it reads only the directories that changed
since the last count (`DirCache`) and uses plain strings, no Path objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from roaming_homes.files import Shape, dict_of, is_int, is_str, list_of, read_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any


_GLOB_CHARS = "*?[{"
# A name with a line break is never synced (profile.IGNORE_LINE_BREAKS), so never counted either.
_LINE_BREAK = re.compile(r"[\n\r]")


def glob_regex(pattern: str) -> str:
    """unison's glob as a Python regex (to be matched in full): `*` and `?` never match `/` nor
    a `.` that starts a path component, `[...]` is a class, `{a,b}` alternatives (measured on
    unison 2.52, tests/test_ignore_rules.py holds the two to the same tree)."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        starts = index == 0 or pattern[index - 1] == "/"
        if char in "*?":
            out.append(("(?!\\.)" if starts else "") + ("[^/]*" if char == "*" else "[^/]"))
        elif char == "[" and (end := pattern.find("]", index + 2)) != -1:
            body = pattern[index + 1:end]
            out.append("[" + ("^" + body[1:] if body[0] in "!^" else body).replace("\\", "\\\\")
                       + "]")
            index = end
        elif char == "{" and (end := pattern.find("}", index)) != -1:
            out.append("(?:" + "|".join(glob_regex(alt) for alt in
                                        pattern[index + 1:end].split(",")) + ")")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """One test for a list of unison globs (a 100 000-file walk calls it twice an entry).

    Patterns without glob characters match only themselves: a set lookup. The rest become
    one compiled regex.
    """
    literal = frozenset(p for p in patterns if not any(c in p for c in _GLOB_CHARS))
    globs = [p for p in patterns if p not in literal]
    if not globs:
        return literal.__contains__
    match = re.compile("|".join(f"(?:{glob_regex(p)})" for p in globs)).fullmatch
    return lambda text: text in literal or match(text) is not None


def is_ignored(path: str, ignore_paths: Sequence[str], ignore_names: Sequence[str]) -> bool:
    """Whether `path` (relative to the root) or a directory above it is ignored, by the rules
    `count_files` follows."""
    return ignored_test(ignore_paths, ignore_names)(path)


def ignored_test(ignore_paths: Sequence[str],
                 ignore_names: Sequence[str]) -> Callable[[str], bool]:
    """`is_ignored` for many paths: the rules are compiled once."""
    path_ignored, name_ignored = _matcher(ignore_paths), _matcher(ignore_names)

    def ignored(path: str) -> bool:
        parts = path.split("/")
        return bool(_LINE_BREAK.search(path)) or any(
            path_ignored("/".join(parts[:end])) or name_ignored(parts[end - 1])
            for end in range(1, len(parts) + 1))

    return ignored


def _list_dir(path: str, ignored: Callable[[str], bool]) -> tuple[int, list[str]] | None:
    """The files and the subdirectories directly in `path` that are not `ignored` (None when
    it cannot be read)."""
    try:
        entries = os.scandir(path)
    except OSError:
        return None
    files, subdirs = 0, []
    with entries:
        for entry in entries:
            if ignored(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                files += 1
    return files, subdirs


# The walk keeps what it saw of each directory. A directory's ctime changes whenever an entry is
# added to, removed from or renamed in it (and its inode or device when something else is
# mounted there), so a directory that still shows the identity seen at the last walk still holds
# what was counted then, and need not be read again. A directory changed within the last few
# seconds is not remembered: timestamps are coarse (a tick of the kernel clock, whole seconds on
# some file systems), and a change in the same tick as the read would leave them as they were.
_SETTLED_NS = 3_000_000_000


def _is_seen(value: Any) -> bool:
    """[device, inode, ctime, mtime, files, [subdirectories]]: what a count saw of a directory."""
    return (isinstance(value, list) and len(value) == 6 and all(map(is_int, value[:5]))
            and list_of(is_str)(value[5]))


_CACHE = Shape.complete({"rules": list_of(is_str), "dirs": dict_of(_is_seen)})


class DirCache:
    """What the last count saw of each directory below one root: its identity (device, inode,
    ctime, mtime), its files and its subdirectories; a private JSON file.

    Valid only for the rules (root, paths, ignores) it was made with; any other rules start
    afresh. It is a cache only: without it (none yet, other rules, or broken: then it is moved
    aside) the count reads every directory and comes to the same total.
    """

    def __init__(self, path: str | os.PathLike[str], rules: Sequence[object]) -> None:
        self.path = os.fspath(path)
        self.rules = [str(rule) for rule in rules]
        self.seen: dict[str, list[Any]] = {}
        try:
            data = read_json(Path(self.path), _CACHE.checked)
        except OSError:
            data = None
        if data is not None and data["rules"] == self.rules:
            self.seen = data["dirs"]

    def remember(self, dirs: dict[str, list[Any]]) -> None:
        """Keep what the last count saw (directories no longer there are forgotten), replacing
        the file in one step. Not saved (a full disk): the next count reads everything."""
        if dirs == self.seen:
            return
        self.seen = dirs
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump({"rules": self.rules, "dirs": dirs}, handle)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _lstat_each(top: str, stack: list[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Pop paths (relative to `top`) off `stack` until it is empty, each with its lstat; the
    caller pushes the entries of the directories it enters. A path that vanished is skipped."""
    while stack:
        rel = stack.pop()
        try:
            st = os.lstat(f"{top}/{rel}")
        except OSError:
            continue
        yield rel, st


def walk(root: str | os.PathLike[str], paths: Sequence[str], ignore_paths: Sequence[str],
         ignore_names: Sequence[str]) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under `paths` of `root` that unison syncs, with its lstat, by the rules
    `count_files` follows (the paths themselves too; links are not followed), always in the
    same order for the same tree (a directory's entries sorted, each directory's entries
    before what its subdirectories hold). What vanishes meanwhile, or cannot be read, is left
    out."""
    path_ignored, name_ignored = _matcher(ignore_paths), _matcher(ignore_names)
    top = os.fspath(root)
    folders: list[str] = []
    for rel in paths:
        if path_ignored(rel) or name_ignored(rel.rpartition("/")[2]):
            continue
        try:
            st = os.lstat(f"{top}/{rel}")
        except OSError:
            continue
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            folders.append(rel)
    folders.reverse()
    while folders:
        rel = folders.pop()
        try:
            with os.scandir(f"{top}/{rel}") as listing:
                entries = sorted(listing, key=_name)
        except OSError:
            continue
        below = []
        for entry in entries:
            name = entry.name
            if (name_ignored(name) or path_ignored(f"{rel}/{name}")
                    or (not name.isprintable() and _LINE_BREAK.search(name))):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield f"{rel}/{name}", st
            if stat.S_ISDIR(st.st_mode):
                below.append(f"{rel}/{name}")
        folders += reversed(below)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def changed_since(root: str | os.PathLike[str], paths: Sequence[str], ignore_paths: Sequence[str],
                  ignore_names: Sequence[str], since: float,
                  budget: float = 5.0) -> tuple[list[str], bool]:
    """Files and links under `paths` of `root` changed after `since` (epoch seconds): written,
    made, renamed or their permissions changed (mtime or ctime), by the rules `count_files`
    follows. Deletions leave nothing to find. The walk stops after `budget` seconds; returns
    the paths found (relative to `root`, sorted) and whether the walk was complete."""
    found: list[str] = []
    deadline = time.monotonic() + budget
    for rel, st in walk(root, paths, ignore_paths, ignore_names):
        if time.monotonic() > deadline:
            return sorted(found), False
        if not stat.S_ISDIR(st.st_mode) and max(st.st_mtime, st.st_ctime) > since:
            found.append(rel)
    return sorted(found), True


def count_files(root: str | os.PathLike[str], paths: Sequence[str], ignore_paths: Sequence[str],
                ignore_names: Sequence[str], cache: DirCache | None = None,
                tally: dict[str, int] | None = None) -> int:
    """Files and links under `paths` of `root`, skipping ignored paths and names.

    The rules are unison's (`glob_regex`: the profile's `ignore = Path …` and `Name …`, and
    profile.IGNORE_LINE_BREAKS); ignored directories are not entered; links are not followed (not
    even a synced path that is a link). With a `cache`, only directories that changed since the
    last count are read. `tally` gets the files directly in each directory.
    """
    path_ignored, name_ignored = _matcher(ignore_paths), _matcher(ignore_names)
    # Without glob characters, an ignored path can only be an entry of its own parent: the
    # entries of every other directory need no path test at all.
    any_dir = any(c in p for p in ignore_paths for c in _GLOB_CHARS)
    parents = {f"{p.rpartition('/')[0]}/" for p in ignore_paths}

    def ignored(prefix: str) -> Callable[[str], bool]:
        test_path = any_dir or prefix in parents
        return lambda name: bool(name_ignored(name) or (test_path and path_ignored(prefix + name))
                                 or (not name.isprintable() and _LINE_BREAK.search(name)))

    top = os.fspath(root)
    settled = time.time_ns() - _SETTLED_NS
    kept: dict[str, list[Any]] = {}
    tally = {} if tally is None else tally
    count = 0
    stack = [p for p in paths if not (path_ignored(p) or name_ignored(p.rpartition("/")[2]))]
    for rel, st in _lstat_each(top, stack):
        if not stat.S_ISDIR(st.st_mode):
            count += 1
            continue
        identity = [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns]
        if cache is not None and (known := cache.seen.get(rel)) and known[:4] == identity:
            files, subdirs = known[4], known[5]
            kept[rel] = known
        elif (listed := _list_dir(f"{top}/{rel}", ignored(f"{rel}/"))) is not None:
            files, subdirs = listed
            if cache is not None and max(st.st_ctime_ns, st.st_mtime_ns) < settled:
                kept[rel] = [*identity, files, subdirs]
        else:
            continue
        count += files
        tally[rel] = files
        stack += [f"{rel}/{name}" for name in subdirs]
    if cache is not None:
        cache.remember(kept)
    return count
