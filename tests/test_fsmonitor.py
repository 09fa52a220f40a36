"""unison-fsmonitor: the codec (pure) and the protocol, driven with the lines unison 2.52 sends;
then TREE, our extension, with the Monitor on a real inotify object and over pipes."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roaming_homes.relative import collapse
from roaming_homes.unison.fsmonitor import (
    CLOSED,
    SETTLE,
    Change,
    Monitor,
    ProtocolError,
    idle_timeout,
    own_sshd,
    quote,
    ripe_changes,
    split_on_space,
    unquote,
)
from roaming_homes.unison.inotify import INotify
from tests.support.fsmonitor import COMMAND, SRC, MonitorSession

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
    assert ripe_changes(pending, now=10.7) == ["old"]
    assert ripe_changes(pending, now=11.0) == ["old", "young"]


def test_a_change_that_ended_ripens_sooner_unless_a_path_above_still_settles() -> None:
    pending = {"saved": Change(10.0, settle=CLOSED), "writing": Change(10.0),
               "new": Change(10.0, created=True), "new/saved": Change(10.01, settle=CLOSED)}
    assert ripe_changes(pending, now=10.02) == []
    assert ripe_changes(pending, now=10.1) == ["saved"]  # new/saved waits for its new folder
    assert ripe_changes(pending, now=10.6) == ["new", "saved", "writing"]


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
    assert monitor.read_line() is None  # one ERROR line, then the output ends
    assert monitor.close() == 1


def test_end_of_input_ends_the_monitor_quietly(monitor: MonitorSession) -> None:
    assert monitor.proc.stdin is not None
    monitor.proc.stdin.close()
    assert monitor.proc.wait(timeout=10) == 0
    assert monitor.stderr_so_far() == ""


@pytest.fixture
def limited_monitor(replica: Path) -> Iterator[MonitorSession]:
    """A monitor that may hold 3 watches, for a replica with 6 directories below its root."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    for name in "abcdef":
        (replica / name).mkdir()
    # A user namespace has its own watch limit; lower it there, not on the machine.
    script = (f"echo 3 > /proc/sys/user/max_inotify_watches && PYTHONPATH={SRC} exec "
              f"{sys.executable} -m roaming_homes.unison.fsmonitor")
    probe = subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {probe.stderr.decode().strip()}")
    session = MonitorSession(["unshare", "-U", "-r", "sh", "-c", script])
    try:
        session.expect("VERSION 1")
        yield session
    finally:
        assert session.close() == 1


def assert_limit_error(line: str | None) -> None:
    assert line is not None and line.startswith("ERROR "), line
    assert "fs.inotify.max_user_watches" in unquote(line[len("ERROR "):])


def test_exhausted_watch_limit_is_a_clear_error(limited_monitor: MonitorSession,
                                                replica: Path) -> None:
    limited_monitor.send(f"START {H} {quote(str(replica))} ")
    limited_monitor.expect("OK")
    line = None
    for name in "abcdef":
        limited_monitor.send(f"DIR {name}")
        line = limited_monitor.read_line()
        if line != "OK":
            break
    assert_limit_error(line)


def test_exhausted_watch_limit_in_tree_mode_is_the_same_clear_error(
        limited_monitor: MonitorSession, replica: Path) -> None:
    limited_monitor.send("TREE")
    limited_monitor.expect("OK")
    limited_monitor.send(f"START {H} {quote(str(replica))} ")  # walks 7 directories
    assert_limit_error(limited_monitor.read_line())


def test_installed_console_script_speaks_the_protocol() -> None:
    script = Path(sys.executable).parent / "unison-fsmonitor"
    if not script.exists():
        pytest.skip("package not installed in this interpreter's environment (scripts/setup)")
    session = MonitorSession([str(script)])
    try:
        session.expect("VERSION 1")
    finally:
        assert session.close() == 0



# --- tree mode (TREE, our extension): Monitor in this process, on the real inotify --------------

