"""`roaming-homes check`: diagnose why a machine does (not) sync, one line per check.

Each check ends in a `Result` with the fix to apply. The deciding parts (version
compatibility, service state, sync age, markers) are pure functions; `run_checks` is the shell
that loads the config, opens the (shared) ssh connection through `transport` and asks the
server. A check that cannot run because an earlier one failed is skipped, naming that one.
Warnings (real-time mode unavailable, no sync yet) and skips do not fail the run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from roaming_homes import config

# Imported here, not where it is used: `check --user` drops privileges after importing this
# module, and the dropped user may not be able to read the Python that runs us.
from roaming_homes.actions.sync import sync_paths
from roaming_homes.errors import ConfigError
from roaming_homes.outcome import SUCCEEDED, Reason, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety.guards import MARKER
from roaming_homes.session import pause
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape
from roaming_homes.unison import compression, kerberos, runner
from roaming_homes.unison import ssh as transport

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
SYMBOLS = {OK: "✓", FAIL: "✗", WARN: "!", SKIP: "-"}
SERVICE = "roaming-homes.service"
# A ticket that expires sooner than this is worth renewing before a long pass or a day's work.
TICKET_WARN = 3600

_VERSION = re.compile(r"unison version (\d+)\.(\d+)(?:\.(\d+))?[^\n(]*(?:\(ocaml ([\d.]+)\))?")
_SERVER_HOME = ('if [ ! -d "$1" ]; then echo missing; elif [ ! -w "$1" ]; then echo read-only; '
                'else echo ok; fi')
# Real-time mode runs `unison-fsmonitor` on the server through the login shell, in tree mode:
# one that answers TREE with OK is ours and new enough.
_TRY_FSMONITOR = ("p=$(command -v unison-fsmonitor) || exit 1; "
                  "printf 'TREE\\n' | \"$p\" 2>/dev/null; printf '%s\\n' \"$p\"")


@dataclass
class Result:
    name: str
    status: str  # ok | fail | warn | skip
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" → {self.fix}" if self.fix and self.status in (FAIL, WARN) else ""
        return f"{SYMBOLS[self.status]} {self.name}: {self.detail}{fix}"


@dataclass(frozen=True)
class UnisonVersion:
    major: int
    minor: int
    patch: int
    ocaml: str | None

    @property
    def series(self) -> str:
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        ocaml = f" (ocaml {self.ocaml})" if self.ocaml else ""
        return f"{self.series}.{self.patch}{ocaml}"


def parse_unison_version(text: str) -> UnisonVersion | None:
    """`unison -version` output, e.g. `unison version 2.52.1 (ocaml 4.13.1)`."""
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch, ocaml = match.groups()
    return UnisonVersion(int(major), int(minor), int(patch or 0), ocaml)


def versions_compatible(a: UnisonVersion, b: UnisonVersion) -> bool:
    """2.52 and newer talk to each other whatever their OCaml; older ones need the same series
    and the same OCaml (docs/unison.md §6)."""
    if (a.major, a.minor) >= (2, 52) and (b.major, b.minor) >= (2, 52):
        return True
    return a.series == b.series and a.ocaml is not None and a.ocaml == b.ocaml


def unison_result(local: UnisonVersion | None, server: UnisonVersion | None,
                  program: str) -> Result:
    name = "unison"
    if local is None:
        return Result(name, FAIL, f"{program} not found or not unison on this machine",
                      "install unison (2.52 or newer), or set sync.unison")
    if server is None:
        return Result(name, FAIL, f"local {local}; unison not found on the server",
                      "install unison (2.52 or newer) on the server, on the login PATH")
    detail = f"local {local}, server {server}"
    if versions_compatible(local, server):
        return Result(name, OK, detail)
    return Result(name, FAIL, f"{detail}: incompatible",
                  "install 2.52 or newer on both ends (older versions need the same "
                  "major.minor and OCaml)")


def markers_result(local: bool, server: bool) -> Result:
    name = "replica markers"
    if local and server:
        return Result(name, OK, f"{MARKER} on both roots")
    if not local and not server:
        return Result(name, OK, f"no {MARKER} yet on either root")
    missing = "server home" if local else "local home"
    return Result(name, FAIL, f"{MARKER} is missing in the {missing}",
                  f"make sure the {missing} is the right, mounted directory and not emptied "
                  "before syncing")


def service_result(enabled: subprocess.CompletedProcess[str],
                   active: subprocess.CompletedProcess[str]) -> Result:
    """From `systemctl --user is-enabled` / `is-active` of our unit."""
    name = "user service"
    state, running = enabled.stdout.strip(), active.stdout.strip()
    no_manager = ("failed to connect to bus", "not been booted with systemd", "no medium")
    if not running and any(text in active.stderr.lower() for text in no_manager):
        where = f"{SERVICE} {state}" if state else f"{SERVICE} not installed"
        return Result(name, SKIP, f"no systemd user manager here (systemctl --user does not "
                      f"work); {where}")
    if not state or "no such file" in enabled.stderr.lower():
        return Result(name, FAIL, f"{SERVICE} is not installed",
                      "install the roaming-homes package (it ships the user unit)")
    if state in ("enabled", "enabled-runtime", "static", "indirect", "linked", "alias") \
            and running == "active":
        return Result(name, OK, f"{SERVICE} {state} and active")
    return Result(name, FAIL, f"{SERVICE} {state or 'unknown'}, {running or 'unknown'}",
                  f"systemctl --user enable --now {SERVICE} (for everyone: "
                  f"systemctl --global enable {SERVICE})")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def sync_age_result(last: SyncOutcome | None, success: str | None, now: datetime, interval: int,
                    stale_after: int) -> Result:
    """How long ago the last successful sync (`success`) was: a problem past
    `notify.stale_after` (the age the desktop warns at too), or ten intervals when that is
    longer. `last` is the last pass, named when it did not succeed."""
    name = "last sync"
    failing = "" if last is None or last.result in SUCCEEDED else f"; last pass: {last.message}"
    if not success:
        return Result(name, WARN, f"no successful sync yet{failing}",
                      "run `roaming-homes sync -v` and read its output")
    try:
        age = (now - datetime.fromisoformat(success)).total_seconds()
    except (TypeError, ValueError):
        return Result(name, WARN, f"state has an unreadable time {success!r}")
    if age > max(stale_after, 10 * interval):
        return Result(name, FAIL, f"last successful sync {_age(age)} ago ({success}){failing}",
                      "run `roaming-homes sync -v` and read its output")
    return Result(name, OK, f"{_age(max(age, 0))} ago ({success}){failing}")


def pause_result(held: pause.Pause | None) -> Result:
    """Whether syncing is paused: a warning, since a pause without an end is easily forgotten."""
    if held is None:
        return Result("pause", OK, "syncing is not paused")
    return Result("pause", WARN, f"syncing {held.line()} (since "
                  f"{held.since:%Y-%m-%d %H:%M})", pause.RESUME_COMMAND)


def compression_result(setting: compression.Setting, anyway: bool, shared: bool,
                       measured: compression.Measured) -> Result:
    """Whether the shared connection compresses, and why (`unison.compression`)."""
    name = "compression"
    if setting is not compression.Setting.AUTO:
        return Result(name, OK, f"{'on' if setting is compression.Setting.YES else 'off'} "
                      f"(server.compression = {setting.value})")
    if anyway:
        return Result(name, OK, "on (ssh's own settings: -C or Compression yes)")
    if not shared:
        return Result(name, SKIP, "no shared connection (server.connection_reuse = 0): ssh's "
                      "own settings decide")
    if measured.seconds is None:
        return Result(name, OK, "on (auto: the link was not measured; a connection starts "
                      "compressed until it is)")
    return Result(name, OK, f"{'on' if measured.compress else 'off'} (auto: an exchange took "
                  f"{measured.seconds * 1000:.0f} ms; a slow link from "
                  f"{compression.SLOW * 1000:.0f} ms)")


def kerberos_result(uses: bool, valid: bool, ticket: kerberos.Ticket | None,
                    now: datetime) -> Result:
    """The Kerberos line: whether the login uses a ticket (`uses`), whether `klist -s` finds a
    valid one, and its principal and expiry (`now` in the same local, naive time as klist's)."""
    name = "kerberos"
    if not uses:
        return Result(name, OK, "not used by this login (no GSSAPI, or a key is offered; "
                      "server.kerberos)")
    if not valid:
        return Result(name, FAIL, "no valid ticket (none, or expired)",
                      "sign in again: kinit")
    if ticket is None or ticket.expires is None:
        return Result(name, OK, f"valid ticket{f' for {ticket.principal}' if ticket else ''}")
    left = (ticket.expires - now).total_seconds()
    detail = (f"ticket for {ticket.principal}, expires {ticket.expires:%Y-%m-%d %H:%M} "
              f"(in {_age(max(left, 0))})")
    if left < TICKET_WARN:
        return Result(name, WARN, detail, "renew it before it expires: kinit (or kinit -R)")
    return Result(name, OK, detail)


def kdc_result(host: str, answer: kerberos.Kdc, complaint: str, bound: float) -> Result:
    """The line for the server's host principal: whether the realm's KDC gives a ticket for it
    (what the login asks for first)."""
    name, principal = "kerberos kdc", f"host/{host}"
    match answer:
        case kerberos.Kdc.TICKET:
            return Result(name, OK, f"a ticket for {principal} (the KDC answers, or it is cached)")
        case kerberos.Kdc.REFUSED:
            return Result(name, FAIL, f"no ticket for {principal}: {escape(complaint)}",
                          "server.host must be the name of the server's host principal "
                          "(host/NAME@REALM), in the realm of your ticket")
        case kerberos.Kdc.NO_ANSWER:
            return Result(name, FAIL, f"the KDC gave no answer for {principal} within "
                          f"{bound:g} s", "check the network and the realm's KDC (krb5.conf)")
    return Result(name, SKIP, "kvno is not installed (krb5-user / krb5-workstation)")


def _kerberos(server: transport.Server) -> list[Result]:
    if server.is_local:
        return [Result("kerberos", SKIP, "server.root is a local directory: no ssh")]
    uses = transport.uses_kerberos(server)
    valid = uses and kerberos.has_ticket()
    results = [kerberos_result(uses, valid, kerberos.ticket() if uses else None,
                               datetime.now())]
    if valid:
        bound = 2 * server.connect_timeout
        results.append(kdc_result(server.host, *kerberos.service_ticket(server.host, bound),
                                  bound))
    return results


@dataclass
class Report:
    results: list[Result]
    config_ok: bool

    @property
    def ok(self) -> bool:
        return all(result.status != FAIL for result in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(result) for result in self.results]}


