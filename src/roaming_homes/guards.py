"""Checks that decide whether a pass may run at all: excluded users, the per-user lock, and
the safety guards (replica markers, mass deletion).

The lock is an `flock` on $XDG_RUNTIME_DIR/roaming-homes.lock. The kernel drops it when the
holder dies, so a killed sync never leaves a stale lock behind, and unlike `pgrep` it cannot
mistake another program (or another user's sync) for ours.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.counting import DirCache, count_files, server_program
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.paths import is_below


def is_excluded(user: str, excluded_users: list[str]) -> bool:
    return user in excluded_users


class SyncLock:
    """Exclusive: a second holder is told at once (exit 75), or after waiting `wait` seconds.

    The same lock, with its own file and `busy` text, keeps a user to one daemon.
    """

    def __init__(self, path: Path, busy: str | None = None) -> None:
        self.path = path
        self.busy = busy
        self._fd: int | None = None

    def acquire(self, what: str = "sync", wait: float = 0) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while not _try_flock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                held = lock_purpose(self.path)
                holder = held[0] if held else lock_holder(self.path)
                by = f" (pid {holder})" if holder else ""
                activity = _ACTIVITIES.get(held[1] if held else "", "sync")
                busy = self.busy or f"another {activity} of this user is running"
                raise RoamingHomesError(f"{busy}{by}; lock {self.path}",
                                        ExitCode.TRY_LATER)
            time.sleep(0.2)  # flock has no timeout of its own; polling keeps the bound
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        self._fd = fd

    @property
    def fileno(self) -> int | None:
        """The locked descriptor; a child that inherits it keeps the lock while it lives."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# How the purpose a holder wrote into the lock file is named to the user who is kept out.
_ACTIVITIES = {"resolve": "resolve", "watch": "real-time sync"}


def lock_holder(path: Path) -> int | None:
    """PID holding an flock on `path`, read from /proc/locks without touching the lock."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks a blocked waiter)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].lower() == wanted:
            return int(fields[4])
    return None


def lock_purpose(path: Path) -> tuple[int, str] | None:
    """The holder of the lock on `path` and what it holds it for ("sync", "watch", ...).

    The holder writes "PID PURPOSE" into the file; the text counts only while that PID holds
    the lock (the file outlives its holders).
    """
    holder = lock_holder(path)
    if holder is None:
        return None
    try:
        pid, _, purpose = path.read_text().partition(" ")
    except OSError:
        return None
    return (holder, purpose.strip()) if pid == str(holder) else None


# --- Safety checks before unison runs ---------------------------------------------------------
#
# Deciding is pure (`marker_refusal`, `deletion_refusal`, `parse_probe`, `probe_script`); the
# engine measures (`probe_local`, or `probe_script` over ssh) and acts on the decision.

MARKER = ".roaming-homes-root"
MARKER_PREFIX = "roaming-homes replica "
# Below this many lost files a pass is never refused for mass deletion: deleting a handful of
# files out of a dozen is ordinary housekeeping, not a vanished replica.
MIN_DELETIONS = 10
_SIDES = {"local": "the local home", "server": "the server home"}


def new_replica_id() -> str:
    import uuid

    return uuid.uuid4().hex


def marker_text(replica_id: str) -> str:
    return f"{MARKER_PREFIX}{replica_id}\n"


def parse_marker(text: str) -> str | None:
    """The replica id in a marker file's text, or None when it is not one of ours."""
    line = text.strip()
    if not line.startswith(MARKER_PREFIX):
        return None
    replica_id = line[len(MARKER_PREFIX):].strip()
    return replica_id if re.fullmatch(r"[0-9a-f]{32}", replica_id) else None


@dataclass(frozen=True)
class Probe:
    """What one replica looks like just before a pass: its root, marker and file count."""

    present: bool  # the root directory exists
    marker: str | None  # replica id from the root's marker, None when absent or unreadable
    files: int  # files and links under the synced paths (ignored ones not counted)


