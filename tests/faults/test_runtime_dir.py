"""The runtime directory is a trust boundary: another local user, or a link placed in it, must
not make a pass truncate a file, use a socket it did not make, or run beside the daemon."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.homes import CLI, Setup
from tests.support.waiting import wait_for

NOBODY = 65534


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]


def test_a_link_at_the_lock_never_truncates_what_it_points_to(user: Setup,
                                                              tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (user.runtime / "roaming-homes.lock").symlink_to(victim)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a.txt").write_text("a")

    result = user.sync()

    _one_line_error(result, "roaming-homes.lock")
    assert victim.read_text() == "keep me"
    assert not (user.server_home / "Documents").exists()  # nothing synced


def test_a_control_directory_made_by_another_user_is_refused(user: Setup) -> None:
    """A world-writable directory someone else made where our ssh socket goes: they could swap
    the socket for one of their own. The pass refuses, naming the directory."""
    control = user.runtime / "roaming-homes"
    control.mkdir(mode=0o777)
    os.chmod(control, 0o777)
    os.chown(control, NOBODY, NOBODY)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a.txt").write_text("a")

    code, outcome = user.sync_json()

    assert code == 3 and outcome["reason"] == "runtime-dir", outcome
    assert str(control) in outcome["message"] and "another user" in outcome["message"]
    assert not (user.server_home / "Documents").exists()
    assert list(control.iterdir()) == []  # no socket of ours was made there


def test_our_own_directories_are_made_private(user: Setup) -> None:
    os.chmod(user.runtime, 0o755)
    (user.home / "Documents").mkdir()
    assert user.sync().returncode == 0
    for directory in (user.runtime, user.runtime / "roaming-homes",
                      user.state_home / "roaming-homes", user.unison_dir):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


@pytest.mark.parametrize("command", [["sync"], ["daemon"]])
def test_an_unusable_runtime_directory_is_one_line_not_a_traceback(
        user: Setup, tmp_path: Path, command: list[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = user.run(*command, env={"XDG_RUNTIME_DIR": str(not_a_dir)}, timeout=60)
    _one_line_error(result, str(not_a_dir))


def _in_namespace_of(pid: int, user: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in user.env.items() if k != "XDG_RUNTIME_DIR"}
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *CLI, *args], env=env,
                          text=True, capture_output=True, timeout=60, check=False)


def test_without_xdg_runtime_dir_every_entry_point_finds_the_daemon(user: Setup) -> None:
    """`su -` and `runuser` sessions have no $XDG_RUNTIME_DIR: they find the daemon's lock in
    the runtime directory logind made (/run/user/UID, here a tmpfs of a private mount
    namespace), instead of running a second pass beside it."""
    (user.home / "Documents").mkdir()
    user.configure(sync={"interval": 3600})
    uid = os.getuid()
    wrapper = ("mount -t tmpfs -o mode=755 tmpfs /run/user && "
               f"mkdir -m 700 /run/user/{uid} && exec \"$@\"")
    env = {k: v for k, v in user.env.items() if k != "XDG_RUNTIME_DIR"}
    log = user.base / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(["unshare", "-m", "sh", "-c", wrapper, "sh", *CLI, "daemon"],
                                  env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                  start_new_session=True)
    try:
        runtime = Path(f"/proc/{daemon.pid}/root/run/user/{uid}")
        wait_for(lambda: (runtime / "roaming-homes-daemon.lock").exists()
                 or daemon.poll() is not None, 30, "the daemon's lock in /run/user/UID")
        assert daemon.poll() is None, log.read_text()

        skipped = _in_namespace_of(daemon.pid, user, "sync", "--skip-if-daemon")

        assert skipped.returncode == 0, skipped.stderr
        assert f"the session daemon (pid {daemon.pid}) syncs this home" in skipped.stdout
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def test_the_daemon_with_a_hostile_control_directory_stays_up_and_says_why(
        user: Setup) -> None:
    control = user.runtime / "roaming-homes"
    control.mkdir()
    os.chown(control, NOBODY, NOBODY)
    (user.home / "Documents").mkdir()
    user.configure(sync={"interval": 1})
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: user.status()["result"] == "failed", 30, "a failed pass recorded")
        assert "another user" in user.status()["message"]
        assert daemon.proc.poll() is None  # still up, retrying each interval
    finally:
        daemon.close()
