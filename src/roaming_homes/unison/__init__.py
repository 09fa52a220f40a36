"""The only place that builds unison's profile and arguments, spawns it and reads its output.

Building is pure (`build_profile`, `build_argv`, `parse_output`) and unit-tested; `run` is the
thin shell that spawns the real program. Facts relied on are in docs/unison.md: exit codes
0-3, the summary line, `[CONFLICT]`/`skipped:` lines, sshargs' backslash escapes.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roaming_homes.paths import Locations

PROFILE = "roaming-homes"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SUMMARY = re.compile(
    r"^Synchronization (complete|incomplete) at (\d\d:\d\d:\d\d)  \((\d+) items? transferred, "
    r"(?:(\d+) partially transferred, )?(\d+) skipped, (\d+) failed\)")
# Uitext's summary details: "  skipped: PATH (REASON)", "  failed: PATH", "  partially
# transferred: PATH". Only a skipped item has a reason: a failed PATH may end in parentheses.
_DETAIL = re.compile(r"^  (?:(skipped): (.*) \([^()]*\)|(failed|partially transferred): (.*))$")
_CONFLICT = re.compile(r"^\[CONFLICT\] Skipping (.*)$")
_NOTHING = "Nothing to do: replicas have not changed"
_NO_UPDATES = "No updates to propagate"
_SEGMENT_END = re.compile(rb"[\r\n]")
# After SIGINT unison prints "Terminated!", removes its locks and exits 3 within a second or so
# (SIGTERM would kill it without that cleanup, docs/unison.md §2); SIGKILL only if it does not.
ABORT_GRACE = 5.0


class ProfileValueError(ValueError):
    """A value that cannot be written safely into a unison profile."""


@dataclass(frozen=True)
class Plan:
    """Everything one pass tells unison; written as our profile."""

    local_root: str
    server_root: str
    paths: tuple[str, ...]
    ignore_paths: tuple[str, ...]
    ignore_names: tuple[str, ...]
    prefer: str  # newer | local | server | none
    sshargs: tuple[str, ...] = ()
    label: str = ""
    backups: int = 3  # old versions kept of each overwritten or deleted file


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
    skipped_paths: list[str] = field(default_factory=list)
    failed_paths: list[str] = field(default_factory=list)
    fatal: str = ""
    troubles: set[Trouble] = field(default_factory=set)


def _safe(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ProfileValueError(f"{what} {value!r} contains a newline or control character")
    if value != value.strip():
        raise ProfileValueError(f"{what} {value!r} starts or ends with white space")
    return value


def escape_sshargs(args: Sequence[str]) -> str:
    """Join ssh arguments into unison's `sshargs`: words split on spaces, backslash escapes."""
    return " ".join(re.sub(r"([\\ \t\"'])", r"\\\1", arg) for arg in args)


def build_profile(plan: Plan) -> str:
    """The text of our unison profile. Raises ProfileValueError for an unsafe value."""
    lines = [
        "# Written by roaming-homes before every pass; changes here are overwritten.",
        f"label = {_safe(plan.label or 'roaming-homes', 'label')}",
        f"root = {_safe(plan.local_root, 'local root')}",
        f"root = {_safe(plan.server_root, 'server root')}",
    ]
    lines += [f"path = {_safe(p, 'path')}" for p in plan.paths]
    lines += [f"ignore = Path {_safe(p, 'ignored path')}" for p in plan.ignore_paths]
    lines += [f"ignore = Name {_safe(n, 'ignored name')}" for n in plan.ignore_names]
    if plan.sshargs:
        lines.append(f"sshargs = {_safe(escape_sshargs(plan.sshargs), 'ssh options')}")
    prefer = {"local": plan.local_root, "server": plan.server_root}.get(plan.prefer, plan.prefer)
    if plan.prefer != "none":
        # The losing side of a resolved conflict is kept as "name (conflict_on_DATE)".
        lines += [f"prefer = {prefer}", "copyonconflict = true"]
    lines += [
        "times = true",  # keep modification times
        # The loss guard judges every plan, an emptied root included (docs/unison.md §8); unison's
        # own question about it would come before the plan.
        "confirmbigdel = false",
        # Every overwritten or deleted file is kept, outside the synced tree, on the side that
        # lost it: locally in UNISONBACKUPDIR (see `environment`), on the server in its unison
        # directory's `backup` (UNISONBACKUPDIR is not passed over ssh).
        "backup = Name *",
        "backuplocation = central",
        f"maxbackups = {int(plan.backups)}",
        "log = false",  # roaming-homes keeps its own rotating log of unison's output
        "contactquietly = true",
    ]
    return "\n".join(lines) + "\n"


