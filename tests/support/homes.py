"""A user's world in a temporary directory: home, XDG dirs, server side, config; and the CLI.

Everything the CLI touches is redirected with HOME, XDG_* and ROAMING_HOMES_CONFIG, so tests
never read or write the machine's /etc or the real home.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roaming_homes.paths import Locations
from tests.support.procfs import masters_and_others, processes_with
from tests.support.sshd import SshServer

CLI = [sys.executable, "-m", "roaming_homes"]
_WAIT_FOR_OTHERS = 30  # seconds a user's processes get to end at the end of a test


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def to_toml(config: dict[str, dict[str, Any]]) -> str:
    return "".join(
        f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items()) + "\n"
        for section, keys in config.items())


class Setup:
    """One user: a local home synced with a server home (over `sshd`, or a local root)."""

    def __init__(self, base: Path, sshd: SshServer | None) -> None:
        self.base = base
        self.sshd = sshd
        self.home = base / "home"
        self.server_home = base / "server-home"
        self.config_path = base / "roaming-homes.toml"
        # A short runtime dir: the ssh control socket must fit in 108 bytes.
        self.runtime = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        self.state_home = base / "state"
        for d in (self.home, self.server_home, self.state_home):
            d.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_CONFIG_DIRS": str(base / "etc-xdg"),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "ROAMING_HOMES_CONFIG": str(self.config_path),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
            "LANG": "C.UTF-8",
        }
        self.config: dict[str, dict[str, Any]] = {}
        self.configure()

    def configure(self, **sections: dict[str, Any]) -> None:
        """Write the config: sensible test defaults, updated by `sections`."""
        if self.sshd is not None:
            server: dict[str, Any] = {
                "host": "127.0.0.1", "port": self.sshd.port, "user": self.sshd.user,
                "home": str(self.server_home), "connect_timeout": 3,
                "ssh_options": self.sshd.ssh_options()}
        else:
            server = {"root": str(self.server_home)}
        config = {"server": server,
                  "sync": {"paths": ["Documents"], "excluded_users": []},
                  "notify": {"enabled": False}}
        for section, keys in sections.items():
            config.setdefault(section, {}).update(keys)
        self.config = config
        self.config_path.write_text(to_toml(config))

    @property
    def user_config(self) -> Path:
        """The user's own configuration file, where the program looks for it."""
        return Locations.from_env(self.env).user_config

    def configure_user(self, text: str) -> Path:
        """Write the user's own file, replacing it at once (as editors save); returns its path."""
        path = self.user_config
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.draft")
        draft.write_text(text)
        draft.rename(path)
        return path

    def unknown_key_options(self) -> list[str]:
        """The sshd's client options with a fresh key that the server does not accept."""
        assert self.sshd is not None
        stranger = self.base / "stranger_key"
        if not stranger.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                           check=True)
        options = self.sshd.ssh_options()
        options[options.index(str(self.sshd.user_key))] = str(stranger)
        return options

    @property
    def unison_dir(self) -> Path:
        return self.state_home / "roaming-homes" / "unison"

    @property
    def state_dir(self) -> Path:
        return self.state_home / "roaming-homes"

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
            prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """The CLI with `args`; `prefix` runs it through another command (e.g. `nsenter`)."""
        return subprocess.run([*prefix, *CLI, *args], env={**self.env, **(env or {})},
                              text=True, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)

    def sync(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("sync", *args, **kwargs)

    def sync_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.sync("--json", *args)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def status(self) -> dict[str, Any]:
        result = self.run("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def close_connection(self) -> None:
        """Close the shared ssh connection this user opened (the next pass opens a new one)."""
        for sock in (self.runtime / "roaming-homes").glob("ssh-*"):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "localhost"],
                           capture_output=True, check=False, timeout=10)

    def close(self) -> None:
        """Let what the test started for this user end, close the shared ssh connection, and
        remove the runtime dir.

        A pass a test set off in the background (a notification's action, in the listener
        the CLI leaves running) may still run when the test is done with what it waited for:
        removed under it, the runtime dir was made again and a master opened there that lived
        for minutes after the test. So every process of this user (whose environment names this
        runtime dir) but a master and its children (a `ProxyCommand`) gets `_WAIT_FOR_OTHERS`
        seconds to end; then the masters are asked to exit, and what is left is killed. A test
        stops its daemons before this: a daemon would be waited for to the end."""
        marker = f"XDG_RUNTIME_DIR={self.runtime}"
        deadline = time.monotonic() + _WAIT_FOR_OTHERS
        while time.monotonic() < deadline and masters_and_others(marker)[1]:
            time.sleep(0.1)
        self.close_connection()
        for pid in processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.runtime, ignore_errors=True)


def tree(root: Path) -> dict[str, str]:
    """Every file, link and directory below `root`: relative path -> content/target/'<dir>'."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "<dir>"
            else:
                found[rel] = path.read_bytes().hex()
    return found
