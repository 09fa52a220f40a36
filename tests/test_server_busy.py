"""A busy server (a login storm past sshd's MaxStartups) is not an offline one: how ssh's failure
is classified, when the login is tried again, and what the rest of the program makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from roaming_homes.actions.daemon import BUSY_RETRY, Health, watch_retry_delay
from roaming_homes.actions.status import Overview
from roaming_homes.actions.watch import WatchResult
from roaming_homes.config import Config
from roaming_homes.desktop.policy import NotifyState, decide
from roaming_homes.errors import ExitCode
from roaming_homes.outcome import EXIT_CODES, Reason, Result, SyncOutcome, result_of
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ssh import (
    BUSY_FIRST_DELAY,
    BUSY_MAX_DELAY,
    BUSY_PATIENCE,
    ConnectError,
    busy_retry_delay,
)


def _server(connect_timeout: float = 3) -> transport.Server:
    return transport.Server(host="h", port=2222, user="u", home="/home/u", local_root="",
                            connect_timeout=connect_timeout, ssh_options=(),
                            connection_reuse=0)


# What ssh 9.2 prints when sshd drops the connection past MaxStartups (seen against a real
# sshd with MaxStartups 1 and one connection held open), and its reset variant.
TURNED_AWAY = [
    "kex_exchange_identification: Connection closed by remote host\n"
    "Connection closed by 127.0.0.1 port 41053\n",
    "kex_exchange_identification: read: Connection reset by peer\n"
    "Connection reset by 10.0.0.5 port 22\n",
    "Connection closed by 10.0.0.5 port 22\n",
]
OFFLINE = [
    "ssh: connect to host h port 22: Connection refused\n",
    "ssh: connect to host h port 22: Connection timed out\n",
    "ssh: connect to host h port 22: No route to host\n",
    "ssh: Could not resolve hostname h: Name or service not known\n",
    "Read from remote host h: Connection reset by peer\n",  # after the login: the link
    "client_loop: send disconnect: Broken pipe\n",
]


@pytest.mark.parametrize("stderr", TURNED_AWAY)
def test_a_login_turned_away_by_a_server_that_answers_is_busy(stderr: str) -> None:
    error = transport._classify_failure(_server(), stderr)
    assert error.reason is Reason.SERVER_BUSY
    assert error.code == ExitCode.TRY_LATER


@pytest.mark.parametrize("stderr", OFFLINE)
def test_a_server_that_does_not_answer_stays_unreachable(stderr: str) -> None:
    assert transport._classify_failure(_server(), stderr).reason is Reason.SERVER_UNREACHABLE


def test_a_busy_server_is_the_try_later_busy_result() -> None:
    assert result_of(Reason.SERVER_BUSY) is Result.BUSY
    assert EXIT_CODES[Result.BUSY] == ExitCode.TRY_LATER


def test_the_delay_doubles_up_to_its_ceiling_and_half_of_it_is_random() -> None:
    for refusals in range(1, 12):
        ceiling = min(BUSY_MAX_DELAY, BUSY_FIRST_DELAY * 2 ** (refusals - 1))
        low = busy_retry_delay(refusals, 0.0, 1000, 0.0)
        high = busy_retry_delay(refusals, 0.0, 1000, 0.999999)
        assert low == pytest.approx(ceiling / 2)
        assert high == pytest.approx(ceiling, rel=1e-5)
    assert busy_retry_delay(1, 0.0, 3, 0.0) == pytest.approx(BUSY_FIRST_DELAY / 2)


def test_no_try_starts_past_the_patience() -> None:
    patience = BUSY_PATIENCE * 3
    assert busy_retry_delay(5, patience - BUSY_MAX_DELAY - 0.1, 3, 0.99) is not None
    assert busy_retry_delay(5, patience - 0.1, 3, 0.0) is None
    assert busy_retry_delay(1, patience, 3, 0.0) is None


def test_two_computers_turned_away_together_come_back_apart() -> None:
    assert busy_retry_delay(3, 1.0, 3, 0.1) != busy_retry_delay(3, 1.0, 3, 0.9)


def _turned_away(times: int, calls: list[list[str]],
                 then: ConnectError | None = None) -> object:
    def fake_open(server: transport.Server, command: list[str]) -> None:
        calls.append(command)
        if len(calls) <= times:
            raise ConnectError("server h is busy", Reason.SERVER_BUSY)
        if then is not None:
            raise then

    return fake_open


def test_a_busy_server_is_asked_again_until_it_lets_the_login_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    calls: list[list[str]] = []
    monkeypatch.setattr(transport, "_open", _turned_away(3, calls))
    monkeypatch.setattr(transport.time, "sleep", sleeps.append)
    transport._open_patiently(_server(), ["ssh"])
    assert len(calls) == 4 and len(sleeps) == 3
    assert all(0 < delay <= BUSY_MAX_DELAY for delay in sleeps)


def test_a_server_busy_for_longer_than_the_patience_ends_busy_in_bounded_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    calls: list[list[str]] = []
    clock = [0.0]
    monkeypatch.setattr(transport, "_open", _turned_away(10_000, calls))

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(transport.time, "sleep", sleep)
    monkeypatch.setattr(transport.time, "monotonic", lambda: clock[0])
    with pytest.raises(ConnectError) as raised:
        transport._open_patiently(_server(connect_timeout=3), ["ssh"])
    assert raised.value.reason is Reason.SERVER_BUSY
    assert sum(sleeps) <= BUSY_PATIENCE * 3
    assert 4 <= len(calls) <= 20


def test_any_other_failure_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    calls: list[list[str]] = []
    refused = ConnectError("refused", Reason.AUTH_REFUSED)
    monkeypatch.setattr(transport, "_open", _turned_away(1, calls, then=refused))
    monkeypatch.setattr(transport.time, "sleep", sleeps.append)
    with pytest.raises(ConnectError) as raised:
        transport._open_patiently(_server(), ["ssh"])
    assert raised.value.reason is Reason.AUTH_REFUSED and len(calls) == 2


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _busy(finished: datetime = NOW) -> SyncOutcome:
    return SyncOutcome(Result.BUSY, "server h is busy (it turned the login away)",
                       finished.isoformat(), finished.isoformat(), 31.0, "u@h:/home/u",
                       reason=Reason.SERVER_BUSY)


def test_a_busy_server_never_notifies_even_long_after_the_last_success() -> None:
    state = NotifyState(transient_failures=2)
    for _ in range(10):
        decision, state = decide(state, _busy(), last_success=(NOW - timedelta(days=30))
                                 .isoformat(), now=NOW, stale_after=86400)
        assert decision is None
    assert state.transient_failures == 2 and state.offline_since is None


def test_a_busy_server_is_neither_offline_nor_news_for_the_daemon_and_status() -> None:
    health = Health()
    assert health.update(_busy()) is None and not health.offline
    assert Overview.of([_busy()]).last is None


def test_after_a_busy_server_real_time_mode_waits_an_interval() -> None:
    config = Config({"sync": {"interval": 60, "rescan_interval": 3600}})
    assert watch_retry_delay(WatchResult("busy", outcome=_busy()), config) == 60
    locked = SyncOutcome(Result.BUSY, "another sync runs", "", "", 0.0, "")
    assert watch_retry_delay(WatchResult("busy", outcome=locked), config) == BUSY_RETRY
