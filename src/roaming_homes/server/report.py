"""`roaming-homes server report`: what the server knows about its users' homes, for
administrators and monitoring.

Per home: the computers that sync it (from their records in `.roaming-homes/computers/`, see
`records`), which of them are behind or stale, whether a session of the user is live on the
server (a `unison-fsmonitor` or `unison -server` process of the home's owner) and, on request, the
pending conflict copies. A report reads the records only, never the homes' trees (a thousand homes
in well under a second): the conflict copies are searched only when asked, names only and bounded.

Homes come from the command line, or from the configured `server.home` pattern (`/srv/homes/%u`:
for each user of the passwd database) and the passwd database's home directories; a home without
a `.roaming-homes` directory or a replica marker is not synced with roaming-homes and is left
out. Run as root it
reads every home; a symlink where a directory or record of ours should be is not followed (the
homes' owners control those names).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roaming_homes.safety.guards import MARKER
from roaming_homes.server.records import (
    DIRECTORY,
    RECORD_LIMIT,
    ComputerRecord,
    Freshness,
    age_of,
    freshness,
)
from roaming_homes.text import printable

MAX_RECORDS = 1000  # records read of one home: a home has a handful of computers
# Entries a conflict-copy search looks at in one home before it stops (and says so).
CONFLICT_SCAN_LIMIT = 200_000
CONFLICT_MARKS = (" (conflict from ", "(conflict_on_")
# Processes that mean a live session of the user on the server: real-time mode's monitor, and
# unison's server (a pass, or real-time mode between passes).
_MONITOR = "unison-fsmonitor"


@dataclass(frozen=True)
class Limits:
    """The configuration's thresholds: `notify.stale_after` (s), `client.forget_after` (days)."""

    stale_after: float
    forget_after_days: float


@dataclass
class Computer:
    record: ComputerRecord
    freshness: Freshness

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {"id": r.id, "name": r.name, "version": r.version, "last_pass": r.last_pass,
                "last_success": r.last_success, "result": r.result, "conflicts": r.conflicts,
                "freshness": str(self.freshness)}


@dataclass
class Home:
    path: Path
    user: str
    computers: list[Computer] = field(default_factory=list)
    monitors: int = 0  # unison-fsmonitor processes of the user
    unison_servers: int = 0  # unison -server processes of the user
    conflict_copies: int | None = None  # None: not searched
    conflict_search_complete: bool = True
    problem: str = ""  # what could not be read

    @property
    def live(self) -> bool:
        return bool(self.monitors or self.unison_servers)

    def named(self, freshness: Freshness) -> list[str]:
        return [c.record.name for c in self.computers if c.freshness is freshness]

    def to_dict(self) -> dict[str, Any]:
        return {"home": os.fsdecode(self.path), "user": self.user,
                "computers": [c.to_dict() for c in self.computers],
                "behind": self.named(Freshness.BEHIND), "stale": self.named(Freshness.STALE),
                "session_live": self.live, "fsmonitors": self.monitors,
                "unison_servers": self.unison_servers, "conflict_copies": self.conflict_copies,
                "conflict_search_complete": self.conflict_search_complete,
                "problem": self.problem or None}


@dataclass
class Report:
    made: float
    limits: Limits
    homes: list[Home]
    skipped: list[tuple[str, str]]  # home, why
    searched: bool  # whether conflict copies were searched
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        made = datetime.fromtimestamp(self.made, UTC).astimezone().isoformat(timespec="seconds")
        return {"made": made, "stale_after": self.limits.stale_after,
                "forget_after_days": self.limits.forget_after_days,
                "conflict_copies_searched": self.searched, "note": self.note or None,
                "homes": [home.to_dict() for home in self.homes],
                "skipped": [{"home": home, "why": why} for home, why in self.skipped]}


# --- finding homes ----------------------------------------------------------------------------

def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_synced_home(home: Path) -> bool:
    """Whether roaming-homes syncs `home`: it holds our directory or a replica marker."""
    return _is_dir(home / DIRECTORY) or os.path.lexists(home / MARKER)


def passwd_homes(all_users: bool) -> list[tuple[Path, str]]:
    """The synced homes in the passwd database with their owners' names: every user's (as
    root), or only this user's; each directory once. The others (system accounts, users who do
    not roam) are left out without a word."""
    entries = pwd.getpwall() if all_users else [pwd.getpwuid(os.getuid())]
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.pw_dir and entry.pw_dir != "/":
            seen.setdefault(entry.pw_dir, entry.pw_name)
    return [(Path(home), user) for home, user in seen.items() if is_synced_home(Path(home))]


