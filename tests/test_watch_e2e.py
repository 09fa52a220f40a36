"""Real-time mode end to end: realtime.run_watch, our unison-fsmonitor in tree mode on both ends
(the server's over the real sshd, found on the ssh user's PATH), and one guarded unison pass per
change."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from roaming_homes.actions import watch as realtime
from roaming_homes.session.state import StateStore
from tests.support.daemon import appears
from tests.support.fsmonitor import monitors_of, monitors_tagged
from tests.support.homes import Setup
from tests.support.waiting import wait_for
from tests.support.watcher import Watcher


@contextlib.contextmanager
def _watching(watcher: Watcher) -> Iterator[Watcher]:
    """`watcher` started and past its first sync; when the block ends it must stop as asked."""
    watcher.start()
    try:
        wait_for(lambda: bool(watcher.outcomes), 20, "the first sync")
        yield watcher
    finally:
        assert watcher.finish().reason == "stopped"


def test_changes_travel_both_ways_in_seconds_and_stop_ends_both_monitors(
        watched: Setup, tag: str) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    (docs / "before.txt").write_text("before")
    watcher = Watcher(watched).start()
    try:
        wait_for(lambda: (sdocs / "before.txt").exists(), 20, "the first sync")
        wait_for(lambda: len(monitors_of(watched.home, tag)) >= 1, 20, "the server's monitor")

        (docs / "local.txt").write_text("from laptop")
        wait_for(lambda: (sdocs / "local.txt").exists(), 10, "a local write on the server")
        (sdocs / "remote.txt").write_text("from server")
        wait_for(lambda: (docs / "remote.txt").exists(), 10, "a server write on the laptop")
        assert (docs / "remote.txt").read_text() == "from server"
    finally:
        result = watcher.finish()

    assert result.reason == "stopped" and not result.fallback
    wait_for(lambda: not monitors_tagged(tag), 15, "the server's monitor to end")
    assert watched.sshd is not None and watched.sshd.server_unison_dir is not None
    for unison_dir in (watched.unison_dir, watched.sshd.server_unison_dir):
        assert not list(unison_dir.glob("lk*")), f"stale unison lock in {unison_dir}"
    last = StateStore(watcher.locations.state_dir).load()["last"]
    assert last["result"] == "in-sync" and last["transferred"] >= 1
    assert any(o.transferred for o in watcher.outcomes)


def test_a_tree_created_while_watching_is_synced_and_then_watched(watched: Setup) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    with _watching(Watcher(watched)):
        (docs / "new" / "deep" / "er").mkdir(parents=True)
        (docs / "new" / "deep" / "er" / "a.txt").write_text("a")
        wait_for(lambda: (sdocs / "new" / "deep" / "er" / "a.txt").exists(), 10, "the new tree")
        (docs / "new" / "deep" / "er" / "b.txt").write_text("b")
        wait_for(lambda: (sdocs / "new" / "deep" / "er" / "b.txt").exists(), 10,
                 "a file written later inside the new tree")


def test_a_full_rescan_catches_what_no_monitor_saw(watched: Setup) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    watcher = Watcher(watched)
    watcher.config["sync"]["rescan_interval"] = 2  # below the configurable minimum, for speed
    log = watcher.locations.state_dir / "sync.log"
    with _watching(watcher):
        wait_for(lambda: log.read_text().count("--- pass started") >= 3, 20, "full rescans")
        (docs / "after-rescan.txt").write_text("x")
        wait_for(lambda: (sdocs / "after-rescan.txt").exists(), 10, "a write after rescans")


def test_server_without_monitor_falls_back_before_syncing(user: Setup, tag: str) -> None:
    """The session sshd does not put our monitor on the server's PATH."""
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f.txt").write_text("x")
    watcher = Watcher(user).start()
    watcher.thread.join(60)
    assert watcher.result is not None
    assert watcher.result.fallback
    assert "the monitor on the server" in watcher.result.reason
    assert "installed there" in watcher.result.reason
    assert not (user.server_home / "Documents" / "f.txt").exists()  # interval mode syncs it


