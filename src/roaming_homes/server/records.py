"""What the user's computers tell each other through the server home, in `.roaming-homes/` (never
synced, never counted as the user's files):

- `computers/<id>.json`: one record per computer: its name, its last pass and last successful
  sync, the result and counts, the version. Written by the computer's passes (atomically:
  a temporary file renamed), read by every computer's `status`.
- `confirmed/<time>-<id>.json`: a mass deletion the user confirmed on one computer
  (`sync --force`, or "Sync anyway"): which paths, when, where. Another computer whose next
  pass would delete the same files follows it instead of refusing.

Each is one JSON object on one line; what is read back is validated, and a record of the wrong
shape is left out.
"""

from __future__ import annotations

import contextlib
import enum
import json
import shlex
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from roaming_homes.paths import is_below, private_dir
from roaming_homes.session.state import write_atomic
from roaming_homes.unison import ssh

DIRECTORY = ".roaming-homes"
RECORD_LIMIT = 65536  # bytes read of one record: a record is small, a planted file is cut
CONFIRMED_LIMIT = 16 * 1024 * 1024  # bytes read of all confirmations together
KEEP_CONFIRMED = 20  # confirmations kept on the server (the newest)


@dataclass(frozen=True)
class ComputerRecord:
    id: str
    name: str
    version: str
    last_pass: str  # ISO time
    result: str
    last_success: str | None = None
    transferred: int = 0
    conflicts: int = 0

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ComputerRecord | None:
        if not isinstance(data, dict):
            return None
        try:
            record = cls(**{key: data[key] for key in _FIELDS if key in data})
        except TypeError:
            return None
        strings = (record.id, record.name, record.version, record.last_pass, record.result)
        if not all(isinstance(value, str) for value in strings) or not _is_time(record.last_pass):
            return None
        if record.last_success is not None and not _is_time(record.last_success):
            return None
        if not all(isinstance(n, int) and not isinstance(n, bool)
                   for n in (record.transferred, record.conflicts)):
            return None
        return record


_FIELDS = tuple(ComputerRecord.__dataclass_fields__)


class Freshness(enum.StrEnum):
    """How recent a computer's last successful sync is."""

    CURRENT = "current"
    BEHIND = "behind"  # older than notify.stale_after: its changes may be missing from the server
    STALE = "stale"  # never, or older than client.forget_after days


def freshness(age: float | None, stale_after: float, forget_after_days: float) -> Freshness:
    """A computer's freshness from the age in seconds of its last successful sync (None: it
    never had one)."""
    if age is None or age > forget_after_days * 86400:
        return Freshness.STALE
    if age > stale_after:
        return Freshness.BEHIND
    return Freshness.CURRENT


def last_other(found: Sequence[ComputerRecord], me: str) -> ComputerRecord | None:
    """The user's other computer that synced last: whose version the server most likely holds."""
    others = [r for r in found if r.id != me and r.last_success]
    return max(others, key=lambda r: r.last_success or "") if others else None


def age_of(iso: str | None, now: datetime) -> float | None:
    """Seconds since an ISO time; None when there is none (or it cannot be read)."""
    if not iso:
        return None
    try:
        return (now - datetime.fromisoformat(iso)).total_seconds()
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Confirmation:
    """Deletions the user confirmed on `name` at `time`: the paths (as unison's plan named them)
    that the pass deleted on the server."""

    computer: str
    name: str
    time: str
    paths: list[str] = field(default_factory=list)

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> Confirmation | None:
        if not isinstance(data, dict):
            return None
        computer, name, time, paths = (data.get(key) for key in ("computer", "name", "time",
                                                                  "paths"))
        if (not isinstance(computer, str) or not isinstance(name, str) or not _is_time(time)
                or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
            return None
        assert isinstance(time, str)
        return cls(computer, name, time, paths)

    def covers(self, paths: Sequence[str]) -> bool:
        """Whether every one of `paths` is (below) a path this confirmation deleted."""
        return bool(paths) and all(is_below(path, self.paths) for path in paths)


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_lines(text: str, kind: type[ComputerRecord] | type[Confirmation]) -> list[Any]:
    """The valid objects of one-JSON-a-line `text` (anything else is left out)."""
    found = []
    for line in text.splitlines():
        try:
            item = kind.from_dict(json.loads(line))
        except ValueError:
            continue
        if item is not None:
            found.append(item)
    return found


def write_and_list_script(home: str, sub: str, name: str, limit: int, keep: int = 0) -> str:
    """sh for the server: the object on stdin becomes `home/.roaming-homes/sub/name` (atomically,
    the user's alone), then every object in that directory is printed, one a line; with `keep`,
    only the newest `keep` (names sort by time) are kept."""
    q = shlex.quote
    directory = q(f"{DIRECTORY}/{sub}")
    target, tmp = q(f"{DIRECTORY}/{sub}/{name}"), q(f"{DIRECTORY}/{sub}/.{name}.tmp")
    prune = (f"ls -1 {directory} | grep '[.]json$' | sort -r | tail -n +{keep + 1} | "
             f"while IFS= read -r f; do rm -f {directory}/\"$f\"; done; " if keep else "")
    # Never makes the home itself: a home that is missing (not mounted) stays missing.
    return (f"umask 077; cd {q(home)} && mkdir -p {directory} && cat > {tmp} && "
            f"mv -f {tmp} {target} || exit 1; {prune}{list_script(home, sub, limit)}")


def list_script(home: str, sub: str, limit: int) -> str:
    """sh for the server: every object in `home/.roaming-homes/sub`, one a line, at most
    `limit` bytes in all."""
    directory = shlex.quote(f"{home}/{DIRECTORY}/{sub}")
    return (f"for f in {directory}/*.json; do [ -f \"$f\" ] || continue; "
            f"head -c {limit} \"$f\"; printf '\\n'; done | head -c {limit}")


class ServerHome:
    """`.roaming-homes/` in the server home: through the pass's ssh connection, or a local
    directory (server.root). Raises ConnectError (or OSError, locally) when it cannot be used."""

    def __init__(self, server: ssh.Server, socket: Path | None,
                 abort: threading.Event | None = None) -> None:
        self.server, self.socket, self.abort = server, socket, abort

    def exchange(self, sub: str, name: str, line: str, limit: int, keep: int = 0) -> str:
        """Write `line` as `sub/name`, then return every object of `sub`, one a line."""
        if not self.server.is_local:
            return ssh.run_remote(self.server, self.socket,
                                  write_and_list_script(self.server.home, sub, name, limit, keep),
                                  self.abort, data=line.encode())
        if not Path(self.server.local_root).is_dir():  # never made here: it is not mounted
            raise OSError(f"{self.server.local_root} is missing")
        directory = private_dir(Path(self.server.local_root, DIRECTORY, sub))
        write_atomic(directory / name, line)
        if keep:
            for old in sorted(directory.glob("*.json"), reverse=True)[keep:]:
                old.unlink(missing_ok=True)
        return self.read(sub, limit)

    def read(self, sub: str, limit: int) -> str:
        if not self.server.is_local:
            return ssh.run_remote(self.server, self.socket,
                                  list_script(self.server.home, sub, limit), self.abort)
        lines = []
        for path in sorted(Path(self.server.local_root, DIRECTORY, sub).glob("*.json")):
            with contextlib.suppress(OSError), path.open("rb") as handle:
                lines.append(handle.read(limit).decode("utf-8", errors="replace"))
        return "\n".join(lines)[:limit]
