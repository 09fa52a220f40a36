"""Reaching the server: ssh options, the reachability probe and the shared connection.

Every pass first makes sure the server answers, so that an offline laptop is told apart from a
broken setup within `connect_timeout` (exit 75 vs. 3). The probe opens an ssh master connection
(ControlMaster) in a private runtime directory and unison's own ssh goes through it, so a pass
pays for one handshake at most, and none while the master lives (`connection_reuse`).

The master is a process of its own that outlives the pass; it can die (killed, crashed) and
leave its socket behind, or hang (stopped, wedged). Every pass asks it first, bounded: a stale
socket is removed and a hung master we started is stopped, before a new master is started in
its place (`connect`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roaming_homes.errors import RoamingHomesError
from roaming_homes.files import try_flock
from roaming_homes.outcome import EXIT_CODES, Reason, result_of
from roaming_homes.paths import private_dir
from roaming_homes.text import escape
from roaming_homes.unison import compression, kerberos, mux, runner
from roaming_homes.unison.compression import Setting
from roaming_homes.unison.mux import Master

log = logging.getLogger(__name__)

# Longest path a unix socket can bind to is 108 bytes; leave room for ssh's temporary suffix.
_MAX_SOCKET_PATH = 90
# A master answers a health check on its local socket in milliseconds, whatever the network
# does: one that has not answered in this many seconds is stopped or wedged, and would hang
# unison's ssh the same way.
_CONTROL_TIMEOUT = 5.0
# /proc/net/unix: the flag of a listening socket (__SO_ACCEPTCON).
_ACCEPTCON = 0x10000
_OFFLINE_MARKERS = (
    "connection refused", "timed out", "no route to host", "network is unreachable",
    "could not resolve hostname", "name or service not known",
    "temporary failure in name resolution", "connection closed by", "connection reset",
    "broken pipe", "kex_exchange_identification",
)
# sshd turns logins away before authentication when too many are pending (MaxStartups, by
# default 10:30:100): it accepts the TCP connection, then closes or resets it before or during
# the key exchange. A TCP connection that fails says "connect to host" instead (see
# `_turned_away`).
_TURNED_AWAY_MARKERS = ("kex_exchange_identification:",)
_TURNED_AWAY_LINES = ("connection closed by ", "connection reset by ")
# A server that turned the login away is asked again after a delay that doubles from
# BUSY_FIRST_DELAY up to BUSY_MAX_DELAY, half of it random (`busy_retry_delay`); no try starts
# later than BUSY_PATIENCE x connect_timeout after the first one.
BUSY_FIRST_DELAY = 0.5
BUSY_MAX_DELAY = 8.0
BUSY_PATIENCE = 10


@dataclass(frozen=True)
class Server:
    """Where the server side of this home is: an ssh destination, or a local directory.

    `hosts` are the front-ends that serve the home, in the order they are tried
    (`unison.frontends`); `host` is the one this value connects to, the first until one is
    chosen; `name` names the server in this computer's records (`stable_root`): the first
    listed front-end, whichever serves a pass."""

    host: str
    port: int
    user: str
    home: str
    local_root: str
    connect_timeout: float
    ssh_options: tuple[str, ...]
    connection_reuse: int
    kerberos: str = "auto"  # server.kerberos: whether the login needs a ticket (see kerberos)
    compression: Setting = Setting.AUTO  # server.compression (see unison.compression)
    hosts: tuple[str, ...] = ()
    name: str = ""
    watch_idle_timeout: int = 300  # server.watch_idle_timeout (see actions.watch)

    @classmethod
    def from_config(cls, server: dict[str, Any]) -> Server:
        listed = tuple(server["host"])
        hosts = (per_user_order(listed, server["user"]) if server["host_order"] == "per-user"
                 else listed)
        return cls(
            host=hosts[0] if hosts else "", port=server["port"], user=server["user"],
            home=server["home"], local_root=server["root"],
            connect_timeout=server["connect_timeout"], ssh_options=tuple(server["ssh_options"]),
            connection_reuse=server["connection_reuse"], kerberos=server["kerberos"],
            compression=Setting(server["compression"]),
            hosts=hosts, name=listed[0] if listed else "",
            watch_idle_timeout=server["watch_idle_timeout"],
        )

    @property
    def is_local(self) -> bool:
        return bool(self.local_root)

    @property
    def unison_root(self) -> str:
        """The server replica as a unison root, through this value's front-end."""
        return self._root(self.host)

    @property
    def stable_root(self) -> str:
        """The server replica as this computer's records name it, whichever front-end serves
        a pass: as a root through `name` (the one host of a single server, so records kept
        before host lists existed still match)."""
        return self._root(self.name or self.host)

    def _root(self, host: str) -> str:
        if self.is_local:
            return self.local_root
        return f"ssh://{self.user}@{host}:{self.port}/{self.home}"

    @property
    def label(self) -> str:
        """How the server is named to the user."""
        if self.is_local:
            return self.local_root
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.host}{port}:{self.home}"


