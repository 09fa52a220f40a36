"""Choosing the front-end that serves a pass: the order, what moves on, what is remembered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from roaming_homes.outcome import Reason
from roaming_homes.unison import frontends, ssh

SERVER = ssh.Server(host="fe1", port=22, user="u", home="/home/u", local_root="",
                    connect_timeout=1, ssh_options=(), connection_reuse=300,
                    hosts=("fe1", "fe2", "fe3"), name="fe1")


def test_order_is_as_listed_with_recent_failures_last_the_latest_at_the_end() -> None:
    hosts = ("fe1", "fe2", "fe3")
    assert frontends.order(hosts, {}, 1000.0) == ["fe1", "fe2", "fe3"]
    assert frontends.order(hosts, {"fe1": 990.0}, 1000.0) == ["fe2", "fe3", "fe1"]
    assert frontends.order(hosts, {"fe1": 990.0, "fe2": 980.0}, 1000.0) == ["fe3", "fe2", "fe1"]
    # Forgotten after DOWN_FOR, and a time in the future (a clock set back) is not trusted.
    assert frontends.order(hosts, {"fe1": 1000.0 - frontends.DOWN_FOR - 1}, 1000.0)[0] == "fe1"
    assert frontends.order(hosts, {"fe1": 5000.0}, 1000.0)[0] == "fe1"


class FakeSsh:
    """ssh.connect as the front-ends answer: a Reason per host that fails."""

    def __init__(self, failing: dict[str, Reason]) -> None:
        self.failing = failing
        self.tried: list[tuple[str, bool]] = []

    def __call__(self, server: ssh.Server, control_dir: Path, patient: bool = True) -> Path:
        self.tried.append((server.host, patient))
        if server.host in self.failing:
            raise ssh.ConnectError(f"{server.host} failed", self.failing[server.host])
        return control_dir / f"socket-{server.host}"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    fake = FakeSsh({})
    monkeypatch.setattr(ssh, "connect", fake)
    return fake


def test_an_unreachable_front_end_is_skipped_and_tried_last_by_the_next_pass(
        tmp_path: Path, fake: FakeSsh) -> None:
    fake.failing = {"fe1": Reason.SERVER_UNREACHABLE}
    chosen, socket = frontends.connect(SERVER, tmp_path)
    assert (chosen.host, chosen.name, chosen.hosts) == ("fe2", "fe1", SERVER.hosts)
    assert chosen.stable_root == SERVER.stable_root == "ssh://u@fe1:22//home/u"
    assert socket == tmp_path / "socket-fe2"
    assert fake.tried == [("fe1", False), ("fe2", False)]
    fake.tried.clear()
    assert frontends.connect(SERVER, tmp_path)[0].host == "fe2"  # it does not try fe1 first
    assert fake.tried == [("fe2", False)]
    # Back, and its failure forgotten: the listed order again.
    (tmp_path / frontends.MEMORY).write_text('{"fe1": 1}\n')
    fake.failing = {}
    fake.tried.clear()
    assert frontends.connect(SERVER, tmp_path)[0].host == "fe1"


def test_only_try_elsewhere_failures_move_on(tmp_path: Path, fake: FakeSsh) -> None:
    for reason in (Reason.HOST_KEY, Reason.HOST_KEY_CHANGED, Reason.AUTH_REFUSED,
                   Reason.NO_TICKET, Reason.SSH_FAILED):
        fake.failing, fake.tried = {"fe1": reason}, []
        with pytest.raises(ssh.ConnectError) as raised:
            frontends.connect(SERVER, tmp_path)
        assert raised.value.reason is reason and fake.tried == [("fe1", False)]


def test_when_none_answers_the_pass_is_busy_if_any_was_busy_and_the_last_was_patient(
        tmp_path: Path, fake: FakeSsh) -> None:
    fake.failing = dict.fromkeys(SERVER.hosts, Reason.SERVER_UNREACHABLE)
    with pytest.raises(ssh.ConnectError) as raised:
        frontends.connect(SERVER, tmp_path)
    assert raised.value.reason is Reason.SERVER_UNREACHABLE
    assert [patient for _, patient in fake.tried] == [False, False, True]
    assert "fe1 failed; fe2 failed; fe3 failed" in raised.value.message
    fake.failing["fe2"], fake.tried = Reason.SERVER_BUSY, []
    with pytest.raises(ssh.ConnectError) as raised:
        frontends.connect(SERVER, tmp_path)
    assert raised.value.reason is Reason.SERVER_BUSY
    # All three failed in the listed order just now: the oldest failure is tried first.
    assert [host for host, _ in fake.tried] == ["fe1", "fe2", "fe3"]


def test_one_host_or_a_local_root_is_connected_as_before(tmp_path: Path, fake: FakeSsh) -> None:
    one = replace(SERVER, hosts=("fe1",))
    assert frontends.connect(one, tmp_path) == (one, tmp_path / "socket-fe1")
    assert fake.tried == [("fe1", True)]
    assert not (tmp_path / frontends.MEMORY).exists()


def test_a_damaged_memory_is_set_aside_and_the_listed_order_used(tmp_path: Path,
                                                                 fake: FakeSsh) -> None:
    (tmp_path / frontends.MEMORY).write_text('{"fe1": "yesterday"}')
    assert frontends.connect(SERVER, tmp_path)[0].host == "fe1"
    assert list(tmp_path.glob(f"{frontends.MEMORY}.broken-*"))


def test_per_user_order_spreads_users_and_keeps_each_users_order_and_name() -> None:
    hosts = ("fe1", "fe2", "fe3")
    firsts = {ssh.per_user_order(hosts, f"user{n}")[0] for n in range(30)}
    assert firsts == set(hosts)  # every front-end is somebody's first
    for user in ("alice", "bob"):
        order = ssh.per_user_order(hosts, user)
        assert order == ssh.per_user_order(hosts, user) and sorted(order) == sorted(hosts)
        assert order == (*hosts, *hosts)[hosts.index(order[0]):][:3]  # a rotation
    config = {"host": list(hosts), "port": 22, "user": "alice", "home": "/home/alice",
              "root": "", "connect_timeout": 3, "ssh_options": [], "connection_reuse": 300,
              "kerberos": "auto", "compression": "auto", "host_order": "per-user",
              "watch_idle_timeout": 300}
    server = ssh.Server.from_config(config)
    assert server.hosts == ssh.per_user_order(hosts, "alice") and server.host == server.hosts[0]
    # The records name the server by the listed first entry, whatever the user's order.
    assert server.name == "fe1" and server.stable_root == "ssh://alice@fe1:22//home/alice"
    assert ssh.Server.from_config({**config, "host_order": "listed"}).hosts == hosts
