"""The pure decisions about the shared ssh connection's master (unison/ssh.py): its socket's
name, its state from `ssh -O`, and how our master is recognised by the socket it listens on."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

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


def test_the_master_command_is_recognised_as_ours() -> None:
    """What `connect` starts is what `_stop_hung_masters` looks for."""
    server = _server()
    socket = transport.control_path(server, SOCKET.parent)
    assert socket is not None
    command = transport._master_command(server, socket)
    assert transport.is_master_command(command, socket)


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
