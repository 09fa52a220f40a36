"""The tray icon's decisions (state, look, menu, escaping), its D-Bus answers, and what its menu
does without a daemon: a recorded state, a private bus, recording services."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from roaming_homes import config as config_mod
from roaming_homes.actions.status import Overview
from roaming_homes.actions.tray import Tray, TrayState, status_text, tray_state, view
from roaming_homes.desktop import tray as sni
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety import refused
from roaming_homes.safety.guards import Loss, Refusal
from roaming_homes.session.pause import Pause
from roaming_homes.session.state import StateStore
from tests.support.homes import Setup
from tests.support.notifications import RecordingServer
from tests.support.tray import RecordingFileManager

STAMP = "2026-11-29T10:00:00+00:00"
PAUSE = Pause(datetime.now().astimezone(), datetime.now().astimezone() + timedelta(hours=1))


def outcome(result: Result, message: str = "done", **fields: Any) -> SyncOutcome:
    return SyncOutcome(result, message, STAMP, STAMP, 1.0, "server", **fields)


IN_SYNC = outcome(Result.IN_SYNC, "in sync")
CONFLICTS = outcome(Result.CONFLICTS, "1 conflict", conflicts=["Documents/a.txt"])


@pytest.mark.parametrize(("overview", "expected"), [
    (Overview(IN_SYNC), TrayState.IDLE),
    (Overview(None), TrayState.IDLE),  # before the first pass
    (Overview(IN_SYNC, running="syncing: looking for changes"), TrayState.SYNCING),
    (Overview(CONFLICTS, running="uploading 3 files"), TrayState.SYNCING),
    (Overview(outcome(Result.OFFLINE), offline_since=STAMP), TrayState.OFFLINE),
    (Overview(IN_SYNC, paused=PAUSE), TrayState.PAUSED),
    (Overview(outcome(Result.OFFLINE), offline_since=STAMP, paused=PAUSE), TrayState.PAUSED),
    (Overview(CONFLICTS), TrayState.NEEDS_YOU),
    (Overview(CONFLICTS, paused=PAUSE), TrayState.NEEDS_YOU),  # what needs you comes first
    (Overview(outcome(Result.REFUSED, "held back 300 deletions")), TrayState.NEEDS_YOU),
    (Overview(outcome(Result.PARTIAL)), TrayState.NEEDS_YOU),
    (Overview(IN_SYNC, note="configuration not reloaded"), TrayState.NEEDS_YOU),
])
def test_tray_state_follows_the_status_model(overview: Overview, expected: TrayState) -> None:
    assert tray_state(overview) is expected


def test_each_state_has_its_own_icon_and_only_needs_you_asks_for_attention() -> None:
    looks = {state: view(overview) for state, overview in [
        (TrayState.IDLE, Overview(IN_SYNC)), (TrayState.SYNCING, Overview(IN_SYNC, running="x")),
        (TrayState.OFFLINE, Overview(outcome(Result.OFFLINE), offline_since=STAMP)),
        (TrayState.PAUSED, Overview(IN_SYNC, paused=PAUSE)),
        (TrayState.NEEDS_YOU, Overview(CONFLICTS))]}
    assert len({look.icon for look in looks.values()}) == len(TrayState)
    assert {state for state, look in looks.items() if look.status == "NeedsAttention"} == {
        TrayState.NEEDS_YOU}
    assert all(look.tooltip[0] == f"Roaming Homes: {state.value}"
               for state, look in looks.items())


def labels(shown: sni.View, enabled: bool = True) -> list[str]:
    return [item.label for item in shown.menu if item.label and item.enabled == enabled]


def test_menu_offers_what_applies() -> None:
    idle = view(Overview(IN_SYNC))
    assert labels(idle) == ["Sync now", "Pause for 1 h", "Restore…", "Open status"]
    assert labels(idle, enabled=False) == ["in sync", "Conflicts…"]
    assert idle.activate == "status"
    assert labels(view(Overview(CONFLICTS))) == [
        "Sync now", "Pause for 1 h", "Conflicts…", "Restore…", "Open status"]
    settled = outcome(Result.IN_SYNC, "in sync", settled=["Documents/b.txt"])
    assert "Conflicts…" in labels(view(Overview(settled)))
    paused = view(Overview(IN_SYNC, paused=PAUSE))
    assert labels(paused) == ["Resume", "Restore…", "Open status"]  # no Sync now while paused
    assert "Sync now" in labels(paused, enabled=False)


def test_names_from_outside_are_never_markup_nor_mnemonics() -> None:
    name = "Documents/<a href='x'>my_file</a>\x1b[2J\n.txt"
    shown = view(Overview(outcome(Result.CONFLICTS, f"1 conflict: {name}", conflicts=[name])))
    _title, body = shown.tooltip
    assert "<a" not in body and "&lt;a href='x'&gt;my_file&lt;/a&gt;" in body
    assert "\x1b" not in body and "\\x1b[2J\\n.txt" in body
    (headline,) = labels(shown, enabled=False)
    assert "my__file" in headline and "\x1b" not in headline and "\n" not in headline
    long = view(Overview(outcome(Result.CONFLICTS, "x" * 500, conflicts=["x"])))
    assert len(labels(long, enabled=False)[0]) <= 80


def test_status_notification_text_is_the_status_output() -> None:
    summary, body = status_text({
        "headline": "in sync", "action": None, "finished": STAMP, "result": "in-sync",
        "duration": 1.0, "transferred": 2, "last_success": STAMP, "server": "home.example",
        "conflicts": [], "settled": [], "settled_recently": 0, "running": False,
        "running_pid": None, "watching_pid": None, "notes": [], "computers": [],
        "backups": None, "paused": None})
    assert summary == "in sync"
    assert f"last success: {STAMP}" in body.splitlines()
    assert "server: home.example" in body.splitlines()


# --- the D-Bus side -----------------------------------------------------------------------

MENU = (sni.MenuItem("headline", "status", enabled=False), sni.MenuItem("-"),
        sni.MenuItem("sync", "Sync now"))
VIEW = sni.View("Active", "folder-remote", "Roaming Homes", ("t", "b"), MENU, activate="status")


def reply(member: str, args: tuple[Any, ...] = (), path: str = sni.MENU_PATH) -> Any:
    return sni.StatusNotifierItem._reply(sni.StatusNotifierItem(VIEW, print), VIEW, 7, path,
                                         member, args)


def test_menu_layout_and_clicks_as_dbusmenu_says() -> None:
    signature, (revision, (root, props, children)), _ = reply("GetLayout", (0, -1, []))
    assert (signature, revision, root, props) == (
        "u(ia{sv}av)", 7, 0, {"children-display": ("s", "submenu")})
    assert [child[1][0] for child in children] == [1, 2, 3]
    assert children[1][1][1] == {"type": ("s", "separator")}
    assert reply("Event", (3, "clicked", ("i", 0), 0))[2] == "sync"
    assert reply("Event", (3, "hovered", ("i", 0), 0))[2] == ""
    assert reply("Event", (1, "clicked", ("i", 0), 0))[2] == ""  # disabled
    assert reply("Event", (2, "clicked", ("i", 0), 0))[2] == ""  # a separator
    assert reply("EventGroup", ([(3, "clicked", ("i", 0), 0), (9, "clicked", ("i", 0), 0)],))[
        1:] == (([9],), "sync")
    assert reply("GetProperty", (3, "label"))[1] == (("s", "Sync now"),)
    assert reply("Activate", (0, 0), sni.ITEM_PATH)[2] == "status"
    with pytest.raises(LookupError):
        reply("GetProperty", (9, "label"))
    with pytest.raises(LookupError):
        reply("Bogus")


def test_introspection_lists_every_property_served() -> None:
    served = {name for name, _ in reply("GetAll", (sni.ITEM_IFACE,), sni.ITEM_PATH)[1][0].items()}
    node = ET.fromstring(reply("Introspect", (), sni.ITEM_PATH)[1][0].split("\n", 2)[2])
    item = node.find(f"interface[@name='{sni.ITEM_IFACE}']")
    assert item is not None
    assert {p.get("name") for p in item.findall("property")} == served
    menu = node.find(f"interface[@name='{sni.MENU_IFACE}']")
    assert menu is not None
    layout = menu.find("method[@name='GetLayout']")
    assert layout is not None
    assert [a.get("type") for a in layout.findall("arg")] == ["i", "i", "as", "u", "(ia{sv}av)"]


def test_no_session_bus_means_no_icon_and_nothing_said(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    caplog.set_level(logging.DEBUG)
    assert not sni.StatusNotifierItem(VIEW, print).start()
    assert caplog.records and all(r.levelno == logging.DEBUG for r in caplog.records)


# --- the menu's actions, on a private bus -------------------------------------------------

@pytest.fixture
def tray(local_user: Setup, notifications: RecordingServer,
         monkeypatch: pytest.MonkeyPatch) -> Tray:
    """A tray of `local_user` on the test's bus, its item not started: clicks are called."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", notifications.address)
    local_user.configure(notify={"enabled": True})
    locations = Locations.from_env(local_user.env)
    config = config_mod.load(locations, local_user.config_path)
    return Tray(lambda: config, locations, lambda: None, lambda: "")


