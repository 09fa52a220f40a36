"""Paths relative to a replica, as the synced paths, the ignores and the monitors name them.

Nothing but the function itself: the server's `unison-fsmonitor` (one per watching computer)
imports it without the rest of the package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing`'s: importing typing costs every server monitor 1 MiB
if TYPE_CHECKING:
    from collections.abc import Iterable


def is_below(path: str, parents: Iterable[str]) -> bool:
    """Whether the relative `path` is one of `parents` or lies below one ("" is the root,
    above everything)."""
    return any(not parent or path == parent or path.startswith(parent.rstrip("/") + "/")
               for parent in parents)