class Clock:
    """A clock the test moves: changes ripen when the test says so, not after a sleep."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Local:
    """A Monitor on a real inotify object, its output lines and debug lines kept in lists.

    The kernel queues an inotify event during the system call that caused it, so `pump` right
    after a file operation hands the monitor every event of it: no sleeping, no polling.
    """

    def __init__(self) -> None:
        self.inotify = INotify()
        self.lines: list[str] = []
        self.debug_lines: list[str] = []
        self.clock = Clock()
        self.monitor = Monitor(self.inotify, self.lines.append, clock=self.clock,
                               debug=self.debug_lines.append)

    def send(self, line: str) -> list[str]:
        """The lines the monitor writes in reply to `line`."""
        self.lines.clear()
        self.monitor.command(line)
        return list(self.lines)

    def start(self, hash_: str, fspath: Path, path: str = "") -> None:
        """TREE's START ... DONE: no DIR lines."""
        assert self.send(f"START {hash_} {quote(str(fspath))} {quote(path)}") == ["OK"]
        assert self.send("DONE") == []

    def pump(self) -> None:
        self.monitor.events(self.inotify.read())

    def wait(self, hash_: str) -> list[str]:
        """The reply to WAIT once everything that happened so far has settled."""
        self.pump()
        self.clock.now += SETTLE + 1
        return self.send(f"WAIT {hash_}")

    def changes(self, hash_: str) -> list[str]:
        """The RECURSIVE paths (still encoded) in the reply to CHANGES."""
        *paths, done = self.send(f"CHANGES {hash_}")
        assert done == "DONE"
        return [line.removeprefix("RECURSIVE ") for line in paths]

    def watched(self, hash_: str) -> set[str]:
        return set(self.monitor.replicas[hash_].dirs)

    def pending(self, hash_: str) -> set[str]:
        return set(self.monitor.replicas[hash_].pending)

    def lookouts(self, hash_: str) -> dict[str, str]:
        """Missing start path -> the ancestor watched for it."""
        return {path: ancestor for path, (_, ancestor) in
                self.monitor.replicas[hash_].lookouts.items()}

    def assert_no_stray_watches(self, hash_: str) -> None:
        """Every watch descriptor the monitor holds belongs to a watched path or a lookout."""
        replica = self.monitor.replicas[hash_]
        held = set(replica.dirs.values()) | {wd for wd, _ in replica.lookouts.values()}
        assert set(self.monitor.owners) == held


@pytest.fixture
def local() -> Iterator[Local]:
    session = Local()
    yield session
    session.inotify.close()


@pytest.fixture
def tree(local: Local) -> Local:
    """A local monitor in tree mode."""
    assert local.send("TREE") == ["OK"]
    return local


def test_tree_is_acknowledged_and_takes_no_argument(local: Local) -> None:
    assert not local.monitor.tree
    assert local.send("TREE") == ["OK"]
    assert local.monitor.tree
    with pytest.raises(ProtocolError, match="TREE takes no argument"):
        local.send("TREE now")


def test_start_in_tree_mode_watches_the_directories_below_it(tree: Local,
                                                             replica: Path) -> None:
    (replica / "sub dir" / "a" / "b" / "c").mkdir(parents=True)
    (replica / "elsewhere").mkdir()
    tree.start(H, replica, "sub dir")
    assert tree.watched(H) == {"sub dir", "sub dir/a", "sub dir/a/b", "sub dir/a/b/c"}

    (replica / "sub dir" / "a" / "b" / "c" / "deep").write_text("x")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["sub%20dir/a/b/c/deep"]


