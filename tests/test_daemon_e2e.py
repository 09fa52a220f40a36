"""The daemon as a plain process: the real CLI, the real unison, the real sshd on loopback."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, StartDaemon, appears
from tests.support.homes import Setup
from tests.support.sshd import SshServer
from tests.support.waiting import wait_for


@pytest.fixture
def start_daemon() -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(user: Setup, env: dict[str, str] | None = None) -> DaemonProcess:
        (user.home / "Documents").mkdir(exist_ok=True)
        daemon = DaemonProcess(user, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def test_local_write_reaches_the_server_within_a_few_intervals(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 1})
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")

    (user.home / "Documents" / "new.txt").write_text("written while the daemon runs")

    wait_for(appears(user.server_home / "Documents" / "new.txt", "written while the daemon runs"),
             15, "the file on the server")
    assert daemon.proc.poll() is None


def test_sighup_rereads_the_interval(user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600})
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")
    before = user.config_path.stat()
    user.configure(sync={"interval": 1})
    # Same modification time as before: only the SIGHUP can make the daemon see the change.
    os.utime(user.config_path, ns=(before.st_atime_ns, before.st_mtime_ns))

    (user.home / "Documents" / "after-hup.txt").write_text("x")
    daemon.signal(signal.SIGHUP)

    wait_for(appears(user.server_home / "Documents" / "after-hup.txt", "x"), 15,
             "a pass at the new interval")


def test_a_changed_config_file_is_reread_without_a_signal(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600})
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")

    user.configure(sync={"interval": 1})
    (user.home / "Documents" / "after-edit.txt").write_text("x")

    wait_for(appears(user.server_home / "Documents" / "after-edit.txt", "x"), 20,
             "a pass at the new interval")


def test_sigterm_runs_a_final_pass_and_exits_0_within_the_bound(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600, "logout_timeout": 10})
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")
    (user.home / "Documents" / "last-minute.txt").write_text("saved before logout")
    started = time.monotonic()

    daemon.signal(signal.SIGTERM)

    assert daemon.wait(timeout=10 + 5) == 0
    assert time.monotonic() - started < 10
    assert (user.server_home / "Documents" / "last-minute.txt").read_text() == \
        "saved before logout"
    assert "final pass" in daemon.log


def test_sigterm_with_a_frozen_server_stops_unison_at_the_bound(
        tmp_path: Path, own_sshd: SshServer, start_daemon: StartDaemon) -> None:
    user = Setup(tmp_path / "user", own_sshd)
    try:
        # A long connect_timeout: ssh's keep-alives would not end the hang before the bound.
        user.configure(server={"connect_timeout": 60},
                       sync={"interval": 3600, "logout_timeout": 3})
        daemon = start_daemon(user)
        daemon.wait_for_log("in sync")
        (user.home / "Documents" / "f").write_text("x")
        own_sshd.freeze()
        started = time.monotonic()

        daemon.signal(signal.SIGTERM)

        assert daemon.wait(timeout=3 + 15) == 0
        assert time.monotonic() - started < 3 + 5 + 3  # bound + unison's grace + ssh -O exit
        assert user.status()["result"] == "interrupted"
        assert not list(user.unison_dir.glob("lk*")), "unison left a stale lock"
    finally:
        own_sshd.thaw()
        user.close()


def test_offline_server_keeps_the_daemon_running_and_it_catches_up(
        tmp_path: Path, own_sshd: SshServer, start_daemon: StartDaemon) -> None:
    user = Setup(tmp_path / "user", own_sshd)
    try:
        user.configure(server={"connect_timeout": 2}, sync={"interval": 1})
        daemon = start_daemon(user)
        try:
            daemon.wait_for_log("in sync")
            own_sshd.stop()
            # The shared connection died with the server; the next passes find nobody.
            (user.home / "Documents" / "offline.txt").write_text("written offline")
            daemon.wait_for_log("offline, will keep trying quietly")
            assert daemon.proc.poll() is None

            own_sshd.start()  # the same port again

            wait_for(appears(user.server_home / "Documents" / "offline.txt", "written offline"),
                     20, "the catch-up pass")
            daemon.wait_for_log("back online")
            assert daemon.log.count("offline, will keep trying quietly") == 1
        finally:
            daemon.close()  # before the user's teardown, which would wait for it
    finally:
        user.close()


def test_sd_notify_tells_ready_and_the_last_result(
        user: Setup, start_daemon: StartDaemon) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="rh-notify-", dir="/tmp"))
    address = str(sock_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        user.configure(sync={"interval": 3600})
        start_daemon(user, env={"NOTIFY_SOCKET": address})

        messages = [sock.recv(4096).decode()]
        while "STATUS=last sync" not in messages[-1]:
            messages.append(sock.recv(4096).decode())
    os.unlink(address)
    sock_dir.rmdir()

    assert messages[0].splitlines()[0] == "READY=1"
    status = messages[-1].removeprefix("STATUS=")
    assert status.startswith("last sync ") and status.endswith(": in sync")
    time.strptime(status.split()[2].rstrip(":"), "%H:%M:%S")


def test_excluded_user_never_starts_a_daemon(user: Setup, start_daemon: StartDaemon) -> None:
    assert user.sshd is not None
    user.configure(sync={"excluded_users": [user.sshd.user]})

    daemon = start_daemon(user)

    assert daemon.wait(timeout=30) == 0
    assert "is excluded (sync.excluded_users): no daemon" in daemon.log
    assert not (user.state_home / "roaming-homes" / "state.json").exists()


def test_a_second_daemon_of_the_same_user_exits_75(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600})
    first = start_daemon(user)
    first.wait_for_log("in sync")

    result = user.run("daemon", timeout=30)

    assert result.returncode == 75
    assert "daemon of this user already runs" in result.stderr
    assert first.proc.poll() is None


def test_hooks_sync_does_nothing_while_the_daemon_runs(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600})
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")

    result = user.sync("--skip-if-daemon")

    assert result.returncode == 0
    assert f"session daemon (pid {daemon.proc.pid}) syncs this home" in result.stdout


def test_sync_waits_for_the_daemons_pass_then_runs_its_own(
        user: Setup, start_daemon: StartDaemon, tmp_path: Path) -> None:
    slow = tmp_path / "slow-unison"
    started = tmp_path / "started"
    slow.write_text(f"#!/bin/sh\ntouch {started}\nsleep 2\nexec unison \"$@\"\n")
    slow.chmod(0o755)
    user.configure(sync={"interval": 3600, "unison": str(slow)})
    start_daemon(user)
    wait_for(started.exists, 30, "the daemon's login pass")
    assert user.status()["running"] is True

    result = user.sync()

    assert result.returncode == 0, result.stderr
    assert "in sync" in result.stdout


@pytest.fixture
def fake_system_bus() -> Iterator[str]:
    """A private dbus-daemon standing in for the system bus (there is none on CI machines)."""
    import subprocess

    proc = subprocess.run(["dbus-daemon", "--session", "--fork", "--print-address=1",
                           "--print-pid=1"], capture_output=True, text=True, check=True,
                          timeout=30)
    address, pid = proc.stdout.split()
    yield address
    os.kill(int(pid), signal.SIGTERM)


def test_network_back_from_networkmanager_triggers_a_pass_at_once(
        user: Setup, start_daemon: StartDaemon, fake_system_bus: str) -> None:
    from jeepney import DBusAddress, new_signal
    from jeepney.io.blocking import open_dbus_connection

    user.configure(sync={"interval": 3600})
    daemon = start_daemon(user, env={"DBUS_SYSTEM_BUS_ADDRESS": fake_system_bus})
    daemon.wait_for_log("watching NetworkManager")
    daemon.wait_for_log("in sync")
    (user.home / "Documents" / "after-reconnect.txt").write_text("x")
    nm = DBusAddress("/org/freedesktop/NetworkManager", interface="org.freedesktop.NetworkManager")

    with open_dbus_connection(bus=fake_system_bus) as conn:
        conn.send(new_signal(nm, "StateChanged", "u", (20,)))  # NM_STATE_DISCONNECTED
        conn.send(new_signal(nm, "StateChanged", "u", (70,)))  # NM_STATE_CONNECTED_GLOBAL

    wait_for(appears(user.server_home / "Documents" / "after-reconnect.txt", "x"), 15,
             "the pass on network return")


def test_the_daemon_runs_without_any_system_bus(user: Setup, start_daemon: StartDaemon,
                                                tmp_path: Path) -> None:
    user.configure(sync={"interval": 1})
    daemon = start_daemon(user, env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"})

    daemon.wait_for_log("in sync")
    (user.home / "Documents" / "f").write_text("x")

    wait_for(appears(user.server_home / "Documents" / "f", "x"), 15, "a periodic pass")
    assert "NetworkManager" not in daemon.log


def test_a_user_file_weakening_the_loss_guard_is_not_applied_on_reload(
        user: Setup, start_daemon: StartDaemon) -> None:
    user.configure(sync={"interval": 3600})
    docs = user.home / "Documents"
    docs.mkdir()
    for index in range(30):
        (docs / f"file{index:03}.txt").write_text(f"file {index}\n")
    daemon = start_daemon(user)
    daemon.wait_for_log("in sync")

    user_config = user.configure_user("[sync]\nmax_delete = 100\n")
    # Logged by the reload the changed file causes: the daemon read it and kept the 50 %.
    daemon.wait_for_log(f"{user_config}:2: sync.max_delete = 100 is less strict than the "
                        "system's 50 (the per-user file may only lower it); ignored, the "
                        "system value stays")
    for path in sorted(docs.iterdir())[:20]:  # 20 of 30 = 67 %
        path.unlink()
    daemon.signal(signal.SIGUSR1)

    daemon.wait_for_log("20 of 30 files were deleted on this computer")
    assert len(list((user.server_home / "Documents").iterdir())) == 30
    assert user.status()["result"] == "refused"
    assert daemon.proc.poll() is None


def test_a_user_file_cannot_take_an_excluded_user_out_of_the_exclusion(
        user: Setup, start_daemon: StartDaemon) -> None:
    assert user.sshd is not None
    user.configure(sync={"excluded_users": [user.sshd.user]})
    user_config = user.configure_user("[sync]\nexcluded_users = []\n")

    daemon = start_daemon(user)

    assert daemon.wait(timeout=30) == 0
    assert f"{user_config}:2: sync.excluded_users = [] is less strict" in daemon.log
    assert "is excluded (sync.excluded_users): no daemon" in daemon.log
    assert not (user.state_home / "roaming-homes" / "state.json").exists()