def pattern_homes(pattern: str, all_users: bool) -> list[tuple[Path, str]]:
    """The synced homes the configured `server.home` pattern names (`%u`: the user's name, `%h`:
    their passwd home, `%%`: %) for every user of the passwd database (as root), or only this
    user; each directory once, with the user it was made for."""
    import re

    entries = pwd.getpwall() if all_users else [pwd.getpwuid(os.getuid())]
    seen: dict[str, str] = {}
    for entry in entries:
        values = {"%u": entry.pw_name, "%h": entry.pw_dir, "%%": "%"}
        home = "".join(values.get(part, part) for part in re.split(r"(%[uh%])", pattern))
        if home.startswith("/") and home != "/":
            seen.setdefault(home, entry.pw_name)
    return [(Path(home), user) for home, user in seen.items() if is_synced_home(Path(home))]


def server_homes(pattern: str | None, all_users: bool) -> list[tuple[Path, str]]:
    """The homes to report on without a list: those the `server.home` pattern names (when
    there is one), then the passwd database's; each directory once."""
    found = dict(pattern_homes(pattern, all_users)) if pattern else {}
    for home, user in passwd_homes(all_users):
        found.setdefault(home, user)
    return list(found.items())


def owner_name(path: Path) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# --- reading one home -------------------------------------------------------------------------