def marker_refusal(recorded: dict[str, str], found: dict[str, Probe],
                   names: dict[str, str]) -> str | None:
    """Why this pass must not run, judging by the replica markers; None when they are fine.

    `recorded` holds the replica ids seen at the last good pass (side -> id); a side without a
    recorded id (first pass, or state from before markers existed) is not judged. A replica
    that lost its marker was emptied, replaced or is not mounted: syncing would propagate its
    emptiness as deletions. A different id means another replica sits at that place.
    """
    for side, probe in found.items():
        expected = recorded.get(side)
        if not expected:
            continue
        where = f"{_SIDES[side]} {names[side]}"
        if not probe.present:
            return (f"{where} is missing (not mounted?); nothing was synced. Once it is back, "
                    "sync again")
        if probe.marker is None:
            return (f"{where} lacks its marker {MARKER}: it looks emptied, replaced or not "
                    "mounted, so nothing was synced. If it was wiped on purpose, "
                    "`roaming-homes sync --first-run` restores it from the other side")
        if probe.marker != expected:
            return (f"{where} is a different replica than at the last sync (marker "
                    f"{MARKER} says {probe.marker}, expected {expected}); nothing was synced. "
                    "If this is intended, run `roaming-homes sync --first-run` (union, "
                    "no deletions)")
    return None