def build_argv(unison: str, first_run: bool, extra: Sequence[str] = (),
               guarded: bool = True) -> list[str]:
    """Arguments for one pass over our profile: `guarded`, unison lists its plan and asks
    before propagating (see `run`); otherwise its interactive UI is the user's (resolve)."""
    ui = [*INTERACTIVE_ARGS] if guarded else []
    argv = [unison, PROFILE, *ui, "-color", "false", "-dumbtty", "-ignore", IGNORE_CONTROL]
    if first_run:
        # No archive for this pair of roots: take the union of both sides, never deletions.
        argv.append("-ignorearchives")
    return [*argv, *extra]


def parse_output(lines: Sequence[str]) -> Summary:
    """Interpret unison's text output (stdout and stderr, in any interleaving)."""
    summary = Summary()
    fatal_next = False
    for line in lines:
        if fatal_next and line.strip():
            summary.fatal += " " + line.strip()
            fatal_next = False
            continue
        if match := _SUMMARY.match(line):
            summary.complete = match.group(1) == "complete"
            summary.transferred = int(match.group(3))
            summary.partial = int(match.group(4) or 0)
            summary.skipped = int(match.group(5))
            summary.failed = int(match.group(6))
        elif match := _DETAIL.match(line):
            kind, path = match.group(1, 2) if match.group(1) else match.group(3, 4)
            if kind == "skipped":
                # In batch mode unison skips only what it cannot decide alone: conflicts.
                summary.skipped_paths.append(path)
                _add(summary.conflicts, path)
            elif kind == "failed":
                summary.failed_paths.append(path)
        elif match := _CONFLICT.match(line):
            _add(summary.conflicts, match.group(1))
        elif line.startswith((_NOTHING, _NO_UPDATES)):
            summary.nothing_to_do = True
        elif line.startswith("Fatal error") and not summary.fatal:
            summary.fatal = line.split(":", 1)[1].strip() if ":" in line else line
            fatal_next = not summary.fatal
    summary.fatal = summary.fatal.strip()
    summary.troubles = _troubles(summary.fatal, lines)
    return summary


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


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


# --- the plan: what a pass would do, read before anything propagates ---------------------------
#
# Without -batch, unison's text UI shows the first item of its plan and asks what to do with it.
# The wrapper answers `l` (list every item with its details), reads the whole plan, decides, and
# answers `g` (propagate, unison's recommendations; conflicts are skipped as in -batch) or `q`
# (quit, nothing propagated): nothing moves before that answer. File names are opaque fields of
# those lines: paths with control characters (a newline could forge a line) are never synced
# (IGNORE_CONTROL), so every line is one item.

# Paths with an ASCII control character anywhere are ignored: a newline or carriage return in a
# name would let that name forge lines of unison's output, ESC sequences would reach terminals.
IGNORE_CONTROL = "Regex .*[\x01-\x1f\x7f].*"
INTERACTIVE_ARGS = ("-ui", "text")
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
_PROMPT = re.compile(r"\[[^\]]*\] $")  # "[f] ", "[] ": the default answer, then the cursor
_LISTED = "  "  # `l` indents every item it lists


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
    OTHER = "other"


def classify_question(prompt: str) -> Question:
    """What a question is; `prompt` is unison's output since its last complete line."""
    if prompt.startswith(PROCEED):
        return Question.PROCEED
    if (match := _PROMPT.search(prompt)) and parse_plan_line(prompt[:match.start()]):
        return Question.ITEM
    return Question.OTHER


Decide = Callable[[Sequence[PlanItem]], bool]


@dataclass
class Run:
    returncode: int
    lines: list[str]
    plan: list[PlanItem] = field(default_factory=list)  # what unison listed before asking
    declined: Question | None = None  # the question we answered "quit" to: nothing propagated


class _Dialogue:
    """unison's side of the conversation: its plan as it is listed, and our answers.

    Only an unindented item line can be a question we answer with `l` or `g`; every line `l`
    lists is indented. So a name that merely ends like a question can at worst make us answer
    the first item's question a moment early (unison then reads the same answer it was about to
    ask for), or make us quit (nothing propagates): never propagate a plan not wholly read.
    """

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.items: dict[str, PlanItem] = {}
        self.asked = False  # `l` was answered: the plan is being (or has been) listed
        self.declined: Question | None = None

    def listed(self, line: str) -> str:
        """Take in a line of unison's standard output; returns it as -batch would print it
        (the items of the plan without `l`'s indentation)."""
        if self.asked and line.startswith(_LISTED):
            item = parse_plan_line(line[len(_LISTED):])
            if item is not None:
                self.items[item.path] = item
                return line[len(_LISTED):]
        return line

    def answer(self, prompt: str) -> str:
        question = classify_question(prompt)
        if question is Question.ITEM and not self.asked:
            self.asked = True
            return "l"
        if question is not Question.OTHER and self.decide(list(self.items.values())):
            return "g" if question is Question.ITEM else "y"
        self.declined = question
        return "q"


