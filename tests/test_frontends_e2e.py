"""Several sshd front-ends over one GlusterFS volume (tests/support/gluster.py): passes fail
over to the next front-end, a switch is an ordinary pass, two computers of one user through
different front-ends at once lose nothing, and `check` reports every front-end.

The cluster takes ~8 s to start: one for the module (in each xdist process that runs some of
its tests), each test with a home of its own on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes.actions import leftovers
from tests.support import gluster
from tests.support.daemon import FIRST_PASS, DaemonProcess, appears, stop_as_logout
from tests.support.fsmonitor import monitors_of, write_wrapper
from tests.support.homes import CLI, Setup
from tests.support.ledger import Ledger, digest, temp_files
from tests.support.programs import SYSTEM_PATH
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(bool(gluster.unavailable()),
                                reason=gluster.unavailable() or "")

THROTTLE = Path(__file__).parent / "support" / "throttle.py"
RATE = 8 * 1024 * 1024  # bytes/s: BIG takes about 2 s through a front-end
BIG = 16 * 1024 * 1024
MEMORY = "frontends.json"


@pytest.fixture(scope="module")
def tag(tmp_path_factory: pytest.TempPathFactory) -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def monitor_bin(tmp_path_factory: pytest.TempPathFactory, tag: str) -> Path:
    """Our unison-fsmonitor, for the front-ends' sessions and for the real-time test."""
    directory = tmp_path_factory.mktemp("bin")
    write_wrapper(directory, tag)
    return directory


@pytest.fixture(scope="module")
def cluster(monitor_bin: Path) -> Iterator[gluster.Cluster]:
    made = gluster.Cluster(3, certified=("fe3",), env={"PATH": f"{monitor_bin}:{SYSTEM_PATH}"})
    try:
        yield made
    finally:
        made.close()


def _computer(base: Path, cluster: gluster.Cluster, home: Path, hosts: list[str],
              **server: object) -> Setup:
    """A computer of a user whose home is `home` on the volume, reached through `hosts`."""
    setup = Setup(base, cluster.fronts[0].sshd)
    setup.server_home = home
    home.mkdir(exist_ok=True)
    setup.configure(server={"host": hosts, "home": str(home), "connect_timeout": 2,
                            "ssh_options": cluster.ssh_options(), **server},
                    sync={"paths": ["Documents"], "excluded_users": [], "watch": False})
    return setup


@pytest.fixture
def computers(tmp_path: Path, cluster: gluster.Cluster) -> Iterator[list[Setup]]:
    """Two computers of one user (a home of this test's own on the volume): the first tries
    fe1, fe2, fe3; the second fe2, fe1."""
    home = cluster.mount / f"home-{uuid.uuid4().hex[:8]}"
    made = [_computer(tmp_path / "one", cluster, home, cluster.hosts),
            _computer(tmp_path / "two", cluster, home, [cluster.hosts[1], cluster.hosts[0]])]
    try:
        yield made
    finally:
        for setup in made:
            setup.close()
        for front in cluster.fronts:  # a test that stopped a front-end brings it back
            if front.sshd.proc is None:
                front.sshd.start()


def _outcome(user: Setup) -> dict[str, object]:
    """`sync --json`'s outcome, with its exit code as "code"."""
    code, outcome = user.sync_json()
    return {"code": code, **outcome}


def _last_pass(user: Setup) -> list[str]:
    """The transcript of the user's last pass (sync.log, from its start line)."""
    lines = (user.state_dir / "sync.log").read_text().splitlines()
    starts = [index for index, line in enumerate(lines) if "--- pass started" in line]
    return lines[starts[-1]:]


def _last_pass_was_first(user: Setup) -> bool:
    """Whether the last pass ran as a first sync (-ignorearchives), from its transcript."""
    return _last_pass(user)[0].endswith("first run: True) ---")


def _served_by(cluster: gluster.Cluster) -> list[str]:
    return [front.name for front in cluster.fronts if cluster.serving(front.name)]


