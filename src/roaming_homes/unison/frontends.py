"""Choosing the front-end that serves a pass, when `server.host` lists several.

Several stateless sshd front-ends may serve the same homes from shared storage (docs/server.md).
They are tried in the listed order; the first that answers within `connect_timeout` serves the
pass. One that did not answer (unreachable, or busy turning logins away) is remembered for
`DOWN_FOR` seconds and tried last until then, so a pass pays at most one timeout for it, and
the next passes start with a front-end that worked. After that it is tried first again: the
computers of one user come back to the same front-end, where the server's file monitor sees
their changes (a FUSE or NFS client hears only of writes made through its own mount).

Only the failures that say "try elsewhere" move on to the next front-end. A host key that is
not trusted, a refused login or a missing Kerberos ticket end the pass as they do with one
server: they are the administrator's to fix, and hiding them behind another front-end would
hide an attack on that one.

The memory is a small JSON file in the runtime directory (the shared connection's directory,
private to the user): it need not survive a reboot, and each computer keeps its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from roaming_homes.errors import DiskFull
from roaming_homes.files import read_json
from roaming_homes.outcome import Reason
from roaming_homes.session.state import write_atomic
from roaming_homes.unison import ssh

log = logging.getLogger(__name__)

# Seconds a front-end that did not answer is tried last: "a few minutes", long enough that a
# front-end that is down costs one timeout per few minutes, short enough that the computers of
# one user come back to the first front-end soon after it is back.
DOWN_FOR = 300.0
MEMORY = "frontends.json"
# What makes a pass try the next front-end: this one cannot serve it now, another may.
_FAIL_OVER = (Reason.SERVER_UNREACHABLE, Reason.SERVER_BUSY)


def order(hosts: Sequence[str], down: Mapping[str, float], now: float) -> list[str]:
    """`hosts` in the order to try them: as listed, but those that failed within DOWN_FOR
    seconds before `now` last, the one that failed most recently at the very end."""
    recent = {host: when for host, when in down.items() if now - DOWN_FOR <= when <= now}
    return sorted(hosts, key=lambda host: (host in recent, recent.get(host, 0.0)))


def _parse(data: object) -> dict[str, float]:
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in data.items()):
        raise ValueError("not a map of host names to times")
    return {host: float(when) for host, when in data.items()}


def _read(control_dir: Path) -> dict[str, float]:
    """The front-ends that failed and when (wall clock); empty when none is known. A file
    of the wrong shape is moved aside by `read_json` and we start afresh: every front-end
    gets tried in the listed order, which costs a timeout at most."""
    return read_json(control_dir / MEMORY, _parse) or {}


def _write(control_dir: Path, down: Mapping[str, float]) -> None:
    try:
        write_atomic(control_dir / MEMORY, json.dumps(dict(down), sort_keys=True) + "\n",
                     durable=False)
    except (OSError, DiskFull) as exc:  # only an optimisation: the next pass tries in order
        log.debug("cannot remember which front-ends failed: %s", exc)


def connect(server: ssh.Server, control_dir: Path) -> tuple[ssh.Server, Path | None]:
    """Make sure one of the server's front-ends answers (`ssh.connect`); returns the server
    bound to that front-end (its `host`) and the shared connection's socket.

    Raises ConnectError like `ssh.connect`; when no front-end could be used, with the
    reason of the last one tried (busy when any was busy: the network works) and every
    front-end's message.
    """
    if server.is_local or len(server.hosts) <= 1:
        return server, ssh.connect(server, control_dir)
    now = time.time()
    down = _read(control_dir)
    candidates = order(server.hosts, down, now)
    failures: list[ssh.ConnectError] = []
    for host in candidates:
        candidate = replace(server, host=host)
        try:
            # Patience with a busy front-end only when no other is left to try.
            socket = ssh.connect(candidate, control_dir, patient=host == candidates[-1])
        except ssh.ConnectError as exc:
            if exc.reason not in _FAIL_OVER:
                raise
            log.info("front-end %s cannot serve this pass: %s", host, exc.message)
            failures.append(exc)
            down[host] = time.time()
            continue
        if failures or host in down:
            down.pop(host, None)
            _write(control_dir, down)
        if failures:
            log.info("front-end %s serves this pass", host)
        return candidate, socket
    _write(control_dir, down)
    busy = any(exc.reason is Reason.SERVER_BUSY for exc in failures)
    raise ssh.ConnectError("no front-end of the server could be used: "
                           + "; ".join(exc.message for exc in failures),
                           Reason.SERVER_BUSY if busy else failures[-1].reason,
                           tuple(line for exc in failures for line in exc.details))


def disconnect(server: ssh.Server, control_dir: Path) -> None:
    """Close the shared connection to each front-end that has one (`ssh.disconnect`)."""
    for host in server.hosts or (server.host,):
        ssh.disconnect(replace(server, host=host), control_dir)