def test_replica_guards_run_before_real_time_mode_starts(watched: Setup) -> None:
    (watched.home / "Documents" / "kept.txt").write_text("kept")
    assert watched.sync().returncode == 0
    (watched.server_home / ".roaming-homes-root").unlink()  # as if the share were replaced

    watcher = Watcher(watched).start()
    watcher.thread.join(30)

    assert not watcher.thread.is_alive(), "run_watch did not end on a refusal"
    assert watcher.result is not None and watcher.result.outcome is not None
    assert watcher.result.outcome.exit_code == 4, watcher.result.outcome
    assert "lacks its marker" in watcher.result.outcome.message
    assert (watched.home / "Documents" / "kept.txt").read_text() == "kept"
    assert (watched.server_home / "Documents" / "kept.txt").read_text() == "kept"


def test_a_synced_folder_replaced_while_watching_is_watched_again(watched: Setup) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    for name in ("a.txt", "b.txt"):
        (docs / name).write_text(name)
    watcher = Watcher(watched).start()
    try:
        # the files arrive before the first pass ends (a first sync copies, then unison
        # builds its archives): the folder is replaced once it has
        wait_for(lambda: (sdocs / "b.txt").exists() and "--- pass ended" in (
            watched.state_dir / "sync.log").read_text(errors="replace"), 20, "the first sync")
        docs.rename(watched.home / "Documents.old")  # the folder itself goes away ...
        docs.mkdir()  # ... and a new one takes its place
        (docs / "new.txt").write_text("new")
        wait_for(lambda: (sdocs / "new.txt").exists() and not (sdocs / "a.txt").exists(), 10,
                 "the new folder on the server")
        (docs / "later.txt").write_text("later")  # only a watch of the new folder sees this
        wait_for(lambda: (sdocs / "later.txt").exists(), 10, "a write in the new folder")
    finally:
        assert watcher.finish().reason == "stopped"


def test_a_file_fetched_from_the_server_is_fetched_again_at_once_when_it_changes_there(
        watched: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what this computer wrote on the server comes back as an echo to hold: another
    computer's next edit of a file just fetched from there is synced at once (the window is
    a minute here, so that a held report could not pass for a prompt one)."""
    monkeypatch.setattr(realtime, "ECHO_WINDOW", 60.0)
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    with _watching(Watcher(watched)):
        (sdocs / "shared.txt").write_text("from another computer")
        wait_for(appears(docs / "shared.txt", "from another computer"), 15, "the first edit")
        # this computer's monitor reports the fetched file too, and its pass (which would
        # carry a held report along) runs: the second edit comes after that
        time.sleep(2.0)
        (sdocs / "shared.txt").write_text("edited again there, just after")
        wait_for(appears(docs / "shared.txt", "edited again there, just after"), 30,
                 "the second edit, not held as an echo")


def test_a_file_still_being_written_is_not_synced_until_it_is_closed(
        watched: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved file goes at once (the monitor's `CLOSED`), but one still open and written every
    0.1 s waits for its writer: it is never on the server half-way, and once closed it is there
    whole."""
    monkeypatch.setattr(realtime, "ECHO_WINDOW", 0.5)  # the first sync's echo goes before
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    with _watching(Watcher(watched)):
        (docs / "saved.txt").write_text("saved")
        wait_for(appears(sdocs / "saved.txt", "saved"), 10, "a saved file")
        time.sleep(2.0)  # that cycle's echo, and its pass
        lines = [f"line {index}\n" for index in range(20)]
        with (docs / "growing.log").open("w") as growing:
            for line in lines:
                growing.write(line)
                growing.flush()
                time.sleep(0.1)
                assert not (sdocs / "growing.log").exists(), "synced while still written"
        wait_for(appears(sdocs / "growing.log", "".join(lines)), 10, "the file, once closed")