def test_a_switch_of_front_ends_is_an_ordinary_pass_and_each_front_end_is_checked(
        computers: list[Setup], cluster: gluster.Cluster) -> None:
    laptop = computers[0]
    docs, sdocs = laptop.home / "Documents", laptop.server_home / "Documents"
    docs.mkdir()
    for name in ("gone-here.txt", "gone-there.txt", "edit-here.txt", "edit-there.txt"):
        (docs / name).write_text(f"original {name}\n")
    assert _outcome(laptop)["code"] == 0
    assert _served_by(cluster) == ["fe1"]  # the first listed, its connection kept open
    assert (sdocs / "edit-there.txt").read_text() == "original edit-there.txt\n"

    # fe1 dies between passes; changes on both sides meanwhile.
    cluster.front("fe1").sshd.stop()
    (docs / "gone-here.txt").unlink()
    (docs / "edit-here.txt").write_text("edited here\n")
    (sdocs / "gone-there.txt").unlink()
    (sdocs / "edit-there.txt").write_text("edited on the server\n")

    switched = _outcome(laptop)
    assert switched["code"] == 0 and switched["result"] == "in-sync", switched
    assert not switched.get("conflicts") and not _last_pass_was_first(laptop)
    assert _served_by(cluster) == ["fe2"]
    assert str(switched["server"]).startswith(f"{laptop.sshd.user}@{cluster.hosts[1]}:")
    assert sorted(p.name for p in docs.iterdir()) == sorted(p.name for p in sdocs.iterdir()) \
        == ["edit-here.txt", "edit-there.txt"]  # deletions went both ways, nothing came back
    assert (sdocs / "edit-here.txt").read_text() == "edited here\n"
    assert (docs / "edit-there.txt").read_text() == "edited on the server\n"
    memory = json.loads((laptop.runtime / "roaming-homes" / MEMORY).read_text())
    assert list(memory) == [cluster.hosts[0]]  # fe1 is tried last for a while

    # fe2 dies too: fe3, trusted only through the host CA, serves.
    cluster.front("fe2").sshd.stop()
    (docs / "via-fe3.txt").write_text("through the certified front-end\n")
    via_ca = _outcome(laptop)
    assert via_ca["code"] == 0 and not _last_pass_was_first(laptop), via_ca
    assert _served_by(cluster) == ["fe3"]
    assert (sdocs / "via-fe3.txt").read_text() == "through the certified front-end\n"

    check = laptop.run("check", "--json")
    lines = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
    for front, up in (("127.0.0.1", False), ("127.0.0.2", False), ("127.0.0.3", True)):
        assert lines[f"server reachable ({front})"]["status"] == ("ok" if up else "fail")
        assert lines[f"host key ({front})"]["status"] == ("ok" if up else "skip")
        assert lines[f"unison ({front})"]["status"] == ("ok" if up else "skip")
    assert lines["server home"]["status"] == "ok" and check.returncode == 1

    # Both come back, and the memory of their failure runs out: the listed order again.
    cluster.front("fe1").sshd.start()
    cluster.front("fe2").sshd.start()
    (laptop.runtime / "roaming-homes" / MEMORY).write_text('{"127.0.0.1": 1}\n')
    (sdocs / "edit-there.txt").write_text("edited on the server again\n")
    back = _outcome(laptop)
    assert back["code"] == 0 and not _last_pass_was_first(laptop), back
    assert "fe1" in _served_by(cluster)
    assert (docs / "edit-there.txt").read_text() == "edited on the server again\n"
    check = laptop.run("check", "--json")
    assert check.returncode == 0, check.stdout
    names = [c["name"] for c in json.loads(check.stdout)["checks"]]
    assert [n for n in names if n.startswith("ssh login")] == [
        f"ssh login ({host})" for host in cluster.hosts]


