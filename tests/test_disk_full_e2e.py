"""A full disk under $XDG_STATE_HOME, end to end: the real CLI and daemon in a private mount
namespace whose state directory is a full tmpfs (tests/support/fullfs.py), the real unison over
the real sshd, and a recording notification server on a private session bus."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, appears
from tests.support.fullfs import FullStateDisk
from tests.support.homes import Setup
from tests.support.notifications import RecordingServer
from tests.support.waiting import wait_for

MakeFullDisk = Callable[[Setup], FullStateDisk]
ONE_LINE = re.compile(r"roaming-homes: error: disk full on this computer \((.+)\)")


def notifying(user: Setup, server: RecordingServer, **sync: object) -> dict[str, str]:
    """Notifications on for `user` (and `sync` settings); the environment that reaches the bus."""
    user.configure(sync={**user.config["sync"], **sync}, notify={"enabled": True})
    return {"DBUS_SESSION_BUS_ADDRESS": server.address}


def synced_once(user: Setup, env: dict[str, str]) -> dict[str, bytes]:
    """A first pass on a healthy disk; returns the state files it left, by name."""
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a.txt").write_text("a")
    assert user.sync(env=env).returncode == 0
    return {path.name: path.read_bytes() for path in user.state_dir.iterdir() if path.is_file()}


def test_a_full_state_disk_fails_sync_in_one_line_keeps_the_state_and_notifies_once(
        user: Setup, notifications: RecordingServer, full_state_disk: MakeFullDisk) -> None:
    env = notifying(user, notifications)
    before = synced_once(user, env)
    disk = full_state_disk(user)
    (user.home / "Documents" / "b.txt").write_text("written while the disk is full")

    first = user.sync(env=env, prefix=disk.prefix)
    again = user.sync(env=env, prefix=disk.prefix)

    assert (first.returncode, again.returncode) == (3, 3)
    match = ONE_LINE.fullmatch(first.stderr.rstrip("\n"))
    assert match is not None, first.stderr
    assert match.group(1) == str(user.state_dir / "state.json")
    # Nothing lost: the state is as the last good pass left it, no temporary file is left over,
    # and it still reads (the failure itself could not be recorded).
    inside = disk.inside(user.state_dir)
    after = {name: (inside / name).read_bytes() for name in before}
    assert after.pop("sync.log").startswith(before.pop("sync.log"))  # appended to, if room
    assert after == before
    assert not [path.name for path in inside.iterdir() if path.name.startswith(".")]
    status = user.run("status", "--json", prefix=disk.prefix)
    assert status.returncode == 0 and '"result": "in-sync"' in status.stdout, status.stderr
    # One notification for both passes; what it showed waits in the runtime directory.
    shown = notifications.notifications()
    assert len(shown) == 1, shown
    assert shown[0]["summary"] == "Sync failed: disk full"
    assert f"disk full on this computer ({user.state_dir / 'state.json'})" in shown[0]["body"]
    assert (user.runtime / "roaming-homes-notify.json").exists()

    disk.free()
    recovered = user.sync(env=env, prefix=disk.prefix)

    assert recovered.returncode == 0, recovered.stderr
    back = notifications.wait_for(2)[1]
    assert back["summary"] == "Back in sync" and back["replaces_id"] == shown[0]["id"]
    assert not (user.runtime / "roaming-homes-notify.json").exists()
    assert b'"last"' in (inside / "state.json").read_bytes()
    assert (user.server_home / "Documents" / "b.txt").read_text() == \
        "written while the disk is full"


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()


def counting_unison(directory: Path) -> tuple[Path, Callable[[], int]]:
    """A unison that counts its runs in a file outside the state: the daemon's passes."""
    runs = directory / "unison-runs"
    program = directory / "counting-unison"
    program.write_text(f"#!/bin/sh\necho run >> {runs}\nexec unison \"$@\"\n")
    program.chmod(0o755)
    return program, lambda: len(runs.read_text().splitlines()) if runs.exists() else 0


def test_the_daemon_stays_up_on_a_full_state_disk_notifies_once_and_recovers(
        user: Setup, notifications: RecordingServer, full_state_disk: MakeFullDisk,
        daemons: list[DaemonProcess], tmp_path: Path) -> None:
    program, runs = counting_unison(tmp_path)
    env = notifying(user, notifications, interval=1, unison=str(program))
    synced_once(user, env)
    disk = full_state_disk(user)
    done = runs()

    daemons.append(DaemonProcess(user, env, prefix=disk.prefix))
    daemon = daemons[0]
    # Four runs of unison: the third pass, two intervals after the first, has been reported.
    try:
        wait_for(lambda: runs() >= done + 4 or daemon.proc.poll() is not None, 30,
                 "four passes of the daemon")
    except AssertionError as timed_out:  # what the daemon did instead (seen once in CI)
        raise AssertionError(f"{timed_out}: {runs() - done} run(s) of unison; the daemon's "
                             f"log:\n{daemon.log[-4000:]}") from None

    assert daemon.proc.poll() is None, daemon.log
    assert "Traceback" not in daemon.log
    assert daemon.log.count(f"disk full on this computer ({user.state_dir / 'state.json'})") == 1
    shown = notifications.notifications()
    assert [n["summary"] for n in shown] == ["Sync failed: disk full"]

    disk.free()
    (user.home / "Documents" / "after.txt").write_text("after the disk was freed")

    back = notifications.wait_for(2)[1]
    assert back["summary"] == "Back in sync" and back["replaces_id"] == shown[0]["id"]
    wait_for(appears(user.server_home / "Documents" / "after.txt", "after the disk was freed"),
             15, "a pass after the disk was freed")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