def per_user_order(hosts: Sequence[str], user: str) -> tuple[str, ...]:
    """`hosts` rotated by a hash of `user`: the same order on every computer of the user, and
    users spread evenly over the front-ends as the first to try."""
    if not hosts:
        return ()
    start = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % len(hosts)
    return (*hosts[start:], *hosts[:start])


def control_path(server: Server, control_dir: Path) -> Path | None:
    """The shared connection's socket, or None when reuse is off or the path would be too long.

    We name it, not ssh (%C): a master that died leaves its socket behind, and we must know the
    file to remove it. The name hashes what %C does (this computer's name, the server's host,
    port and user), so each server, and each computer sharing a home, has a socket of its own.
    """
    if server.is_local or server.connection_reuse <= 0:
        return None
    key = "\0".join((os.uname().nodename, server.host, str(server.port), server.user))
    path = control_dir / f"ssh-{hashlib.sha256(key.encode()).hexdigest()[:40]}"
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        return None
    return path


def ssh_options(server: Server, socket: Path | None) -> list[str]:
    """Options for every ssh we (or unison) start; ssh takes the first value given for a key.

    BatchMode and ConnectTimeout come first so that no configured option can make ssh prompt
    or hang; the keep-alives and connection sharing come after the administrator's options so
    those can tune them.

    With a `socket`, ssh goes through the shared connection or not at all: when the master is
    gone (its keep-alives found the link dead), ssh would otherwise open a connection of its
    own and wait out ConnectTimeout once more on the same dead link. Its ProxyCommand (used
    only for a connection of its own) is `false`, which fails at once: the pass ends with the
    connection lost, and the next one opens a new shared connection.
    """
    timeout = max(1, round(server.connect_timeout))
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}"]
    if socket is not None:
        options += ["-o", "ProxyCommand=false"]
    options += [*server.ssh_options, "-o", f"ServerAliveInterval={timeout}",
                "-o", "ServerAliveCountMax=3"]
    if socket is not None:
        options += ["-o", f"ControlPath={socket}", "-o", "ControlMaster=no"]
    return options


def _destination(server: Server) -> list[str]:
    return ["-p", str(server.port), "-l", server.user, server.host]


def _control(server: Server, socket: Path, operation: str) -> list[str]:
    """ssh asking the shared connection's master to `exit` (a health check needs no ssh:
    `mux.alive`)."""
    return ["ssh", *ssh_options(server, socket), "-O", operation, *_destination(server)]


def _master_command(server: Server, socket: Path, compress: bool | None) -> list[str]:
    """ssh starting the shared connection's master; it forks into the background once in.
    `compress`: whether it compresses (None: as ssh's own settings say)."""
    return ["ssh", *ssh_options(server, None), "-o", "ControlMaster=yes",
            "-o", f"ControlPath={socket}", "-o", f"ControlPersist={server.connection_reuse}",
            *(compression.option(compress) if compress is not None else []),
            "-f", "-N", *_destination(server)]


def _start_timeout(server: Server) -> float:
    """How long starting ssh may take: ConnectTimeout covers the TCP connect and the banner,
    this covers the key exchange and the login after them too."""
    return server.connect_timeout * 2 + 10


def _patient_timeout(server: Server) -> float:
    """How long `_open_patiently` may take: the last try starts within the patience for a busy
    server and is bounded like any."""
    return BUSY_PATIENCE * server.connect_timeout + _start_timeout(server)


def master_state(returncode: int | None) -> Master:
    """The master's state from the exit code of `ssh -O`, None when it timed out.

    The code and the clock decide, not ssh's message: ssh exits 255 for a socket nobody
    listens on, one that is not there and one that is not a socket alike, and waits forever on
    a master that never answers.
    """
    if returncode is None:
        return Master.HUNG
    return Master.ANSWERED if returncode == 0 else Master.STALE


