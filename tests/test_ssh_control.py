"""The pure decisions about the shared ssh connection's master (unison/ssh.py): its socket's
name, its state from `ssh -O` or its health check (`unison.mux`, held here to fake masters and
in tests/faults/test_ssh_master.py to the real one), and how our master is recognised by the
socket it listens on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from roaming_homes.unison import mux
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ssh import Master

SOCKET = Path("/run/user/1000/roaming-homes/ssh-0123456789abcdef0123456789abcdef01234567")
HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"


def _server(**changes: object) -> transport.Server:
    values: dict[str, object] = dict(
        host="h", port=2222, user="u", home="/home/u", local_root="", connect_timeout=3,
        ssh_options=("-i", "k"), connection_reuse=300)
    values.update(changes)
    return transport.Server(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("returncode", "state"), [
    (0, Master.ANSWERED), (255, Master.STALE), (1, Master.STALE), (None, Master.HUNG)])
def test_master_state_comes_from_the_exit_code_or_the_timeout(
        returncode: int | None, state: Master) -> None:
    assert transport.master_state(returncode) is state


def test_control_path_is_a_concrete_name_per_server() -> None:
    """No %C: we must know the file to remove a stale socket."""
    control_dir = SOCKET.parent
    path = transport.control_path(_server(), control_dir)
    assert path is not None and path.parent == control_dir
    assert path.name.startswith("ssh-") and "%" not in path.name and len(path.name) == 44
    assert transport.control_path(_server(), control_dir) == path
    others = {transport.control_path(_server(**change), control_dir)
              for change in ({"host": "g"}, {"port": 22}, {"user": "v"})}
    assert path not in others and len(others) == 3
    assert transport.control_path(_server(home="/elsewhere"), control_dir) == path


def test_control_path_fits_a_unix_socket_with_sshs_suffix() -> None:
    """ssh binds `<path>.<16 characters>` first: that must fit in the 108 bytes."""
    deep = Path("/" + "d" * 44)
    path = transport.control_path(_server(), deep)
    assert path is not None and len(str(path)) + 17 < 108
    assert transport.control_path(_server(), Path("/" + "d" * 46)) is None


def _row(inode: int, path: str, flags: str = "00010000", state: str = "01") -> str:
    return f"0000000000000000: 00000002 00000000 {flags} 0001 {state} {inode} {path}\n"


def test_listeners_are_the_listening_sockets_bound_at_the_socket_or_its_temporary_name(
        ) -> None:
    table = HEADER + "".join([
        _row(11, f"{SOCKET}.ZGyu7wUX9IxAMLC1"),  # ssh's bind name, then linked to SOCKET
        _row(12, str(SOCKET)),  # an ssh that binds the name itself
        _row(13, f"{SOCKET}.ZGyu7wUX9IxAMLC1", flags="00000000", state="03"),  # a client
        _row(14, f"{SOCKET}.x/y"),  # below a directory of that name: not ours
        _row(15, f"{SOCKET}0.abc"),  # another socket whose name starts the same
        _row(16, "/run/user/1000/bus"),
        "0000000000000000: 00000002 00000000 00010000 0001 01 17\n",  # unbound
        _row(18, "@/tmp/.X11-unix/X0"),  # abstract
    ])
    assert transport.listeners(table, SOCKET) == {"socket:[11]", "socket:[12]"}
    assert transport.listeners(HEADER, SOCKET) == set()


def test_listeners_keep_spaces_in_the_path() -> None:
    socket = Path("/tmp/a b/ssh-x")
    table = HEADER + _row(21, f"{socket}.abcdefgh12345678")
    assert transport.listeners(table, socket) == {"socket:[21]"}


def test_is_master_command_wants_ssh_as_master_for_this_socket() -> None:
    master = ["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=yes",
              "-o", f"ControlPath={SOCKET}", "-o", "ControlPersist=300", "-f", "-N",
              "-p", "22", "-l", "u", "h"]
    assert transport.is_master_command(master, SOCKET)
    assert transport.is_master_command(["/usr/bin/ssh", *master[1:]], SOCKET)
    client = [arg.replace("ControlMaster=yes", "ControlMaster=no") for arg in master]
    assert not transport.is_master_command(client, SOCKET)
    other = [arg.replace(str(SOCKET), f"{SOCKET}-other") for arg in master]
    assert not transport.is_master_command(other, SOCKET)
    assert not transport.is_master_command(["sshd", *master[1:]], SOCKET)
    assert not transport.is_master_command([], SOCKET)


@pytest.mark.parametrize("compress", [None, True, False])
def test_the_master_command_is_recognised_as_ours(compress: bool | None) -> None:
    """What `connect` starts is what `_stop_hung_masters` looks for, compressing or not."""
    server = _server()
    socket = transport.control_path(server, SOCKET.parent)
    assert socket is not None
    command = transport._master_command(server, socket, compress)
    assert transport.is_master_command(command, socket)
    chosen = [] if compress is None else [f"Compression={'yes' if compress else 'no'}"]
    assert [arg for arg in command if arg.startswith("Compression=")] == chosen


def test_connecting_waits_for_the_lock_only_within_its_bound(tmp_path: Path) -> None:
    """A process stopped while it holds the connect lock must not stop every pass after it."""
    holder = os.open(tmp_path / "connect.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with transport._one_at_a_time(tmp_path, 0.3):
            waited = time.monotonic() - started
        assert 0.3 <= waited < 2
        fcntl.flock(holder, fcntl.LOCK_UN)
        started = time.monotonic()
        with transport._one_at_a_time(tmp_path, 5):
            assert time.monotonic() - started < 1
    finally:
        os.close(holder)


def _fake_master(path: Path, answer: Callable[[socket.socket], None]) -> threading.Thread:
    """A listener at `path` that treats one connection with `answer`."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def _words(conn: socket.socket) -> tuple[int, ...]:
    (length,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
    body = conn.recv(length, socket.MSG_WAITALL)
    return struct.unpack(f">{length // 4}I", body)


def _master_like(request_offset: int = 0, hello: bytes = b"",
                 pid_words: int = 1) -> Callable[[socket.socket], None]:
    """Answers as OpenSSH's master does (hello, then the alive answer), or off by a detail."""
    def answer(conn: socket.socket) -> None:
        assert _words(conn) == (1, 4)
        extension = struct.pack(">I", 3) + b"ext" + struct.pack(">I", 1) + b"v"
        with_extension = struct.pack(">III", 8 + len(extension), 1, 4) + extension
        conn.sendall(hello or with_extension)
        kind, request = _words(conn)
        assert kind == 0x10000004
        conn.sendall(mux.message(0x80000005, (request + request_offset) % 2**32,
                                 *[4242] * pid_words))
    return answer


@pytest.mark.parametrize(("answer", "state"), [
    (_master_like(), Master.ANSWERED),  # a hello with an extension, then the answer
    (_master_like(request_offset=1), Master.STALE),  # an answer to another request
    (_master_like(hello=mux.message(1, 3)), Master.STALE),  # another protocol version
    (_master_like(pid_words=0), Master.STALE),  # an answer cut short
    (lambda conn: None, Master.STALE),  # closed at once
    (lambda conn: conn.sendall(struct.pack(">I", 2**31)), Master.STALE),  # no master's length
])
def test_the_health_check_takes_only_a_masters_exact_answer(
        tmp_path: Path, answer: Callable[[socket.socket], None], state: Master) -> None:
    path = tmp_path / "ssh-control"
    thread = _fake_master(path, answer)
    assert mux.alive(path, 5) is state
    thread.join(5)


def test_a_master_that_never_answers_is_hung_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "ssh-control"
    done = threading.Event()
    _fake_master(path, lambda conn: done.wait(10))  # accepts, reads nothing, says nothing
    started = time.monotonic()
    assert mux.alive(path, 0.5) is Master.HUNG
    assert 0.5 <= time.monotonic() - started < 2
    done.set()


def test_a_master_that_answers_a_byte_at_a_time_is_held_to_the_whole_timeout(
        tmp_path: Path) -> None:
    path = tmp_path / "ssh-control"

    def drip(conn: socket.socket) -> None:
        _words(conn)
        with contextlib.suppress(OSError):  # the check gave up: it closed the connection
            for byte in mux.message(1, 4):
                conn.sendall(bytes([byte]))
                time.sleep(0.2)

    _fake_master(path, drip)
    started = time.monotonic()
    assert mux.alive(path, 1.0) is Master.HUNG
    assert time.monotonic() - started < 2


def test_nobody_listening_or_no_socket_is_stale(tmp_path: Path) -> None:
    gone = tmp_path / "ssh-gone"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(gone))  # bound, never listening, then closed: a killed master's socket
    plain = tmp_path / "ssh-file"
    plain.write_text("not a socket")
    assert mux.alive(gone, 5) is Master.STALE
    assert mux.alive(plain, 5) is Master.STALE
