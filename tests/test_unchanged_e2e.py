"""The pass that finds nothing changed in one exchange (issue 22, `session.unchanged`), end to
end over the real sshd with the real CLI, the real daemon (interval and real-time mode) and the
real unison, in both `prefer` modes: it skips unison only when neither side changed, and every
kind of change on either side (even one that keeps size and modification time) is synced by
the next pass.

A digest is recorded only once the trees have been still for `SETTLE_NS`: the tests wait that
long before the pass that records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from roaming_homes.actions.sync import NOTHING_CHANGED
from roaming_homes.session.unchanged import SETTLE_NS
from tests.support.daemon import DaemonProcess, appears, stop_as_logout
from tests.support.homes import Setup
from tests.support.programs import faked
from tests.support.sshd import SshServer
from tests.support.waiting import wait_for
from tests.test_unchanged import BUSYBOX_FIND

SKIPPED = "unison not run"
# Over loopback whether skipping pays is a coin toss (`sync.skip_unchanged = auto` measures it):
# these tests are about what a skip may and may not miss.
ALWAYS = {"skip_unchanged": "always"}
# The server counts in whole seconds (`date +%s`): a change up to a second more than SETTLE_NS
# ago may still count as too recent there.
SETTLE = SETTLE_NS / 1e9 + 1.3


def passes(user: Setup) -> str:
    """sync.log, where each pass starts with a line of its own."""
    log = user.state_dir / "sync.log"
    return log.read_text(errors="replace") if log.exists() else ""


def sync(user: Setup) -> dict[str, Any]:
    code, outcome = user.sync_json()
    assert code == 0, outcome
    return outcome


def settle_and_record(user: Setup) -> None:
    """After a pass that moved something: the next has nothing to do (it takes no digests:
    the one before it moved something); once both trees have been still long enough, the one
    after that records its digests, and the next skips unison."""
    assert sync(user)["message"] == "in sync: nothing to do"
    time.sleep(SETTLE)
    assert sync(user)["message"] == "in sync: nothing to do"
    skipped = passes(user).count(SKIPPED)
    assert sync(user)["message"] == NOTHING_CHANGED
    assert passes(user).count(SKIPPED) == skipped + 1


def until_skipping(user: Setup) -> None:
    """Passes until one skips unison (at most three: see `settle_and_record`)."""
    time.sleep(SETTLE)
    messages = [sync(user)["message"] for _ in range(3)]
    assert NOTHING_CHANGED in messages, messages


def same_size_same_time(path: Path, text: str, in_place: bool = False) -> None:
    """Replace `path` with other content of the same size and its modification time, as an
    editor saves (a new file renamed over it); `in_place` writes into the file itself."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    target = path if in_place else path.with_name(f".{path.name}.new")
    target.write_text(text)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    if not in_place:
        target.rename(path)


def home_with_files(user: Setup, prefer: str) -> tuple[Path, Path]:
    user.configure(sync={"prefer": prefer, **ALWAYS})
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    for index in range(12):
        (docs / f"f{index:02}.txt").write_text(f"file {index:02}")
    assert sync(user)["result"] == "in-sync"
    return docs, user.server_home / "Documents"


def change_kinds(docs: Path, server: Path) -> list[tuple[str, Callable[[], None],
                                                           Callable[[], bool]]]:
    """(what, the change, whether it reached the other side)."""
    def renamed() -> None:
        (docs / "f03.txt").rename(docs / "g03.txt")

    def moved_dir() -> None:
        (server / "new").mkdir()
        (server / "new" / "n.txt").write_text("new on the server")

    return [
        ("server: same size and time", lambda: same_size_same_time(server / "f01.txt", "FILE 01"),
         lambda: (docs / "f01.txt").read_text() == "FILE 01"),
        ("local: same size and time", lambda: same_size_same_time(docs / "f02.txt", "FILE 02"),
         lambda: (server / "f02.txt").read_text() == "FILE 02"),
        ("local: permissions", lambda: (docs / "f04.txt").chmod(0o600),
         lambda: (server / "f04.txt").stat().st_mode & 0o777 == 0o600),
        ("local: renamed", renamed,
         lambda: (server / "g03.txt").exists() and not (server / "f03.txt").exists()),
        ("server: deleted", lambda: (server / "f05.txt").unlink(),
         lambda: not (docs / "f05.txt").exists()),
        ("server: new folder", moved_dir,
         lambda: (docs / "new" / "n.txt").read_text() == "new on the server"),
    ]


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_pass_skips_unison_only_while_neither_side_changed(user: Setup, prefer: str) -> None:
    docs, server = home_with_files(user, prefer)
    settle_and_record(user)
    assert sync(user)["message"] == NOTHING_CHANGED  # and again: the record stays

    for what, change, arrived in change_kinds(docs, server):
        change()
        outcome = sync(user)
        assert outcome["message"] != NOTHING_CHANGED, what
        assert outcome["transferred"] >= 1 and arrived(), what
        settle_and_record(user)

    # Size, time and inode as they were: unison's own check (fastcheck) trusts them and finds
    # nothing to do; the digest sees the change time, so unison runs and looks.
    same_size_same_time(server / "f06.txt", "FILE 06", in_place=True)
    assert sync(user)["message"] == "in sync: nothing to do"


