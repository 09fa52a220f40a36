"""Real-time mode's session, unit by unit (the loop itself runs in test_watch_e2e.py)."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import pytest

from roaming_homes.actions import watch


def test_a_stop_after_the_session_closed_writes_nothing_into_a_reused_descriptor() -> None:
    """The daemon sets `stop` once the watch is over, and its next pass opens pipes at once
    (ssh, unison): the waker must not write its wake byte into one of those. It did, and a
    pass died with "Bad exception data from child: b's'"."""
    job = SimpleNamespace(config={"sync": {"rescan_interval": 60}}, abort=threading.Event())
    stop = threading.Event()
    session = watch._Session(job, stop, lambda outcome: None, None)  # type: ignore[arg-type]
    session.close()
    reader, writer = os.pipe()
    os.dup2(writer, session.wake_w)  # the next pass's pipe, under the number the session had
    try:
        stop.set()
        session.wake_on_stop()

        os.set_blocking(reader, False)
        with pytest.raises(BlockingIOError):
            os.read(reader, 1)
    finally:
        for fd in {reader, writer, session.wake_w}:  # os.pipe may have taken the number back
            os.close(fd)
