"""Real-time mode end to end: engine.run_watch, the real unison -repeat watch, a real sshd, and
our unison-fsmonitor on both ends (found on PATH, as on a real client and server)."""

from __future__ import annotations

import threading

import pytest

from roaming_homes import config as config_mod
from roaming_homes import engine
from roaming_homes.paths import Locations
from roaming_homes.state import StateStore
from tests.support.fsmonitor import monitors_tagged
from tests.support.homes import Setup
from tests.support.waiting import wait_for


class Watcher:
    """run_watch in a thread, as the daemon runs it."""

    def __init__(self, setup: Setup, **sync: object) -> None:
        setup.configure(sync={"paths": ["Documents"], "excluded_users": [], **sync})
        self.locations = Locations.from_env(setup.env)
        self.config = config_mod.load(self.locations, setup.config_path)
        self.stop = threading.Event()
        self.outcomes: list[engine.SyncOutcome] = []
        self.result: engine.WatchResult | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = engine.run_watch(self.config, self.locations, self.stop,
                                       on_outcome=self.outcomes.append)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def finish(self, timeout: float = 30) -> engine.WatchResult:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run_watch did not stop"
        assert self.result is not None
        return self.result


def test_changes_travel_both_ways_in_seconds_and_stop_ends_both_monitors(
        watched: Setup, tag: str) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    (docs / "before.txt").write_text("before")
    watcher = Watcher(watched).start()
    try:
        wait_for(lambda: (sdocs / "before.txt").exists(), 20, "the first sync")
        wait_for(lambda: len(monitors_tagged(tag)) == 2, 20, "a monitor on each end")

        (docs / "local.txt").write_text("from laptop")
        wait_for(lambda: (sdocs / "local.txt").exists(), 10, "a local write on the server")
        (sdocs / "remote.txt").write_text("from server")
        wait_for(lambda: (docs / "remote.txt").exists(), 10, "a server write on the laptop")
        assert (docs / "remote.txt").read_text() == "from server"
    finally:
        result = watcher.finish()

    assert result.reason == "stopped" and not result.fallback
    wait_for(lambda: not monitors_tagged(tag), 15, "both monitors to end")
    assert watched.sshd is not None and watched.sshd.server_unison_dir is not None
    for unison_dir in (watched.unison_dir, watched.sshd.server_unison_dir):
        assert not list(unison_dir.glob("lk*")), f"stale unison lock in {unison_dir}"
    last = StateStore(watcher.locations.state_dir).load()["last"]
    assert last["result"] == "in-sync" and last["transferred"] >= 1
    assert any(o.transferred for o in watcher.outcomes)


def test_a_tree_created_while_watching_is_synced_and_then_watched(watched: Setup) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    watcher = Watcher(watched).start()
    try:
        wait_for(lambda: bool(watcher.outcomes), 20, "the first sync")
        (docs / "new" / "deep" / "er").mkdir(parents=True)
        (docs / "new" / "deep" / "er" / "a.txt").write_text("a")
        wait_for(lambda: (sdocs / "new" / "deep" / "er" / "a.txt").exists(), 10, "the new tree")
        (docs / "new" / "deep" / "er" / "b.txt").write_text("b")
        wait_for(lambda: (sdocs / "new" / "deep" / "er" / "b.txt").exists(), 10,
                 "a file written later inside the new tree")
    finally:
        assert watcher.finish().reason == "stopped"


def test_rescan_interval_restarts_unison_and_watching_goes_on(watched: Setup) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    watcher = Watcher(watched)
    watcher.config["sync"]["rescan_interval"] = 2  # below the configurable minimum, for speed
    log = watcher.locations.state_dir / "sync.log"
    watcher.start()
    try:
        wait_for(lambda: log.exists() and log.read_text().count("--- watch started") >= 2, 20,
                 "a restart for the rescan")
        (docs / "after-rescan.txt").write_text("x")
        wait_for(lambda: (sdocs / "after-rescan.txt").exists(), 10, "a write after the restart")
    finally:
        assert watcher.finish().reason == "stopped"


def test_server_without_monitor_falls_back_after_one_sync(user: Setup, tag: str) -> None:
    """The session sshd does not put our monitor on the server's PATH."""
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f.txt").write_text("x")
    watcher = Watcher(user).start()
    watcher.thread.join(60)
    assert watcher.result is not None
    assert watcher.result.fallback
    assert "No file monitoring helper program found" in watcher.result.reason
    assert "PATH of the ssh user on the server" in watcher.result.reason
    assert (user.server_home / "Documents" / "f.txt").read_text() == "x"


def test_no_local_monitor_falls_back_at_once(user: Setup,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # Debian's unison ships no monitor
    watcher = Watcher(user)
    watcher.config["sync"]["unison"] = "/usr/bin/unison"
    result = engine.run_watch(watcher.config, watcher.locations, watcher.stop)
    assert result.fallback
    assert "no unison-fsmonitor on this computer" in result.reason
    assert not (watcher.locations.state_dir / "state.json").exists()  # nothing ran


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