def listeners(unix_table: str, socket: Path) -> set[str]:
    """The listening sockets bound at `socket`, from the text of /proc/net/unix, named as in
    /proc/PID/fd (`socket:[INODE]`).

    ssh binds its master's socket as `<socket>.<16 letters or digits>` and then links it to
    `<socket>`, so the kernel knows it by the first name (an older ssh by `<socket>` itself).
    """
    name = os.fspath(socket)
    found = set()
    for line in unix_table.splitlines()[1:]:
        fields = line.split(maxsplit=7)  # Num RefCount Protocol Flags Type St Inode Path
        if len(fields) < 8 or not int(fields[3], 16) & _ACCEPTCON:
            continue
        path, suffix = fields[7], fields[7][len(name) + 1:]
        if path == name or (path.startswith(f"{name}.") and suffix.isalnum()):
            found.add(f"socket:[{fields[6]}]")
    return found


def is_master_command(argv: Sequence[str], socket: Path) -> bool:
    """Whether a command line is an ssh master for `socket`, as `connect` starts one."""
    return (bool(argv) and os.path.basename(argv[0]) == "ssh"
            and "ControlMaster=yes" in argv and f"ControlPath={socket}" in argv)


def _is_our_master(pid: int, socket: Path, held: set[str]) -> bool:
    """Whether process `pid` is one of our masters for `socket`: our user's, started as
    `connect` starts a master, and listening on one of the `held` sockets (see `listeners`)."""
    proc = Path("/proc", str(pid))
    try:
        if proc.stat().st_uid != os.geteuid():
            return False
        argv = [os.fsdecode(arg) for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        return (is_master_command(argv, socket)
                and any(os.readlink(fd) in held for fd in (proc / "fd").iterdir()))
    except OSError:  # gone, or not ours to look at
        return False


def _stop_hung_masters(socket: Path) -> list[int]:
    """SIGKILL our masters listening at `socket` and wait (bounded) until they are gone;
    returns their PIDs.

    Found by the socket they listen on (the kernel's table), not by a PID file or a name: only a
    master we started listens there. Each is signalled through a pidfd opened before it is
    checked again, so a PID reused in between is never hit. SIGKILL, because a stopped process
    acts on nothing else, and a hung master has nothing left to save: its sessions already
    cannot be used. Its end closes its TCP connection, so the server's sshd session ends too.
    """
    try:
        held = listeners(os.fsdecode(Path("/proc/net/unix").read_bytes()), socket)
    except OSError:
        return []
    if not held:
        return []
    stopped = []
    for pid in (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()):
        if not _is_our_master(pid, socket, held):
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already (or no pidfds here: then we signal nothing)
            continue
        try:
            if _is_our_master(pid, socket, held):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], _CONTROL_TIMEOUT)  # readable once it has ended
                stopped.append(pid)
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return stopped


class ConnectError(RoamingHomesError):
    """The server could not be used; `reason` says why, for callers that diagnose (`check`);
    `details` are lines for support (e.g. the host keys' fingerprints); `action` is the command
    that helps, when there is one (`kinit`)."""

    def __init__(self, message: str, reason: Reason, details: tuple[str, ...] = (),
                 action: str = "") -> None:
        super().__init__(message, EXIT_CODES[result_of(reason)])
        self.reason = reason
        self.details = details
        self.action = action