def test_a_changed_configuration_runs_unison(user: Setup) -> None:
    """The record is valid for its paths and ignore rules only: a file an ignore rule hid
    until now is synced at once when the rule goes."""
    docs, server = home_with_files(user, "newer")
    user.configure(sync={"ignore_names": ["*.log"], **ALWAYS})
    (docs / "kept.log").write_text("ignored so far")
    settle_and_record(user)

    user.configure(sync={"ignore_names": [], **ALWAYS})
    outcome = sync(user)

    assert outcome["message"] != NOTHING_CHANGED
    assert (server / "kept.log").read_text() == "ignored so far"


def test_a_pass_skipped_is_recorded_as_in_sync(user: Setup) -> None:
    home_with_files(user, "newer")
    settle_and_record(user)
    history = (user.state_dir / "history.jsonl").read_text().splitlines()
    last = json.loads(history[-1])
    assert last["result"] == "in-sync" and last["message"] == NOTHING_CHANGED
    status = user.status()
    assert status["result"] == "in-sync" and status["message"] == NOTHING_CHANGED
    assert status["last_success"] == last["finished"]


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_interval_daemon_skips_unison_and_still_syncs_each_change(user: Setup,
                                                                        prefer: str) -> None:
    docs, server = home_with_files(user, prefer)
    settle_and_record(user)
    user.configure(sync={"watch": False, "interval": 1, "prefer": prefer, **ALWAYS})
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: passes(user).count(SKIPPED) >= 4, 60, "passes that skip unison")

        same_size_same_time(server / "f01.txt", "FILE 01")
        wait_for(appears(docs / "f01.txt", "FILE 01"), 60, "the server's change here")
        same_size_same_time(docs / "f02.txt", "FILE 02")
        wait_for(appears(server / "f02.txt", "FILE 02"), 60, "the local change there")
        skipped = passes(user).count(SKIPPED)
        wait_for(lambda: passes(user).count(SKIPPED) > skipped, 60, "skipping again")
        (server / "f05.txt").unlink()
        wait_for(lambda: not (docs / "f05.txt").exists(), 60, "the deletion here")
    finally:
        daemon.close()
    assert daemon.proc.returncode is not None


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_starts_with_what_changed_while_it_was_not_running(
        watched: Setup, prefer: str) -> None:
    """The watch starts with a whole pass: skipped when nothing changed, and never when the
    server changed in between; then real-time mode syncs as ever."""
    user = watched
    docs, server = home_with_files(user, prefer)
    settle_and_record(user)
    user.configure(sync={"watch": True, "interval": 3600, "prefer": prefer, **ALWAYS})

    skipped = passes(user).count(SKIPPED)
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: passes(user).count(SKIPPED) > skipped, 60, "the start pass skipped")
        (docs / "live.txt").write_text("real time")
        wait_for(appears(server / "live.txt", "real time"), 60, "a change in real time")
    finally:
        stop_as_logout([daemon])

    until_skipping(user)
    same_size_same_time(server / "f01.txt", "FILE 01")
    skipped = passes(user).count(SKIPPED)
    daemon = DaemonProcess(user)
    try:
        wait_for(appears(docs / "f01.txt", "FILE 01"), 60, "the server's change at the start")
        assert passes(user).count(SKIPPED) == skipped
    finally:
        stop_as_logout([daemon])


