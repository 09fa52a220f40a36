"""End to end: a big first sync announces itself once and says when the home is ready.

The real CLI (and daemon) with the real unison over the real sshd, and a real session D-Bus
whose notification server records what it is asked to show.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from roaming_homes.desktop.policy import FIRST_SYNC_MIN_BYTES
from roaming_homes.session.progress import human_bytes
from tests.support.daemon import DaemonProcess
from tests.support.homes import CLI, Setup
from tests.support.notifications import RecordingServer
from tests.support.transfer import MB, random_files, size_of, throttle
from tests.support.waiting import wait_for

BIG = 12  # files of 10 MB: above FIRST_SYNC_MIN_BYTES, a few seconds over loopback
SETTING_UP = "Setting up your roaming home: "
READY = "Your roaming home is ready"


def notifying(user: Setup, server: RecordingServer) -> dict[str, str]:
    user.configure(notify={"enabled": True})
    return {"DBUS_SESSION_BUS_ADDRESS": server.address}


def notify_state(user: Setup) -> dict[str, Any]:
    try:
        return json.loads((user.state_home / "roaming-homes" / "notify.json").read_text())
    except (OSError, ValueError):
        return {}


def summaries(server: RecordingServer) -> list[str]:
    return [call["summary"] for call in server.notifications()]


def test_big_first_sync_is_announced_with_its_size_then_ready_replaces_it(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    total = random_files(user.server_home / "Documents", BIG, 10 * MB)
    assert total >= FIRST_SYNC_MIN_BYTES

    result = user.sync(env=env)

    assert result.returncode == 0, result.stderr
    setting_up, ready = notifications.wait_for(2)
    assert setting_up["summary"] == f"{SETTING_UP}{human_bytes(total)} to sync"
    assert "127.0.0.1" in setting_up["body"] and setting_up["actions"] == {}
    assert setting_up["replaces_id"] == 0
    assert ready["summary"] == READY
    assert ready["replaces_id"] == setting_up["id"]
    assert ready["body"] == f"Your files are in sync with 127.0.0.1 ({human_bytes(total)} copied)."
    assert notify_state(user)["first_sync"] is None


def test_a_later_pass_is_not_announced_however_much_it_copies(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a").write_text("a")
    assert user.sync(env=env).returncode == 0  # a small first sync: nothing to say
    random_files(user.server_home / "Documents" / "more", BIG, 10 * MB)

    result = user.sync("--json", env=env)

    outcome = json.loads(result.stdout)
    assert (result.returncode, outcome["first_run"], outcome["transferred"]) == (0, False, 1)
    assert notifications.calls == []


def test_small_first_sync_is_not_announced(user: Setup,
                                           notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    random_files(user.server_home / "Documents", 5, MB)

    result = user.sync("--json", env=env)

    outcome = json.loads(result.stdout)
    # too small for the bulk copy (`unison.bulk.worth_copying`): unison moves one new folder
    assert (result.returncode, outcome["first_run"], outcome["transferred"]) == (0, True, 1)
    assert notifications.calls == []
    assert notify_state(user)["first_sync"] is None


def test_first_sync_killed_and_resumed_is_announced_once_and_ends_ready(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    env = notifying(user, notifications)
    total = random_files(user.server_home / "Documents", 150, MB)
    throttle(user, 40 * MB, tmp_path / "first.json")  # about 4 s for the whole tree
    first = subprocess.Popen([*CLI, "sync"], env={**user.env, **env},
                             stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (notify_state(user).get("first_sync") and
                          size_of(user.home) >= total // 4) or first.poll() is not None,
                 60, "the announcement and a quarter of the tree")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a logout or power loss would
        first.wait()
    assert size_of(user.home) < total, "the first pass was to be cut, not finished"
    assert summaries(notifications) == [f"{SETTING_UP}{human_bytes(total)} to sync"]
    user.close_connection()
    throttle(user, 400 * MB, tmp_path / "second.json")

    resumed = user.sync(env=env)

    assert resumed.returncode == 0, resumed.stderr
    setting_up, ready = notifications.wait_for(2)
    assert summaries(notifications) == [setting_up["summary"], READY]
    assert ready["replaces_id"] == setting_up["id"]


def daemon_first_sync(user: Setup, notifications: RecordingServer) -> tuple[str, bool]:
    """A big first sync by the daemon, announced with its size and then ready (replacing the
    announcement), the daemon stopped at SIGTERM: its log, and whether status named it as
    watching while it ran."""
    env = notifying(user, notifications)
    user.configure(sync={"interval": 3600}, notify=user.config["notify"])
    total = random_files(user.server_home / "Documents", BIG, 10 * MB)
    daemon = DaemonProcess(user, env)
    try:
        setting_up, ready = notifications.wait_for(2, timeout=60)
        watching = user.status()["watching_pid"] == daemon.proc.pid
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.log
    finally:
        daemon.close()
    assert setting_up["summary"] == f"{SETTING_UP}{human_bytes(total)} to sync"
    assert (ready["summary"], ready["replaces_id"]) == (READY, setting_up["id"])
    return daemon.log, watching


def test_the_daemons_first_pass_is_announced_and_ends_ready(
        user: Setup, notifications: RecordingServer) -> None:
    daemon_first_sync(user, notifications)

    assert len(notifications.notifications()) == 2  # the final pass at SIGTERM: nothing new


def test_a_first_sync_in_real_time_mode_is_announced_and_ends_ready(
        watched: Setup, tag: str, notifications: RecordingServer) -> None:
    """The server has our monitor: the daemon syncs in real-time mode from its first pass on,
    and that pass is announced like an interval pass."""
    log, watching = daemon_first_sync(watched, notifications)

    assert "falling back" not in log
    assert watching
