"""What roaming-homes remembers between passes, under $XDG_STATE_HOME/roaming-homes/.

- `state.json`: the last pass's outcome, the last successful pass, when the last whole pass
  began (deletions confirmed on another computer since then are followed), the root pairs
  that have completed a first sync (so the next pass knows it is not a first run), and per
  pair the replica ids the safety guards compare against.
- `history.jsonl`: the last HISTORY_LIMIT outcomes, one JSON object a line.
- `sync.log` (+ `.1` … `.LOG_KEEP`): unison's output, rotated at LOG_MAX_BYTES.

Every write is atomic (temporary file + fsync + rename + fsync of the directory) and private
(mode 0600), so a pass killed at any moment, or a full disk, leaves the previous state
readable; a full disk raises `DiskFull` naming the file. Every read is checked
(`files.read_checked`): a file of the wrong shape is moved aside and the state starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from roaming_homes.errors import DiskFull
from roaming_homes.files import (
    Shape,
    dict_of,
    is_str,
    list_of,
    naming_disk_full,
    read_checked,
    read_json,
)
from roaming_homes.outcome import SUCCEEDED, SyncOutcome
from roaming_homes.paths import private_dir

HISTORY_LIMIT = 200
LOG_MAX_BYTES = 1_000_000
LOG_KEEP = 3


def ensure_private_dir(path: Path) -> Path:
    return private_dir(path)


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Replace `path` with `text` in one step: a temporary file beside it, fsynced, renamed over
    it, and the directory fsynced (so that the rename survives a crash too). `durable=False`
    skips both fsyncs, for files that only matter while this process runs or are made again
    when lost (a crash may leave them empty, never half-written).

    A full disk raises `DiskFull` naming `path` (or its directory, when that cannot be made);
    the temporary file is gone and `path` is as it was.
    """
    with naming_disk_full(path.parent):
        ensure_private_dir(path.parent)
    with naming_disk_full(path):
        _replace(path, text, durable)


