"""Linux inotify through ctypes: the few calls `unison-fsmonitor` needs, and `FileWatch`, which
tells the daemon and the tray icon that a file of theirs changed.

Kept here instead of depending on inotify_simple so that the packages need no Python library
a distribution may not ship (Debian 12 has no python3-inotify-simple).
"""

from __future__ import annotations

import ctypes
import os
import struct

# Not `typing`, `pathlib` or `contextlib`: the server runs one monitor per user, and each such
# import costs every one of them memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# Event bits (linux/inotify.h).
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_UNMOUNT = 0x400, 0x800, 0x2000
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK, IN_ISDIR = 0x1000000, 0x2000000, 0x4000000, 0x40000000

# What changes a watched file (a config file, the ticket cache, a state file) in its directory:
# written in place, replaced (atomic-save editors, kinit, write a new file and rename it over
# the old one), created, removed, permissions changed.
FILE_EVENTS = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_READ_SIZE = 65536


class Event:
    """One inotify event; `name` is "" for an event on the watched directory itself."""

    __slots__ = ("cookie", "mask", "name", "wd")

    def __init__(self, wd: int, mask: int, cookie: int, name: str) -> None:
        self.wd, self.mask, self.cookie, self.name = wd, mask, cookie, name

    def _key(self) -> tuple[int, int, int, str]:
        return (self.wd, self.mask, self.cookie, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Event{self._key()!r}"


def parse_events(data: bytes) -> list[Event]:
    """The events in one read() of an inotify descriptor (names are NUL padded)."""
    events, offset = [], 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = data[offset:offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, cookie, os.fsdecode(name)))
    return events


class INotify:
    """A non-blocking inotify descriptor; usable with select() and as a context manager."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc (glibc, musl)
        self._fd = self._call(self._libc.inotify_init1, os.O_NONBLOCK | os.O_CLOEXEC)

    def _call(self, function: Callable[..., int], *args: object) -> int:
        result = function(*args)
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return result

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: str, mask: int) -> int:
        """The watch descriptor; OSError with errno ENOSPC when the watch limit is reached."""
        return self._call(self._libc.inotify_add_watch, self._fd, os.fsencode(path),
                          ctypes.c_uint32(mask))

    def rm_watch(self, wd: int) -> None:
        self._call(self._libc.inotify_rm_watch, self._fd, wd)

    def read(self) -> list[Event]:
        """Every event queued now; an empty list when there is none (never blocks)."""
        data = b""
        while True:
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            data += chunk
            # The kernel returns whole events only; room left for one more means none was left.
            if len(chunk) < _READ_SIZE - 4096:
                break
        return parse_events(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> INotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nearest_dir(path: Path) -> tuple[Path, str]:
    """The closest existing directory above `path` and the name in it that leads to `path`."""
    while not path.parent.is_dir() and path.parent != path:
        path = path.parent
    return path.parent, path.name


class FileWatch:
    """Tells when a file (a config file, the Kerberos ticket cache, the state files the tray
    icon shows) may have changed, without polling: inotify on their directories.

    A directory that does not exist yet is watched through its closest existing ancestor (for
    the name that would create it); the watches are renewed after every relevant event.
    """

    def __init__(self, paths: tuple[Path, ...]) -> None:
        self.paths = paths
        self._inotify = INotify()
        self._wanted: dict[int, set[str]] = {}  # watch descriptor -> names that matter in it
        try:
            self._arm()
        except OSError:
            self.close()
            raise

    def _arm(self) -> None:
        self._wanted = {}
        for path in self.paths:
            directory, name = _nearest_dir(path)
            wd = self._inotify.add_watch(str(directory), FILE_EVENTS)
            self._wanted.setdefault(wd, set()).add(name)

    def fileno(self) -> int:
        return self._inotify.fileno()

    def touched(self) -> bool:
        """Read the pending events; True when one of them concerns a watched file."""
        hit = any(event.name in self._wanted.get(event.wd, ())
                  for event in self._inotify.read())
        if hit:
            self._rearm()
        return hit

    def _rearm(self) -> None:
        """`_arm` after an event (without contextlib: the monitor's imports stay few)."""
        try:
            self._arm()
        except OSError:  # a vanished directory: the mtimes still tell
            return

    def close(self) -> None:
        self._inotify.close()
