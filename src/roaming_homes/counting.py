"""Counting the files of a replica, for the mass-deletion guard: the same code counts the local
home and, sent to the server by `guards.probe_script`, the server's.

Standard library only, and no other module of ours: on the server this file runs on its own
(`server_program`) under the server's python3, before every pass, so it imports little (no
pathlib, no typing at run time: 20 ms less on every start). `find` counts where there is none.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import stat
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def _matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """One test for a list of fnmatch globs (a 100 000-file walk calls it twice an entry).

    Patterns without glob characters match only themselves: a set lookup. The rest become
    one compiled regex.
    """
    literal = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in literal]
    if not globs:
        return literal.__contains__
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs)).match
    return lambda text: text in literal or match(text) is not None


# The walk keeps what it saw of each directory. A directory's ctime changes whenever an entry is
# added to, removed from or renamed in it (and its inode or device when something else is
# mounted there), so a directory that still shows the identity seen at the last walk still holds
# what was counted then, and need not be read again. A directory changed within the last few
# seconds is not remembered: timestamps are coarse (a tick of the kernel clock, whole seconds on
# some file systems), and a change in the same tick as the read would leave them as they were.
_SETTLED_NS = 3_000_000_000


class DirCache:
    """What the last count saw of each directory below one root: its identity (device, inode,
    ctime, mtime), its files and its subdirectories; a private JSON file.

    Valid only for the rules (root, paths, ignores) it was made with; any other rules start
    afresh.
    """

    def __init__(self, path: str | os.PathLike[str], rules: Sequence[object]) -> None:
        self.path = os.fspath(path)
        self.rules = [str(rule) for rule in rules]
        self.seen: dict[str, list[Any]] = {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("rules") == self.rules and isinstance(data.get("dirs"), dict):
                self.seen = data["dirs"]
        except (OSError, ValueError, AttributeError):
            pass

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


def count_files(root: str | os.PathLike[str], paths: Sequence[str], ignore_paths: Sequence[str],
                ignore_names: Sequence[str], cache: DirCache | None = None) -> int:
    """Files and links under `paths` of `root`, skipping ignored paths and names.

    Same rule as the `find` in `probe_script`: fnmatch-style globs on the path relative to the
    root and on the name; ignored directories are not entered; links are not followed (not
    even a synced path that is a link). With a `cache`, only directories that changed since
    the last count are read. Plain strings, no Path objects: this runs before every pass.
    """
    path_ignored, name_ignored = _matcher(ignore_paths), _matcher(ignore_names)
    # Without glob characters, an ignored path can only be an entry of its own parent: the
    # entries of every other directory need no path test at all.
    any_dir = any(c in p for p in ignore_paths for c in "*?[")
    parents = {f"{p.rpartition('/')[0]}/" for p in ignore_paths}
    top = os.fspath(root)
    settled = time.time_ns() - _SETTLED_NS
    kept: dict[str, list[Any]] = {}
    count = 0
    stack = [p for p in paths if not (path_ignored(p) or name_ignored(p.rpartition("/")[2]))]
    while stack:
        rel = stack.pop()
        try:
            st = os.lstat(f"{top}/{rel}")
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            count += 1
            continue
        identity = [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns]
        if cache is not None and (known := cache.seen.get(rel)) and known[:4] == identity:
            count += known[4]
            stack += [f"{rel}/{name}" for name in known[5]]
            kept[rel] = known
            continue
        try:
            entries = os.scandir(f"{top}/{rel}")
        except OSError:
            continue
        prefix = f"{rel}/"
        test_path = any_dir or prefix in parents
        files, subdirs = 0, []
        with entries:
            for entry in entries:
                name = entry.name
                if name_ignored(name) or (test_path and path_ignored(prefix + name)):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(name)
                else:
                    files += 1
        count += files
        stack += [prefix + name for name in subdirs]
        if cache is not None and max(st.st_ctime_ns, st.st_mtime_ns) < settled:
            kept[rel] = [*identity, files, subdirs]
    if cache is not None:
        cache.remember(kept)
    return count


def server_program(root: str, paths: Sequence[str], ignore_paths: Sequence[str],
                   ignore_names: Sequence[str]) -> str:
    """A python3 program (one line of printable ASCII: any login shell passes it on) that
    prints the file count of the server's replica, keeping its cache in unison's directory
    there (`$UNISON`, else ~/.unison).

    It is this module's source with the values as literals, compressed. It runs in the root
    (probe_script's `cd`) and names the root only in the rules, so a relative root works too;
    its cache is named after the rules, so computers that sync the same paths with the same
    ignores share one.
    """
    import zlib  # hashlib would load OpenSSL (4 MiB, some ms) for a file name

    rules = [root, *map(list, (paths, ignore_paths, ignore_names))]
    digest = f"{zlib.crc32(json.dumps(rules).encode('utf-8')):08x}"  # a clash: a full walk, no more
    with open(__file__, encoding="utf-8") as handle:
        source = handle.read()
    source += (
        "\nunison_dir = os.environ.get('UNISON') or os.path.expanduser('~/.unison')\n"
        f"print(count_files('.', {list(paths)!r}, {list(ignore_paths)!r}, "
        f"{list(ignore_names)!r}, DirCache(os.path.join(unison_dir, "
        f"'roaming-homes-counts-{digest}.json'), {rules!r})))\n")
    packed = zlib.compress(source.encode("utf-8"), 9).hex()
    return f"exec(__import__('zlib').decompress(bytes.fromhex('{packed}')))"
