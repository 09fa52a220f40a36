"""The shipped unit and login/logout hooks, under a real `systemd --user` manager where it counts.

The manager runs in a private mount namespace whose /run/systemd/system makes it believe it was
booted with systemd (docs/testing.md §7); its config, runtime dir and home are temporary, so the
machine's own units and ~/.config are never read or written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes import manpage
from tests.support.homes import Setup
from tests.support.waiting import wait_for

DATA = Path(__file__).resolve().parents[1] / "data"
UNIT = DATA / "systemd" / "roaming-homes.service"
SYSTEMD = "/usr/lib/systemd/systemd"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this work tree's entry point.
    unit = tmp_path / "roaming-homes.service"
    entry = Path(sys.executable).parent / "roaming-homes"
    unit.write_text(UNIT.read_text().replace("/usr/bin/roaming-homes", str(entry)))
    # ... and that `man` finds every man: page in Documentation=: ours, as the packages build
    # them (generated here), before the system's.
    man = tmp_path / "man"
    for page in manpage.write(tmp_path / "pages"):
        section = man / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        page.rename(section / page.name)
    runtime = Path(tempfile.mkdtemp(prefix="rh-verify-", dir="/tmp"))
    try:
        result = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)],
                                env={**os.environ, "XDG_RUNTIME_DIR": str(runtime),
                                     "MANPATH": f"{man}:"},  # then man's own path
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_hooks_are_posix_sh_and_do_nothing_while_the_daemon_runs() -> None:
    for hook in (DATA / "profile.d" / "roaming-homes.sh", DATA / "roaming-homes-logout"):
        assert subprocess.run(["sh", "-n", str(hook)], check=False).returncode == 0
        assert "sync --skip-if-daemon" in hook.read_text()
    assert os.access(DATA / "roaming-homes-logout", os.X_OK)


class UserManager:
    """`systemd --user` in a private mount namespace, with a temporary home and config."""

    def __init__(self, base: Path) -> None:
        self.config_home = base / "manager-config"
        self.unit_dir = self.config_home / "systemd" / "user"
        self.unit_dir.mkdir(parents=True)
        self.runtime = Path(tempfile.mkdtemp(prefix="rh-um-", dir="/tmp"))
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base),
                    "XDG_CONFIG_HOME": str(self.config_home),
                    "XDG_RUNTIME_DIR": str(self.runtime), "LANG": "C.UTF-8"}
        script = ("mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && "
                  f"exec {SYSTEMD} --user")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      script], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: self.systemctl("is-system-running").stdout.strip()
                 in ("running", "degraded") or self.proc.poll() is not None, 30,
                 "systemd --user to run")
        assert self.proc.poll() is None, "systemd --user exited"

    def systemctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "systemctl", "--user",
                               *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[UserManager]:
    if os.geteuid() != 0 or not Path(SYSTEMD).exists() or not shutil.which("nsenter"):
        pytest.skip("needs root, systemd and util-linux (unshare, nsenter)")
    um = UserManager(tmp_path)
    yield um
    um.close()


def install_unit(manager: UserManager, user: Setup) -> None:
    """The shipped unit, with a drop-in that runs this work tree's code in the test's world."""
    shutil.copy(UNIT, manager.unit_dir / UNIT.name)
    dropin = manager.unit_dir / f"{UNIT.name}.d"
    dropin.mkdir()
    env = "".join(f'Environment="{key}={value}"\n' for key, value in user.env.items())
    (dropin / "test.conf").write_text(
        f"[Service]\nExecStart=\nExecStart={sys.executable} -m roaming_homes daemon\n{env}")
    assert manager.systemctl("daemon-reload").returncode == 0


def test_the_unit_runs_under_systemd_user_and_stop_is_the_logout_pass(
        manager: UserManager, user: Setup) -> None:
    # A long interval: the login pass and the logout pass are the only ones.
    user.configure(sync={"interval": 3600, "logout_timeout": 10})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "before-login.txt").write_text("login")
    install_unit(manager, user)

    started = manager.systemctl("start", UNIT.name)

    assert started.returncode == 0, started.stderr
    wait_for(lambda: ": in sync" in manager.show(UNIT.name, "StatusText"), 30, "STATUS=")
    status = manager.systemctl("status", "--no-pager", UNIT.name).stdout
    assert 'Status: "last sync ' in status and ': in sync"' in status
    assert (user.server_home / "Documents" / "before-login.txt").read_text() == "login"

    (user.home / "Documents" / "at-logout.txt").write_text("final")
    began = time.monotonic()
    stopped = manager.systemctl("stop", UNIT.name)

    assert stopped.returncode == 0, stopped.stderr
    assert time.monotonic() - began < 10
    assert (user.server_home / "Documents" / "at-logout.txt").read_text() == "final"
    assert manager.show(UNIT.name, "Result") == "success"
    assert manager.show(UNIT.name, "ExecMainStatus") == "0"