def _read_limited(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes of a regular file, never through a symlink and never blocking on
    a FIFO or a device a home's owner put there; None when it is not such a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_records(home: Path) -> list[ComputerRecord]:
    """The computers' records of `home` (a record of the wrong shape is left out). Raises
    OSError when the directory exists but cannot be read."""
    directory = home / DIRECTORY / "computers"
    if not _is_dir(home / DIRECTORY) or not _is_dir(directory):
        return []
    found: list[ComputerRecord] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if len(found) >= MAX_RECORDS:
                break
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            data = _read_limited(Path(entry.path), RECORD_LIMIT)
            try:
                record = ComputerRecord.from_dict(json.loads(data)) if data else None
            except ValueError:
                record = None
            if record is not None:
                found.append(record)
    return sorted(found, key=lambda r: (r.name, r.id))


def count_conflict_copies(home: Path, limit: int = CONFLICT_SCAN_LIMIT) -> tuple[int, bool]:
    """Conflict copies below `home` (names with ` (conflict from ` or unison's `(conflict_on_`),
    looking at names only, on the home's file system, at most `limit` entries; our own
    `.roaming-homes` (backups) is left out. Returns the count and whether the search was
    complete."""
    count, seen = 0, 0
    pending = [os.fsdecode(home)]
    device = os.lstat(home).st_dev
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    seen += 1
                    if seen > limit:
                        return count, False
                    if any(mark in entry.name for mark in CONFLICT_MARKS):
                        count += 1
                    if (entry.is_dir(follow_symlinks=False) and entry.name != DIRECTORY
                            and entry.stat(follow_symlinks=False).st_dev == device):
                        pending.append(entry.path)
        except OSError:
            continue  # unreadable or gone: the count is what could be read
    return count, True


# --- live sessions ----------------------------------------------------------------------------

def _session_kind(argv: list[str]) -> str | None:
    """"monitor" for unison-fsmonitor (also as a script: python3 …/unison-fsmonitor), "server"
    for unison -server, else None."""
    names = [os.path.basename(arg) for arg in argv[:2]]
    if names[:1] == [_MONITOR] or (names[:1] and names[0].startswith("python")
                                   and names[1:] == [_MONITOR]):
        return "monitor"
    if names and names[0].startswith("unison") and "-server" in argv:
        return "server"
    return None


def live_sessions(proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """uid -> (unison-fsmonitor processes, unison -server processes), from /proc."""
    found: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [os.fsdecode(a) for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            kind = _session_kind(argv)
            if kind is None:
                continue
            uid = entry.stat().st_uid
        except OSError:  # gone, or hidden from us (hidepid)
            continue
        counts = found.setdefault(uid, [0, 0])
        counts[0 if kind == "monitor" else 1] += 1
    return {uid: (counts[0], counts[1]) for uid, counts in found.items()}


# --- the report -------------------------------------------------------------------------------

def _one_home(path: Path, user: str, limits: Limits, now: datetime,
              sessions: dict[int, tuple[int, int]], search: bool) -> Home:
    home = Home(path, user)
    try:
        records = read_records(path)
    except OSError as exc:
        home.problem = f"records not readable: {exc.strerror}"
        records = []
    home.computers = [Computer(r, freshness(age_of(r.last_success, now), limits.stale_after,
                                            limits.forget_after_days)) for r in records]
    with contextlib.suppress(OSError):  # gone since: no session to tell
        home.monitors, home.unison_servers = sessions.get(os.stat(path).st_uid, (0, 0))
    if search:
        try:
            home.conflict_copies, home.conflict_search_complete = count_conflict_copies(path)
        except OSError as exc:
            home.problem = home.problem or f"not searched for conflict copies: {exc.strerror}"
    return home


def _why_skipped(path: Path) -> str:
    if not _is_dir(path):
        return "not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "not readable by this user (root reads every home)"
    return "roaming-homes does not sync it"


def make(homes: Iterable[tuple[Path, str]], limits: Limits, *, search: bool = False,
         note: str = "") -> Report:
    """The report on `homes` (path, owner's name); those roaming-homes does not sync are listed
    as skipped."""
    made = time.time()
    now = datetime.fromtimestamp(made, UTC)
    sessions = live_sessions()
    report = Report(made, limits, [], [], search, note)
    for path, user in homes:
        if not is_synced_home(path):
            report.skipped.append((os.fsdecode(path), _why_skipped(path)))
            continue
        report.homes.append(_one_home(path, user, limits, now, sessions, search))
    return report


def render(report: Report) -> str:
    """The report as text, one block per home (names escaped: they are the users')."""
    lines = []
    for home in report.homes:
        live = (f"live: {home.monitors} monitor(s), {home.unison_servers} unison server(s)"
                if home.live else "no live session")
        lines.append(f"{printable(home.user)}  {printable(os.fsdecode(home.path))}  {live}")
        for computer in home.computers:
            r = computer.record
            flag = "" if computer.freshness is Freshness.CURRENT else f"  {computer.freshness}"
            lines.append(f"  {printable(r.name):<20} last sync {r.last_success or 'never'}, "
                         f"{printable(r.result)}, {r.conflicts} conflict(s){flag}")
        if not home.computers:
            lines.append("  no computer has synced it yet")
        if home.conflict_copies is not None:
            more = "" if home.conflict_search_complete else " at least (search cut short)"
            lines.append(f"  conflict copies: {home.conflict_copies}{more}")
        if home.problem:
            lines.append(f"  problem: {printable(home.problem)}")
    if not report.homes:
        lines.append("no home synced with roaming-homes found")
    if not report.searched:
        lines.append("conflict copies: not searched (--conflict-copies searches the homes)")
    lines += [f"skipped {printable(home)}: {why}" for home, why in report.skipped]
    if report.note:
        lines.append(f"note: {printable(report.note)}")
    return "\n".join(lines)


# --- Prometheus (node-exporter textfile collector) --------------------------------------------

def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_label(value)}"' for key, value in labels.items()) + "}"


_METRICS = {
    "report_timestamp_seconds": "When this report was made.",
    "homes": "Homes synced with roaming-homes that were reported.",
    "computers": "Computers that sync the home (from their records).",
    "behind_computers": "Computers without a successful sync for longer than "
                        "notify.stale_after.",
    "stale_computers": "Computers without a successful sync for longer than "
                       "client.forget_after days, or never.",
    "session_live": "1 when a unison-fsmonitor or unison -server of the user runs.",
    "conflict_copies": "Conflict copies found in the home (only when searched).",
    "last_success_timestamp_seconds": "The computer's last successful sync.",
    "last_pass_timestamp_seconds": "The computer's last pass.",
    "computer_conflicts": "Conflicts the computer's last pass left.",
    "computer_result": "1 for the result of the computer's last pass.",
    "computer_freshness": "1 for the computer's freshness (current, behind, stale).",
}


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _samples(report: Report) -> Iterator[tuple[str, str, float]]:
    """(metric, labels, value) of every sample."""
    yield "report_timestamp_seconds", "", round(report.made, 3)
    yield "homes", "", len(report.homes)
    for home in report.homes:
        where = {"user": home.user, "home": os.fsdecode(home.path)}
        yield "computers", _labels(**where), len(home.computers)
        yield "behind_computers", _labels(**where), len(home.named(Freshness.BEHIND))
        yield "stale_computers", _labels(**where), len(home.named(Freshness.STALE))
        yield "session_live", _labels(**where), int(home.live)
        if home.conflict_copies is not None:
            yield "conflict_copies", _labels(**where), home.conflict_copies
        for computer in home.computers:
            yield from _computer_samples(where, computer)


def _computer_samples(where: dict[str, str],
                      computer: Computer) -> Iterator[tuple[str, str, float]]:
    r = computer.record
    which = {**where, "computer": r.name, "computer_id": r.id}
    for metric, iso in (("last_success_timestamp_seconds", r.last_success),
                        ("last_pass_timestamp_seconds", r.last_pass)):
        if (stamp := _timestamp(iso)) is not None:
            yield metric, _labels(**which), stamp
    yield "computer_conflicts", _labels(**which), r.conflicts
    yield "computer_result", _labels(**which, result=r.result), 1
    yield "computer_freshness", _labels(**which, freshness=str(computer.freshness)), 1


def prometheus(report: Report) -> str:
    """The report in the Prometheus text format, metrics `roaming_homes_*`."""
    by_metric: dict[str, list[str]] = {name: [] for name in _METRICS}
    for metric, labels, value in _samples(report):
        by_metric[metric].append(f"roaming_homes_{metric}{labels} {value!r}")
    lines = []
    for metric, samples in by_metric.items():
        if samples:
            lines += [f"# HELP roaming_homes_{metric} {_METRICS[metric]}",
                      f"# TYPE roaming_homes_{metric} gauge", *samples]
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` at once (a temporary file beside it, renamed), readable by the exporter:
    node-exporter must never read half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
