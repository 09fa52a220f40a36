"""Reading unison's backup names and times, and the retention decision (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roaming_homes.actions import restore
from roaming_homes.errors import RoamingHomesError
from roaming_homes.safety import backups
from roaming_homes.safety.backups import DAY, Version


@pytest.mark.parametrize(("name", "expected"), [
    ("report.odt", ("report.odt", 0)),
    (".bak.1.report.odt", ("report.odt", 1)),
    (".bak.12..hidden", (".hidden", 12)),
    (".bak.x.report", (".bak.x.report", 0)),
    (".bak.3.", (".bak.3.", 0)),
    (".bak.2.a\nb", ("a\nb", 2)),
])
def test_backup_names_say_which_file_and_how_old(name: str, expected: tuple[str, int]) -> None:
    assert backups.parse_name(name) == expected


def test_listing_is_read_as_nul_separated_fields_and_bad_entries_are_left_out() -> None:
    data = (b"Documents/.bak.1.f\x005\x00100.5\x00200.0\x00"
            b"../escape\x001\x001\x001\x00" b"Documents/g\x00notanumber\x001\x001\x00"
            b"Documents/caf\xe9\x003\x0010\x0020\x00")
    found = backups.parse_listing(data)
    assert [(v.path, v.index, v.size) for v in found] == [
        ("Documents/f", 1, 5), ("Documents/caf\udce9", 0, 3)]
    assert found[0].mtime == 100.5 and found[0].ctime == 200.0


def _v(side: str, stored: str, mtime: float, ctime: float, size: int = 10) -> Version:
    version = backups.version_of(side, stored, size, mtime, ctime)
    assert version is not None
    return version


def test_an_older_version_was_superseded_when_the_next_was_written() -> None:
    versions = backups.dated([_v("server", "D/f", 300, 1000), _v("server", "D/.bak.1.f", 200, 1000),
                              _v("server", "D/.bak.2.f", 100, 1000), _v("local", "D/f", 250, 900)])
    by = {(v.side, v.index): v for v in versions}
    assert by["server", 0].superseded == 1000  # when it became a backup
    assert by["server", 1].superseded == 300  # when its successor was written
    assert by["server", 2].superseded == 200
    assert by["local", 0].superseded == 900
    # numbered newest first across both sides, by the version's own time
    assert [(v.side, v.index, v.number) for v in sorted(versions, key=lambda v: v.number)] == [
        ("server", 0, 1), ("local", 0, 2), ("server", 1, 3), ("server", 2, 4)]


def test_prune_drops_what_was_superseded_before_the_cutoff_and_keeps_the_newest() -> None:
    now = 100 * DAY
    versions = [_v("server", "D/f", now - 40 * DAY, now - DAY),
                _v("server", "D/.bak.1.f", now - 50 * DAY, now - DAY),
                _v("server", "D/.bak.2.f", now - 60 * DAY, now - DAY),
                _v("server", "E/old", now - 90 * DAY, now - 31 * DAY)]
    dropped = backups.to_prune(versions, now, 30, 10**9)
    assert sorted(v.stored for v in dropped) == ["D/.bak.1.f", "D/.bak.2.f", "E/old"]


def test_prune_keeps_the_newest_within_the_byte_budget() -> None:
    now = 100 * DAY
    versions = [_v("local", f"D/f{index}", now - index * 3600, now - index * 3600, size=400)
                for index in range(5)]
    dropped = backups.to_prune(versions, now, 30, 1000)
    assert sorted(v.stored for v in dropped) == ["D/f2", "D/f3", "D/f4"]
    assert backups.to_prune(versions, now, 30, 2000) == []


def test_since_takes_durations_and_local_times() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert restore.parse_since("2h", now) == (now - timedelta(hours=2)).timestamp()
    assert restore.parse_since("3d", now) == (now - timedelta(days=3)).timestamp()
    assert restore.parse_since("2026-11-29T10:00+00:00", now) == (
        now - timedelta(hours=2)).timestamp()
    assert restore.parse_since("2026-11-29 10:00") == datetime(2026, 11, 29, 10).timestamp()
    with pytest.raises(ValueError):
        restore.parse_since("yesterday-ish", now)


def test_paths_are_taken_as_typed_inside_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    assert restore.home_path("a.txt", home, home / "Documents") == "Documents/a.txt"
    assert restore.home_path(str(home / "Documents"), home) == "Documents"
    assert restore.home_path("../Music/x", home, home / "Documents") == "Music/x"
    for outside in ("/etc/passwd", str(home), "../..", ):
        with pytest.raises(RoamingHomesError):
            restore.home_path(outside, home, home / "Documents")
