"""unison-fsmonitor: the codec (pure) and the protocol, driven with the lines unison 2.52 sends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes.fsmonitor import (
    Change,
    ProtocolError,
    collapse,
    quote,
    ripe_changes,
    split_on_space,
    unquote,
)
from tests.support.fsmonitor import SRC, MonitorSession

H = "7d1e3b0c9f6a4e2d8b5c1a0f9e8d7c6b"  # an archive hash, as unison sends it
H2 = "0123456789abcdef0123456789abcdef"


# --- codec ------------------------------------------------------------------------------------

def test_quote_encodes_like_unison_with_uppercase_hex() -> None:
    assert quote("sub dir/f%1") == "sub%20dir/f%251"
    assert quote("a\nb") == "a%0Ab"
    assert quote("ü") == "%C3%BC"
    assert quote("A-z_0.~!*'();:@&=+$,/?#[]") == "A-z_0.~!*'();:@&=+$,/?#[]"


def test_unquote_accepts_either_case_and_round_trips_undecodable_names() -> None:
    assert unquote("sub%20dir/f%251") == "sub dir/f%1"
    assert unquote("%c3%bc") == unquote("%C3%BC") == "ü"
    name = os.fsdecode(b"caf\xe9")  # Latin-1 name on a UTF-8 system
    assert quote(name) == "caf%E9"
    assert unquote(quote(name)) == name


@pytest.mark.parametrize("bad", ["%", "%4", "a%zz", "%%41"])
def test_unquote_rejects_malformed_escapes(bad: str) -> None:
    with pytest.raises(ProtocolError):
        unquote(bad)


def test_split_on_space_keeps_empty_trailing_argument() -> None:
    assert split_on_space("START h /tmp/w%201 ") == ("START", "h /tmp/w%201 ")
    assert split_on_space("/tmp/w%201 ") == ("/tmp/w%201", "")
    assert split_on_space("DONE") == ("DONE", "")


def test_collapse_keeps_only_topmost_paths() -> None:
    assert collapse(["a/b", "a", "ab", "c/d/e", "c/d"]) == ["a", "ab", "c/d"]
    assert collapse(["x", ""]) == [""]


def test_ripe_changes_waits_until_a_path_is_quiet() -> None:
    pending = {"old": Change(10.0), "young": Change(10.4), "old/below": Change(9.0)}
    assert ripe_changes(pending, now=10.7, settle=0.5) == ["old"]
    assert ripe_changes(pending, now=11.0, settle=0.5) == ["old", "young"]


# --- protocol over pipes ----------------------------------------------------------------------

@pytest.fixture
def monitor() -> Iterator[MonitorSession]:
    session = MonitorSession()
    session.expect("VERSION 1")
    yield session
    session.close()


@pytest.fixture
def replica(tmp_path: Path) -> Path:
    root = tmp_path / "w 1"
    (root / "sub dir").mkdir(parents=True)
    return root


def test_observed_unison_session_reports_a_new_file(monitor: MonitorSession,
                                                    replica: Path) -> None:
    monitor.send("VERSION 1")
    monitor.send("DEBUG")
    monitor.send(f"START {H} {quote(str(replica))} ")  # empty path: trailing space
    monitor.expect("OK")
    monitor.send("DIR ")
    monitor.expect("OK")
    monitor.send("DIR sub%20dir")
    monitor.expect("OK")
    monitor.send("DONE")
    monitor.send(f"WAIT {H}")
    (replica / "sub dir" / "new file").write_text("x")

    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["sub%20dir/new%20file"]
    assert monitor.changes(H) == []  # reported once, then forgotten


def test_a_tree_created_while_watching_is_reported_then_watched_after_unison_scans_it(
        monitor: MonitorSession, replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", ["", "sub%20dir"])
    (replica / "new" / "deep").mkdir(parents=True)
    (replica / "new" / "deep" / "early").write_text("before unison looked")
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["new"]

    monitor.scan(H, quote(str(replica)), "new", ["", "deep"])  # unison rescans what changed
    (replica / "new" / "deep" / "late").write_text("after")
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["new/deep/late"]


def test_a_directory_moved_away_is_reported_and_no_longer_watched(
        monitor: MonitorSession, replica: Path, tmp_path: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", ["", "sub%20dir"])
    (replica / "sub dir").rename(tmp_path / "elsewhere")
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["sub%20dir"]

    (tmp_path / "elsewhere" / "f").write_text("outside the replica now")
    monitor.send(f"WAIT {H}")
    monitor.expect_silence()


def test_a_deleted_start_directory_is_reported(monitor: MonitorSession, replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "sub%20dir", [""])
    (replica / "sub dir").rmdir()
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["sub%20dir"]


def test_a_missing_start_path_is_reported_when_it_appears(monitor: MonitorSession,
                                                          replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "Documents", [])
    monitor.send(f"WAIT {H}")
    (replica / "Documents").mkdir()
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["Documents"]


def test_a_file_created_and_deleted_before_unison_looked_is_not_reported(
        monitor: MonitorSession, replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", [""])
    assert monitor.changes(H) == []  # the monitor has seen DONE: the scan is over
    (replica / ".tmp").write_text("x")
    (replica / ".tmp").unlink()
    monitor.send(f"WAIT {H}")
    monitor.expect_silence()
    assert monitor.changes(H) == []


def test_any_other_command_cancels_the_waits(monitor: MonitorSession, replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", [""])
    monitor.send(f"WAIT {H}")
    assert monitor.changes(H2) == []  # CHANGES of another replica cancels the wait
    (replica / "f").write_text("x")
    monitor.expect_silence()
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")


def test_wait_answers_with_every_waiting_replica_that_changed(monitor: MonitorSession,
                                                              tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monitor.scan(H, str(a))
    monitor.scan(H2, str(b))
    (a / "f").write_text("x")
    (b / "g").write_text("y")
    monitor.send(f"WAIT {H}")
    monitor.send(f"WAIT {H2}")
    line = monitor.read_line()
    assert line in (f"CHANGES {H}", f"CHANGES {H2}", f"CHANGES {H2} {H}", f"CHANGES {H} {H2}")
    assert monitor.changes(H) == ["f"]
    assert monitor.changes(H2) == ["g"]


def test_reset_forgets_the_replica(monitor: MonitorSession, replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", [""])
    (replica / "f").write_text("x")
    monitor.send(f"RESET {H}")
    monitor.send(f"WAIT {H}")
    monitor.expect_silence()
    assert monitor.changes(H) == []


def test_queue_overflow_reports_the_whole_replica(monitor: MonitorSession,
                                                  replica: Path) -> None:
    monitor.scan(H, quote(str(replica)), "", ["", "sub%20dir"])
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    files = [replica / "sub dir" / "a", replica / "sub dir" / "b"]
    for f in files:
        f.write_text("x")
    os.kill(monitor.proc.pid, signal.SIGSTOP)
    try:
        for i in range(queued // 2 + 100):  # alternating files: the kernel cannot merge them
            for f in files:
                os.utime(f, (i, i))
    finally:
        os.kill(monitor.proc.pid, signal.SIGCONT)
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == [""]  # "" is the replica root: unison rescans everything


def test_unknown_command_is_an_error_naming_it(monitor: MonitorSession) -> None:
    monitor.send("FROB x")
    monitor.expect("ERROR unknown%20command%20'FROB'")
    assert monitor.close() == 1


def test_end_of_input_ends_the_monitor_quietly(monitor: MonitorSession) -> None:
    assert monitor.proc.stdin is not None
    monitor.proc.stdin.close()
    assert monitor.proc.wait(timeout=10) == 0
    assert monitor.stderr_so_far() == ""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_exhausted_watch_limit_is_a_clear_error(replica: Path) -> None:
    for name in "abcdef":
        (replica / name).mkdir()
    # A user namespace has its own watch limit; lower it there, not on the machine.
    script = (f"echo 3 > /proc/sys/user/max_inotify_watches && PYTHONPATH={SRC} exec "
              f"{sys.executable} -m roaming_homes.fsmonitor")
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {probe.stderr.decode().strip()}")
    session = MonitorSession(["unshare", "-U", "-r", "sh", "-c", script])
    try:
        session.expect("VERSION 1")
        session.send(f"START {H} {quote(str(replica))} ")
        session.expect("OK")
        line = None
        for name in "abcdef":
            session.send(f"DIR {name}")
            line = session.read_line()
            if line != "OK":
                break
        assert line is not None and line.startswith("ERROR ")
        assert "fs.inotify.max_user_watches" in unquote(line[len("ERROR "):])
    finally:
        assert session.close() == 1


def test_installed_console_script_speaks_the_protocol() -> None:
    script = Path(sys.executable).parent / "unison-fsmonitor"
    if not script.exists():
        pytest.skip("package not installed in this interpreter's environment (scripts/setup)")
    session = MonitorSession([str(script)])
    try:
        session.expect("VERSION 1")
    finally:
        assert session.close() == 0

