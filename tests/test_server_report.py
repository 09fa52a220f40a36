"""`roaming-homes server report`: homes, their computers' records, stale computers, live
sessions, conflict copies, and the Prometheus textfile; a thousand homes in seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roaming_homes.server import report
from roaming_homes.server.records import ComputerRecord, Freshness, freshness
from tests.support.homes import CLI

NOW = datetime.now(UTC)
LIMITS = report.Limits(stale_after=86400, forget_after_days=90)
HOMES = 1000


def _record(computer: str, name: str, success_age: timedelta | None,
            result: str = "in-sync") -> ComputerRecord:
    last = (NOW - (success_age or timedelta(0))).isoformat(timespec="seconds")
    success = None if success_age is None else last
    return ComputerRecord(computer, name, "1.0", last, result, success, 0, 0)


def _home(base: Path, name: str, *records: ComputerRecord) -> Path:
    home = base / name
    computers = home / ".roaming-homes" / "computers"
    computers.mkdir(parents=True)
    (home / ".roaming-homes-root").write_text("id\n")
    for record in records:
        (computers / f"{record.id}.json").write_text(record.to_line() + "\n")
    return home


def _env(tmp_path: Path) -> dict[str, str]:
    """No configuration of the machine's: the report says it uses the default thresholds."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "ROAMING_HOMES_CONFIG": str(tmp_path / "absent.toml"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


@pytest.mark.parametrize(("age", "expected"), [
    (None, Freshness.STALE), (60.0, Freshness.CURRENT), (86401.0, Freshness.BEHIND),
    (91 * 86400.0, Freshness.STALE)])
def test_freshness_follows_stale_after_and_forget_after(age: float | None,
                                                        expected: Freshness) -> None:
    assert freshness(age, 86400, 90) is expected


def test_a_thousand_homes_are_reported_within_seconds(tmp_path: Path) -> None:
    homes = []
    for n in range(HOMES):
        records = [_record(f"{n:04d}a", f"laptop-{n}", timedelta(minutes=5))]
        if n % 10 == 0:
            records.append(_record(f"{n:04d}b", f"old-{n}", timedelta(days=120)))
        if n % 25 == 0:
            records.append(_record(f"{n:04d}c", f"away-{n}", timedelta(days=3), "offline"))
        homes.append(_home(tmp_path / "homes", f"u{n:04d}", *records))
    unsynced = tmp_path / "homes" / "plain"
    unsynced.mkdir()
    metrics = tmp_path / "textfile" / "roaming_homes.prom"
    metrics.parent.mkdir()
    started = time.monotonic()
    result = subprocess.run([*CLI, "server", "report", "--json", "--prometheus", str(metrics),
                             *map(str, homes), str(unsynced)], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60, check=False)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took < 10, f"{HOMES} homes took {took:.1f} s"
    data = json.loads(result.stdout)
    assert len(data["homes"]) == HOMES
    assert data["skipped"] == [{"home": str(unsynced), "why": "roaming-homes does not sync it"}]
    assert data["conflict_copies_searched"] is False and "default thresholds" in data["note"]
    first = data["homes"][0]
    assert [c["name"] for c in first["computers"]] == ["away-0", "laptop-0", "old-0"]
    assert (first["stale"], first["behind"]) == (["old-0"], ["away-0"])
    assert sum(len(h["stale"]) for h in data["homes"]) == HOMES // 10
    assert all(h["conflict_copies"] is None for h in data["homes"])
    text = metrics.read_text()
    _assert_textfile_format(text)
    assert text.count("roaming_homes_computers{") == HOMES
    assert f'roaming_homes_stale_computers{{user="{first["user"]}",home="{homes[0]}"}} 1' in text
    assert re.search(r'roaming_homes_computer_freshness\{[^}]*computer="old-0"[^}]*'
                     r'freshness="stale"\} 1', text)
    assert not list(metrics.parent.glob(".*")), "the temporary file was left behind"


_SAMPLE = re.compile(r'^roaming_homes_[a-z_]+(\{([a-z_]+="([^"\\\n]|\\.)*",?)*\})? '
                     r"-?[0-9.e+]+$")


def _assert_textfile_format(text: str) -> None:
    """What node-exporter's textfile collector takes: HELP and TYPE once per metric, before its
    samples; every sample `name{labels} value`; one series once."""
    seen_types: set[str] = set()
    series = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen_types
            seen_types.add(name)
        elif not line.startswith("# HELP "):
            assert _SAMPLE.match(line), line
            assert line.split("{")[0].split()[0] in seen_types, line
            key = line.rsplit(" ", 1)[0]
            assert key not in series, f"duplicate series {key}"
            series.add(key)


def test_names_in_labels_are_escaped_and_records_of_the_wrong_shape_left_out(
        tmp_path: Path) -> None:
    home = _home(tmp_path, "ana", _record("c1", 'lap"top\\\n', timedelta(minutes=1)))
    computers = home / ".roaming-homes" / "computers"
    (computers / "bad.json").write_text('{"id": 3}')
    (computers / "notjson.json").write_text("{")
    os.mkfifo(computers / "fifo.json")  # would block a reader that opened it plainly
    (tmp_path / "secret.json").write_text(_record("x", "not-ours", None).to_line())
    (computers / "link.json").symlink_to(tmp_path / "secret.json")
    made = report.make([(home, "ana")], LIMITS)
    assert [c.record.name for c in made.homes[0].computers] == ['lap"top\\\n']
    text = report.prometheus(made)
    _assert_textfile_format(text)
    assert 'computer="lap\\"top\\\\\\n"' in text
    assert "lap" in report.render(made) and "\n  lap\"top\\\\\n" not in report.render(made)


