"""The loss guard's baseline: what the replicas held after the last complete pass, and what the
passes since have deleted and overwritten (the sliding window).

After a complete pass both replicas hold the same synced files, so one walk of the local home
(with the incremental `DirCache`) stands for both: its total is the denominator of the guard's
percentages, and its per-directory tally weighs a directory the plan would delete on the server.
A baseline is valid only for the rules it was made with (roots, paths, ignores): a change of
`sync.paths` or of an ignore rule makes a new one for the new rules before the pass, so a
narrowed configuration is never mistaken for deletions.
"""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roaming_homes.errors import DiskFull
from roaming_homes.files import Shape, dict_of, is_int, is_number, is_str, list_of, read_json
from roaming_homes.safety.guards import Losses
from roaming_homes.session.state import write_atomic
from roaming_homes.unison.ignore import DirCache, count_files

FILE = "baseline.json"


def _is_loss_entry(value: Any) -> bool:
    """[epoch seconds, side, deleted, overwritten, [overwritten files' keys]]: one pass in the
    window (without the keys when a version before them recorded it)."""
    return (isinstance(value, list) and len(value) in (4, 5) and is_number(value[0])
            and is_str(value[1]) and is_int(value[2]) and is_int(value[3])
            and (len(value) == 4 or list_of(is_int)(value[4])))


_BASELINE = Shape.complete({"rules": list_of(is_str), "total": is_int, "dirs": dict_of(is_int),
                            "recent": list_of(_is_loss_entry)})


@dataclass
class Baseline:
    rules: list[str]
    total: int = 0
    dirs: dict[str, int] = field(default_factory=dict)  # directory -> files directly in it
    # [epoch seconds, side, deleted, overwritten, [keys of the overwritten files]] of the passes
    # that propagated losses (`guards.path_key`)
    recent: list[list[Any]] = field(default_factory=list)

    def below(self, path: str) -> int:
        """Files at or below `path` when the baseline was taken: the files of a directory and
        its subdirectories; one for anything else (a file, or what the baseline never saw)."""
        keys = self._sorted_dirs
        first = bisect.bisect_left(keys, f"{path}/")
        last = bisect.bisect_left(keys, f"{path}0")  # "0" sorts right after "/"
        if path not in self.dirs and first == last:
            return 1
        return self.dirs.get(path, 0) + sum(self.dirs[k] for k in keys[first:last])

    @functools.cached_property
    def _sorted_dirs(self) -> list[str]:
        """The directories in order, sorted once: a plan deleting thousands of items asks
        `below` for each of them."""
        return sorted(self.dirs)

    def window(self, now: float, seconds: int) -> dict[str, Losses]:
        """The losses propagated within the last `seconds`, per side."""
        sums: dict[str, Losses] = {}
        for at, side, deleted, overwritten, *keys in self.recent:
            if now - at <= seconds:
                losses = sums.setdefault(side, Losses())
                losses.deleted += deleted
                losses.overwritten += overwritten
                if keys:
                    losses.overwrote.update(keys[0])
                else:
                    losses.unkeyed += overwritten
        return sums

    def add_losses(self, losses: dict[str, Losses], now: float, seconds: int) -> None:
        """Remember what a pass propagated; forget what fell out of the window."""
        self.recent = [entry for entry in self.recent if now - entry[0] <= seconds]
        self.recent += [[now, side, lost.deleted, lost.overwritten, sorted(lost.overwrote)]
                        for side, lost in losses.items() if lost.deleted or lost.overwritten]


class BaselineStore:
    """baseline.json in the state directory for one set of rules (the roots, the synced paths,
    the ignores), and the count cache it is made with. A pass reads it only when it needs it:
    a pass with nothing to do never does."""

    def __init__(self, state_dir: Path, roots: tuple[str, str], paths: tuple[str, ...],
                 ignore_paths: tuple[str, ...], ignore_names: tuple[str, ...]) -> None:
        self.path = state_dir / FILE
        self.cache_path = state_dir / "counts-local.json"
        self.root = Path(roots[0])
        self.paths, self.ignore_paths, self.ignore_names = paths, ignore_paths, ignore_names
        self.rules = [*roots, *map(json.dumps, (list(paths), list(ignore_paths),
                                                list(ignore_names)))]
        self._current: Baseline | None = None

    def current(self) -> Baseline:
        """The baseline for these rules: the saved one, else (none yet, or made for other
        rules: sync.paths or an ignore changed) what the local home holds now under these
        rules, which is never taken for lost files."""
        if self._current is None:
            self._current = self.load()
            if self._current is None:
                self._current = self.measure()
                self.save(self._current)
        return self._current

    def load(self) -> Baseline | None:
        """The baseline for these rules; None when there is none, when it was for other rules,
        when it was broken (it is moved aside) or cannot be read: a new one is made.

        A new one is what the local home holds when the plan is judged, as after a change of
        the rules. What that means for the guard: files deleted here and not yet synced are
        missing from its total, so deletions weigh more against it (stricter); but a directory
        deleted here and to be deleted on the server is unknown to it and weighs one file (more
        lenient), and the window of losses of earlier passes starts empty. That is why the
        file is written durably (fsync), so that only a broken or hand-edited file is lost.
        """
        try:
            data = read_json(self.path, _BASELINE.checked)
        except OSError:
            return None
        if data is None or data["rules"] != self.rules:
            return None
        return Baseline(data["rules"], data["total"], data["dirs"], data["recent"])

    def measure(self, recent: list[list[Any]] | None = None) -> Baseline:
        """A new baseline from the local home now (after a complete pass both replicas hold
        the same files), keeping the window `recent`."""
        tally: dict[str, int] = {}
        cache = DirCache(self.cache_path, [*self.rules])
        total = count_files(self.root, self.paths, self.ignore_paths, self.ignore_names, cache,
                            tally)
        return Baseline(self.rules, total, tally, list(recent or []))

    def save(self, baseline: Baseline) -> bool:
        """Written atomically and durably; a baseline that cannot be saved (a full disk) is
        made again next time (see `load`). Returns whether it was saved."""
        try:
            write_atomic(self.path, json.dumps({
                "rules": baseline.rules, "total": baseline.total, "dirs": baseline.dirs,
                "recent": baseline.recent}))
        except (OSError, DiskFull):
            return False
        return True