def test_conflicts_settled_by_prefer_are_shown_in_the_file_manager(
        tray: Tray, notifications: RecordingServer) -> None:
    copy = tray.locations.home / "Documents" / "report.odt"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text("kept")
    StateStore(tray.locations.state_dir).record(
        outcome(Result.IN_SYNC, "in sync", settled=["Documents/report.odt"]))
    manager = RecordingFileManager(notifications.address)
    try:
        tray._click("conflicts")
        (_sender, (uris, _)), = manager.wait_for("ShowItems")
        assert uris == [copy.as_uri()]
    finally:
        manager.stop()


def test_restore_after_a_refused_pass_shows_its_way_out_again(
        tray: Tray, notifications: RecordingServer) -> None:
    state_dir = tray.locations.state_dir
    store = StateStore(state_dir)
    store.record(outcome(Result.REFUSED, "held back 300 deletions"))
    refused.save(state_dir, "roots", Refusal("server", Loss.DELETE, 300, 310, ("Documents",)))
    store.record(outcome(Result.OFFLINE, "server unreachable"))  # still held back
    tray._click("restore")
    (shown,) = notifications.wait_for(1)
    assert {"restore", "confirm"} <= set(shown["actions"])
    assert "held back 300 deletions" in shown["body"]


def test_restore_with_no_backups_yet_says_so(tray: Tray, notifications: RecordingServer) -> None:
    tray._click("restore")
    (told,) = notifications.wait_for(1)
    assert told["summary"] == "No old versions here" and not told["actions"]
    assert str(tray.locations.backup_dir) in told["body"]
    assert not Path(tray.locations.backup_dir).exists()