class _Server:
    """The server side, asked through the shared ssh connection (or a local root)."""

    def __init__(self, server: transport.Server, socket: Path | None) -> None:
        self.server, self.socket = server, socket
        self.timeout = server.connect_timeout * 2 + 10

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        command = (argv if self.server.is_local
                   else transport.remote_command(self.server, self.socket, argv))
        try:
            return runner.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, "", "timed out")
        except FileNotFoundError as exc:
            return subprocess.CompletedProcess(command, 127, "", str(exc))

    @property
    def home(self) -> str:
        return self.server.local_root if self.server.is_local else self.server.home


def _local(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return runner.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _connection_results(server: transport.Server,
                        locations: Locations) -> tuple[list[Result], Path | None, bool]:
    """reachable / host key / login, the shared connection's socket, and whether it is up."""
    names = ("server reachable", "host key", "ssh login")
    if server.is_local:
        skip = "server.root is a local directory: no ssh"
        try:
            transport.connect(server, locations.control_dir)
        except transport.ConnectError as exc:
            return ([Result(names[0], FAIL, exc.message, f"mount or create {server.local_root}"),
                     Result(names[1], SKIP, skip), Result(names[2], SKIP, skip)], None, False)
        return ([Result(names[0], OK, f"{server.local_root} is there"),
                 Result(names[1], SKIP, skip), Result(names[2], SKIP, skip)], None, True)
    try:
        socket = transport.connect(server, locations.control_dir)
    except transport.ConnectError as exc:
        if exc.reason is Reason.NO_TICKET:  # the kerberos line fails; nothing was sent
            skipped = [Result(name, SKIP, "not tried: no Kerberos ticket") for name in names]
            return skipped, None, False
        reached = Result(names[0], OK, f"{server.host} port {server.port} answers")
        if exc.reason in (Reason.HOST_KEY, Reason.HOST_KEY_CHANGED):
            return ([reached, Result(names[1], FAIL, f"{exc.message} ({'; '.join(exc.details)})",
                                     "administrators: compare the fingerprints with the "
                                     "server's own (ssh-keygen -lf on its host keys) before "
                                     "trusting a key; users: contact support"),
                     Result(names[2], SKIP, "not tried: host key not trusted")], None, False)
        if exc.reason is Reason.SERVER_BUSY:
            return ([reached, Result(names[1], SKIP, "not tried: the server was busy"),
                     Result(names[2], FAIL, exc.message,
                            "try again in a minute; administrators: sshd's MaxStartups "
                            "(docs/server.md)")], None, False)
        if exc.reason is Reason.AUTH_REFUSED:
            return ([reached, Result(names[1], OK, "known"),
                     Result(names[2], FAIL, exc.message,
                            f"install the user's key on the server (ssh-copy-id -p "
                            f"{server.port} {server.user}@{server.host}) or set up Kerberos")],
                    None, False)
        return ([Result(names[0], FAIL, exc.message,
                        "check server.host / server.port, that sshd runs, and the network"),
                 Result(names[1], SKIP, "not tried: server unreachable"),
                 Result(names[2], SKIP, "not tried: server unreachable")], None, False)
    return ([Result(names[0], OK, f"{server.host} port {server.port} answers"),
             Result(names[1], OK, "known"),
             Result(names[2], OK, f"{server.user}@{server.host} without a password")],
            socket, True)


def _compression(server: transport.Server, socket: Path | None) -> Result:
    auto = server.compression is compression.Setting.AUTO
    return compression_result(
        server.compression, auto and transport.compresses_anyway(server), socket is not None,
        compression.Remembered(socket).load() if socket is not None
        else compression.NOT_MEASURED)


def _front_ends(server: transport.Server) -> list[transport.Server]:
    """What `check` connects to: the server, or each of its front-ends when it lists several
    (each is reported: a pass may go through any of them)."""
    if len(server.hosts) <= 1:
        return [server]
    return [replace(server, host=host, hosts=(host,)) for host in server.hosts]


def _home_result(remote: _Server) -> Result:
    name = "server home"
    answer = remote.run(["sh", "-c", _SERVER_HOME, "sh", remote.home])
    state = answer.stdout.strip()
    if state == "ok":
        return Result(name, OK, f"{remote.home} exists and is writable")
    if state == "missing":
        return Result(name, FAIL, f"{remote.home} does not exist on the server",
                      f"create it there, owned by the user (install -d -m 700 -o "
                      f"{remote.server.user} {remote.home}), or fix server.home")
    if state == "read-only":
        return Result(name, FAIL, f"{remote.home} is not writable for {remote.server.user}",
                      "give the user write access to their server home")
    return Result(name, FAIL, f"could not look at {remote.home}: "
                  f"{answer.stderr.strip() or answer.returncode}", "see `roaming-homes sync -v`")


def _fsmonitor_result(cfg: config.Config, remote: _Server) -> Result:
    name = "fsmonitor"
    if not cfg["sync"]["watch"]:
        return Result(name, OK, "real-time mode off (sync.watch = false)")
    if remote.server.is_local:
        return Result(name, OK, "real-time mode available (this package's unison-fsmonitor)")
    answer = remote.run(["sh", "-c", _TRY_FSMONITOR])
    *said, path = answer.stdout.splitlines() or [""]
    if answer.returncode == 0 and said == ["VERSION 1", "OK"]:
        return Result(name, OK, f"real-time mode available (the server's {path})")
    return Result(name, WARN, "no unison-fsmonitor with tree mode on the server's PATH: "
                  "periodic syncs only", "install roaming-homes (it provides unison-fsmonitor) "
                  "on the server")


_EXISTS = 'cd "$1" || exit 1; shift; for p; do if [ -e "$p" ] || [ -L "$p" ]; then ' \
          "printf 1; else printf 0; fi; done"


def paths_result(paths: list[str], here: list[bool], there: list[bool],
                 explicit: bool) -> Result:
    """Which synced paths exist: nothing to sync is a warning, not a silent success, and a
    configured path that exists nowhere is most likely a typo."""
    name = "synced paths"
    nowhere = [p for p, h, t in zip(paths, here, there, strict=True) if not (h or t)]
    if len(nowhere) == len(paths):
        return Result(name, WARN, "nothing to sync: none of the synced paths exists here or on "
                      "the server", "create one of them, or set sync.paths")
    if explicit and nowhere:
        return Result(name, WARN, "exist neither here nor on the server: "
                      + ", ".join(escape(p) for p in nowhere), "fix sync.paths")
    return Result(name, OK, f"{sum(here)} of {len(paths)} here, {sum(there)} on the server")


def _paths_result(cfg: config.Config, locations: Locations, remote: _Server) -> Result:
    paths, _ = sync_paths(cfg, locations)
    here = [(locations.home / p).exists() or (locations.home / p).is_symlink() for p in paths]
    answer = remote.run(["sh", "-c", _EXISTS, "sh", remote.home, *paths])
    bits = answer.stdout.strip()
    if answer.returncode != 0 or len(bits) != len(paths) or set(bits) - {"0", "1"}:
        return Result("synced paths", WARN, "could not look at the server's side",
                      "see `roaming-homes sync -v`")
    return paths_result(paths, here, [b == "1" for b in bits], bool(cfg["sync"]["paths"]))


def _service() -> Result:
    if shutil.which("systemctl") is None:
        return Result("user service", SKIP, "systemctl not found (no systemd here)")
    return service_result(_local(["systemctl", "--user", "is-enabled", SERVICE]),
                          _local(["systemctl", "--user", "is-active", SERVICE]))


def run_checks(locations: Locations, config_path: Path | None = None) -> Report:
    """Every check, in order; later ones are skipped when what they need has failed."""
    try:
        cfg = config.load(locations, config_path)
    except config.MissingConfigError as exc:
        return Report([Result("config", FAIL, f"{exc.path}: configuration file not found",
                              f"create it with `{exc.create}`, then set server.host")], False)
    except ConfigError as exc:
        return Report([Result("config", FAIL, exc.message, "fix the named key "
                              "(`roaming-homes config sample` lists every key)")], False)
    from roaming_homes.safety.guards import is_excluded

    source = ", ".join(str(path) for path in cfg.files)
    results = [Result("config", OK, f"valid ({source})")]
    if is_excluded(locations.user, cfg["sync"]["excluded_users"]):
        results[0] = Result("config", WARN, f"valid ({source}); user {locations.user} is in "
                            "sync.excluded_users: nothing is synced for them")
    server = transport.Server.from_config(cfg["server"])
    results += _kerberos(server)
    program = cfg["sync"]["unison"]
    local_version = parse_unison_version(_local([program, "-version"]).stdout)
    why = "not checked: the server cannot be used"
    remote: _Server | None = None
    for front in _front_ends(server):
        connection, socket, up = _connection_results(front, locations)
        if up:
            answer = _Server(front, socket)
            remote = remote or answer
            server_version = (local_version if server.is_local else
                              parse_unison_version(answer.run(["unison", "-version"]).stdout))
            connection.append(unison_result(local_version, server_version, program))
            if not server.is_local:
                connection.append(_compression(front, socket))
        else:
            connection.append(Result("unison", SKIP, why))
        # Several front-ends: each one's lines name it.
        suffix = f" ({front.host})" if front is not server else ""
        results += [replace(result, name=result.name + suffix) for result in connection]
    if remote is not None:
        local_marker = (locations.home / MARKER).exists()
        server_marker = remote.run(["test", "-e", f"{remote.home}/{MARKER}"]).returncode == 0
        results += [_home_result(remote), _fsmonitor_result(cfg, remote),
                    markers_result(local_marker, server_marker),
                    _paths_result(cfg, locations, remote)]
    else:
        results += [Result(name, SKIP, why) for name in
                    ("server home", "fsmonitor", "replica markers", "synced paths")]
    store = StateStore(locations.state_dir)
    results += [_service(), sync_age_result(store.last(), store.last_success(),
                                            datetime.now().astimezone(),
                                            cfg["sync"]["interval"],
                                            cfg["notify"]["stale_after"]),
                pause_result(pause.paused(locations))]
    return Report(results, True)