def test_killing_the_front_end_in_use_mid_pass_loses_nothing_and_the_next_one_serves(
        computers: list[Setup], cluster: gluster.Cluster) -> None:
    laptop = computers[0]
    throttle = [f"ProxyCommand={sys.executable} {THROTTLE} %%h %%p {RATE} {laptop.base}/count"]
    laptop.configure(server={**laptop.config["server"],
                             "ssh_options": [*cluster.ssh_options(), "-o", *throttle]})
    docs = laptop.home / "Documents"
    docs.mkdir()
    (docs / "small.txt").write_text("small\n")
    assert _outcome(laptop)["code"] == 0
    big = os.urandom(BIG)
    (docs / "big.bin").write_bytes(big)
    ledger = Ledger(laptop)
    before = ledger.snapshot()

    sync = subprocess.Popen([*CLI, "sync", "--json"], env=laptop.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: temp_files(laptop.server_home / "Documents"), 30, "the transfer to start",
             interval=0.01)
    cluster.front("fe1").sshd.stop()  # the front-end and every session on it
    out, err = sync.communicate(timeout=60)
    killed = json.loads(out)
    assert sync.returncode == 75 and killed["result"] == "offline", (out, err)
    assert killed["reason"] == "connection-lost"
    assert not (laptop.server_home / "Documents" / "big.bin").exists()  # never a partial file
    ledger.assert_nothing_lost(before)

    deadline = time.monotonic() + 30
    while (after := _outcome(laptop))["code"] == 75 and time.monotonic() < deadline:
        time.sleep(0.2)  # the killed pass's server side may still hold unison's lock
    assert after["code"] == 0 and after["result"] == "in-sync", after
    assert _served_by(cluster) == ["fe2"]
    assert (laptop.server_home / "Documents" / "big.bin").read_bytes() == big
    assert temp_files(laptop.server_home / "Documents") == []
    ledger.assert_nothing_lost(before)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_two_computers_through_different_front_ends_at_once_lose_no_edit(
        computers: list[Setup], cluster: gluster.Cluster, prefer: str) -> None:
    for setup in computers:
        setup.configure(server=setup.config["server"],
                        sync={**setup.config["sync"], "prefer": prefer})
    one, two = computers
    (one.home / "Documents").mkdir()
    (one.home / "Documents" / "shared.txt").write_text("start\n")
    assert _outcome(one)["code"] == 0 and _outcome(two)["code"] == 0
    assert _served_by(cluster) == ["fe1", "fe2"]  # one through each
    written = set()
    for round_ in range(4):
        # Each round's text is longer than the last: a same-size rewrite in the same
        # two-second step as the pass before is one unison's quick check cannot see (a CLI
        # pass knows of no write; docs/unison.md, fastcheck).
        texts = {setup: f"round {round_} by {setup.base.name}{'.' * round_}\n"
                 for setup in computers}
        for setup, text in texts.items():
            (setup.home / "Documents" / "shared.txt").write_text(text)
            (setup.home / "Documents" / f"{setup.base.name}-{round_}.txt").write_text(text)
            written.add(digest(text.encode()))
        passes = [subprocess.Popen([*CLI, "sync", "--json"], env=setup.env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                  for setup in computers]
        for proc in passes:
            out, err = proc.communicate(timeout=120)
            # in sync, conflicts (prefer none), or a file changed under a transfer (partial):
            # never a failure of the archives
            assert proc.returncode in (0, 1, 2), (out, err)
    for _ in range(3):  # settle: each computer gets what the other brought
        last = [_outcome(setup) for setup in computers]
    if prefer == "none":  # the edits of shared.txt stay apart until the user chooses
        assert {tuple(o["conflicts"]) for o in last} <= {(), ("Documents/shared.txt",)}, last
        assert any(o["conflicts"] for o in last), last
    else:
        assert [o["code"] for o in last] == [0, 0], (last, [_last_pass(s) for s in computers])
    trees = []
    for root in (one.home, two.home, one.server_home):
        # A transfer the other computer's write overtook (exit 2 above) may leave unison's
        # temporary file on the server: it is removed once nobody wrote to it for
        # leftovers.SERVER_QUIET_MINUTES (other computers' passes write there too), not now.
        files = {p.name: p.read_bytes() for p in (root / "Documents").iterdir()
                 if p.is_file() and (prefer != "none" or p.name != "shared.txt")
                 and not (root == one.server_home and leftovers.TEMP_NAME.match(p.name))}
        trees.append(files)
        assert all(f"{s.base.name}-{r}.txt" in files for s in computers for r in range(4))
    assert trees[0] == trees[1] == trees[2]
    kept = {h for root in (one.home, two.home, one.server_home)
            for h in _digests(root / "Documents")}
    for setup in computers:
        kept |= {h for d in Ledger(setup).backup_dirs for h in _digests(d)}
    assert written <= kept  # every version written is somewhere: a file, a copy, a backup


def _digests(root: Path) -> set[str]:
    return {digest(p.read_bytes()) for p in root.rglob("*") if p.is_file()} \
        if root.exists() else set()


def test_real_time_mode_fails_over_when_the_front_end_of_its_monitor_dies(
        computers: list[Setup], cluster: gluster.Cluster, monitor_bin: Path, tag: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = computers[0].base.with_name("watching")
    monkeypatch.setenv("PATH", f"{monitor_bin}:{os.environ.get('PATH', SYSTEM_PATH)}")
    laptop = _computer(base, cluster, computers[0].server_home, cluster.hosts)
    computers.append(laptop)  # closed by the fixture
    laptop.configure(server=laptop.config["server"],
                     sync={**laptop.config["sync"], "watch": True, "interval": 3600})
    docs, sdocs = laptop.home / "Documents", laptop.server_home / "Documents"
    docs.mkdir()
    daemon = DaemonProcess(laptop)
    try:
        daemon.wait_for_log("in sync", timeout=FIRST_PASS)
        wait_for(lambda: len(monitors_of(laptop.home, tag)) == 2, 30, "a monitor on each end")
        assert _served_by(cluster) == ["fe1"]
        (docs / "before.txt").write_text("watched through fe1\n")
        wait_for(appears(sdocs / "before.txt", "watched through fe1\n"), 30, "fe1 cycle")

        cluster.front("fe1").sshd.stop()
        # The session ends with its monitor (offline: its connection was lost); the daemon
        # probes at once rather than an interval later, and watches through fe2.
        wait_for(lambda: cluster.serving("fe2") and len(monitors_of(laptop.home, tag)) == 2,
                 60, "real-time mode through fe2")
        (docs / "after.txt").write_text("watched through fe2\n")
        wait_for(appears(sdocs / "after.txt", "watched through fe2\n"), 30, "fe2 cycle")
        # A write through fe2's own mount reaches the laptop in real time.
        subprocess.run(["ssh", *cluster.ssh_options(), "-p", str(cluster.port),
                        cluster.hosts[1], f"echo 'written on fe2' > {sdocs / 'remote.txt'}"],
                       check=True, timeout=30, stdin=subprocess.DEVNULL)
        wait_for(appears(docs / "remote.txt", "written on fe2\n"), 30, "a server write here")
    finally:
        stop_as_logout([daemon])
        print(daemon.log)  # shown when the test fails, with unison's words
        with contextlib.suppress(OSError):
            print((laptop.state_dir / "sync.log").read_text(errors="replace")[-20000:])
    assert daemon.proc.returncode == 0, daemon.log  # stopped as at logout, not killed
