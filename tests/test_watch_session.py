"""Real-time mode's session, unit by unit (the loop itself runs in test_watch_e2e.py)."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest

from roaming_homes.actions import sending, watch
from roaming_homes.actions import sync as engine
from roaming_homes.outcome import Result, SyncOutcome


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


def test_an_echo_of_the_last_cycle_is_held_until_its_window_ends() -> None:
    echoes = watch.Echoes()
    assert echoes.take(["Documents/a.txt"], 100.0) == ["Documents/a.txt"]  # nothing expected
    echoes.expect(("Documents/a.txt", "Music"), 100.0)

    assert echoes.take(["Documents/a.txt", "Music/x/y.ogg"], 101.0) == []
    assert not echoes.due(101.0)
    assert echoes.due(100.0 + watch.ECHO_WINDOW)
    assert echoes.release() == ["Documents/a.txt", "Music/x/y.ogg"]
    assert echoes.release() == [] and not echoes.due(200.0)


@pytest.mark.parametrize("report", [
    ["Documents/b.txt"],  # another path: another computer's change
    ["Documents/a.txt", "Documents/b.txt"],  # partly an echo: all of it now
    ["Documents"],  # above what the cycle synced
])
def test_a_report_that_is_not_only_echoes_is_synced_at_once(report: list[str]) -> None:
    echoes = watch.Echoes()
    echoes.expect(("Documents/a.txt",), 100.0)
    assert echoes.take(report, 101.0) == report
    assert echoes.take(["Documents/a.txt"], 100.0 + watch.ECHO_WINDOW) == ["Documents/a.txt"]


class _FakeMonitor:
    """A monitor whose reports the test hands it; readable (for select) while it has one."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        self.reports: list[list[str]] = []

    def say(self, paths: list[str]) -> None:
        self.reports.append(paths)
        os.write(self._w, b"x")

    def has_line(self) -> bool:
        return bool(self.reports)

    def changes(self) -> list[str]:
        os.read(self.fd, 1)
        return self.reports.pop(0)

    def fill(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)


def _session_with(monitors: list[_FakeMonitor]) -> watch._Session:
    job = SimpleNamespace(config={"sync": {"rescan_interval": 60}}, abort=threading.Event())
    session = watch._Session(job, threading.Event(), lambda outcome: None,  # type: ignore[arg-type]
                             None)
    session.monitors = monitors  # type: ignore[assignment]
    return session


def test_a_held_echo_goes_with_the_next_change_made_here() -> None:
    here, there = _FakeMonitor(), _FakeMonitor()
    session = _session_with([here, there])
    session.echoes.expect(("Documents/a.txt",), time.monotonic())
    there.say(["Documents/a.txt"])
    threading.Timer(0.3, here.say, (["Documents/b.txt"],)).start()

    wake, here_now, there_now = session._wait(time.monotonic() + 60, _empty_outbox())
    session.close()

    assert wake is watch.Wake.CHANGES
    # what changed here (the echoes the cycle may expect: only these), then the server's
    assert (here_now, there_now) == (["Documents/b.txt"], ["Documents/a.txt"])
    assert session.echoes.held == []


def test_a_held_echo_is_synced_on_its_own_when_nothing_else_comes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "ECHO_WINDOW", 0.3)
    here, there = _FakeMonitor(), _FakeMonitor()
    session = _session_with([here, there])
    session.echoes.expect(("Documents/a.txt",), time.monotonic())
    there.say(["Documents/a.txt"])

    woke = session._wait(time.monotonic() + 60, _empty_outbox())
    session.close()
    assert woke == (watch.Wake.CHANGES, [], ["Documents/a.txt"])


def test_the_servers_report_of_a_file_sent_on_its_own_is_left_to_its_settling() -> None:
    here, there = _FakeMonitor(), _FakeMonitor()
    session = _session_with([here, there])
    outbox = _empty_outbox()
    outbox.ledger["Documents/sent.txt"] = None  # type: ignore[assignment]
    there.say(["Documents/sent.txt", "Documents/theirs.txt"])

    woke = session._wait(time.monotonic() + 60, outbox)
    session.close()
    assert woke == (watch.Wake.CHANGES, [], ["Documents/theirs.txt"])


def _empty_outbox() -> sending.Outbox:
    return sending.Outbox(SimpleNamespace(), None, [])  # type: ignore[arg-type]


def _outcome(result: Result, message: str, **fields: object) -> SyncOutcome:
    return SyncOutcome(result=result, message=message, started="s", finished="f", duration=0,
                       server="srv", **fields)  # type: ignore[arg-type]


def test_a_cycle_keeps_what_the_passes_before_it_left_where_it_did_not_look() -> None:
    left = _outcome(Result.PARTIAL, "…", conflicts=["Documents/c.txt", "Music/d"],
                    failed_paths=["Documents/pipe"], failed=1)
    cycle = _outcome(Result.IN_SYNC, "in sync: 1 item(s) transferred", transferred=1)

    kept = engine.still_left(cycle, left, ("Music",))  # Music/d: the cycle looked, it is gone
    assert kept.result is Result.PARTIAL and kept.exit_code == 2
    assert (kept.conflicts, kept.failed_paths, kept.failed) == (
        ["Documents/c.txt"], ["Documents/pipe"], 1)
    assert kept.message == ("1 conflict(s) need you: Documents/c.txt (see `roaming-homes "
                            "conflicts`); 1 item(s) not synced: Documents/pipe (see the sync "
                            "log); this cycle: in sync: 1 item(s) transferred")
    conflicts_only = _outcome(Result.CONFLICTS, "…", conflicts=["Documents/c.txt"])
    assert engine.still_left(cycle, conflicts_only, ("Music",)).result is Result.CONFLICTS
    # what the cycle looked at is as it says; nothing left, or a cycle that did not run
    assert engine.still_left(cycle, left, ("Documents", "Music")) == cycle
    assert engine.still_left(cycle, None, ("Music",)) == cycle
    offline = _outcome(Result.OFFLINE, "offline")
    assert engine.still_left(offline, left, ("Music",)) == offline
