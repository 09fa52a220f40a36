"""unison's output read into typed results: the only code that reads unison's wording.

- `parse_output`: a run's summary (transferred, skipped, failed, conflicts) and its `Trouble`s.
- The plan: without -batch, unison's text UI shows the first item of its plan and asks what to do
  with it. `dialogue` answers `l` (list every item with its details), reads the whole plan
  (`parse_plan_line` into `PlanItem`s), decides, and answers `g` (propagate, unison's
  recommendations; conflicts are skipped as in -batch) or `q` (quit, nothing propagated):
  nothing moves before that answer. File names are opaque fields of those lines: paths with
  a line break (a newline could forge a line) are never synced (`profile.IGNORE_LINE_BREAKS`),
  so every line is one item.

Facts relied on are in docs/unison.md: exit codes 0-3, the summary line, `[CONFLICT]` and
`skipped:` lines, the plan's columns.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_SUMMARY = re.compile(
    r"^Synchronization (complete|incomplete) at (\d\d:\d\d:\d\d)  \((\d+) items? transferred, "
    r"(?:(\d+) partially transferred, )?(\d+) skipped, (\d+) failed\)")


# Uitext's summary details: "  skipped: PATH (REASON)", "  failed: PATH", "  partially
# transferred: PATH". Only a skipped item has a reason: a failed PATH may end in parentheses.
# A conflict's reason is one of unison's fixed phrases; an error's may span lines and hold
# parentheses ("Error in scanning directory:\nPermission denied [opendir(PATH)]"), so an error
# is known by its plan line ("error" for an arrow, `Direction.ERROR`), which unison prints
# before it asks anything; a `skipped:` line is a conflict's when it is whole and names another
# path.
_SKIPPED = "  skipped: "
_DETAIL = re.compile(r"^  (?:(skipped): (.*) \([^()]*\)|(failed|partially transferred): (.*))$")


_CONFLICT = re.compile(r"^\[CONFLICT\] Skipping (.*)$")
_ERROR = re.compile(r"^\[ERROR\] Skipping (.*)$")


_NOTHING = "Nothing to do: replicas have not changed"


_NO_UPDATES = "No updates to propagate"


class Trouble(enum.Enum):
    """What went wrong in a run, read from unison's own wording (the only place that does)."""

    CONNECTION_LOST = "connection-lost"
    VERSION_MISMATCH = "version-mismatch"
    DISK_FULL = "disk-full"
    ARCHIVES_DISAGREE = "archives-disagree"  # one side lost its archive: a union is the way back
    ARCHIVES_LOCKED = "archives-locked"  # a stale lk file (ours: we hold the flock)
    MARKER_VANISHED = "marker-vanished"  # the replica marker went away during the scan


# How each trouble starts unison's fatal message (after "Fatal error: ", docs/unison.md §7); a
# file name is never at the start of it. Disk full ends a failure line instead (the path comes
# first there, the reason last).
_FATAL_STARTS = {
    Trouble.CONNECTION_LOST: ("Lost connection with the server", "Connection to the server lost"),
    Trouble.VERSION_MISMATCH: ("Received unexpected header",),
    Trouble.ARCHIVES_DISAGREE: ("Warning: inconsistent state",),
    Trouble.ARCHIVES_LOCKED: ("Warning: the archives are locked",),
}


_MOUNTPOINT = re.compile(r"^Path .* is designated as a mountpoint, but points to nothing")


_DISK_FULL_ENDS = ("No space left on device", "Disk quota exceeded")


@dataclass
class Summary:
    """What unison reported about one run."""

    transferred: int = 0
    partial: int = 0
    skipped: int = 0
    failed: int = 0
    complete: bool = False
    nothing_to_do: bool = False
    conflicts: list[str] = field(default_factory=list)
    # Items unison skipped for an error on one side (an unreadable folder, a pipe or socket,
    # an I/O error): not conflicts, nothing the user can choose between.
    errors: list[str] = field(default_factory=list)
    failed_paths: list[str] = field(default_factory=list)
    # Failed items whose file changed while unison copied it: another run gets past them.
    changed: list[str] = field(default_factory=list)
    fatal: str = ""
    troubles: set[Trouble] = field(default_factory=set)


