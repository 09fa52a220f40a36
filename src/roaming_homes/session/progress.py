"""Progress of a running pass, read from unison's own output, and published for others.

unison 2.52 has no machine-readable progress (docs/unison.md §7), but in `-batch` mode it
prints, in this order: the status lines `Looking for changes` / `Reconciling changes` /
`Propagating updates`; the list of items to propagate, each a header line (`new file ---->
path`) followed by one detail line per replica that ends in `size N`; a `\\r` progress bar
(`NN%  MM:SS ETA`) whose percentage counts bytes over the whole propagation; and a
`[BGN] …` / `[END] …` pair per item. `ProgressParser` turns that into items and bytes done and
total, a rate and an ETA (pure, unit-tested).

`Tracker` sits between the engine and its line sink: it feeds the parser, hands snapshots to an
optional callback (the CLI's progress line) and keeps `$XDG_STATE_HOME/roaming-homes/progress.json`
up to date (atomic, at most twice a second), removing it when the pass ends. `status`, `status
--watch` and the daemon's systemd `STATUS=` read it with `read(locations)`.
A pass killed with SIGKILL leaves the file behind: a reader only believes it while the pid in it
holds the sync lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from roaming_homes.errors import DiskFull
from roaming_homes.files import (
    Shape,
    is_bool,
    is_int,
    is_number,
    is_str,
    one_of,
    optional,
    read_json,
)
from roaming_homes.paths import Locations
from roaming_homes.text import escape
from roaming_homes.unison.output import Content, Direction, PlanItem, parse_plan_line

PROGRESS_FILE = "progress.json"
# Said by the engine before a pass that takes the union of both sides (-ignorearchives); the
# parser marks such a pass as a first run (the notifications announce those).
FIRST_RUN_LINE = "first sync of this home: taking the union of both sides, nothing is deleted"
WRITE_INTERVAL = 0.5  # seconds between two writes of progress.json
RATE_WINDOW = 5.0  # seconds of samples the transfer rate is averaged over

_PHASES = {
    "Looking for changes": "scanning",
    "Reconciling changes": "reconciling",
    "Propagating updates": "propagating",
}


def phase_of(line: str) -> str | None:
    """The phase one of unison's status lines starts (`scanning`, `reconciling`,
    `propagating`); None for any other line. A whole line: unison prints a path only after a
    spinner or an arrow."""
    return _PHASES.get(line.strip())


# `changed  ---->            path  `: two 8-column states around a 5-character arrow.
_DETAIL = re.compile(r"^\S.*?\s*: (.*)$")
_SIZE = re.compile(r"\bsize (\d+)\b")
_BAR = re.compile(r"^\s*(\d{1,3})%\s+(?:(\d+):)?(\d\d):(\d\d) ETA")
_SCAN = re.compile(r"^[-/|\\] (.+)$")
_DONE_ITEM = ("[END] ", "Failed ")
# Items that move file contents, and from which side's details their size is read.
_MOVES = {Direction.TO_SERVER: 0, Direction.TO_LOCAL: 1}
_NO_CONTENT = (Content.DELETED, Content.PROPS)  # deletions and permission changes move none


# progress.json, as `Progress.to_dict` writes it: every key, as it lives only while a pass runs;
# but for the item counts each way, which a pass of an older version (still running across an
# upgrade) does not write.
_PROGRESS_FIELDS = {
    "pid": is_int, "phase": one_of("starting", *_PHASES.values(), "done"), "first_run": is_bool,
    "started": is_number, "updated": is_number,
    **dict.fromkeys(("items_total", "items_done", "items_to_fetch", "items_to_send",
                     "bytes_total", "bytes_done", "bytes_to_fetch", "bytes_to_send", "percent"),
                    is_int),
    "rate": is_number, "eta": optional(is_number), "current": is_str,
}
_PROGRESS = Shape(_PROGRESS_FIELDS,
                  frozenset(_PROGRESS_FIELDS) - {"items_to_fetch", "items_to_send"})


@dataclass
class Progress:
    """A snapshot of one pass; what progress.json holds and `status --json` shows."""

    pid: int = 0
    phase: str = "starting"  # starting | scanning | reconciling | propagating | done
    first_run: bool = False
    started: float = 0.0  # epoch seconds
    updated: float = 0.0
    items_total: int = 0
    items_done: int = 0
    items_to_fetch: int = 0  # server -> this machine (contents, deletions, permissions)
    items_to_send: int = 0  # this machine -> server
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_to_fetch: int = 0  # server -> this machine; known once the item list is printed
    bytes_to_send: int = 0  # this machine -> server
    percent: int = 0
    rate: float = 0.0  # bytes per second, over the last RATE_WINDOW seconds
    eta: float | None = None  # seconds left, None while unknown
    current: str = ""  # the item being scanned or copied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Progress:
        """The snapshot progress.json holds; ValueError when it is not of that shape."""
        data = _PROGRESS.checked(data)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class ProgressParser:
    """Feeds on unison's output lines, one at a time, and keeps a `Progress` up to date."""

    def __init__(self, pid: int = 0, now: float | None = None) -> None:
        start = time.time() if now is None else now
        self.progress = Progress(pid=pid, started=start, updated=start)
        self._pending: PlanItem | None = None  # the last item, until its two detail lines
        self._copying = False  # this run is a first sync's bulk copy (`bulk`)
        self._copied: Progress | None = None  # that copy, once unison's run followed it
        self._details: list[str] = []
        self._samples: deque[tuple[float, int]] = deque()

    def feed(self, line: str, now: float | None = None) -> bool:
        """Take one line; True when it changed what a progress display shows."""
        now = time.time() if now is None else now
        p = self.progress
        p.updated = now
        text = line.rstrip("\n")
        if self._pending is not None and (match := _DETAIL.match(text)):
            self._details.append(match.group(1))
            if len(self._details) == 2:
                self._add_item()
            return False
        self._pending = None
        stripped = text.strip()
        if (phase := phase_of(stripped)) is not None:
            if phase == "scanning" and p.phase in ("propagating", "done"):
                self._new_run()  # a second unison run in the same pass (sync.first_paths)
                p = self.progress
            p.phase, p.current = phase, ""
            return True
        if stripped == FIRST_RUN_LINE:
            p.first_run = True
            return True
        if match := _BAR.match(text):
            hours, minutes, seconds = (int(g or 0) for g in match.group(2, 3, 4))
            p.percent = min(int(match.group(1)), 100)
            p.bytes_done = p.bytes_total * p.percent // 100
            self._sample(now, (hours * 60 + minutes) * 60 + seconds)
            return True
        if item := parse_plan_line(text):
            self._pending = item
            self._details = []
            return False
        if text.startswith("[BGN] "):
            p.current = _item_name(text[6:])
            return True
        if text.startswith(_DONE_ITEM):
            p.items_done += 1
            return True
        if p.phase == "scanning" and (match := _SCAN.match(text)):
            p.current = match.group(1)
            return True
        return False

    def bulk(self, items: int, size: int, sending: bool, now: float | None = None) -> None:
        """A first sync's bulk copy of `items` files, `size` bytes, to the server (`sending`)
        or from it, starts (`unison.bulk`): shown as a unison run propagating them; the unison
        run after it starts anew."""
        self._copying = True
        p = self.progress
        p.phase, p.first_run, p.current = "propagating", True, ""
        p.updated = time.time() if now is None else now
        p.items_total, p.bytes_total = items, size
        if sending:
            p.items_to_send, p.bytes_to_send = items, size
        else:
            p.items_to_fetch, p.bytes_to_fetch = items, size

    def copied(self, done: int, files: int, now: float | None = None) -> None:
        """The bulk copy has copied `done` bytes, and `files` files in full."""
        now = time.time() if now is None else now
        p = self.progress
        p.updated = now
        p.items_done = min(files, p.items_total)
        p.bytes_done = min(done, p.bytes_total)
        p.percent = 100 * p.bytes_done // p.bytes_total if p.bytes_total else 0
        self._sample(now, None)

    def finish(self, now: float | None = None) -> Progress:
        if self._copied is not None and not self.progress.items_total:
            # unison's run after the copy moved nothing: the copy is what the pass did
            self.progress = replace(self._copied, updated=self.progress.updated)
        p = self.progress
        p.phase, p.current, p.eta = "done", "", 0.0
        p.updated = time.time() if now is None else now
        if p.items_done >= p.items_total:  # every item ended (a cut pass keeps its count)
            p.bytes_done, p.percent = p.bytes_total, 100
        return p

    def _add_item(self) -> None:
        assert self._pending is not None
        item, self._pending = self._pending, None
        if item.direction is Direction.CONFLICT:
            return  # skipped, as in -batch: nothing transferred
        p = self.progress
        p.items_total += 1
        if item.direction is Direction.TO_SERVER:
            p.items_to_send += 1
        elif item.direction is Direction.TO_LOCAL:
            p.items_to_fetch += 1
        source = item.local if item.direction is Direction.TO_SERVER else item.server
        if item.direction not in _MOVES or source in _NO_CONTENT:
            return
        detail = self._details[_MOVES[item.direction]]
        size = int(match.group(1)) if (match := _SIZE.search(detail)) else 0
        p.bytes_total += size
        if item.direction is Direction.TO_SERVER:
            p.bytes_to_send += size
        else:
            p.bytes_to_fetch += size

    def _sample(self, now: float, unison_eta: int | None) -> None:
        p = self.progress
        self._samples.append((now, p.bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        if now - first_time >= 0.5:
            p.rate = max(p.bytes_done - first_bytes, 0) / (now - first_time)
        remaining = p.bytes_total - p.bytes_done
        p.eta = (remaining / p.rate if p.rate > 0
                 else None if unison_eta is None else float(unison_eta))

    def _new_run(self) -> None:
        p = self.progress
        self._copied, self._copying = (p if self._copying else None), False
        self.progress = Progress(pid=p.pid, started=p.started, updated=p.updated,
                                 first_run=p.first_run)
        self._samples.clear()


def _item_name(action: str) -> str:
    """`Copying d/x from /a to /b` -> `d/x` (unison's wording: Copying, Updating file, …)."""
    for verb in ("Copying ", "Updating file ", "Deleting ", "Copying properties for "):
        if action.startswith(verb):
            rest = action[len(verb):]
            return rest.split(" from ", 1)[0]
    return action


def human_time(iso: str | None) -> str:
    """An ISO time as the messages show it: local, to the minute ("never" for none)."""
    if not iso:
        return "never"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # unreachable; keeps type checkers content


def human_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{rest // 60}:{rest % 60:02d}"


def format_line(p: Progress) -> str:
    """One line for a terminal, the log, `status` and systemd's STATUS=."""
    if p.phase in ("starting", "scanning", "reconciling"):
        what = {"starting": "connecting", "scanning": "looking for changes",
                "reconciling": "reconciling changes"}[p.phase]
        return f"{'first sync' if p.first_run else 'syncing'}: {what}" + (
            f" ({escape(p.current)})" if p.current and p.phase == "scanning" else "")
    parts = [f"{p.items_done}/{p.items_total} items",
             f"{human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)} ({p.percent}%)"]
    if p.phase == "done":
        return "done: " + ", ".join(parts)
    if p.rate > 0:
        parts.append(f"{human_bytes(p.rate)}/s")
    if p.eta is not None:
        parts.append(f"ETA {human_duration(p.eta)}")
    return f"{'first sync' if p.first_run else 'syncing'}: " + ", ".join(parts)


def human_eta(seconds: float) -> str:
    """A rough time left: `10 s`, `3 min`, `1 h 20 min`."""
    seconds = max(round(seconds), 1)
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def copying(p: Progress) -> bool:
    """Whether the pass is moving items (unison has listed them and propagates)."""
    return p.phase == "propagating" and p.items_total > 0


def describe(p: Progress) -> str:
    """What a pass is doing, for `status`, the daemon's status line and the tray: while it
    copies, what is left to go and when it should be done (`uploading 3 files, 120 MB, ~10 s
    left`); before that, its step (`syncing: looking for changes`). Files are unison's items:
    a folder new on one side is one."""
    if not copying(p):
        return format_line(p)
    left = max(p.items_total - p.items_done, 0)
    verb = ("uploading" if not p.items_to_fetch else "downloading" if not p.items_to_send
            else "uploading and downloading")
    parts = [f"{verb} {left} file{'' if left == 1 else 's'}"]
    if (to_go := p.bytes_total - p.bytes_done) > 0:
        parts.append(human_bytes(to_go))
    if p.eta is not None and left:
        parts.append(f"~{human_eta(p.eta)} left")
    return ("first sync: " if p.first_run else "") + ", ".join(parts)


Observer = Callable[[Progress], None]


def observe_all(*observers: Observer | None) -> Observer | None:
    """One `on_progress` callback that hands each snapshot to every given observer, in order."""
    present = [observer for observer in observers if observer is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def observe(p: Progress) -> None:
        for observer in present:
            observer(p)

    return observe


def progress_file(locations: Locations) -> Path:
    return locations.state_dir / PROGRESS_FILE


class Tracker:
    """The engine's line sink wrapper: parses, reports to `on_progress`, writes progress.json."""

    def __init__(self, locations: Locations,
                 on_progress: Callable[[Progress], None] | None = None,
                 interval: float = WRITE_INTERVAL) -> None:
        self.path = progress_file(locations)
        self.parser = ProgressParser(pid=os.getpid())
        self.on_progress = on_progress
        self.interval = interval
        self._written = 0.0
        self._phase = ""

    def wrap(self, sink: Callable[[str], None]) -> Callable[[str], None]:
        def feed(line: str) -> None:
            sink(line)
            if self.parser.feed(line):
                self._publish()

        self._publish()
        return feed

    def _publish(self) -> None:
        from roaming_homes.session.state import write_atomic

        p = self.parser.progress
        if self.on_progress:
            self.on_progress(p)
        now = time.monotonic()
        if p.phase != self._phase or now - self._written >= self.interval:
            self._phase, self._written = p.phase, now
            # Progress is a courtesy: a full disk must not fail the pass, and the file is
            # removed at the end, so it need not survive a crash (no fsync).
            with contextlib.suppress(OSError, DiskFull):
                write_atomic(self.path, json.dumps(p.to_dict(), sort_keys=True), durable=False)

    def bulk(self, items: int, size: int, sending: bool) -> None:
        """A first sync's bulk copy starts (`ProgressParser.bulk`)."""
        self.parser.bulk(items, size, sending)
        self._publish()

    def copied(self, done: int, files: int) -> None:
        self.parser.copied(done, files)
        self._publish()

    def close(self) -> Progress:
        """The pass is over: report the final state and remove progress.json."""
        p = self.parser.finish()
        if self.on_progress:
            self.on_progress(p)
        self.path.unlink(missing_ok=True)
        return p


def read(locations: Locations) -> Progress | None:
    """The running pass's progress, or None when no pass runs (a stale file is ignored).

    None too when the file is broken (it is moved aside): only the display loses, `status`
    shows the running pass as starting until the pass writes the file again.
    """
    from roaming_homes.session.lock import lock_holder

    try:
        p = read_json(progress_file(locations), Progress.from_dict)
    except OSError:
        return None
    if p is None:
        return None
    holder = lock_holder(locations.lock_file)
    return p if holder is not None and holder == p.pid else None


class TerminalDisplay:
    """Shows a pass's progress: one live line on a terminal, plain lines otherwise.

    On a terminal the line is redrawn in place at most ten times a second. Elsewhere (a pipe,
    the journal) a line is written when the phase changes and at every tenth of the bytes, so
    the log tells the story of a long pass without a line per redraw.
    """

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self._shown = ("", -1)  # (phase, tenth of bytes) last written as a plain line
        self._drawn = 0.0

    def __call__(self, p: Progress) -> None:
        if self.live:
            self._draw(p)
        else:
            self._log(p)

    def _draw(self, p: Progress) -> None:
        import shutil

        now = time.monotonic()
        if p.phase != "done" and now - self._drawn < 0.1:
            return
        self._drawn = now
        width = shutil.get_terminal_size().columns - 1
        if p.phase == "done":
            text = format_line(p) + "\n" if p.items_total else ""
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write("\r" + format_line(p)[:width] + "\x1b[K")
        self.stream.flush()

    def _log(self, p: Progress) -> None:
        tenth = p.percent // 10 if p.phase == "propagating" else -1
        if p.phase == "starting" or (p.phase, tenth) == self._shown:
            return
        if p.phase == "done" and not p.items_total:
            return
        self._shown = (p.phase, tenth)
        self.stream.write(format_line(p) + "\n")
        self.stream.flush()