_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def _known_fingerprints(server: Server) -> list[str]:
    """The fingerprints this computer's known_hosts files hold for the server (ssh -G says
    which files the options in force name): the user's and the global ones (where FreeIPA's
    sss_ssh_knownhostsproxy keeps the keys it fetched, /var/lib/sss/pubconf/known_hosts)."""
    name = server.host if server.port == 22 else f"[{server.host}]:{server.port}"
    try:
        config = runner.run(["ssh", "-G", *ssh_options(server, None), *_destination(server)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        files = [path for line in config.stdout.splitlines()
                 if line.startswith(("userknownhostsfile ", "globalknownhostsfile "))
                 for path in line.split()[1:]]
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
    if _turned_away(lowered):
        return ConnectError(f"server {server.host} is busy (it turned the login away): {last}",
                            Reason.SERVER_BUSY)
    if any(marker in lowered for marker in _OFFLINE_MARKERS):
        return ConnectError(f"server {server.host} unreachable: {last}",
                            Reason.SERVER_UNREACHABLE)
    return ConnectError(f"ssh to {server.host} failed: {last}",
                        Reason.SSH_FAILED)


def _turned_away(lowered: str) -> bool:
    """Whether ssh's (lower-cased) stderr says the server accepted the TCP connection and then
    closed or reset it before the login: a busy server, not an offline one."""
    if "connect to host" in lowered:  # the TCP connection itself failed
        return False
    return (any(marker in lowered for marker in _TURNED_AWAY_MARKERS)
            or any(line.startswith(_TURNED_AWAY_LINES) for line in lowered.splitlines()))


def busy_retry_delay(refusals: int, elapsed: float, connect_timeout: float,
                     draw: float) -> float | None:
    """Seconds to wait before asking a busy server again after its `refusals`-th refusal,
    `elapsed` seconds after the first try; None when it is time to give up (the pass ends
    busy, exit 75). `draw` is uniform in [0, 1): half the delay is fixed and half random, so
    that computers turned away in the same second come back spread out, never at once."""
    ceiling = min(BUSY_MAX_DELAY, BUSY_FIRST_DELAY * 2 ** max(0, refusals - 1))
    delay = ceiling * (1 + draw) / 2
    if elapsed + delay > BUSY_PATIENCE * connect_timeout:
        return None
    return delay


def _ask_master(server: Server, socket: Path, operation: str) -> Master:
    """`ssh -O operation` to the master at `socket`, bounded by _CONTROL_TIMEOUT.

    ssh has no timeout of its own here (ConnectTimeout is for the network): a stopped master
    accepts the connection on its socket and never answers.
    """
    try:
        result = runner.run(_control(server, socket, operation), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=_CONTROL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return master_state(None)
    except FileNotFoundError:
        raise ConnectError("ssh is not installed (openssh-client)", Reason.SSH_FAILED) from None
    return master_state(result.returncode)


def _clear(socket: Path, state: Master) -> None:
    """Get a stale socket, or a hung master and its socket, out of the way of a new master.

    A socket in the way does not make ssh fail: it says "disabling multiplexing" and, started
    with -f -N, stays in the background as a plain connection nobody uses, for good. So before
    this, every pass after a killed master left one more ssh and one more sshd session.
    """
    if state is Master.HUNG:
        stopped = _stop_hung_masters(socket)
        if stopped:
            log.info("the shared ssh connection did not answer within %g s: stopped it "
                     "(pid %s)", _CONTROL_TIMEOUT, ", ".join(map(str, stopped)))
        else:
            log.warning("the shared ssh connection did not answer within %g s, and no master "
                        "of ours listens on %s: left alone", _CONTROL_TIMEOUT, socket)
    else:
        log.debug("the shared ssh connection is gone: removing its stale socket %s", socket)
    try:
        socket.unlink(missing_ok=True)
    except OSError as exc:
        raise ConnectError(f"cannot remove the stale ssh socket {socket}: {exc.strerror}",
                           Reason.SSH_FAILED) from None


def _master_check(socket: Path) -> Master | None:
    """The master's answer to a health check (`mux.alive`, what `ssh -O check` asks); None
    when there is no socket at all."""
    if not os.path.lexists(socket):
        return None
    return mux.alive(socket, _CONTROL_TIMEOUT)


def master_answers(server: Server, socket: Path) -> bool:
    """Whether a master answers at `socket`; if not, its socket (and a hung master of ours) is
    cleared away, so that a new master can listen there."""
    state = _master_check(socket)
    if state is Master.ANSWERED:
        return True
    if state is not None:
        _clear(socket, state)
    return False


@contextlib.contextmanager
def _one_at_a_time(control_dir: Path, wait: float) -> Iterator[None]:
    """Our processes look at, clear and start the master one at a time (an flock).

    A pass, the daemon's offline probe and `check` may connect at once. Two that both find no
    usable master would both start one, and the second would find the first's socket in its way
    and stay as a connection nobody uses (see `_clear`); or one would remove the socket of a
    master the other has just started. Whoever holds the lock is done within `wait` seconds;
    past that we go on without it rather than wait for a process that is itself stopped.
    """
    try:
        fd = os.open(control_dir / "connect.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ConnectError(f"cannot use the lock in {control_dir}: {exc.strerror}",
                           Reason.SSH_FAILED) from None
    try:
        deadline = time.monotonic() + wait
        while not try_flock(fd):
            if time.monotonic() >= deadline:
                log.warning("another process of ours has been opening the shared ssh "
                            "connection for %g s: going on without waiting for it", wait)
                break
            time.sleep(0.05)  # flock has no timeout of its own; polling keeps the bound
        yield
    finally:
        os.close(fd)  # the master does not inherit it (O_CLOEXEC): it ends the lock


def _open(server: Server, command: list[str]) -> None:
    """Run ssh to log in (and start the master), bounded; a failure as a ConnectError."""
    # The master forks into the background holding its stdio: capture stderr in a file, not a
    # pipe, or we would wait for the master to exit.
    with tempfile.TemporaryFile() as err:
        try:
            result = runner.run(command, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err,
                                timeout=_start_timeout(server), check=False)
        except subprocess.TimeoutExpired:
            # A Kerberos login without a ticket for this server asks the KDC first; a hung KDC
            # keeps ssh waiting (half a minute with MIT's defaults): this bound ends it.
            hint = " (nor, maybe, the Kerberos KDC)" if uses_kerberos(server) else ""
            raise ConnectError(f"server {server.host} did not answer in time{hint}",
                               Reason.SERVER_UNREACHABLE) from None
        except FileNotFoundError:
            raise ConnectError("ssh is not installed (openssh-client)",
                               Reason.SSH_FAILED) from None
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if result.returncode != 0:
        raise _classify_failure(server, stderr)


def uses_kerberos(server: Server) -> bool:
    """Whether the login to `server` relies on a Kerberos ticket (`server.kerberos`)."""
    return kerberos.uses_kerberos(server.kerberos,
                                  [*ssh_options(server, None), *_destination(server)])


def check_ticket(server: Server) -> None:
    """Raise ConnectError (NO_TICKET) when the login uses Kerberos and there is no valid ticket.

    Asked before every pass, even one a living shared connection could serve: an expired
    ticket ends syncing at the next pass, not when the master happens to close. Nothing is
    sent to the server (nor to the KDC, which may hang ssh for half a minute).
    """
    if uses_kerberos(server) and not kerberos.has_ticket():
        raise ConnectError(f"no valid Kerberos ticket for the login to {server.host} (none, or "
                           "expired): sign in again with kinit", Reason.NO_TICKET,
                           action="kinit")


def _kerberos_refused(server: Server, refused: ConnectError) -> ConnectError:
    """A Kerberos login turned away although `klist -s` found a valid ticket: most likely one of
    another realm (a second account, a test realm), or a principal the server does not let log
    in as `server.user`. The message names the principal whose ticket was offered."""
    held = kerberos.ticket()
    principal = escape(held.principal) if held is not None else "unknown"
    return ConnectError(
        f"the server {server.host} refused the Kerberos login as {server.user} with the ticket "
        f"of {principal} (another realm, or a principal not allowed there?): sign in with kinit "
        "as the principal of your account on the server", Reason.AUTH_REFUSED,
        (refused.message,), action="kinit")


def _open_patiently(server: Server, command: list[str]) -> None:
    """`_open`, asking a busy server again with jittered exponential back-off
    (`busy_retry_delay`): at a login storm most of the computers turned away get in within
    seconds. Any other failure is raised at once."""
    start, refusals = time.monotonic(), 0
    while True:
        try:
            _open(server, command)
            return
        except ConnectError as exc:
            if exc.reason is Reason.AUTH_REFUSED and uses_kerberos(server):
                raise _kerberos_refused(server, exc) from None
            if exc.reason is not Reason.SERVER_BUSY:
                raise
            refusals += 1
            delay = busy_retry_delay(refusals, time.monotonic() - start,
                                     server.connect_timeout, random.random())
            if delay is None:
                raise
            log.info("server %s is busy (it turned the login away): trying again in %.1f s",
                     server.host, delay)
            time.sleep(delay)


def connect(server: Server, control_dir: Path, patient: bool = True) -> Path | None:
    """Make sure the server (its front-end `host`) answers; returns the shared connection's
    socket, if any. `unison.frontends.connect` chooses among several front-ends.

    A master that answers is used; a dead or hung one is replaced. Raises ConnectError with
    TRY_LATER when the server is unreachable (or a local root is absent, e.g. an unmounted
    share) or busy (asked again for a while when `patient`: `_open_patiently`), and FAILED
    when it answers but refuses us, or when a Kerberos login has no valid ticket
    (`check_ticket`).
    """
    opening = _open_patiently if patient else _open
    if server.is_local:
        if not Path(server.local_root).is_dir():
            raise ConnectError(
                f"server root {server.local_root} is not available (not mounted?)",
                Reason.SERVER_UNREACHABLE)
        return None
    check_ticket(server)
    socket = control_path(server, control_dir)
    if socket is None:
        opening(server, ["ssh", *ssh_options(server, None), "-o", "ControlMaster=no",
                         *_destination(server), "true"])
        return None
    try:
        private_dir(control_dir)
    except RoamingHomesError as exc:
        raise ConnectError(exc.message, Reason.RUNTIME_DIR) from None
    # The longest a holder takes: ask the master, wait for a hung one to end, start a new one.
    with _one_at_a_time(control_dir, 2 * _CONTROL_TIMEOUT + _patient_timeout(server)):
        if not master_answers(server, socket):
            _start_master(server, socket, opening)
    return socket


def _start_master(server: Server, socket: Path,
                  opening: Callable[[Server, list[str]], None]) -> None:
    """Start the shared connection's master, compressing as `server.compression` says; with
    `auto`, as the link turns out (`unison.compression`): a master started the other way is
    replaced before anything uses it."""
    if server.compression is not Setting.AUTO:
        opening(server, _master_command(server, socket, server.compression is Setting.YES))
        return
    if compresses_anyway(server):
        opening(server, _master_command(server, socket, None))
        return
    remembered = compression.Remembered(socket)
    last = remembered.load()
    started = compression.starts_compressed(last)
    opening(server, _master_command(server, socket, started))
    try:
        measured = compression.measure(lambda: run_remote(server, socket, "true"))
    except ConnectError as exc:  # the pass's own exchanges will say what is wrong
        log.debug("the link to %s was not measured: %s", server.host, exc.message)
        return
    remembered.save(measured)
    if measured.compress != started:
        # Said when the link changed since it was last measured; with nothing measured the
        # master started as a guess (`compression.starts_compressed`), and a LAN would hear of
        # it at every first pass after a reboot.
        log.log(logging.INFO if last.seconds is not None else logging.DEBUG,
                "the link to %s is %s (an exchange took %.0f ms): starting the shared "
                "connection again %s compression", server.host,
                "slow" if measured.compress else "fast", (measured.seconds or 0.0) * 1000,
                "with" if measured.compress else "without")
        _close_master(server, socket)
        opening(server, _master_command(server, socket, measured.compress))


def compresses_anyway(server: Server) -> bool:
    """Whether ssh's own settings (`ssh_options`, its configuration files) turn compression on
    for this server: then they stand, whatever `auto` would say."""
    settings = kerberos.ssh_settings([*ssh_options(server, None), *_destination(server)])
    return settings.get("compression", ["no"])[0] == "yes"


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
    if socket is None or not os.path.lexists(socket):
        return
    # The daemon's stop has a bound (its STOP_MARGIN): wait a second at most for a process that
    # is connecting; closing the master regardless does no harm.
    with contextlib.suppress(ConnectError), _one_at_a_time(control_dir, 1.0):
        _close_master(server, socket, wait=0.0)


def _close_master(server: Server, socket: Path, wait: float = _CONTROL_TIMEOUT) -> None:
    """Ask the master at `socket` to exit; one that does not answer is cleared away. A master
    that exits removes its socket itself, after it answered: `wait` seconds at most are given
    to it before the socket is removed (a new master is to listen there)."""
    state = _ask_master(server, socket, "exit")
    if state is not Master.ANSWERED:
        _clear(socket, state)
        return
    deadline = time.monotonic() + wait
    while os.path.lexists(socket) and time.monotonic() < deadline:
        time.sleep(0.01)
    if wait and os.path.lexists(socket):
        _clear(socket, Master.STALE)


def run_remote(server: Server, socket: Path | None, script: str,
               abort: threading.Event | None = None, data: bytes | None = None) -> str:
    """Run a sh script on the server over the shared connection; returns its stdout.

    The login shell gets `sh -c <script>` (each word quoted), so the script runs under a
    POSIX shell whatever the user's shell is; `data` is its standard input (what may be too
    long for a command line). Raises ConnectError like `connect`; setting `abort` (a logout
    whose time is up) ends the command at once.
    """
    return run_remote_bytes(server, socket, script, abort, data).decode(errors="replace")


def silence_bound(server: Server) -> float:
    """Seconds an exchange of ours with the server may go without an answer: the keep-alives'
    bound (`connect_timeout` x 4), and a minute for a slow command on a busy server."""
    return server.connect_timeout * 4 + 60


@contextlib.contextmanager
def _input(data: bytes | None) -> Iterator[int]:
    """A command's standard input: nothing, or `data` in a file in memory (memfd: no disk to
    fill, no directory to trust). Not a pipe, which would have to be written while the answer
    is read: a pipe left open (as `communicate` left one when its first call timed out before
    writing) keeps the server's command waiting for the rest for ever. A file holds all of
    it, and its end, from the start."""
    if data is None:
        yield subprocess.DEVNULL
        return
    fd = os.memfd_create("roaming-homes-input", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(data)
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


# How long the answer's pipes may stay open once ssh has ended. ssh hands its stdio to the
# shared master, and ends only once the master has closed the session, all of its output
# written; the master's copies of our pipes should be closed by then, but a master that keeps
# them (seen on a loaded machine) would otherwise hold the exchange until its bound.
_AFTER_SSH = 1.0


def run_remote_bytes(server: Server, socket: Path | None, script: str,
                     abort: threading.Event | None = None, data: bytes | None = None) -> bytes:
    """`run_remote`, its stdout as bytes: file names that are not UTF-8, file contents."""
    command = remote_command(server, socket, ["sh", "-c", script])
    deadline = time.monotonic() + silence_bound(server)
    with _input(data) as stdin, runner.start(command, stdin=stdin, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE) as proc:
        out, err = _answer(proc, lambda: _cut_short(server, socket, abort, deadline))
        proc.wait()
    if proc.returncode != 0:
        if socket is not None and _master_check(socket) is not Master.ANSWERED:
            # The master died under the exchange, and ssh could not go on without it (see
            # `ssh_options`): what ssh then says is about its own connection, never made.
            raise _lost(server)
        raise _classify_failure(server, err.decode(errors="replace"))
    return out


def _answer(proc: subprocess.Popen[bytes],
            cut_short: Callable[[], ConnectError | None]) -> tuple[bytes, bytes]:
    """ssh's stdout and stderr until both end, or until they have been quiet for `_AFTER_SSH`
    after ssh ended. While ssh runs, `cut_short` may end the exchange (asked at least every
    0.2 s): ssh is killed and its error raised."""
    assert proc.stdout is not None and proc.stderr is not None
    read: dict[int, bytearray] = {proc.stdout.fileno(): bytearray(),
                                  proc.stderr.fileno(): bytearray()}
    open_fds, ended = list(read), None
    while open_fds:
        ready = select.select(open_fds, [], [], 0.2)[0]
        for fd in ready:
            chunk = os.read(fd, 65536)
            read[fd] += chunk
            if not chunk:
                open_fds.remove(fd)
        if proc.poll() is None:
            if (failure := cut_short()) is not None:
                # Only wait for ssh itself: the shared master holds our pipes too (ssh hands
                # its stdio over to it), so they end only when the master does.
                proc.kill()
                proc.wait()
                raise failure
        elif not ready:
            ended = ended if ended is not None else time.monotonic()
            if time.monotonic() - ended >= _AFTER_SSH:
                break
    return bytes(read[proc.stdout.fileno()]), bytes(read[proc.stderr.fileno()])


def _cut_short(server: Server, socket: Path | None, abort: threading.Event | None,
               deadline: float) -> ConnectError | None:
    """Why an exchange still waiting for its answer ends now, if it does: stopped, past its
    bound, or its shared master gone (its keep-alives found the link dead: it removes its
    socket as it exits, and the exchange is lost with it)."""
    stopped = abort is not None and abort.is_set()
    if stopped or time.monotonic() > deadline:
        why = "stopped" if stopped else "did not answer in time"
        return ConnectError(f"server {server.host} {why}", Reason.SERVER_UNREACHABLE)
    if socket is not None and not os.path.lexists(socket):
        return _lost(server)
    return None


def _lost(server: Server) -> ConnectError:
    return ConnectError(f"connection to {server.host} lost", Reason.CONNECTION_LOST)
