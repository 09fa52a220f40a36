"""Asking the shared ssh connection's master whether it is alive, in its own control protocol.

Every pass first makes sure the master answers (`ssh.connect`). `ssh -O check` asks that by
starting an ssh process: 7 ms on an idle machine, 20 ms beside a pass's other work, most of the
wait before a still home's one exchange with the server. The question itself is three small
messages on the master's Unix socket (OpenSSH's PROTOCOL.mux, version 4, unchanged since
OpenSSH 5.9): a hello each way, then an alive check and its answer, which names the request and
the master's pid. Each message is a 32-bit length, then 32-bit words, all big-endian.

As with `ssh -O check`, what decides is whether the exact answer came and when, never text: no
answer within the timeout is a master that is stopped or wedged (`Master.HUNG`); a socket
nobody listens on, one that is not a socket, a connection closed, or any other answer is one
in the way (`Master.STALE`). The master itself accepts only its own user (or root) on the
socket.
"""

from __future__ import annotations

import enum
import os
import secrets
import socket as sockets
import struct
import time
from pathlib import Path

_HELLO, _VERSION = 0x00000001, 4
_ALIVE_CHECK, _ALIVE = 0x10000004, 0x80000005
_LONGEST = 64 * 1024  # no answer of a master is longer: a larger length is not a master's


class Master(enum.Enum):
    """What a master said to a health check (`alive`, or `ssh -O check`/`-O exit`)."""

    ANSWERED = "answered"  # it listens and answered: use it (or it exits)
    STALE = "stale"  # nobody listens (killed, crashed), or not a master: the socket is in the way
    HUNG = "hung"  # no answer within the timeout: stopped or wedged


def message(*words: int) -> bytes:
    """One control message of 32-bit words, framed by its length."""
    body = struct.pack(f">{len(words)}I", *words)
    return struct.pack(">I", len(body)) + body


def _receive(conn: sockets.socket, size: int, deadline: float) -> bytes:
    """Exactly `size` bytes by `deadline` (TimeoutError); ConnectionError when it closes."""
    data = b""
    while len(data) < size:
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the master closed the connection")
        data += chunk
    return data


def _read(conn: sockets.socket, deadline: float) -> bytes:
    """One message's body."""
    (length,) = struct.unpack(">I", _receive(conn, 4, deadline))
    if length > _LONGEST:
        raise ConnectionError("not a master's message")
    return _receive(conn, length, deadline)


def alive(path: Path, timeout: float) -> Master:
    """Whether the master listening at `path` answers a health check within `timeout` s."""
    deadline = time.monotonic() + timeout
    request = secrets.randbits(32)
    try:
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(os.fspath(path))
            conn.sendall(message(_HELLO, _VERSION))
            hello = _read(conn, deadline)
            conn.sendall(message(_ALIVE_CHECK, request))
            answer = _read(conn, deadline)
    except TimeoutError:
        return Master.HUNG
    except OSError:  # refused, not a socket, closed, not a master's message
        return Master.STALE
    # A hello may carry extensions after the version; the answer ends with the master's pid.
    answered = (hello[:8] == struct.pack(">II", _HELLO, _VERSION)
                and len(answer) == 12 and answer[:8] == struct.pack(">II", _ALIVE, request))
    return Master.ANSWERED if answered else Master.STALE