def environment(locations: Locations) -> dict[str, str]:
    """unison's environment: our archive directory, and where this side's backups go
    (UNISONBACKUPDIR is not passed over ssh, so the server keeps its backups in its own unison
    directory)."""
    return dict(os.environ, UNISON=str(locations.unison_dir),
                UNISONBACKUPDIR=str(locations.backup_dir), NO_COLOR="1")


# The number of read(2) on each architecture (asm/unistd.h): /proc/PID/syscall names it so.
_READ_SYSCALL = {"x86_64": "0", "aarch64": "63", "riscv64": "63", "ppc64le": "3",
                 "s390x": "3", "i686": "3", "armv7l": "3"}


def waits_for_input(pid: int) -> bool | None:
    """Whether the process is blocked reading its standard input (None: cannot tell).

    /proc/PID/syscall names the system call a sleeping process is in: `read` (0) on fd 0.
    unison is single-threaded, so this is exact; a prompt printed but not yet read from is
    told apart from a name that merely ends like one.
    """
    read = _READ_SYSCALL.get(os.uname().machine)
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return None
    if read is None:
        return None
    return len(fields) > 1 and fields[0] == read and fields[1] == "0x0"


def run(argv: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None],
        decide: Decide, abort: threading.Event | None = None,
        pass_fds: Sequence[int] = ()) -> Run:
    """Spawn unison (no shell) in its interactive text UI; every output line goes to
    `on_line`; `decide` gets the whole plan before anything propagates, and says whether to.

    unison's progress bar rewrites one line with carriage returns; each segment counts as a
    line and is handed on as soon as it arrives. A negative return code means unison was
    killed by that signal. Setting `abort` stops unison cleanly (see `ABORT_GRACE`); unison
    then runs in a process group of its own, so that its ssh, which may hang on a frozen server
    holding our pipe, can be ended with it. `pass_fds` are inherited: the sync lock's
    descriptor, so the lock outlives us if we are killed while unison still runs.
    """
    lines: list[str] = []
    dialogue = _Dialogue(decide)

    def add(segment: str, stdout: bool) -> None:
        if stdout:
            segment = dialogue.listed(segment)
        if segment.strip():
            lines.append(segment)
            on_line(segment)

    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, pass_fds=tuple(pass_fds),
                          process_group=None if abort is None else 0) as proc:
        if abort is not None:
            threading.Thread(target=_stop_on, args=(abort, proc), daemon=True).start()
        _converse(proc, dialogue, add, abort)
    return Run(proc.returncode, lines, list(dialogue.items.values()), dialogue.declined)


def _asks(pid: int, tail: bytes, quiet: float) -> bool:
    """Whether unison, quiet for `quiet` seconds, waits for an answer to the question `tail`.

    Where /proc cannot tell (no /proc, or `sync.unison` is a wrapper that runs unison as its
    child), a line that ends like a question and then stays quiet for QUIET_QUESTION seconds is
    one: should a name end like a question, answering early is harmless (see `_Dialogue`).
    """
    if waits_for_input(pid):
        return True
    return tail.endswith(b"] ") and quiet >= QUIET_QUESTION


QUIET_QUESTION = 1.0
IDLE = 0.1  # seconds without output after which we look whether unison waits for an answer


def _converse(proc: subprocess.Popen[bytes], dialogue: _Dialogue,
              add: Callable[[str, bool], None], abort: threading.Event | None) -> None:
    """Read unison's stdout and stderr until both end, answering its questions."""
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    pending = {out: b"", err: b""}
    last = time.monotonic()
    while pending:
        ready = select.select(list(pending), [], [], IDLE)[0]
        if not ready:
            if abort is not None and abort.is_set() and proc.poll() is not None:
                break  # the ssh master may hold our pipes (it got ssh's stdio handed over)
            tail = pending.get(out, b"")
            if proc.poll() is None and _asks(proc.pid, tail, time.monotonic() - last):
                prompt = tail.decode("utf-8", errors="replace")
                pending[out] = b""
                add(prompt, False)
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(dialogue.answer(prompt).encode() + b"\n")
                    proc.stdin.flush()
            continue
        last = time.monotonic()
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                if pending[fd]:
                    add(pending[fd].decode("utf-8", errors="replace"), fd == out)
                del pending[fd]
                continue
            *complete, pending[fd] = _SEGMENT_END.split(pending[fd] + chunk)
            for segment in complete:
                add(segment.decode("utf-8", errors="replace"), fd == out)


def _stop_on(abort: threading.Event, proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        if abort.wait(0.2):
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(ABORT_GRACE)
            # Whatever is left of the group (unison itself, or its ssh) goes now.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
