"""The daemon's deciding parts: what it logs, what STATUS= says, when the network counts."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from roaming_homes import config as config_mod
from roaming_homes.actions import daemon
from roaming_homes.actions.daemon import (
    BUSY_RETRY,
    FileWatch,
    Health,
    ended_offline,
    fallback_line,
    network_came_up,
    sd_notify,
    watch_retry_delay,
)
from roaming_homes.actions.watch import WatchResult
from roaming_homes.errors import RoamingHomesError
from roaming_homes.outcome import Reason, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session.lock import SyncLock, lock_purpose
from roaming_homes.session.progress import Progress


def outcome(result: str, message: str = "", finished: str = "2025-01-02T12:01:07+01:00",
            transferred: int = 0) -> SyncOutcome:
    return SyncOutcome(result=Result(result), message=message or result,
                       started=finished, finished=finished, duration=0.1, server="s",
                       transferred=transferred)


def test_a_day_offline_logs_two_lines_and_the_status_says_since_when() -> None:
    health = Health()
    assert health.update(outcome("in-sync", "in sync: nothing to do")) is not None
    went = health.update(outcome("offline", "server s unreachable", "2025-01-02T12:03:00+01:00"))
    quiet = [health.update(outcome("offline", "server s unreachable")) for _ in range(1440)]
    assert health.status() == "offline since 12:03:00"
    back = health.update(outcome("in-sync", "in sync: 2 item(s) transferred", transferred=2))

    assert went == "offline, will keep trying quietly: server s unreachable"
    assert quiet == [None] * 1440
    assert back == "back online (offline since 12:03:00): in sync: 2 item(s) transferred"
    assert health.status() == "last sync 12:01:07: in sync"


def test_repeated_nothing_to_do_is_silent_but_transfers_are_logged() -> None:
    health = Health()
    health.update(outcome("in-sync", "in sync: nothing to do"))

    assert health.update(outcome("in-sync", "in sync: nothing to do")) is None
    assert health.update(outcome("in-sync", "in sync: 1 item(s) transferred",
                                 transferred=1)) == "in sync: 1 item(s) transferred"


def test_problems_need_attention_and_a_new_problem_is_logged_again() -> None:
    health = Health()
    assert health.update(outcome("conflicts", "1 conflict(s) need you: a")) is not None
    assert health.update(outcome("conflicts", "1 conflict(s) need you: a")) is None
    assert health.update(outcome("conflicts", "1 conflict(s) need you: b")) is not None
    assert health.status() == "needs attention: 1 conflict(s) need you: b"


def test_a_busy_lock_changes_nothing() -> None:
    health = Health()
    health.update(outcome("in-sync"))

    assert health.update(outcome("busy", "another sync of this user is running")) is None
    assert health.status() == "last sync 12:01:07: in sync"


def test_a_config_note_wins_the_status_line() -> None:
    health = Health(note="configuration not reloaded: x.toml: unknown key sync.foo")
    health.update(outcome("in-sync"))

    assert health.status().startswith("needs attention: configuration not reloaded")


def test_status_before_the_first_pass() -> None:
    assert Health().status() == "first sync running"


@pytest.mark.parametrize(("previous", "state", "up"), [
    (None, 70, True),   # first signal we see: connected
    (20, 70, True),     # disconnected -> global
    (40, 50, True),     # connecting -> local network only (a LAN home server counts)
    (70, 60, False),    # still connected
    (70, 20, False),    # going down
    (None, 40, False),  # connecting is not connected
])
def test_network_came_up(previous: int | None, state: int, up: bool) -> None:
    assert network_came_up(previous, state) is up


def test_sd_notify_sends_one_datagram_and_nothing_without_a_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        assert sd_notify("READY=1\nSTATUS=x", address) is True
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
    assert sd_notify("READY=1", "") is False
    assert sd_notify("READY=1", str(tmp_path / "nobody")) is False


def test_lock_wait_gets_the_lock_once_the_holder_lets_go(tmp_path: Path) -> None:
    holder = SyncLock(tmp_path / "lock")
    holder.acquire()
    with pytest.raises(RoamingHomesError):
        SyncLock(tmp_path / "lock").acquire()
    threading.Timer(0.5, holder.release).start()
    began = time.monotonic()

    waiter = SyncLock(tmp_path / "lock")
    waiter.acquire(wait=30)

    assert time.monotonic() - began < 30
    waiter.release()


def defaults(**sync: object) -> config_mod.Config:
    values = {section: {name: key.default for name, key in keys.items()}
              for section, keys in config_mod.SCHEMA.items()}
    values["sync"].update(sync)
    return config_mod.Config(values)


@pytest.mark.parametrize(("result", "delay"), [
    (WatchResult("no unison-fsmonitor on this computer", fallback=True), 3600),  # rescan_interval
    (WatchResult("stopped"), 0),
    (WatchResult("unreachable", outcome=outcome("offline")), 0),  # Health probes, then watches
    (WatchResult("lock held", outcome=outcome("busy")), BUSY_RETRY),
    (WatchResult("unison failed", outcome=outcome("failed")), 60),  # one interval
])
def test_when_real_time_mode_is_tried_again(result: WatchResult, delay: float) -> None:
    assert watch_retry_delay(result, defaults(interval=60, rescan_interval=3600)) == delay


@pytest.mark.parametrize(("result", "offline"), [
    (WatchResult("unreachable", outcome=outcome("offline")), True),
    (WatchResult("stopped"), False),  # stopped for the request: make way
    (WatchResult("lock held", outcome=outcome("busy")), False),
    (WatchResult("unison failed", outcome=outcome("failed")), False),
    (WatchResult("no unison-fsmonitor on the server", fallback=True), False),
])
def test_a_pass_asked_for_while_the_watch_ends_offline_is_kept(result: WatchResult,
                                                               offline: bool) -> None:
    assert ended_offline(result) is offline


def test_the_fallback_line_says_what_happens_instead_and_when_watching_is_retried() -> None:
    line = fallback_line("no unison-fsmonitor on this computer", defaults(interval=60))

    assert line == ("falling back to a pass every 60 s (real-time mode is tried again in 60 min, "
                    "on a config change or SIGUSR1): no unison-fsmonitor on this computer")


def test_lock_purpose_names_the_holder_and_forgets_a_released_lock(tmp_path: Path) -> None:
    lock = SyncLock(tmp_path / "lock")
    lock.acquire("watch")
    assert lock_purpose(tmp_path / "lock") == (os.getpid(), "watch")
    lock.release()

    assert lock_purpose(tmp_path / "lock") is None  # the file still says "PID watch"


def test_config_watch_sees_edits_atomic_replaces_and_a_config_dir_created_later(
        tmp_path: Path) -> None:
    system, user = tmp_path / "etc" / "config.toml", tmp_path / "home" / "rh" / "config.toml"
    system.parent.mkdir()
    system.write_text("a")
    (tmp_path / "home").mkdir()
    watch = FileWatch((system, user))
    try:
        (system.parent / "unrelated").write_text("x")
        assert not watch.touched()
        system.write_text("b")
        assert watch.touched()
        (system.parent / "config.toml.new").write_text("c")
        assert not watch.touched()
        (system.parent / "config.toml.new").rename(system)  # how atomic-save editors write
        assert watch.touched()
        user.parent.mkdir()  # the user's config directory appears: watched from now on
        assert watch.touched()
        user.write_text("d")
        assert watch.touched()
        assert not watch.touched()
    finally:
        watch.close()


def test_the_status_line_follows_a_copy_and_goes_back_when_it_is_done(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """STATUS= while a pass (a real-time cycle too) copies, one log line for a long copy."""
    sent: list[str] = []
    monkeypatch.setattr(daemon, "sd_notify", lambda message: sent.append(message) or True)
    clock = [100.0]
    monkeypatch.setattr(daemon.time, "monotonic", lambda: clock[0])
    health = daemon.Health()
    publish = daemon.StatusPublisher(health)
    copying = Progress(phase="propagating", items_total=1, items_to_send=1,
                       bytes_total=300_000_000, bytes_done=100_000_000, eta=10.0)

    with caplog.at_level(logging.INFO, logger="roaming_homes"):
        publish(Progress(phase="scanning"))
        publish(copying)
        clock[0] += 0.5
        publish(copying)  # the same text: not sent again
        clock[0] += daemon.LONG_COPY
        publish(Progress(**{**copying.to_dict(), "bytes_done": 200_000_000, "eta": 5.0}))
        publish(Progress(phase="done"))

    assert sent == ["STATUS=syncing now: uploading 1 file, 200.0 MB, ~10 s left",
                    "STATUS=syncing now: uploading 1 file, 100.0 MB, ~5 s left",
                    "STATUS=first sync running"]
    assert health.running is None
    assert caplog.messages == ["uploading 1 file, 100.0 MB, ~5 s left"]


def test_a_ticket_found_is_not_looked_for_again_until_a_pass_says_how_it_went() -> None:
    """A pass without a ticket: the daemon looks for one; once found, not again (the pass or
    watch it starts may take longer than the daemon's next look); a pass without a ticket
    again: it looks again."""
    health = Health()
    assert not health.waiting_for_ticket
    no_ticket = outcome("failed", "no valid Kerberos ticket")
    no_ticket.reason = Reason.NO_TICKET
    health.update(no_ticket)
    assert health.waiting_for_ticket

    health.ticket_found = True
    assert not health.waiting_for_ticket

    health.update(no_ticket)
    assert health.waiting_for_ticket
    health.ticket_found = True
    health.update(outcome("in-sync", "in sync: 1 item(s) transferred", transferred=1))
    assert not health.waiting_for_ticket


def test_a_pass_asked_for_as_the_watch_ends_offline_is_tried_not_made_way_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NetworkManager's "network is back" (a pass asked for) that arrives while real-time mode
    is ending on an offline pass: the daemon must not take it for a sync of the user's own and
    leave the lock free for nobody; the pass stays asked for, for the next cycle's probe."""
    config = tmp_path / "roaming-homes.toml"
    config.write_text('[server]\nhost = "homes.example.org"\n[sync]\nwatch = true\n')
    locations = Locations.from_env({"HOME": str(tmp_path / "home"),
                                    "ROAMING_HOMES_CONFIG": str(config),
                                    "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
                                    "XDG_STATE_HOME": str(tmp_path / "state"),
                                    "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    the_daemon = daemon.Daemon(locations, None)
    made_way: list[bool] = []
    monkeypatch.setattr(the_daemon, "_make_way", lambda: made_way.append(True))
    monkeypatch.setattr(daemon.notify, "after_pass", lambda *args: None)

    def watch_ending_offline(config: object, locations: object, stop: threading.Event,
                             *, on_outcome: Callable[[SyncOutcome], None],
                             **kwargs: object) -> WatchResult:
        offline = outcome("offline")
        on_outcome(offline)  # recorded and reported like a pass, as the watch does
        the_daemon.request_pass()  # the network is back, just as the offline pass ends
        assert stop.wait(10)  # the daemon has stopped the watch for it
        return WatchResult("unreachable", outcome=offline)

    monkeypatch.setattr(daemon.realtime, "run_watch", watch_ending_offline)
    the_daemon._watch()

    assert made_way == []
    assert the_daemon.health.offline and the_daemon._pass_requested
