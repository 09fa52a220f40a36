"""The ctypes inotify binding behind unison-fsmonitor: real kernel events, errors as OSError."""

from __future__ import annotations

import errno
import os
import select
import struct
from pathlib import Path

import pytest

from roaming_homes.unison.fsmonitor import WATCH_MASK
from roaming_homes.unison.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    Event,
    INotify,
    parse_events,
)


def _wait_readable(inotify: INotify) -> None:
    ready, _, _ = select.select([inotify], [], [], 10)
    assert ready, "no inotify event within 10 s"


def test_parse_events_splits_records_and_strips_the_name_padding() -> None:
    data = (struct.pack("iIII", 1, IN_CREATE, 0, 16) + b"caf\xc3\xa9.txt".ljust(16, b"\0")
            + struct.pack("iIII", 2, IN_IGNORED, 7, 0))
    assert parse_events(data) == [Event(1, IN_CREATE, 0, "café.txt"), Event(2, IN_IGNORED, 7, "")]


def test_real_events_for_a_created_file_and_directory(tmp_path: Path) -> None:
    with INotify() as inotify:
        assert inotify.read() == []  # nothing queued: returns at once
        wd = inotify.add_watch(str(tmp_path), WATCH_MASK)
        (tmp_path / "new.txt").write_text("x")
        (tmp_path / "sub").mkdir()
        _wait_readable(inotify)
        events = inotify.read()
        created = {e.name: e.mask for e in events if e.wd == wd and e.mask & IN_CREATE}
        assert set(created) == {"new.txt", "sub"}
        assert created["sub"] & IN_ISDIR and not created["new.txt"] & IN_ISDIR
        (tmp_path / "new.txt").unlink()
        _wait_readable(inotify)
        assert any(e.name == "new.txt" and e.mask & IN_DELETE for e in inotify.read())
        inotify.rm_watch(wd)
        _wait_readable(inotify)
        assert [e.mask & IN_IGNORED for e in inotify.read()] == [IN_IGNORED]


def test_errors_carry_the_errno(tmp_path: Path) -> None:
    with INotify() as inotify:
        with pytest.raises(OSError) as missing:
            inotify.add_watch(str(tmp_path / "missing"), WATCH_MASK)
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(OSError) as bad:
            inotify.rm_watch(12345)
        assert bad.value.errno == errno.EINVAL
        fd = inotify.fileno()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the context manager
