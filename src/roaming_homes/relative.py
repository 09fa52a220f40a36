"""Paths relative to a replica, as the synced paths, the ignores and the monitors name them.

Nothing but these functions: the server's `unison-fsmonitor` (one per watching computer)
imports it without the rest of the package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`'s: importing typing costs every server monitor 1 MiB
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


def is_below(path: str, parents: Iterable[str]) -> bool:
    """Whether the relative `path` is one of `parents` or lies below one ("" is the root,
    above everything)."""
    return any(not parent or path == parent or path.startswith(parent.rstrip("/") + "/")
               for parent in parents)


def collapse(paths: Iterable[str]) -> list[str]:
    """Sorted paths without those below another listed path (a pass over a path, or a watch of
    it, covers what is below it; for the monitor: unison's RECURSIVE). Each path's folders are
    looked up among those kept: a copy of thousands of files reports thousands of paths."""
    kept: list[str] = []
    covering: set[str] = set()  # the kept paths, without a trailing slash
    for path in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if "" in covering:  # the replica itself covers everything
            break
        if not any(folder in covering for folder in folders_above(path)):
            kept.append(path)
            covering.add(path.rstrip("/"))
    return sorted(kept)


def folders_above(path: str) -> Iterator[str]:
    """`a`, `a/b` for `a/b/c` (the replica itself, "", is not among them)."""
    at = path.find("/")
    while at != -1:
        yield path[:at]
        at = path.find("/", at + 1)
