"""Our own files under $XDG_STATE_HOME/roaming-homes/: reading them back checked, and a full disk
as an error that names the file.

Every file there is JSON we wrote ourselves, but a file may still come back of the wrong shape:
hand-edited, written by another version, or damaged. `read_checked` hands the text to a parser
that raises ValueError for anything it does not expect; such a file is moved aside as
`NAME.broken-YYYYMMDD-HHMMSS` (kept, to see what went wrong), a warning says so, and the
caller starts afresh as if the file were absent. What each file's absence means, and why
starting afresh is safe, is said where the file is read.

`Shape` is the little vocabulary those parsers share: which keys an object has, and what type
each value is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from roaming_homes.errors import DiskFull

log = logging.getLogger(__name__)

T = TypeVar("T")
Check = Callable[[Any], bool]

# "No space left on device", "Disk quota exceeded": either way this file cannot be written.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def naming_disk_full(path: Path) -> Iterator[None]:
    """Turn a full disk (or quota) met while writing `path` into `DiskFull` naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFull(path) from exc
        raise


# --- reading back -----------------------------------------------------------------------------

def read_checked(path: Path, parse: Callable[[str], T]) -> T | None:
    """`parse` of the file's text; None when there is no such file, or when the text is not
    what `parse` expects (it raises ValueError): that file is moved aside, with a warning.

    Other errors of reading (permissions, a directory in the way) are raised: the file is
    not ours to move then.
    """
    try:
        with open(path, "rb") as handle:
            seen = os.fstat(handle.fileno())
            data = handle.read()
    except FileNotFoundError:
        return None
    try:
        return parse(_text(data))
    except ValueError as exc:
        _set_aside(path, seen, str(exc))
        return None


def read_json(path: Path, parse: Callable[[Any], T]) -> T | None:
    """`read_checked` for a file that holds one JSON value: `parse` gets the value."""
    return read_checked(path, lambda text: parse(_loads(text)))


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def _set_aside(path: Path, seen: os.stat_result, why: str) -> None:
    """Move the broken file aside, unless it is no longer the file that was read (another
    process moved it first and may have written a good one since)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return
    if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.broken-{stamp}")
    count = 1
    while target.exists():  # two in the same second: neither is overwritten
        count += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{count}")
    try:
        path.rename(target)
    except FileNotFoundError:
        return  # moved by another process meanwhile
    log.warning("%s is broken (%s): moved aside to %s, starting afresh", path, why, target.name)


# --- shapes -----------------------------------------------------------------------------------

def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def optional(check: Check) -> Check:
    """`check`, or null."""
    return lambda value: value is None or check(value)


def list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def dict_of(check: Check) -> Check:
    """An object (string keys) whose every value passes `check`."""
    return lambda value: isinstance(value, dict) and all(check(item) for item in value.values())


def one_of(*values: Any) -> Check:
    """One of these (strings, usually): compared by value and type (True is not 1)."""
    return lambda value: any(type(value) is type(v) and value == v for v in values)


@dataclass(frozen=True)
class Shape:
    """What a JSON object must look like: a check per key it may have; `required` keys must be
    there, the others may be absent (an older file lacks keys added since). Unknown keys are
    left alone: a newer version may have added them."""

    fields: Mapping[str, Check]
    required: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def complete(cls, fields: Mapping[str, Check]) -> Shape:
        """An object that has every one of these keys."""
        return cls(fields, frozenset(fields))

    def problem(self, data: Any) -> str | None:
        """Why `data` is not of this shape; None when it is."""
        if not isinstance(data, dict):
            return f"a {type(data).__name__} where an object belongs"
        missing = sorted(self.required - data.keys())
        if missing:
            return f"{missing[0]!r} is missing"
        for key, check in self.fields.items():
            if key in data and not check(data[key]):
                return f"{key!r} has the wrong type"
        return None

    def __call__(self, data: Any) -> bool:
        return self.problem(data) is None

    def checked(self, data: Any) -> dict[str, Any]:
        """`data`, once it is of this shape; else ValueError saying why."""
        if (problem := self.problem(data)) is not None:
            raise ValueError(problem)
        return data


def try_flock(fd: int) -> bool:
    """Take an exclusive flock on `fd` if nobody holds one; never waits."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
