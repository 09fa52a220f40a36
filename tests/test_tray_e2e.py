"""End to end: the daemon's tray icon on a private session bus, as a panel sees it.

The real daemon syncs over the real sshd; a recording StatusNotifierWatcher stands in for the
panel: it reads the item's properties and menu over D-Bus and clicks the entries as a user
would, and the test checks what each click did (a pass, a notification, the file manager).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes.paths import Locations
from roaming_homes.session.state import StateStore
from tests.support.daemon import DaemonProcess, appears, stop_as_logout
from tests.support.fsmonitor import monitors_of
from tests.support.homes import Setup
from tests.support.notifications import RecordingServer
from tests.support.sdnotify import NotifySocket
from tests.support.tray import ItemClient, RecordingFileManager, RecordingWatcher
from tests.support.waiting import wait_for
from tests.test_notify_e2e import make_conflict, notifying


@pytest.fixture
def tray_host(notifications: RecordingServer) -> Iterator[list[object]]:
    """What a test started on the private bus (watchers, file managers, clients): stopped or
    closed at the end."""
    started: list[object] = []
    yield started
    for thing in started:
        getattr(thing, "stop", getattr(thing, "close", None))()


def test_tray_icon_appears_with_the_tray_and_its_menu_acts(
        user: Setup, notifications: RecordingServer, tray_host: list[object]) -> None:
    env = notifying(user, notifications)
    # One pass at login, then none before an hour: every later pass is the tray's "Sync now".
    user.configure(sync={"interval": 3600, "paths": ["Documents"], "prefer": "none"},
                   notify=user.config["notify"])
    (user.home / "Documents").mkdir()
    daemon = DaemonProcess(user, env)
    try:
        daemon.wait_for_log("in sync")
        # No tray yet: no icon, and not a word about it at the daemon's log level.
        assert "tray" not in daemon.log.lower() and "StatusNotifier" not in daemon.log

        watcher = RecordingWatcher(notifications.address)  # a panel starts after the daemon
        tray_host.append(watcher)
        client = ItemClient(notifications.address, watcher.item())
        tray_host.append(client)
        # real-time mode falls back here (no monitor on the server): its interval pass may
        # still be running when the panel looks, or just recorded (the icon follows the state
        # files: once a clean-clone run read them a moment before the pass was in them)
        props = client.wait_for(lambda p: p["IconName"] != "view-refresh"
                                and "in sync" in p["ToolTip"][3])
        assert (props["Title"], props["Status"], props["IconName"]) == (
            "Roaming Homes", "Active", "folder-remote")
        assert props["Menu"] == "/MenuBar" and props["Id"] == "roaming-homes"
        icon, _pixmaps, title, body = props["ToolTip"]
        assert (icon, title) == ("folder-remote", "Roaming Homes: in sync")
        assert "in sync" in body
        assert "org.kde.StatusNotifierItem" in client.introspect()
        menu = client.menu()
        assert [label for label in menu if menu[label][1]["enabled"]] == [
            "Sync now", "Pause for 1 h", "Restore…", "Open status"]
        assert not menu["Conflicts…"][1]["enabled"]  # nothing to resolve

        # Sync now: a pass, at once (the interval is an hour).
        (user.home / "Documents" / "new.txt").write_text("sent by Sync now")
        client.click("Sync now")
        wait_for(appears(user.server_home / "Documents" / "new.txt", "sent by Sync now"), 30,
                 "the file on the server")
        client.wait_for(lambda p: p["IconName"] == "folder-remote")  # the pass is over

        # Open status (a click on the icon itself does the same): a notification saying it.
        # Asked for, the pass also lets real-time mode be tried again at once, which shows as
        # a pass running ("syncing now: … connecting") until it falls back: asked again then.
        opened = 0
        for _ in range(40):
            client.activate()
            opened += 1
            status = notifications.wait_for(opened)[-1]
            if not status["summary"].startswith("syncing now"):
                break
            time.sleep(0.25)
        assert status["summary"].startswith("in sync") and not status["actions"]
        assert "last success" in status["body"]

        # A conflict on a name that is markup and has a mnemonic mark: needs you.
        name = "<img src=x>a_b.txt"
        make_conflict(user, name)
        client.click("Sync now")
        props = client.wait_for(lambda p: p["Status"] == "NeedsAttention")
        assert props["IconName"] == "dialog-warning"
        _icon, _pixmaps, title, body = props["ToolTip"]
        assert title == "Roaming Homes: needs you"
        assert "<img" not in body and "&lt;img src=x&gt;" in body  # never markup
        menu = client.menu()
        assert menu["Conflicts…"][1]["enabled"]
        (headline,) = [label for label, (_, entry) in menu.items() if not entry["enabled"]]
        assert "_" not in headline.replace("__", "")  # no mnemonic made of a file name

        # Conflicts…: the conflict notification again, whose buttons settle them.
        shown = notifications.wait_for(opened + 1)[-1]  # the one after the pass
        assert "keep-local" in shown["actions"]
        client.click("Conflicts…")
        again = notifications.wait_for(opened + 2)[-1]
        assert again["actions"] == shown["actions"] and again["replaces_id"] == shown["id"]
        assert name in again["body"]

        # Restore…: nothing was refused, so the file manager shows this computer's backups.
        manager = RecordingFileManager(notifications.address)
        tray_host.append(manager)
        backups = user.state_home / "roaming-homes" / "backup"
        backups.mkdir(exist_ok=True)
        client.click("Restore…")
        (_sender, (uris, _startup)), = manager.wait_for("ShowItems")
        assert uris == [Path(backups).as_uri()]

        # Pause for 1 h: paused as `roaming-homes pause 1h` would; the conflicts still come
        # first on the icon, the menu offers Resume instead of Sync now.
        client.click("Pause for 1 h")
        wait_for(lambda: user.status()["paused"] is not None, 10, "paused")
        assert user.status()["paused"]["until"] is not None
        wait_for(lambda: "Resume" in client.menu(), 10, "Resume in the menu")
        menu = client.menu()
        assert not menu["Sync now"][1]["enabled"] and "Pause for 1 h" not in menu
        # (a pass the pause let finish may show as syncing for a moment)
        wait_for(lambda: client.props()["IconName"] == "dialog-warning", 10, "needs you")
        client.click("Resume")
        wait_for(lambda: user.status()["paused"] is None, 10, "resumed")
        wait_for(lambda: "Pause for 1 h" in client.menu(), 10, "Pause in the menu again")
    finally:
        stop_as_logout([daemon])


def test_sync_now_while_watching_is_a_full_scan_at_once(
        watched: Setup, tag: str, notifications: RecordingServer,
        tray_host: list[object]) -> None:
    """In real-time mode "Sync now" starts the watch over with its full pass (what no monitor
    saw is synced too), without the make-way window a manual sync gets."""
    env = notifying(watched, notifications)
    watched.configure(sync={"watch": True, "interval": 3600}, notify=watched.config["notify"])
    watcher = RecordingWatcher(notifications.address)  # the panel runs before the daemon
    tray_host.append(watcher)
    systemd = NotifySocket()
    daemon = DaemonProcess(watched, {**env, "NOTIFY_SOCKET": systemd.address})
    try:
        daemon.wait_for_log("in sync")
        wait_for(lambda: len(monitors_of(watched.home, tag)) == 2, 30, "a monitor on each end")
        store = StateStore(Locations.from_env(watched.env).state_dir)
        first = store.whole_pass_started()
        client = ItemClient(notifications.address, watcher.item())
        tray_host.append(client)
        assert client.props()["IconName"] == "folder-remote"
        time.sleep(1.1)  # the full pass's start time has one-second steps
        client.click("Sync now")
        wait_for(lambda: store.whole_pass_started() != first, 20, "a full pass")
        wait_for(lambda: len(monitors_of(watched.home, tag)) == 2, 30, "watching again")
        assert watched.status()["watching_pid"] == daemon.proc.pid
        # no lock left free for somebody else, as SIGUSR1 (a manual sync) would
        assert not [s for s in systemd.statuses() if s.startswith("real-time mode paused")]
    finally:
        stop_as_logout([daemon])
        systemd.close()
