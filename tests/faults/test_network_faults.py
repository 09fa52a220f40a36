"""The network between laptop and server fails mid-session (fault scenarios 2 and 3, on a real
link): the server lives in a network namespace of its own behind a veth pair, and the test
drops every packet to it (a black hole, nft) or takes the link down.

A pass through the dead link ends within 15 s with a non-zero code and changes nothing; once
the link is back the next pass completes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.homes import Setup
from tests.support.ledger import Ledger
from tests.support.sshd import SshServer


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Link:
    """A namespace `ns` reached over veth `host_if` (ours) <-> `ns_if` (the server's)."""

    ns: str
    host_if: str
    server_address: str

    def nft(self, script: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=script,
                       text=True, check=True, capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = secrets.token_hex(3)  # unique names: other test runs share this machine
    ns, host_if, ns_if = f"rhfault-{tag}", f"rhh{tag}", f"rhn{tag}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{subnet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for args in (["addr", "add", f"{subnet}.2/30", "dev", ns_if], ["link", "set", ns_if, "up"],
                     ["link", "set", "lo", "up"]):
            _ip("netns", "exec", ns, "ip", *args)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        pytest.skip(f"cannot set up a network namespace: {exc}")
    try:
        yield Link(ns, host_if, f"{subnet}.2")
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def remote_user(tmp_path: Path, link: Link) -> Iterator[Setup]:
    with SshServer(tmp_path / "sshd", listen=link.server_address,
                   wrapper=["ip", "netns", "exec", link.ns]) as server:
        setup = Setup(tmp_path / "user", server)
        setup.configure(server={"host": link.server_address, "connect_timeout": 1})
        try:
            yield setup
        finally:
            setup.close()


def _black_hole(link: Link, port: int) -> None:
    link.nft(f"table inet rhfault {{\n chain input {{\n type filter hook input priority 0;\n"
             f" tcp dport {port} drop\n }}\n}}\n")


def _heal_black_hole(link: Link, _port: int) -> None:
    link.nft("delete table inet rhfault")


def _link_down(link: Link, _port: int) -> None:
    _ip("link", "set", link.host_if, "down")


def _link_up(link: Link, _port: int) -> None:
    _ip("link", "set", link.host_if, "up")


@pytest.mark.parametrize(("fault", "heal"), [(_black_hole, _heal_black_hole),
                                             (_link_down, _link_up)],
                         ids=["black-hole", "link-down"])
def test_dead_link_mid_session_ends_the_pass_within_15_s_and_the_next_one_completes(
        remote_user: Setup, link: Link, fault: Callable[[Link, int], None],
        heal: Callable[[Link, int], None]) -> None:
    docs = remote_user.home / "Documents"
    docs.mkdir()
    (docs / "a.txt").write_text("first")
    assert remote_user.sync().returncode == 0  # the shared ssh connection is open now
    ledger = Ledger(remote_user)
    (docs / "a.txt").write_text("second version")
    before = ledger.snapshot()
    assert remote_user.sshd is not None
    fault(link, remote_user.sshd.port)

    started = time.monotonic()
    result = remote_user.sync(timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode in (3, 75), result.stderr
    assert elapsed < 15, f"a dead link held the pass {elapsed:.1f} s"
    assert (remote_user.server_home / "Documents" / "a.txt").read_text() == "first"
    ledger.assert_nothing_lost(before)
    heal(link, remote_user.sshd.port)
    assert remote_user.sync().returncode == 0
    assert (remote_user.server_home / "Documents" / "a.txt").read_text() == "second version"
    ledger.assert_nothing_lost(before)
