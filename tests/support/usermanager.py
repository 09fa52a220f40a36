"""`systemd --user` in a private mount namespace, and the shipped unit installed in it.

The manager's /run/systemd/system (a tmpfs of its own namespace) makes it believe it was booted
with systemd; its config, runtime dir and home are temporary, so the machine's own units and
~/.config are never read or written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.homes import Setup
from tests.support.waiting import wait_for

DATA = Path(__file__).resolve().parents[2] / "data"
UNIT = DATA / "systemd" / "roaming-homes.service"
SYSTEMD = "/usr/lib/systemd/systemd"


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


def install_unit(manager: UserManager, user: Setup, leave_out: tuple[str, ...] = ()) -> None:
    """The shipped unit, with a drop-in that runs this work tree's code in the test's world
    (the user's environment but `leave_out`, which the manager's own environment may give)."""
    shutil.copy(UNIT, manager.unit_dir / UNIT.name)
    dropin = manager.unit_dir / f"{UNIT.name}.d"
    dropin.mkdir()
    env = "".join(f'Environment="{key}={value}"\n' for key, value in user.env.items()
                  if key not in leave_out)
    (dropin / "test.conf").write_text(
        f"[Service]\nExecStart=\nExecStart={sys.executable} -m roaming_homes daemon\n{env}")
    assert manager.systemctl("daemon-reload").returncode == 0