def without_gnu_find(user: Setup) -> None:
    """busybox's find on this computer's PATH, as the user's CLI and daemon run."""
    user.env["PATH"] = faked(user.base / "busybox-bin", "find", BUSYBOX_FIND, user.env["PATH"])


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_computer_without_gnu_find_runs_unison_every_pass(user: Setup, prefer: str) -> None:
    """This side's digest is GNU find's listing. busybox's find knows no -printf and lists
    nothing: a digest of that would never change and would hide every change here. Without
    GNU find nothing is recorded, every pass runs unison, and a change that keeps size and
    time still arrives."""
    docs, server = home_with_files(user, prefer)
    without_gnu_find(user)
    time.sleep(SETTLE)
    for _ in range(3):
        assert sync(user)["message"] == "in sync: nothing to do"
    assert not (user.state_dir / "unchanged.json").exists()

    same_size_same_time(docs / "f02.txt", "FILE 02")
    outcome = sync(user)

    assert outcome["transferred"] == 1 and (server / "f02.txt").read_text() == "FILE 02"
    assert SKIPPED not in passes(user)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_without_gnu_find_starts_with_a_whole_unison_pass(
        watched: Setup, prefer: str) -> None:
    """The change made while the daemon was not running is not one its watch sees: the whole
    pass it starts with finds it, with unison, where a digest of busybox's empty listing would
    have said nothing changed."""
    user = watched
    docs, server = home_with_files(user, prefer)
    without_gnu_find(user)
    time.sleep(SETTLE)
    for _ in range(3):
        assert sync(user)["message"] == "in sync: nothing to do"
    same_size_same_time(docs / "f02.txt", "FILE 02")
    user.configure(sync={"watch": True, "interval": 3600, "prefer": prefer, **ALWAYS})

    daemon = DaemonProcess(user)
    try:
        wait_for(appears(server / "f02.txt", "FILE 02"), 60, "the change made before it ran")
        (docs / "live.txt").write_text("real time")
        wait_for(appears(server / "live.txt", "real time"), 60, "a change in real time")
    finally:
        stop_as_logout([daemon])
    assert SKIPPED not in passes(user)


def test_with_skip_unchanged_never_every_pass_runs_unison(user: Setup) -> None:
    home_with_files(user, "newer")
    user.configure(sync={"skip_unchanged": "never"})
    assert sync(user)["message"] == "in sync: nothing to do"
    time.sleep(SETTLE)
    for _ in range(3):
        assert sync(user)["message"] == "in sync: nothing to do"
    assert SKIPPED not in passes(user)
    assert not (user.state_dir / "unchanged.json").exists()


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_server_gone_silent_under_the_open_connection_ends_the_pass_offline_at_the_check(
        tmp_path: Path, own_sshd: SshServer, prefer: str) -> None:
    """The pass's one exchange goes over the connection an earlier pass opened, and the server
    stopped answering since (a link gone down). ssh's keep-alives end the shared connection,
    and the pass ends offline then, as a unison run that loses its connection does: neither
    ssh nor unison goes on to wait for a new connection to time out on the dead link."""
    user = Setup(tmp_path / "user", own_sshd)
    try:
        home_with_files(user, prefer)
        settle_and_record(user)
        before = len(passes(user))
        own_sshd.freeze()

        code, outcome = user.sync_json()

        # lost, not unreachable: the exchange ended with the shared connection, and ssh did
        # not go on to wait out a connection of its own on the dead link
        assert (code, outcome["result"], outcome["reason"]) == (75, "offline",
                                                                "connection-lost"), outcome
        assert "--- pass started" not in passes(user)[before:], "unison was started"
    finally:
        own_sshd.thaw()
        user.close()


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_unison_whose_shared_connection_dies_under_it_ends_offline_without_a_connection_of_its_own(
        tmp_path: Path, own_sshd: SshServer, prefer: str) -> None:
    """Something changed here, so the pass runs unison over the connection an earlier pass
    opened, and the server has gone silent (a link gone down). The keep-alives (1 s here) end
    the shared connection within seconds; unison's ssh must not then try a connection of its
    own, which would wait out the whole ConnectTimeout (30 s here) on the dead link."""
    user = Setup(tmp_path / "user", own_sshd)
    try:
        docs, _server = home_with_files(user, prefer)
        user.configure(sync={"prefer": prefer, **ALWAYS},
                       server={"connect_timeout": 30,
                               "ssh_options": [*own_sshd.ssh_options(), "-o",
                                               "ServerAliveInterval=1"]})
        assert sync(user)["result"] == "in-sync"  # the shared connection is open
        (docs / "f00.txt").write_text("changed here")
        before = len(passes(user))
        own_sshd.freeze()

        result = user.sync("--json", timeout=20)  # the keep-alives' bound, not ConnectTimeout's

        outcome = json.loads(result.stdout)
        assert (result.returncode, outcome["result"], outcome["reason"]) == (
            75, "offline", "connection-lost"), outcome
        assert "--- pass started" in passes(user)[before:], "unison was not started"
    finally:
        own_sshd.thaw()
        user.close()
    assert (docs / "f00.txt").read_text() == "changed here"