def _replace(path: Path, text: str, durable: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # A name that is not UTF-8 is kept as the bytes it was (unison's profile names paths).
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    """fsync a directory: the entries renamed in it are on disk then."""
    # The rename is done either way: where a file system cannot sync a directory (some network
    # and FUSE ones refuse), this is as durable as it gets there.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# state.json, as `StateStore.save` writes it. Every key is optional: a new user has none yet.
_STATE = Shape({
    "last": lambda value: SyncOutcome.from_dict(value) is not None,
    "last_success": is_str,
    "whole_pass_started": is_str,
    "synced_roots": list_of(is_str),
    "replicas": dict_of(Shape({"local_id": is_str, "server_id": is_str})),
})


def _parse_history(text: str) -> list[tuple[str, SyncOutcome]]:
    """history.jsonl's lines with the outcomes they hold; ValueError for a line that holds none."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            outcome = SyncOutcome.from_dict(json.loads(line))
        except ValueError:
            outcome = None
        if outcome is None:
            raise ValueError(f"line {number} is not the outcome of a pass")
        entries.append((line, outcome))
    return entries


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.state_file = state_dir / "state.json"
        self.history_file = state_dir / "history.jsonl"
        self.log_file = state_dir / "sync.log"

    def load(self) -> dict[str, Any]:
        """The saved state; {} when there is none, or when it was broken (it is moved aside).

        Starting afresh is safe: no pair of roots counts as synced, so the next pass is a first
        sync (unison takes the union of both sides and deletes nothing), and with no replica
        ids recorded it adopts the markers it finds; the last result and last success are
        forgotten (`status` shows the history). A file that cannot be read (permissions)
        counts as empty with a note, and stays where it is.
        """
        try:
            data = read_json(self.state_file, _STATE.checked)
        except OSError as exc:
            return {"damaged": f"{self.state_file}: {exc}"}
        return data or {}

    def save(self, data: dict[str, Any]) -> None:
        data.pop("damaged", None)
        write_atomic(self.state_file, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def record(self, outcome: SyncOutcome) -> None:
        """Store a finished pass as the last result (and last success) and in the history."""
        data = self.load()
        record = outcome.to_dict()
        data["last"] = record
        if outcome.result in SUCCEEDED:
            data["last_success"] = outcome.finished
        self.save(data)
        self._append_history(record)

    def last(self) -> SyncOutcome | None:
        """The last pass recorded (None before the first, or when the record is damaged)."""
        return SyncOutcome.from_dict(self.load().get("last"))

    def last_success(self) -> str | None:
        value = self.load().get("last_success")
        return value if isinstance(value, str) else None

    def whole_pass_started(self) -> str | None:
        """When the last pass that went through over every synced path began (a real-time
        cycle looks at some only): what it saw of the server is no older, however late it
        ended. A state kept before this was: its last successful pass's end."""
        data = self.load()
        value = data.get("whole_pass_started", data.get("last_success"))
        return value if isinstance(value, str) else None

    def set_whole_pass_started(self, started: str) -> None:
        data = self.load()
        data["whole_pass_started"] = started
        self.save(data)

    def mark_synced(self, roots: str) -> None:
        """Remember that this pair of roots has unison archives: later passes are not first."""
        data = self.load()
        keys = data.setdefault("synced_roots", [])
        if roots not in keys:
            keys.append(roots)
            self.save(data)

    def is_synced(self, roots: str) -> bool:
        return roots in self.load().get("synced_roots", [])

    def replicas(self, roots: str) -> dict[str, Any]:
        """What the guards recorded at the last good pass of this pair of roots: the replica
        ids `local_id` and `server_id`."""
        entry = self.load().get("replicas", {}).get(roots)
        return entry if isinstance(entry, dict) else {}

    def set_replicas(self, roots: str, entry: dict[str, Any]) -> None:
        data = self.load()
        replicas = data.setdefault("replicas", {})
        if replicas.get(roots) != entry:  # a no-change pass usually finds them as they were
            replicas[roots] = entry
            self.save(data)

    def _append_history(self, outcome: dict[str, Any]) -> None:
        lines = [line for line, _ in self._entries()]
        lines = [*lines[-(HISTORY_LIMIT - 1):], json.dumps(outcome, sort_keys=True)]
        write_atomic(self.history_file, "\n".join(lines) + "\n")

    def _entries(self) -> list[tuple[str, SyncOutcome]]:
        """The history's lines and outcomes; none when there is no history, or when it was
        broken (it is moved aside). Nothing guards by the history: without it `status` and
        `conflicts` know only what the next pass records (and `status` the last result)."""
        try:
            return read_checked(self.history_file, _parse_history) or []
        except OSError:
            return []

    def history(self) -> list[SyncOutcome]:
        """The passes recorded, oldest first."""
        return [outcome for _, outcome in self._entries()]

    def open_log(self) -> LogWriter:
        with naming_disk_full(self.log_file):
            return LogWriter(self.log_file)


class LogWriter:
    """Appends unison's output to sync.log, rotating it so it never grows without bound.

    Line by line: every line is in the file as soon as unison says it (`tail -f sync.log`
    follows a long pass, a real-time session's included), not when the pass ends.

    A full disk does not stop a pass midway: the lines that do not fit are dropped, and leaving
    the `with` block raises `DiskFull` naming sync.log (the pass then ends failed, saying so).
    """

    def __init__(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        self.path = path
        self._rotate_if_big()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        self._handle = os.fdopen(fd, "a", encoding="utf-8", buffering=1)  # line buffered
        self.lost: DiskFull | None = None  # set once a line could not be written

    def _rotate_if_big(self) -> None:
        try:
            if self.path.stat().st_size < LOG_MAX_BYTES:
                return
        except FileNotFoundError:
            return
        for index in range(LOG_KEEP - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def write(self, line: str) -> None:
        if self.lost is not None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with naming_disk_full(self.path):
                self._handle.write(f"{stamp} {line}\n")
        except DiskFull as exc:
            self.lost = exc

    def close(self) -> None:
        """Close the log (what is buffered is written now); a full disk sets `lost`."""
        try:
            with naming_disk_full(self.path):
                self._handle.close()
        except DiskFull as exc:
            self.lost = self.lost or exc

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close()
        if self.lost is not None and exc_type is None:
            raise self.lost
