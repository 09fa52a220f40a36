"""A throwaway sshd on loopback, with its own keys and config (never the system's).

Used by the test fixtures and by the benchmarks (bench/ imports it, it is not copied).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procfs import parent_of, processes

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (sshd's per-connection processes)."""
    return [child for child, read in processes("stat") if parent_of(read["stat"]) == pid]


@dataclass
class SshServer:
    """sshd listening on `listen`:<port>, accepting one throwaway user key for `user`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=lambda: pwd.getpwuid(os.getuid()).pw_name)
    server_unison_dir: Path | None = None
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)  # more variables for sessions (no spaces)
    listen: str = "127.0.0.1"  # e.g. an address inside a network namespace
    wrapper: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NAME]
    # sshd's MaxStartups: 100 lets every test's logins in; "10:30:100" is sshd's default, which
    # turns logins away at a login storm.
    max_startups: str = "100"
    # Whether sessions get UNISON=server_unison_dir; without it each ssh user's unison keeps its
    # archives in its own ~/.unison, as on a real server (the fleet benchmark's many users).
    unison_env: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = self.workdir / "host_key"
        self.user_key = self.workdir / "user_key"
        self.known_hosts = self.workdir / "known_hosts"
        self.config_file = self.workdir / "sshd_config"
        self.log_file = self.workdir / "sshd.log"
        if self.server_unison_dir is None:
            self.server_unison_dir = self.workdir / "server-unison"
        for key in (self.host_key, self.user_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                               check=True)
        (self.workdir / "authorized_keys").write_text(
            (self.workdir / "user_key.pub").read_text())
        host_pub = (self.workdir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.listen}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def ssh_options(self) -> list[str]:
        """What a client needs to log in: our key, our known_hosts, no user ssh config."""
        return ["-F", "none", "-i", str(self.user_key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}"]

    def write_config(self) -> None:
        self.config_file.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.listen}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            # The server's unison keeps its archives in server_unison_dir, not in the real
            # ~/.unison (unless unison_env is off).
            + self._set_env() +
            f"MaxStartups {self.max_startups}\nMaxSessions 100\n"
            f"{self.extra_config}")

    def _set_env(self) -> str:
        """sshd takes the first SetEnv line only: every variable goes on this one.

        SHLVL=1 (unless `env` sets it): Debian's bash reads ~/.bashrc for every command ssh
        runs, unless it counts itself as a nested shell (SHLVL 2 once it starts). This machine's
        runs `pyenv init` (0.15 s) with a `pyenv rehash` that takes a lock: commands run side by
        side waited for each other, seconds each under a full test run, and a benchmark counted
        what a server's account does not cost."""
        names = ([f"UNISON={self.server_unison_dir}"] if self.unison_env else []) + [
            f"{name}={value}" for name, value in {"SHLVL": "1", **self.env}.items()]
        return f"SetEnv {' '.join(names)}\n"

    def start(self) -> SshServer:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.write_config()
        subprocess.run([SSHD, "-t", "-f", str(self.config_file)], check=True)
        self.proc = subprocess.Popen([*self.wrapper, SSHD, "-D", "-f", str(self.config_file),
                                      "-E", str(self.log_file)], start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.listen, self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sshd exited: {self.log_file.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port}")

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        return _children(self.proc.pid) if self.proc else []

    def freeze(self) -> None:
        """SIGSTOP the listener and every open connection: the server stops answering."""
        assert self.proc is not None
        for pid in [self.proc.pid, *self.connection_pids()]:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        for pid in [self.proc.pid, *self.connection_pids()]:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the listener and every connection it accepted (ours only)."""
        if self.proc is None:
            return
        for pid in [*self.connection_pids(), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
