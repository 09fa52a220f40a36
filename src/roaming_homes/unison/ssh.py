"""Reaching the server: ssh options, the reachability probe and the shared connection.

Every pass first makes sure the server answers, so that an offline laptop is told apart from a
broken setup within `connect_timeout` (exit 75 vs. 3). The probe opens an ssh master connection
(ControlMaster) in a private runtime directory and unison's own ssh goes through it, so a pass
pays for one handshake at most, and none while the master lives (`connection_reuse`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roaming_homes.errors import RoamingHomesError
from roaming_homes.outcome import EXIT_CODES, Reason, result_of
from roaming_homes.paths import private_dir
from roaming_homes.unison import runner

# Longest path a unix socket can bind to is 108 bytes; leave room for ssh's temporary suffix.
_MAX_SOCKET_PATH = 90
_OFFLINE_MARKERS = (
    "connection refused", "timed out", "no route to host", "network is unreachable",
    "could not resolve hostname", "name or service not known",
    "temporary failure in name resolution", "connection closed by", "connection reset",
    "broken pipe", "kex_exchange_identification",
)


@dataclass(frozen=True)
class Server:
    """Where the server side of this home is: an ssh destination, or a local directory."""

    host: str
    port: int
    user: str
    home: str
    local_root: str
    connect_timeout: float
    ssh_options: tuple[str, ...]
    connection_reuse: int

    @classmethod
    def from_config(cls, server: dict[str, Any]) -> Server:
        return cls(
            host=server["host"], port=server["port"], user=server["user"], home=server["home"],
            local_root=server["root"], connect_timeout=server["connect_timeout"],
            ssh_options=tuple(server["ssh_options"]), connection_reuse=server["connection_reuse"],
        )

    @property
    def is_local(self) -> bool:
        return bool(self.local_root)

    @property
    def unison_root(self) -> str:
        """The server replica as a unison root."""
        if self.is_local:
            return self.local_root
        return f"ssh://{self.user}@{self.host}:{self.port}/{self.home}"

    @property
    def label(self) -> str:
        """How the server is named to the user."""
        if self.is_local:
            return self.local_root
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.host}{port}:{self.home}"


def control_path(server: Server, control_dir: Path) -> Path | None:
    """The shared connection's socket, or None when reuse is off or the path would be too long."""
    if server.is_local or server.connection_reuse <= 0:
        return None
    path = control_dir / "ssh-%C"  # %C: hash of host, port, user; 40 characters
    if len(os.fsencode(path)) - 2 + 40 > _MAX_SOCKET_PATH:
        return None
    return path


def ssh_options(server: Server, socket: Path | None) -> list[str]:
    """Options for every ssh we (or unison) start; ssh takes the first value given for a key.

    BatchMode and ConnectTimeout come first so that no configured option can make ssh prompt
    or hang; the keep-alives and connection sharing come after the administrator's options so
    those can tune them.
    """
    timeout = max(1, round(server.connect_timeout))
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}", *server.ssh_options,
               "-o", f"ServerAliveInterval={timeout}", "-o", "ServerAliveCountMax=3"]
    if socket is not None:
        options += ["-o", f"ControlPath={socket}", "-o", "ControlMaster=no"]
    return options


def _destination(server: Server) -> list[str]:
    return ["-p", str(server.port), "-l", server.user, server.host]


def _control(server: Server, socket: Path, operation: str) -> list[str]:
    """ssh asking the shared connection's master to `check` itself or `exit`."""
    return ["ssh", *ssh_options(server, socket), "-O", operation, *_destination(server)]


class ConnectError(RoamingHomesError):
    """The server could not be used; `reason` says why, for callers that diagnose (`check`);
    `details` are lines for support (e.g. the host keys' fingerprints)."""

    def __init__(self, message: str, reason: Reason, details: tuple[str, ...] = ()) -> None:
        super().__init__(message, EXIT_CODES[result_of(reason)])
        self.reason = reason
        self.details = details