def test_a_home_whose_records_directory_is_a_link_is_not_followed(tmp_path: Path) -> None:
    other = _home(tmp_path, "other", _record("c9", "others-laptop", timedelta(minutes=1)))
    home = tmp_path / "mallory"
    home.mkdir()
    (home / ".roaming-homes").symlink_to(other / ".roaming-homes")
    (home / ".roaming-homes-root").write_text("id\n")
    made = report.make([(home, "mallory")], LIMITS)
    assert made.homes[0].computers == []


def test_conflict_copies_are_counted_by_name_when_asked_and_the_search_is_bounded(
        tmp_path: Path) -> None:
    home = _home(tmp_path, "ana", _record("c1", "laptop", timedelta(minutes=1)))
    docs = home / "Documents" / "deep"
    docs.mkdir(parents=True)
    (docs / "report (conflict from desk-ana 2026-11-29 10-22).odt").write_text("x")
    (home / "Documents" / "notes (conflict_on_2026-11-29).txt").write_text("x")
    (home / "Documents" / "plain.txt").write_text("x")
    backup = home / ".roaming-homes" / "backup"
    backup.mkdir()
    (backup / "old (conflict from x 2026-01-01 00-00).txt").write_text("x")  # ours: not counted
    assert report.make([(home, "ana")], LIMITS).homes[0].conflict_copies is None
    searched = report.make([(home, "ana")], LIMITS, search=True).homes[0]
    assert (searched.conflict_copies, searched.conflict_search_complete) == (2, True)
    assert report.count_conflict_copies(home, limit=3)[1] is False


@pytest.mark.parametrize(("argv", "kind"), [
    (["/usr/bin/python3", "/usr/bin/unison-fsmonitor"], "monitor"),
    (["unison-fsmonitor"], "monitor"),
    (["unison", "-server"], "server"),
    (["/usr/bin/unison-2.53", "-server"], "server"),
    (["unison", "roaming-homes", "-ui", "text"], None),
    (["vim", "unison-fsmonitor"], None),
    ([], None)])
def test_which_processes_are_a_live_session(argv: list[str], kind: str | None) -> None:
    assert report._session_kind(argv) == kind


def test_a_running_monitor_of_the_homes_owner_is_a_live_session(tmp_path: Path) -> None:
    home = _home(tmp_path, "ana", _record("c1", "laptop", timedelta(minutes=1)))
    script = tmp_path / "bin" / "unison-fsmonitor"
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(60)\n")
    monitor = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 10
        # Other tests' unison servers (same owner) may make the home live already: wait for
        # the monitor itself.
        while not (seen := report.make([(home, "ana")], LIMITS).homes[0]).monitors:
            assert time.monotonic() < deadline, "the monitor was not seen"
            time.sleep(0.05)
        assert seen.live
    finally:
        monitor.kill()
        monitor.wait()


def test_the_text_report_names_stale_computers_and_what_was_not_searched(
        tmp_path: Path) -> None:
    home = _home(tmp_path, "ana", _record("c1", "laptop", timedelta(minutes=1)),
                 _record("c2", "attic-pc", None, "failed"))
    result = subprocess.run([*CLI, "server", "report", str(home)], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("attic-pc" in line and "never" in line and "stale" in line for line in lines)
    assert any("laptop" in line and "stale" not in line for line in lines)
    assert "conflict copies: not searched" in result.stdout


def test_the_sample_service_runs_a_report_the_cli_takes() -> None:
    from roaming_homes import cli

    unit = Path(__file__).resolve().parents[1] / "data" / "server" / "roaming-homes-report.service"
    exec_start = next(line for line in unit.read_text().splitlines()
                      if line.startswith("ExecStart="))
    program, *argv = exec_start.removeprefix("ExecStart=").split()
    assert program == "/usr/bin/roaming-homes"
    args = cli.build_parser().parse_args(argv)
    assert args.run is cli._run_server_report and args.prometheus is not None and args.quiet
    assert "ReadWritePaths=" + str(args.prometheus.parent) in unit.read_text()


def test_without_homes_named_it_finds_them_from_the_server_home_pattern_and_passwd(
        tmp_path: Path) -> None:
    """Homes kept outside the passwd home directories (server.home = /srv/homes/%u) are found
    through the configured pattern, for every user of the passwd database (here: this user)."""
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    home = _home(tmp_path / "homes", me, _record("c1", "laptop", timedelta(minutes=1)))
    _home(tmp_path / "homes", "nobody-here")  # no passwd user of that name: not reported
    env = _env(tmp_path)
    config = tmp_path / "roaming-homes.toml"
    config.write_text(f'[server]\nhost = "homes.example.org"\nhome = "{tmp_path}/homes/%u"\n')
    env["ROAMING_HOMES_CONFIG"] = str(config)
    result = subprocess.run([*CLI, "server", "report", "--json"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    found = {entry["home"]: entry["user"] for entry in json.loads(result.stdout)["homes"]}
    assert found.get(str(home)) == me
    assert str(tmp_path / "homes" / "nobody-here") not in found
    # the passwd home directories are still among them, each once
    assert report.server_homes(f"{tmp_path}/homes/%u", all_users=False)[0] == (home, me)
    assert len({h for h, _ in report.server_homes(f"{tmp_path}/homes/%u", True)}) == len(
        report.server_homes(f"{tmp_path}/homes/%u", True))