def parse_output(lines: Sequence[str]) -> Summary:
    """Interpret unison's text output (stdout and stderr, in any interleaving)."""
    summary = Summary()
    fatal_next = False
    skipped: list[str] = []  # what follows "  skipped: " on each such line
    for line in lines:
        if fatal_next and line.strip():
            summary.fatal += " " + line.strip()
            fatal_next = False
            continue
        if error := _error_item(line):
            add_once(summary.errors, error)
        elif line.startswith(_SKIPPED):
            skipped.append(line)
        elif match := _SUMMARY.match(line):
            summary.complete = match.group(1) == "complete"
            summary.transferred = int(match.group(3))
            summary.partial = int(match.group(4) or 0)
            summary.skipped = int(match.group(5))
            summary.failed = int(match.group(6))
        elif (match := _DETAIL.match(line)) and match.group(3) == "failed":
            summary.failed_paths.append(match.group(4))
        elif match := _CONFLICT.match(line):
            add_once(summary.conflicts, match.group(1))
        elif line.startswith((_NOTHING, _NO_UPDATES)):
            summary.nothing_to_do = True
        elif line.startswith("Fatal error") and not summary.fatal:
            summary.fatal = line.split(":", 1)[1].strip() if ":" in line else line
            fatal_next = not summary.fatal
    for conflict in _skipped_conflicts(skipped, summary.errors):
        add_once(summary.conflicts, conflict)
    summary.changed = _changed_meanwhile(lines, summary.failed_paths)
    summary.fatal = summary.fatal.strip()
    summary.troubles = _troubles(summary.fatal, lines)
    return summary


def _error_item(line: str) -> str | None:
    """The path of an item unison skips for an error, if `line` names one: its plan line (shown
    before unison asks anything) or, when it propagates, its `[ERROR] Skipping PATH`."""
    if (item := parse_plan_line(line)) and item.direction is Direction.ERROR:
        return item.path
    match = _ERROR.match(line)
    return match.group(1) if match else None


# How unison says a file changed while it copied it (copy.ml, update.ml): "Failed [PATH]: " and
# the first line of the reason, then, for the source's two, the line after it.
_FAILED = "Failed ["
_CHANGED_HERE = ("]: Destination updated during synchronization",)
_CHANGED_THERE = {"]: The source file ": "has been modified during synchronization.  ",
                  "]: Current source file ": " not same as transferred file.  "}


def _changed_meanwhile(lines: Sequence[str], failed: Sequence[str]) -> list[str]:
    """The failed items (of `failed`, the summary's exact paths) whose reason is that the file
    changed while unison copied it. A path is only ever taken from between "Failed [" and one
    of the reasons' fixed starts, and only if the summary names it as failed."""
    names: set[str] = set(failed)
    changed: list[str] = []
    if not names:
        return changed
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if not line.startswith(_FAILED):
            continue
        if line.endswith(_CHANGED_HERE) and (path := line[len(_FAILED):line.rindex("]: ")]) \
                in names:
            add_once(changed, path)
        for start, then in _CHANGED_THERE.items():
            at = line.find(start)
            while at >= 0:  # the path itself may hold the reason's start
                if line[len(_FAILED):at] in names and after.startswith(then):
                    add_once(changed, line[len(_FAILED):at])
                at = line.find(start, at + 1)
    return changed


def _skipped_conflicts(skipped: Sequence[str], errors: Sequence[str]) -> list[str]:
    """The paths of the `skipped:` lines that are not errors: what unison cannot decide
    alone, conflicts. A line whose reason does not end it (an error's, which goes on below)
    names nothing here."""
    return [match.group(2) for line in skipped
            if (match := _DETAIL.match(line)) and match.group(2) not in errors]


def _troubles(fatal: str, lines: Sequence[str]) -> set[Trouble]:
    found = {trouble for trouble, starts in _FATAL_STARTS.items() if fatal.startswith(starts)}
    if _MOUNTPOINT.match(fatal):
        found.add(Trouble.MARKER_VANISHED)
    if any(line.startswith("Fatal error during unmarshaling") for line in lines):
        found.add(Trouble.VERSION_MISMATCH)  # old protocols, different OCaml (§6)
    if any(line.rstrip().endswith(_DISK_FULL_ENDS) for line in lines
           if line.startswith(("Failed", "Fatal error", "Error"))):
        found.add(Trouble.DISK_FULL)
    return found


def add_once(items: list[str], item: str) -> None:
    """Append `item` unless `items` holds it already (unison may name an item twice)."""
    if item not in items:
        items.append(item)