_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def _known_fingerprints(server: Server) -> list[str]:
    """The fingerprints this computer's known_hosts files hold for the server (ssh -G says
    which files the options in force name)."""
    name = server.host if server.port == 22 else f"[{server.host}]:{server.port}"
    try:
        config = runner.run(["ssh", "-G", *ssh_options(server, None), *_destination(server)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        files: list[str] = next((line.split()[1:] for line in config.stdout.splitlines()
                                 if line.startswith("userknownhostsfile ")), [])
        found = [runner.run(["ssh-keygen", "-l", "-F", name, "-f", os.path.expanduser(path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=10).stdout for path in files]
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(dict.fromkeys(_FINGERPRINT.findall("".join(found))))


def _host_key_failure(server: Server, stderr: str, changed: bool) -> ConnectError:
    """This computer refused the server's identity: never a thing to accept by hand."""
    offered = list(dict.fromkeys(_FINGERPRINT.findall(stderr)))
    details = (f"host key offered by {server.host}: {', '.join(offered) or 'not shown'}",
               f"host key known here: {', '.join(_known_fingerprints(server)) or 'none'}")
    if changed:
        return ConnectError(f"the identity of the server {server.host} changed (its host key is "
                            "not the one this computer knows): nothing was synced; contact "
                            "support", Reason.HOST_KEY_CHANGED, details)
    return ConnectError(f"the identity of the server {server.host} is not known to this "
                        "computer (no trusted host key): nothing was synced; contact support",
                        Reason.HOST_KEY, details)


def _classify_failure(server: Server, stderr: str) -> ConnectError:
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "ssh failed without a message"
    lowered = text.lower()
    if "identification has changed" in lowered:
        return _host_key_failure(server, text, changed=True)
    if "host key verification failed" in lowered:
        return _host_key_failure(server, text, changed=False)
    if "permission denied" in lowered:
        return ConnectError(
            f"ssh login to {server.user}@{server.host} refused without a password ({last})",
            Reason.AUTH_REFUSED)
    if any(marker in lowered for marker in _OFFLINE_MARKERS):
        return ConnectError(f"server {server.host} unreachable: {last}",
                            Reason.SERVER_UNREACHABLE)
    return ConnectError(f"ssh to {server.host} failed: {last}",
                        Reason.SSH_FAILED)


def connect(server: Server, control_dir: Path) -> Path | None:
    """Make sure the server answers; returns the shared connection's socket, if any.

    Raises ConnectError with TRY_LATER when the server is unreachable (or a local root is
    absent, e.g. an unmounted share) and FAILED when it answers but refuses us.
    """
    if server.is_local:
        if not Path(server.local_root).is_dir():
            raise ConnectError(
                f"server root {server.local_root} is not available (not mounted?)",
                Reason.SERVER_UNREACHABLE)
        return None
    socket = control_path(server, control_dir)
    base = ["ssh", *ssh_options(server, None)]
    if socket is not None:
        try:
            private_dir(control_dir)
        except RoamingHomesError as exc:
            raise ConnectError(exc.message, Reason.RUNTIME_DIR) from None
        # No socket in the private directory means no master: skip asking ssh (a process start
        # saved on the first pass of a session and on every offline pass).
        if any(control_dir.glob("ssh-*")):
            check = runner.run(_control(server, socket, "check"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=False)
            if check.returncode == 0:
                return socket
        command = [*base, "-o", "ControlMaster=yes", "-o", f"ControlPath={socket}",
                   "-o", f"ControlPersist={server.connection_reuse}", "-f", "-N"]
    else:
        command = [*base, "-o", "ControlMaster=no"]
    command += [*_destination(server), *([] if socket else ["true"])]
    # The master forks into the background holding its stdio: capture stderr in a file, not a
    # pipe, or we would wait for the master to exit.
    with tempfile.TemporaryFile() as err:
        try:
            result = runner.run(command, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err,
                                timeout=server.connect_timeout * 2 + 10, check=False)
        except subprocess.TimeoutExpired:
            raise ConnectError(f"server {server.host} did not answer in time",
                               Reason.SERVER_UNREACHABLE) from None
        except FileNotFoundError:
            raise ConnectError("ssh is not installed (openssh-client)",
                               Reason.SSH_FAILED) from None
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if result.returncode != 0:
        raise _classify_failure(server, stderr)
    return socket


def remote_command(server: Server, socket: Path | None, argv: list[str]) -> list[str]:
    """ssh running `argv` on the server, through the shared connection when there is one.

    ssh hands the remote side one command line for the user's shell, so every word is quoted.
    """
    return ["ssh", *ssh_options(server, socket), *_destination(server), "--",
            *(shlex.quote(arg) for arg in argv)]


def disconnect(server: Server, control_dir: Path) -> None:
    """Close the shared connection if one is open (the daemon does, at its end).

    Otherwise the master would outlive the session by `connection_reuse` seconds, and keep
    systemd waiting for the last process of the stopped service.
    """
    socket = control_path(server, control_dir)
    if socket is None:
        return
    # No ssh, or a wedged master: it ends with ControlPersist anyway.
    with contextlib.suppress(subprocess.TimeoutExpired, FileNotFoundError):
        runner.run(_control(server, socket, "exit"), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                   check=False)


def run_remote(server: Server, socket: Path | None, script: str,
               abort: threading.Event | None = None) -> str:
    """Run a sh script on the server over the shared connection; returns its stdout.

    The login shell gets `sh -c <script>` (each word quoted), so the script runs under a
    POSIX shell whatever the user's shell is. Raises ConnectError like `connect`; setting
    `abort` (a logout whose time is up) ends the command at once.
    """
    command = remote_command(server, socket, ["sh", "-c", script])
    deadline = time.monotonic() + server.connect_timeout * 4 + 60
    with runner.start(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                stopped = abort is not None and abort.is_set()
                if stopped or time.monotonic() > deadline:
                    # Only wait for ssh itself: the shared master holds our pipes too (ssh
                    # hands its stdio over to it), so they end only when the master does.
                    proc.kill()
                    proc.wait()
                    why = "stopped" if stopped else "did not answer in time"
                    raise ConnectError(f"server {server.host} {why}",
                                       Reason.SERVER_UNREACHABLE) from None
    if proc.returncode != 0:
        raise _classify_failure(server, err.decode(errors="replace"))
    return out.decode(errors="replace")