def deletion_floor(before: int, max_delete: int) -> int:
    """The fewest files a side recorded with `before` files may have left without a refusal.

    The rule: a side whose file count fell by more than `max_delete` percent of the count
    recorded at the last good pass, and by more than MIN_DELETIONS files, is refused.
    """
    return before - max(MIN_DELETIONS, max_delete * before // 100)


def deletion_refusal(recorded: dict[str, int], found: dict[str, Probe], names: dict[str, str],
                     max_delete: int) -> str | None:
    """Why this pass must not run, judging by how many files a side lost since the last pass."""
    for side, probe in found.items():
        before = recorded.get(side)
        if before is None or probe.files >= deletion_floor(before, max_delete):
            continue
        return (f"{_SIDES[side]} {names[side]} lost {before - probe.files} of {before} files "
                f"since the last sync (more than sync.max_delete = {max_delete} %); nothing "
                "was synced. If the deletions are intended, run `roaming-homes sync --force`")
    return None


def probe_local(root: Path, paths: Sequence[str], ignore_paths: Sequence[str],
                ignore_names: Sequence[str], cache: DirCache | None = None) -> Probe:
    if not root.is_dir():
        return Probe(False, None, 0)
    try:
        marker = parse_marker((root / MARKER).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        marker = None
    return Probe(True, marker, count_files(root, paths, ignore_paths, ignore_names, cache))


def write_local_marker(root: Path, replica_id: str) -> None:
    """Write the marker atomically (a pass killed meanwhile leaves no half marker)."""
    tmp = root / f"{MARKER}.tmp"
    tmp.write_text(marker_text(replica_id), encoding="utf-8")
    tmp.replace(root / MARKER)


# The system's python3, not the one a user's PATH puts first (pyenv's shims alone take longer to
# start than the whole count).
SERVER_PYTHON = "/usr/bin/python3"
# From this many files on, the server counts with python3 and its cache (about 20 ms to start,
# then next to nothing per unchanged directory); below, `find` is cheaper (1 ms per 1 000 files).
CACHED_COUNT_FROM = 20_000
REPORT = "roaming-homes guard: "  # how the server's replica report lines start
REFUSED = f"{REPORT}refused, nothing was synced"


def probe_script(root: str, paths: Sequence[str], ignore_paths: Sequence[str],
                 ignore_names: Sequence[str], expect_marker: str | None = None,
                 min_files: int | None = None, cached: bool = False) -> str:
    """A POSIX sh script that reports the server's replica to stdout, for `parse_probe`.

    With `expect_marker` (a replica id) or `min_files` it also judges: it exits 1 unless the
    root has that marker and at least that many files (`marker_refusal`, `deletion_floor`).
    Every value is quoted with shlex; the paths were validated by the config (relative, no
    `..`). File names may contain newlines, so `find` prints NUL-terminated names and only the
    NULs are counted. It runs in a subshell: the caller's working directory stays as it was.
    """
    q = shlex.quote
    starts = " ".join(q(f"./{p}") for p in paths)
    # A literal ignored path outside the synced paths is never met: testing every entry
    # against it would only cost time (as in `count_files`).
    reachable = [p for p in ignore_paths if any(c in p for c in "*?[") or is_below(p, paths)]
    prune = " -o ".join([*(f"-path {q(f'./{p}')}" for p in reachable),
                         *(f"-name {q(n)}" for n in ignore_names)])
    find = (f"find {starts} \\( {prune} \\) -prune -o ! -type d -print0" if prune
            else f"find {starts} ! -type d -print0")
    count = f"$({find} 2>/dev/null | tr -cd '\\000' | wc -c)"
    if cached:
        # The server's own python3 counts with a cache of what it saw (counting.py); `find`
        # counts where there is none (or it is too old to run the program).
        program = server_program(root, paths, ignore_paths, ignore_names)
        count = (f"$({SERVER_PYTHON} -I -S -c {q(program)} 2>/dev/null); "
                 f"case $f in ''|*[!0-9]*) f={count};; esac")
    tests = []
    if expect_marker is not None:
        tests.append(f'[ "$m" = {q(marker_text(expect_marker).strip())} ]')
    if min_files is not None:
        tests.append(f'[ "$f" -ge {int(min_files)} ]')
    verdict = "".join(f" && {test}" for test in tests)
    report = " ".join(f'{q(REPORT)}"{key} ${var}"' for key, var in
                      (("root", "r"), ("marker", "m"), ("files", "f")))
    return (f"(if cd {q(root)} 2>/dev/null; then r=present; "
            f"m=$(head -c 200 {q(MARKER)} 2>/dev/null | head -n 1); "
            f"f={count}; f=$(( f )); "
            "else r=missing m= f=0; fi; "
            f"printf '%s\\n' {report}; true{verdict})")


def guard_command(probe: str) -> str:
    """unison's `servercmd`: the server judges its replica with `probe` (a `probe_script` that
    judges), then runs unison's server, or refuses.

    unison appends `-server …` and ssh hands the line to the user's shell, which runs `sh`.
    The report goes to stderr, which reaches unison's output (stdout carries unison's
    protocol); a refusal ends the connection before unison's server starts, so nothing syncs.
    Judging in the same ssh session as unison saves a second command per pass (and a second
    start of the server user's login shell).
    """
    q = shlex.quote
    script = f"{probe} >&2 || {{ echo {q(REFUSED)} >&2; exit 1; }}; exec unison \"$@\""
    return f"sh -c {q(script)} roaming-homes-guard"


def parse_probe(output: str | Sequence[str]) -> Probe | None:
    """Read `probe_script`'s report (from its output, or among unison's lines when it ran as
    `guard_command`; the last report counts); None when there is no complete one."""
    lines = output.splitlines() if isinstance(output, str) else output
    fields: dict[str, str] = {}
    probe = None
    for line in lines:
        if line.startswith(REPORT):
            key, _, value = line[len(REPORT):].partition(" ")
            fields[key] = value.strip()
            if key == "files" and fields["files"].isdigit() and "root" in fields:
                probe = Probe(fields["root"] == "present", parse_marker(fields.get("marker", "")),
                              int(fields["files"]))
                fields = {}
    return probe


def refused(lines: Sequence[str]) -> bool:
    """Whether the server's guard (`guard_command`) refused this run."""
    return REFUSED in lines


def write_marker_script(root: str, replica_id: str) -> str:
    """A sh script that writes the marker atomically unless the root already has one, then
    prints the marker that is there (another machine may have written it first)."""
    q = shlex.quote
    marker, tmp = q(f"{root}/{MARKER}"), q(f"{root}/{MARKER}.tmp")
    return (f"test -s {marker} || {{ printf '%s' {q(marker_text(replica_id))} > {tmp} && "
            f"mv -f {tmp} {marker}; }}; head -n 1 {marker}")
