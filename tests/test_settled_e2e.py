"""Conflicts that `sync.prefer` settles are visible: in the outcome and the history, in
`status`, and in one low-urgency notification per path (issue 18, item 4)."""

from __future__ import annotations

import json
import os
import time

from tests.support.homes import Setup
from tests.support.notifications import RecordingServer


def edit_both(user: Setup, name: str) -> None:
    """`name` in Documents, synced, then edited on both sides (here later than there)."""
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    (docs / name).write_text("original")
    assert user.sync().returncode == 0
    server = user.server_home / "Documents" / name
    server.write_text("server edit")
    os.utime(server, (time.time() - 60, time.time() - 60))
    (docs / name).write_text("laptop edit")


def test_a_conflict_prefer_settles_is_recorded_counted_and_told_once(
        user: Setup, notifications: RecordingServer) -> None:
    user.configure(sync={"prefer": "newer"}, notify={"enabled": True})
    env = {"DBUS_SESSION_BUS_ADDRESS": notifications.address}
    edit_both(user, "report.txt")

    result = user.run("sync", "--json", env=env)

    outcome = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert outcome["settled"] == ["Documents/report.txt"] and outcome["conflicts"] == []
    assert "1 conflict(s) settled by sync.prefer" in outcome["message"]
    history = (user.state_dir / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["settled"] == ["Documents/report.txt"]
    status = user.status()
    assert status["settled"] == ["Documents/report.txt"] and status["settled_recently"] == 1
    assert "settled:          Documents/report.txt in the last pass" in user.run("status").stdout
    (shown,) = notifications.wait_for(1)
    assert shown["summary"] == "Kept both versions of Documents/report.txt"
    assert shown["hints"]["urgency"] == 0 and shown["actions"] == {}

    assert user.sync(env=env).returncode == 0  # in sync: nothing new to tell
    time.sleep(1)
    assert len(notifications.notifications()) == 1
    assert user.status()["settled_recently"] == 1


def test_with_prefer_none_the_conflict_stays_unsettled(user: Setup) -> None:
    user.configure(sync={"prefer": "none"})
    edit_both(user, "report.txt")

    code, outcome = user.sync_json()

    assert code == 1
    assert outcome["conflicts"] == ["Documents/report.txt"] and outcome["settled"] == []
