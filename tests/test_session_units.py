"""The shipped unit and login/logout hooks, under a real `systemd --user` manager where it counts.

The manager (tests/support/usermanager.py) runs in a private mount namespace whose
/run/systemd/system makes it believe it was booted with systemd (docs/testing.md §7).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from roaming_homes import manpage
from tests.support.homes import Setup
from tests.support.usermanager import DATA, UNIT, UserManager, install_unit
from tests.support.waiting import wait_for


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
