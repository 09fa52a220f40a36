"""Unit tests: pausing (the duration, the file, expiry, a broken file) and how the status and
the daemon's health show a pause."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from roaming_homes.actions.daemon import Health
from roaming_homes.actions.status import Overview, State
from roaming_homes.errors import ExitCode
from roaming_homes.outcome import EXIT_CODES, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session import pause

NOW = datetime(2026, 11, 29, 14, 0).astimezone()


def _locations(tmp_path: Path) -> Locations:
    return Locations.from_env({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
                               "XDG_RUNTIME_DIR": str(tmp_path / "run")})


def _outcome(result: Result, message: str = "in sync: nothing to do") -> SyncOutcome:
    return SyncOutcome(result, message, "2026-11-29T13:00:00+00:00",
                       "2026-11-29T13:00:01+00:00", 1.0, "server")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("90s", 90), (" 1h5s ", 3605)])
def test_durations_as_typed(text: str, seconds: int) -> None:
    assert pause.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0m", "h", "1x", "30", "1m1h", "-1h", "400d", "1h 30m"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|a pause lasts"):
        pause.parse_duration(text)


def test_a_pause_holds_until_its_end_and_resume_ends_it(tmp_path: Path) -> None:
    where = _locations(tmp_path)
    assert pause.paused(where, NOW) is None

    made = pause.pause(where, NOW + timedelta(hours=1), now=NOW)

    assert pause.paused(where, NOW + timedelta(minutes=59)) == made
    assert pause.paused(where, NOW + timedelta(hours=1)) is None  # over: not paused
    assert pause.resume(where, NOW) == made
    assert pause.paused(where, NOW) is None and pause.resume(where, NOW) is None


def test_a_pause_without_an_end_lasts_until_resumed(tmp_path: Path) -> None:
    where = _locations(tmp_path)
    made = pause.pause(where, None, now=NOW)

    assert pause.paused(where, NOW + timedelta(days=30)) == made
    assert made.line() == "paused until resumed"


def test_a_broken_pause_file_is_moved_aside_and_reads_as_no_pause(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    where = _locations(tmp_path)
    pause.pause(where, None, now=NOW)
    pause.pause_file(where).write_text('{"since": "2026-11-29T14:00", "until": 3}')

    assert pause.paused(where, NOW) is None
    assert not pause.pause_file(where).exists()
    assert [p.name for p in where.state_dir.glob("pause.json.broken-*")]
    assert "pause.json is broken ('until' has the wrong type)" in caplog.text


def test_the_line_says_the_time_today_and_the_date_otherwise() -> None:
    today = datetime.now().astimezone().replace(hour=16, minute=30, second=0, microsecond=0)
    assert pause.Pause(today, today).line() == "paused until 16:30"
    later = today + timedelta(days=2)
    assert pause.Pause(today, later).line() == f"paused until {later:%Y-%m-%d} 16:30"


def test_a_skipped_pass_while_paused_exits_75() -> None:
    assert EXIT_CODES[Result.PAUSED] == ExitCode.TRY_LATER


def test_status_shows_the_pause_unless_something_needs_the_user() -> None:
    held = pause.Pause(NOW, None)
    quiet = Overview.of([_outcome(Result.IN_SYNC)], paused=held)
    assert quiet.state == State.PAUSED
    assert quiet.headline == "paused until resumed (roaming-homes resume)"
    assert quiet.line() == quiet.headline
    assert quiet.action is None

    conflicts = Overview.of([_outcome(Result.CONFLICTS, "1 conflict(s) need you")],
                            paused=held)
    assert conflicts.state == State.NEEDS_ATTENTION
    syncing = Overview.of([_outcome(Result.IN_SYNC)], running="uploading 1 file", paused=held)
    assert syncing.state == State.SYNCING  # an explicit sync while paused


def test_a_paused_pass_is_not_news_and_says_nothing_of_the_home() -> None:
    health = Health()
    health.update(_outcome(Result.IN_SYNC))
    assert health.update(_outcome(Result.PAUSED, "syncing is paused until resumed")) is None
    assert health.last is not None and health.last.result == Result.IN_SYNC
    health.paused = pause.Pause(NOW, None)
    assert health.status() == "paused until resumed (roaming-homes resume)"
    history = [_outcome(Result.IN_SYNC), _outcome(Result.PAUSED, "paused")]
    assert Overview.of(history).state == State.IN_SYNC
