"""The only place that builds unison's profile and arguments, spawns it and reads its output.

Building is pure (`build_profile`, `build_argv`, `parse_output`) and unit-tested; `run` is the
thin shell that spawns the real program. Facts relied on are in shared/UNISON.md: exit codes
0-3, the summary line, `[CONFLICT]`/`skipped:` lines, sshargs' backslash escapes.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roaming_homes.paths import Locations

PROFILE = "roaming-homes"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SUMMARY = re.compile(
    r"^Synchronization (complete|incomplete) at (\d\d:\d\d:\d\d)  \((\d+) items? transferred, "
    r"(?:(\d+) partially transferred, )?(\d+) skipped, (\d+) failed\)")
_DETAIL = re.compile(r"^  (skipped|failed|partially transferred): (.*?)(?: \([^()]*\))?$")
_CONFLICT = re.compile(r"^\[CONFLICT\] Skipping (.*)$")
_NOTHING = "Nothing to do: replicas have not changed"
_NO_UPDATES = "No updates to propagate"
_SEGMENT_END = re.compile(rb"[\r\n]")
# After SIGINT unison prints "Terminated!", removes its locks and exits 3 within a second or so
# (SIGTERM would kill it without that cleanup, UNISON.md §1); SIGKILL only if it does not.
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
        "confirmbigdel = true",  # never propagate the emptying of a replica
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
               batch: bool = True) -> list[str]:
    """Arguments for one non-interactive pass over our profile."""
    argv = [unison, PROFILE, *(["-batch"] if batch else []), "-color", "false", "-dumbtty"]
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
            kind, path = match.groups()
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
    return summary


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


@dataclass
class Run:
    returncode: int
    lines: list[str]


def environment(locations: Locations) -> dict[str, str]:
    """unison's environment: our archive directory, and where this side's backups go
    (UNISONBACKUPDIR is not passed over ssh, so the server keeps its backups in its own unison
    directory)."""
    return dict(os.environ, UNISON=str(locations.unison_dir),
                UNISONBACKUPDIR=str(locations.backup_dir), NO_COLOR="1")


def run(argv: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None],
        abort: threading.Event | None = None, pass_fds: Sequence[int] = ()) -> Run:
    """Spawn unison (no shell), hand every output line to `on_line`, return code and lines.

    unison's progress bar rewrites one line with carriage returns; each segment counts as a
    line and is handed on as soon as it arrives (reading by newline would hold the whole bar
    back until the end). A negative return code means unison was killed by that signal. Setting
    `abort` stops unison cleanly (see `ABORT_GRACE`); unison then runs in a process group of its
    own, so that its ssh, which may hang on a frozen server holding our pipe, can be ended with it.
    `pass_fds` are inherited: the sync lock's descriptor, so the lock outlives us if we are
    killed while unison still runs.
    """
    lines: list[str] = []

    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env, pass_fds=tuple(pass_fds),
                          process_group=None if abort is None else 0) as proc:
        if abort is not None:
            threading.Thread(target=_stop_on, args=(abort, proc), daemon=True).start()
        for segment in _segments(proc, abort):
            if segment.strip():
                lines.append(segment)
                on_line(segment)
    return Run(proc.returncode, lines)


def _segments(proc: subprocess.Popen[bytes], abort: threading.Event | None) -> Iterator[str]:
    """unison's output split at newlines and carriage returns, until EOF or an abort.

    After an abort, unison's end is the end: its ssh handed our pipe to the shared ssh master
    (connection sharing passes file descriptors), which may hold it until the server answers.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = b""
    while True:
        if abort is not None and not select.select([fd], [], [], 0.2)[0]:
            if abort.is_set() and proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *complete, pending = _SEGMENT_END.split(pending + chunk)
        yield from (segment.decode("utf-8", errors="replace") for segment in complete)
    if pending:
        yield pending.decode("utf-8", errors="replace")


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


# --- watch mode (-repeat watch) -----------------------------------------------------------------

WATCH_ARGS = ("-repeat", "watch")
CYCLE_START = "Looking for changes"
FSMONITOR = "unison-fsmonitor"
# Fatal errors that mean "no usable file monitor", not "the sync failed" (fswatch.ml).
_NO_MONITOR = ("No file monitoring helper program found", "Filesystem watcher error",
               "Filesystem watcher died", "from the filesystem watcher",
               "File monitoring helper program not running")


def find_fsmonitor(unison: str, path_env: str) -> str | None:
    """The monitor unison would start: `unison-fsmonitor[-VERSION]` beside the real unison
    executable (symlinks resolved, as /proc/self/exe is), then on PATH. None if there is none."""
    dirs = [d for d in path_env.split(":") if d]
    program = shutil.which(unison, path=path_env) if "/" not in unison else unison
    if program:
        dirs.insert(0, os.path.dirname(os.path.realpath(program)))
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in sorted(names):
            if name == FSMONITOR or name.startswith(FSMONITOR + "-"):
                candidate = os.path.join(directory, name)
                if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                    return candidate
    return None


def cycle_returncode(summary: Summary) -> int:
    """The exit code unison would give for one watch cycle (Uicommon.exitCode)."""
    if summary.failed:
        return 2
    if summary.skipped or summary.partial:
        return 1
    return 0


def ends_cycle(line: str) -> bool:
    """A line after which unison waits for the next change (details may follow at once)."""
    return bool(_SUMMARY.match(line)) or line.startswith(_NOTHING)


def monitor_problem(summary: Summary) -> str | None:
    """unison's fatal error when it was about the file monitor, else None."""
    if any(marker in summary.fatal for marker in _NO_MONITOR):
        return summary.fatal
    return None


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a long-running unison (watch mode) in its own process group; output on stdout.

    Its own group lets the caller end unison and everything it started (ssh, the local
    monitor) without touching any other process.
    """
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def read_lines(proc: subprocess.Popen[bytes], on_line: Callable[[str | None], None]) -> None:
    """Hand each output line of `proc` to `on_line`, then None at the end (run it in a thread)."""
    for segment in _segments(proc, None):
        if segment.strip():
            on_line(segment)
    on_line(None)
