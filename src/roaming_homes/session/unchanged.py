"""A pass that finds nothing changed without running unison: both replicas' stat digests.

A pass in which nothing changed still costs unison's whole exchange with the server: about
sixteen round trips, seconds on a slow link, every interval. After a whole pass in which unison
had nothing to do, the stat digests of both replicas taken at its start, before unison looked,
are recorded (`Record`). The next pass takes this side's digest (no network); when it equals the
recorded one, one exchange over the shared connection asks the server for its digest
(`server_script`), and when that equals too, unison is not run: neither side changed since a
state in which unison had nothing to do.

Why no change can be missed (tests/test_unchanged.py holds it to a model):
- A digest covers every entry under the synced paths: its path, type, mode, inode, size,
  modification time and change time (a link's own, never its target's). Writing, making,
  deleting, renaming, or changing the permissions or owner of an entry changes its change
  time (ctime), which no program can set back. Both sides list their trees with GNU find.
  This side leaves out what unison ignores where find can match it exactly as unison does
  (`find_argv`; what else unison ignores stays in: a change there only makes unison run), and
  the times of directories (unison does not sync them; they change with every entry made or
  removed, ignored ones too); the server's digest leaves nothing out. A computer or server
  without GNU find has no digest: unison runs.
- The change time comes from a coarse clock (a kernel tick; whole seconds on some file
  systems): a change in the same tick as an earlier one may leave it as it was. So a digest
  is recorded only when no entry changed in the `SETTLE_NS` before it was taken (settled).
- A change made while the recording pass ran: before unison looked at the entry, unison saw it
  and had something to do (then nothing is recorded); after, it changes the next digest.
- The record is dropped before unison runs in any pass; it is used for `sync.rescan_interval`
  after the pass that made it at most (unison looks at both sides at least that often), and
  only for the same pair of roots, paths and ignore rules.

Skipping does not always pay: over a fast link to a big home, walking both trees can take
longer than unison's own pass. What the last check cost is kept beside what the last unison
pass with nothing to do cost (`Costs`); while the check costs more, no digests are taken at
all, and it is tried again after `sync.rescan_interval`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from roaming_homes.errors import DiskFull
from roaming_homes.files import Shape, is_number, is_str, optional, read_json
from roaming_homes.session.state import write_atomic
from roaming_homes.unison import runner

if TYPE_CHECKING:
    from collections.abc import Sequence

SETTLE_NS = 3_000_000_000
_FILE = "unchanged.json"
_HEX = re.compile(r"[0-9a-f]{64}")
UNSETTLED = "unsettled"  # the server's word for a digest taken too soon after a change
NONE = "none"  # the server's word for no digest (no GNU find there)


@dataclass(frozen=True)
class Digest:
    """A replica's stat digest (sha256, hex) and whether it may be recorded (settled)."""

    value: str
    settled: bool