def test_start_in_tree_mode_skips_symlinks_and_directories_it_cannot_list(
        tree: Local, replica: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (replica / "link").symlink_to(outside)
    locked = replica / "locked"
    (locked / "inner").mkdir(parents=True)
    (replica / "open" / "inner").mkdir(parents=True)
    scandir = os.scandir

    def refuse_locked(path: str) -> Any:  # tests run as root, so chmod would not refuse
        if path == str(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    tree.start(H, replica)
    assert tree.watched(H) == {"", "sub dir", "locked", "open", "open/inner"}
    assert f"cannot list {locked}: Permission denied" in tree.debug_lines

    (outside / "f").write_text("not in the replica")
    assert tree.wait(H) == []


def test_a_directory_made_after_start_is_watched_at_once(tree: Local, replica: Path) -> None:
    tree.start(H, replica)
    (replica / "new").mkdir()
    tree.pump()  # the monitor sees the directory before the file is made in it
    assert "new" in tree.watched(H)
    (replica / "new" / "f").write_text("x")
    tree.pump()
    assert tree.pending(H) == {"new", "new/f"}  # both seen; CHANGES names the directory
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["new"]

    (replica / "new" / "f").write_text("later")  # reported on its own: "new" is watched
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["new/f"]


def test_a_file_closed_after_writing_is_reported_sooner_than_one_still_open(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica)
    (replica / "saved").write_text("x")  # written and closed: its change has ended
    with (replica / "open").open("w") as still_open:
        still_open.write("half")
        still_open.flush()
        tree.pump()
        tree.send(f"WAIT {H}")
        tree.clock.now += CLOSED + 0.01
        tree.pump()
        assert tree.lines[-1] == f"CHANGES {H}"
        assert tree.changes(H) == ["saved"]
        tree.clock.now += SETTLE  # a file still being written waits for SETTLE of quiet
        assert tree.send(f"WAIT {H}") == [f"CHANGES {H}"]
        assert tree.changes(H) == ["open"]
    tree.pump()  # closed now: reported again, once CLOSED has passed
    tree.clock.now += CLOSED + 0.01
    assert tree.send(f"WAIT {H}") == [f"CHANGES {H}"]
    assert tree.changes(H) == ["open"]


def test_unisons_temporary_file_is_never_reported_only_the_file_it_becomes(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica)
    temporary = replica / ".unison.report.txt.0123abcd.unison.tmp"
    temporary.write_text("received")
    tree.pump()
    assert tree.pending(H) == set()
    tree.clock.now += SETTLE  # however long unison takes before it renames it
    temporary.rename(replica / "report.txt")
    (replica / ".unison.x").write_text("not unison's: reported")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == [".unison.x", "report.txt"]


def test_a_tree_moved_in_is_watched_with_everything_below_it(tree: Local, replica: Path,
                                                             tmp_path: Path) -> None:
    tree.start(H, replica)
    (tmp_path / "made" / "a" / "b").mkdir(parents=True)
    (tmp_path / "made" / "a" / "b" / "f").write_text("x")
    (tmp_path / "made").rename(replica / "moved in")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["moved%20in"]
    assert {"moved in", "moved in/a", "moved in/a/b"} <= tree.watched(H)

    (replica / "moved in" / "a" / "b" / "f").write_text("later")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["moved%20in/a/b/f"]


def test_a_directory_moved_away_in_tree_mode_drops_its_watches(tree: Local, replica: Path,
                                                               tmp_path: Path) -> None:
    (replica / "sub dir" / "a").mkdir()
    tree.start(H, replica)
    (replica / "sub dir").rename(tmp_path / "gone")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["sub%20dir"]
    assert tree.watched(H) == {""}

    (tmp_path / "gone" / "a" / "f").write_text("outside the replica now")
    assert tree.wait(H) == []


def test_done_keeps_the_watches_in_tree_mode_only(local: Local, replica: Path) -> None:
    (replica / "sub dir" / "a").mkdir()
    local.start(H, replica)  # not in tree mode: no DIR lines, so only the start path is kept
    assert local.watched(H) == {""}

    assert local.send("TREE") == ["OK"]
    local.send(f"START {H} {quote(str(replica))} ")
    watched = local.watched(H)
    assert watched == {"", "sub dir", "sub dir/a"}
    assert local.send("DONE") == []
    assert local.watched(H) == watched

    (replica / "sub dir" / "a" / "f").write_text("x")
    assert local.wait(H) == [f"CHANGES {H}"]
    assert local.changes(H) == ["sub%20dir/a/f"]


def test_a_missing_start_path_in_tree_mode_is_watched_as_a_tree_when_it_appears(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica, "Documents")
    assert tree.watched(H) == set()
    assert tree.lookouts(H) == {"Documents": ""}
    (replica / "Documents").mkdir()
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["Documents"]
    assert tree.watched(H) == {"Documents"}
    assert tree.lookouts(H) == {}
    tree.assert_no_stray_watches(H)

    (replica / "Documents" / "f").write_text("x")  # reported below it: the tree is watched
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["Documents/f"]
    (replica / "elsewhere").mkdir()  # no longer looked out for: the root is not watched
    assert tree.wait(H) == []


def test_a_missing_start_path_moved_in_as_a_tree_is_watched_with_everything_below(
        tree: Local, replica: Path, tmp_path: Path) -> None:
    tree.start(H, replica, "Documents")
    (tmp_path / "made" / "a" / "b").mkdir(parents=True)
    (tmp_path / "made").rename(replica / "Documents")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["Documents"]
    assert tree.watched(H) == {"Documents", "Documents/a", "Documents/a/b"}

    (replica / "Documents" / "a" / "b" / "f").write_text("x")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["Documents/a/b/f"]


def test_the_lookout_moves_down_as_the_components_of_a_start_path_appear(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica, "a/b/c")
    assert tree.lookouts(H) == {"a/b/c": ""}
    (replica / "a").mkdir()
    assert tree.wait(H) == []  # a component above the start path is not reported
    assert tree.lookouts(H) == {"a/b/c": "a"}
    (replica / "a" / "b").mkdir()
    assert tree.wait(H) == []
    assert tree.lookouts(H) == {"a/b/c": "a/b"}
    tree.assert_no_stray_watches(H)  # the lookouts at "" and "a" are given back

    (replica / "a" / "b" / "c").mkdir()
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["a/b/c"]
    assert tree.watched(H) == {"a/b/c"}
    assert tree.lookouts(H) == {}
    tree.assert_no_stray_watches(H)

    (replica / "a" / "b" / "c" / "f").write_text("x")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["a/b/c/f"]


def test_a_start_path_made_with_its_parents_at_once_is_watched(tree: Local,
                                                               replica: Path) -> None:
    tree.start(H, replica, "a/b/c")
    (replica / "a" / "b" / "c" / "d").mkdir(parents=True)  # before the monitor sees "a"
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["a/b/c"]
    assert tree.watched(H) == {"a/b/c", "a/b/c/d"}

    (replica / "a" / "b" / "c" / "d" / "f").write_text("x")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["a/b/c/d/f"]


def test_the_lookout_moves_back_up_when_its_directory_goes(tree: Local, replica: Path) -> None:
    tree.start(H, replica, "a/b/c")
    (replica / "a").mkdir()
    tree.pump()
    assert tree.lookouts(H) == {"a/b/c": "a"}
    (replica / "a").rmdir()
    tree.pump()
    assert tree.lookouts(H) == {"a/b/c": ""}
    tree.assert_no_stray_watches(H)

    (replica / "a" / "b" / "c").mkdir(parents=True)
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["a/b/c"]
    assert tree.watched(H) == {"a/b/c"}


def test_two_missing_start_paths_below_one_ancestor_are_both_looked_out_for(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica, "Documents")
    tree.start(H, replica, "Music")
    assert tree.lookouts(H) == {"Documents": "", "Music": ""}
    (replica / "Documents").mkdir()
    (replica / "Music").mkdir()
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["Documents", "Music"]
    assert tree.watched(H) == {"Documents", "Music"}
    tree.assert_no_stray_watches(H)


def test_a_start_path_that_appears_as_a_file_in_tree_mode_stays_looked_out_for(
        tree: Local, replica: Path) -> None:
    tree.start(H, replica, "notes")
    (replica / "notes").write_text("x")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["notes"]
    assert tree.lookouts(H) == {"notes": ""}
    with (replica / "notes").open("a") as handle:
        handle.write("more")
    assert tree.wait(H) == [f"CHANGES {H}"]
    assert tree.changes(H) == ["notes"]


def test_without_tree_mode_the_lookout_reports_the_first_component_and_stays(
        local: Local, replica: Path) -> None:
    local.start(H, replica, "a/b")
    assert local.lookouts(H) == {"a/b": ""}
    (replica / "a" / "b").mkdir(parents=True)
    assert local.wait(H) == [f"CHANGES {H}"]
    assert local.changes(H) == ["a"]  # unison rescans; its next START watches a/b
    assert local.watched(H) == set()
    assert local.lookouts(H) == {"a/b": ""}


def test_tree_mode_over_pipes(monitor: MonitorSession, replica: Path) -> None:
    monitor.send("TREE")
    monitor.expect("OK")
    monitor.send(f"START {H} {quote(str(replica))} ")
    monitor.expect("OK")
    monitor.send("DONE")
    monitor.send(f"WAIT {H}")
    (replica / "sub dir" / "new" / "deep").mkdir(parents=True)
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["sub%20dir/new"]

    (replica / "sub dir" / "new" / "deep" / "f").write_text("x")
    monitor.send(f"WAIT {H}")
    monitor.expect(f"CHANGES {H}")
    assert monitor.changes(H) == ["sub%20dir/new/deep/f"]


# --- the idle bound (roaming-homes' real-time mode on the server) -------------------------------

def test_the_idle_timeout_option_is_read_leniently() -> None:
    assert idle_timeout(["--idle-timeout", "300"]) == 300.0
    assert idle_timeout([]) is None  # as unison starts it: no bound
    assert idle_timeout(["--idle-timeout"]) is None
    assert idle_timeout(["--idle-timeout", "soon"]) is None
    assert idle_timeout(["--idle-timeout", "0"]) is None


def test_a_monitor_told_nothing_for_its_idle_timeout_exits_and_keepalives_keep_it(
        replica: Path) -> None:
    idle = MonitorSession([*COMMAND, "--idle-timeout", "1.5"])
    kept = MonitorSession([*COMMAND, "--idle-timeout", "1.5"])
    try:
        for session in (idle, kept):
            session.expect("VERSION 1")
            session.send("TREE")
            session.expect("OK")
            session.send(f"START {H} {quote(str(replica))} ")
            session.expect("OK")
            session.send("DONE")
            session.send(f"WAIT {H}")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # what real-time mode sends every fifth of it
            kept.send(f"WAIT {H}")
            time.sleep(0.3)
        assert idle.proc.poll() == 0  # not started over ssh: nothing else to end
        assert kept.proc.poll() is None
        (replica / "still-watched").write_text("x")
        kept.expect(f"CHANGES {H}")  # the keep-alives changed nothing of the protocol
        assert kept.changes(H) == ["still-watched"]
    finally:
        idle.close()
        kept.close()


def _fake_process(proc: Path, pid: int, comm: str, ppid: int) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 0\n")


def test_the_connection_ended_is_the_nearest_sshd_of_this_user_above_the_monitor(
        tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _fake_process(proc, 300, "sh", 200)  # the login shell that ran the monitor
    _fake_process(proc, 200, "sshd", 100)  # sshd: USER@notty, this user's
    _fake_process(proc, 100, "sshd", 1)  # sshd: USER [priv]
    assert own_sshd(300, str(proc)) == 200
    _fake_process(proc, 400, "python3 (x) y", 1)  # a parenthesis in a name; no sshd above
    assert own_sshd(400, str(proc)) is None
    assert own_sshd(999, str(proc)) is None  # gone
