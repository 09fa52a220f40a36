"""`sudo roaming-homes check --user NAME`: another user's set-up, checked as that user.

A throwaway system user of this test's own (useradd in the fixture, userdel after) with a
home under /tmp: their config, key and known_hosts, and the state of their last sync, all
theirs; the server is the session's test sshd (logged into as its own user, root).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.homes import CLI, to_toml
from tests.support.sshd import SshServer

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd (makes a temporary user)")


@dataclass
class OtherUser:
    name: str
    home: Path
    config: Path
    server_home: Path

    def run(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI, started by root (or by `user`, with the system's python3: this one may be
        in root's home) with root's own HOME and XDG dirs: the program must not use them."""
        command = [*CLI, *args] if user is None else [SYSTEM_PYTHON, *CLI[1:], *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root",
               "XDG_STATE_HOME": "/nonexistent/root-state",
               "XDG_CONFIG_HOME": "/nonexistent/root-config",
               "XDG_RUNTIME_DIR": "/nonexistent/root-runtime",
               "ROAMING_HOMES_CONFIG": str(self.config),
               "PYTHONPATH": str(ROOT / "src"), "LANG": "C.UTF-8"}
        return subprocess.run(command, env=env, cwd="/", user=user, text=True,
                              capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                              check=False)


def _give(path: Path, entry: pwd.struct_passwd, mode: int) -> None:
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


@pytest.fixture
def other_user(sshd: SshServer) -> Iterator[OtherUser]:
    name = f"rhchk{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                    "--user-group", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        ssh = home / "keys"
        ssh.mkdir()
        shutil.copy(sshd.user_key, ssh / "id")
        shutil.copy(sshd.known_hosts, ssh / "known_hosts")
        for path, mode in ((ssh, 0o700), (ssh / "id", 0o600), (ssh / "known_hosts", 0o644)):
            _give(path, entry, mode)
        server_home = base / "server-home"  # on the server, its login (root) owns it
        server_home.mkdir()
        config = home / "roaming-homes.toml"
        config.write_text(to_toml({
            "server": {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                       "home": str(server_home), "connection_reuse": 0,
                       "ssh_options": ["-F", "none", "-i", str(ssh / "id"),
                                       "-o", "IdentitiesOnly=yes",
                                       "-o", f"UserKnownHostsFile={ssh / 'known_hosts'}"]},
            "sync": {"paths": ["Documents"], "excluded_users": []},
            "notify": {"enabled": False}}))
        _give(config, entry, 0o600)
        yield OtherUser(name, home, config, server_home)
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)
        shutil.rmtree(base)


def _write_last_success(user: OtherUser) -> str:
    """Their last successful sync, where their passwd home puts it (~/.local/state)."""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    entry = pwd.getpwnam(user.name)
    state = user.home / ".local" / "state" / "roaming-homes"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"last_success": stamp}))
    for path in (user.home / ".local", user.home / ".local" / "state", state,
                 state / "state.json"):
        _give(path, entry, 0o700 if path.is_dir() else 0o600)
    return stamp


def test_root_checks_another_user_as_that_user(other_user: OtherUser) -> None:
    stamp = _write_last_success(other_user)
    result = other_user.run("check", "--user", other_user.name, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    checks = {item["name"]: item for item in report["checks"]}
    for name in ("config", "server reachable", "host key", "ssh login", "server home",
                 "unison", "replica markers", "last sync"):
        assert checks[name]["status"] == "ok", checks[name]
    assert str(other_user.config) in checks["config"]["detail"]
    # Their state, found from their passwd entry, not root's XDG_STATE_HOME.
    assert stamp in checks["last sync"]["detail"]
    assert report["ok"] is (result.returncode == 0)
    text = other_user.run("check", "--user", other_user.name)
    assert text.stdout.splitlines()[0].startswith("✓ config: valid")


def test_files_only_root_may_read_stay_unread(other_user: OtherUser) -> None:
    """The configuration is opened as the user: a file of root's (0600) is refused."""
    os.chown(other_user.config, 0, 0)
    result = other_user.run("check", "--user", other_user.name)
    assert result.returncode == 78
    assert result.stdout.startswith(f"✗ config: {other_user.config}: cannot read: ")
    assert "Permission denied" in result.stdout


def test_only_root_may_check_another_user(other_user: OtherUser) -> None:
    result = other_user.run("check", "--user", "root", user=other_user.name)
    assert result.returncode == 64
    assert result.stdout == ""
    assert result.stderr == ("roaming-homes: error: --user root: only root may check another "
                             "user's set-up (sudo roaming-homes check --user root, or run "
                             "`roaming-homes check` as that user)\n")


def test_an_unknown_user_is_a_usage_error(other_user: OtherUser) -> None:
    result = other_user.run("check", "--user", f"{other_user.name}x")
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr == f"roaming-homes: error: --user {other_user.name}x: no such user\n"