def local_digest(root: str | os.PathLike[str], paths: Sequence[str],
                 ignore_paths: Sequence[str], ignore_names: Sequence[str],
                 settle_ns: int = SETTLE_NS) -> Digest | None:
    """This side's digest of what unison syncs under `paths` of `root`, from GNU find's
    listing (`find_argv`; a third of the time a walk in Python takes). None: no GNU find here
    (no digest: unison runs)."""
    taken = time.time_ns()
    digest, recent, tail = hashlib.sha256(), False, b"\0"
    try:
        with runner.start(find_argv(paths, ignore_paths, ignore_names, taken - settle_ns),
                          cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"}) as find:
            assert find.stdout is not None
            first = find.stdout.read(len(_ROOT))
            if first != _ROOT:  # not GNU find: it printed nothing, a digest that never changes
                find.kill()
                return None
            while chunk := find.stdout.read(1 << 20):
                digest.update(chunk)
                # a record starts with its type letter: "!" only ever starts a mark (`_RECENT`)
                recent = recent or _RECENT in tail + chunk
                tail = chunk[-2:]
    except OSError:
        return None
    if find.returncode not in (0, 1):  # 1: an entry vanished or could not be read
        return None
    return Digest(digest.hexdigest(), not recent)


_ROOT = b"R\0"  # the first thing the listing says: GNU find understood it
_RECENT = b"\0!\0"  # marks an entry changed within the settle time (before its record)
_FILE_FORMAT = "%y %m %i %s %T@ %C@ %p\\0"
# unison syncs a directory's existence and permissions, not its times: those change with every
# entry made or removed in it, ignored ones too. Its entries are in the digest themselves.
_DIR_FORMAT = "%y %m %i %p\\0"
_GLOB_ONLY = set("?[]{}\\")


def find_argv(paths: Sequence[str], ignore_paths: Sequence[str], ignore_names: Sequence[str],
              since_ns: int) -> list[str]:
    """GNU find's command, run in the root: one record for every entry under `paths` (links
    not followed) in the order find walks (the same for an unchanged tree), each file's or
    link's record after a mark when its change time is after `since_ns`, after `_ROOT`.

    What unison ignores is left out where find can say it exactly (the listing may hold more:
    more only makes a digest change more often, and then unison runs): a name or path without
    glob characters; a name pattern whose only glob character is `*` (in the C locale, byte by
    byte as unison matches; a leading `*` never matches a leading dot in unison, so such names
    are kept). Other patterns (`?`, which find matches to a byte where Python's rules match a
    character, classes, alternatives, path globs, where find's `*` would also match a `/`) are
    not applied, nor is unison's rule for names with a line break."""
    rules: list[str] = []
    for path in ignore_paths:
        if not set(path) & (_GLOB_ONLY | {"*"}):
            rules += ["-o", "-path", f"./{path}"]
    for name in ignore_names:
        if not set(name) & _GLOB_ONLY:
            rules += ["-o", "(", "-name", name, *(["!", "-name", ".*"] if name[0] == "*"
                                                 else []), ")"]
    seconds, nanos = divmod(since_ns, 1_000_000_000)
    ignored = ["(", *rules[1:], ")", "-prune", "-o"] if rules else []
    return ["find", "-P", ".", *(f"./{p}" for p in paths),
            "-path", ".", "-printf", "R\\0", "-prune", "-o", *ignored,
            "-type", "d", "-printf", _DIR_FORMAT,
            "-o", "(", "-newerct", f"@{seconds}.{nanos:09d}", "-printf", "!\\0", "-o",
            "-true", ")", "-printf", _FILE_FORMAT]


def server_script(paths: Sequence[str], settle: bool) -> str:
    """A POSIX sh fragment, run in the server root, that sets `dg` to that replica's digest:
    64 hex digits, `UNSETTLED` (with `settle`, when an entry changed in the last `SETTLE_NS`),
    or `NONE` when the server's find is not GNU find (no -printf, -newerct: a listing that
    stays empty would hide every change) or it has no sha256sum (or, with `settle`, no
    mktemp). The listing is in find's order, a directory's as the file system lists it: the
    same for an unchanged directory; where it is not, digests differ and unison runs.

    With `settle`, the same walk writes a byte to a temporary file for each entry changed
    since `SETTLE_NS` before it started (a second walk to look for them took half again as
    long on a big home)."""
    starts = " ".join(shlex.quote(f"./{p}") for p in paths)
    seconds = SETTLE_NS // 1_000_000_000
    probe = "[ \"$(find . -maxdepth 0 -newerct @0 -printf x 2>/dev/null)\" = x ]"
    marks = (f" -newerct \"@$(($(date +%s) - {seconds}))\" -fprintf \"$mk\" x"
             if settle else "")
    digest = (f"dg=$(find {starts} -printf '%y %m %i %s %T@ %C@ %p\\0'{marks} 2>/dev/null "
              f"| sha256sum 2>/dev/null); dg=${{dg%% *}}; [ -n \"$dg\" ] || dg={NONE}; ")
    if not settle:
        return f"dg={NONE}; if {probe}; then {digest}fi"
    fresh = f"if [ \"$dg\" != {NONE} ] && [ -s \"$mk\" ]; then dg={UNSETTLED}; fi; "
    return (f"dg={NONE}; if {probe} && mk=$(mktemp 2>/dev/null); then {digest}{fresh}"
            f"rm -f \"$mk\"; fi")


CHECK = "roaming-homes digest "  # how the answer of `check_script` starts


def check_script(root: str, paths: Sequence[str], nonce: str) -> str:
    """A sh script that prints the server replica's digest in one line (`parse_check`)."""
    return (f"cd {shlex.quote(root)} 2>/dev/null || exit 0; {server_script(paths, True)}; "
            f"printf '%s\\n' \"{CHECK}{nonce} $dg\"")


def parse_check(answer: str, nonce: str) -> Digest | None:
    """The digest in `check_script`'s answer (None: none, or not an answer to this nonce)."""
    lines = answer.splitlines()
    if len(lines) != 1 or not lines[0].startswith(f"{CHECK}{nonce} "):
        return None
    return parse_reported(lines[0][len(CHECK) + len(nonce) + 1:])


def parse_reported(value: str) -> Digest | None:
    """A digest as the server says it (`server_script` with `settle`): one too recent to
    record matches no record either (its value is empty)."""
    if value == UNSETTLED:
        return Digest("", settled=False)
    return Digest(value, settled=True) if _HEX.fullmatch(value) else None


def rules_of(*parts: object) -> str:
    """What a record is valid for (the roots, paths and ignore rules), as one string."""
    text = json.dumps([str(p) if not isinstance(p, list | tuple) else list(map(str, p))
                       for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Record:
    """Both digests at the start of the last whole pass that had nothing to do."""

    rules: str
    local: str
    server: str
    made: float  # epoch seconds

    def fits(self, rules: str, now: float, max_age: float) -> bool:
        return self.rules == rules and 0 <= now - self.made < max_age


_SHAPE = Shape.complete({"rules": is_str, "local": is_str, "server": is_str, "made": is_number})


def _file(state_dir: Path) -> Path:
    return state_dir / _FILE


@dataclass(frozen=True)
class Costs:
    """Seconds the last check took (this side's digest and the server's answer) and the last
    whole unison pass with nothing to do, on this computer; `checked`: when (epoch)."""

    check: float | None = None
    unison: float | None = None
    checked: float = 0.0

    def pays(self, now: float, retry_after: float) -> bool:
        """Whether to take digests: the check costs clearly less than unison (the unison pass
        measured is one that recorded digests, its server's listing included), or either is
        unknown, or the last check is `retry_after` seconds old (links and homes change)."""
        return (self.check is None or self.unison is None or self.check < 0.8 * self.unison
                or not 0 <= now - self.checked < retry_after)


_COSTS_FILE = "unchanged-costs.json"
_COSTS = Shape({"check": optional(is_number), "unison": optional(is_number),
                "checked": is_number})


def load_costs(state_dir: Path) -> Costs:
    data = read_json(state_dir / _COSTS_FILE, _COSTS.checked)
    if data is None:
        return Costs()
    return Costs(data.get("check"), data.get("unison"), float(data.get("checked", 0.0)))


def save_costs(state_dir: Path, costs: Costs) -> None:
    """Kept for the next pass; not kept (a full disk): measured again."""
    with contextlib.suppress(DiskFull):
        write_atomic(state_dir / _COSTS_FILE, json.dumps(costs.__dict__) + "\n", durable=False)


def load(state_dir: Path) -> Record | None:
    """The record, if there is one (a broken file is moved aside: no record)."""
    data = read_json(_file(state_dir), _SHAPE.checked)
    return None if data is None else Record(data["rules"], data["local"], data["server"],
                                            float(data["made"]))


def save(state_dir: Path, record: Record) -> None:
    write_atomic(_file(state_dir), json.dumps(record.__dict__) + "\n")


def drop(state_dir: Path) -> None:
    """Forget the record: unison is about to run (what it does changes the replicas)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_file(state_dir))