PROCEED = "Proceed with propagating updates?"


class Content(enum.Enum):
    """What one replica holds at an item's path, as unison's plan shows it."""

    UNCHANGED = "unchanged"
    DELETED = "deleted"
    FILE = "new file"
    CHANGED = "changed"
    PROPS = "props"
    LINK = "new link"
    CHANGED_LINK = "changed link"
    DIR = "new dir"
    CHANGED_DIR = "changed dir"


class Direction(enum.Enum):
    """Where an item goes: root 1 is the local home, root 2 the server (build_profile)."""

    TO_SERVER = "to server"
    TO_LOCAL = "to local"
    CONFLICT = "conflict"
    MERGE = "merge"
    ERROR = "error"


# Uicommon.replicaContent2shortString (the second spelling of each is a first sync's), and the
# arrows of Uitext.displayri: "=" instead of "-" when `prefer` or the user chose the direction,
# a "?" in an arrow marks an item with errors on one side.
_CONTENTS = {
    "        ": Content.UNCHANGED, "deleted ": Content.DELETED, "new file": Content.FILE,
    "file    ": Content.FILE, "changed ": Content.CHANGED, "props   ": Content.PROPS,
    "new link": Content.LINK, "link    ": Content.LINK, "chgd lnk": Content.CHANGED_LINK,
    "new dir ": Content.DIR, "dir     ": Content.DIR, "chgd dir": Content.CHANGED_DIR,
}


_DIRECTIONS = {
    "---->": Direction.TO_SERVER, "--?->": Direction.TO_SERVER, "====>": Direction.TO_SERVER,
    "==?=>": Direction.TO_SERVER, "<----": Direction.TO_LOCAL, "<-?--": Direction.TO_LOCAL,
    "<====": Direction.TO_LOCAL, "<=?==": Direction.TO_LOCAL, "<-?->": Direction.CONFLICT,
    "<=?=>": Direction.CONFLICT, "<-M->": Direction.MERGE, "<=M=>": Direction.MERGE,
    "error": Direction.ERROR,
}


# Uitext.displayri: "%s %s %s   %s  " r1 action r2 path.
_ITEM = re.compile(r"^(.{8}) (.{5}) (.{8})   (.+)  $", re.DOTALL)


_PROMPT = re.compile(r"\[[^][]*\] $")  # "[f] ", "[] ": the default answer, then the cursor


LISTED = "  "  # `l` indents every item it lists


@dataclass(frozen=True)
class PlanItem:
    """One line of unison's plan: the local side, the direction, the server side, the path."""

    local: Content
    direction: Direction
    server: Content
    path: str  # relative to the roots, exactly as unison printed it


def parse_plan_line(line: str) -> PlanItem | None:
    """The item on one line of unison's plan; None for any other line (header, details)."""
    match = _ITEM.match(line)
    if match is None:
        return None
    local, arrow, server, path = match.groups()
    if local not in _CONTENTS or server not in _CONTENTS or arrow not in _DIRECTIONS:
        return None
    return PlanItem(_CONTENTS[local], _DIRECTIONS[arrow], _CONTENTS[server], path)


class Question(enum.Enum):
    """What unison asked on its standard input."""

    ITEM = "item"  # what to do with an item of the plan (the first one, before and after `l`)
    PROCEED = "proceed"  # the plan is settled: propagate it?
    CONTINUE = "continue"  # after a warning: press return (see NEW_ARCHIVES)
    OTHER = "other"


# unison's warnings when a run was stopped while it committed its archives (a pass cut off as
# it ended, e.g. when a front-end went away): it found the new ones on every host and uses
# them, or on some hosts only and removes them, going on with the old ones everywhere (2.52's
# update.ml). Either way the archives agree, and it asks for return before going on. The only
# warnings whose question we answer.
NEW_ARCHIVES = "A new archive exists on all hosts: I'll use them."
NEW_ARCHIVES_IGNORED = "A new archive exists on some hosts only; it will be ignored."
_CONTINUE = "Press return to continue."


def classify_question(prompt: str) -> Question:
    """What a question is; `prompt` is unison's output since its last complete line."""
    if prompt.startswith(PROCEED):
        return Question.PROCEED
    if prompt.startswith(_CONTINUE):
        return Question.CONTINUE
    if (match := _PROMPT.search(prompt)) and parse_plan_line(prompt[:match.start()]):
        return Question.ITEM
    return Question.OTHER
