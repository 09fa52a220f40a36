"""The shared connection compresses on a slow link and not on a fast one (`server.compression`),
end to end: the real CLI and daemon over the real sshd, through a relay that counts what it
carries and, for a slow link, holds each answer from the server a while.

What is carried is the evidence: a file of zeros crosses in a few kilobytes when the connection
compresses, in full when it does not. The master's own command line says how it was started.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roaming_homes.unison.compression import SLOW
from tests.support.daemon import FIRST_PASS, DaemonProcess, appears, stop_as_logout
from tests.support.fsmonitor import monitors_of
from tests.support.homes import Setup
from tests.support.procfs import processes
from tests.support.transfer import MB, throttle
from tests.support.waiting import wait_for

ZEROS = 4 * MB
FAST = 400 * MB  # bytes/s: the relay's rate
HELD = SLOW  # seconds each answer of the server is held on the slow link: an exchange, two
AGAIN = "starting the shared connection again with compression"


def counted(user: Setup, count_file: Path) -> int:
    """Bytes the relay carried to the server, read once the connection is closed (the relay
    writes its last count as it ends)."""
    user.close_connection()
    wait_for(count_file.exists, 10, "the relay's count")
    return int(json.loads(count_file.read_text())["up"])


def master_options(user: Setup) -> list[str]:
    """The `-o` options of the shared connection's master now running for this user."""
    socket = next((user.runtime / "roaming-homes").glob("ssh-*"))
    for _pid, read in processes("cmdline"):
        argv = read["cmdline"].decode(errors="replace").split("\0")
        if "ControlMaster=yes" in argv and f"ControlPath={socket}" in argv:
            return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-o"]
    raise AssertionError("no master runs for this user")


def remembered(user: Setup) -> list[str]:
    return [path.read_text().split()[0]
            for path in (user.runtime / "roaming-homes").glob("compression-ssh-*")]


def zeros(user: Setup, name: str = "zeros.bin") -> None:
    docs = user.home / "Documents"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / name).write_bytes(bytes(ZEROS))


@pytest.mark.timeout(120)
def test_a_fast_link_is_not_compressed(user: Setup) -> None:
    """Straight to the sshd over loopback (no relay in between: what `no` carries is shown
    below, with `yes` and `no`). Nothing remembered: the master starts compressed, the link
    measures fast, and it is started again uncompressed before anything uses it, without a
    word (the link did not change: the first master was a guess). The next master starts
    uncompressed."""
    zeros(user)

    first = user.sync()

    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert "Compression=no" in master_options(user)
    user.close_connection()
    second = user.sync()
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert "Compression=no" in master_options(user)
    assert remembered(user) == ["no"]
    line = next(r for r in json.loads(user.run("check", "--json").stdout)["checks"]
                if r["name"] == "compression")
    assert line["status"] == "ok" and line["detail"].startswith("off (auto: an exchange took")
    assert (user.server_home / "Documents" / "zeros.bin").read_bytes() == bytes(ZEROS)


@pytest.mark.timeout(180)
def test_a_slow_link_is_compressed_and_the_next_master_starts_so(user: Setup,
                                                                 tmp_path: Path) -> None:
    """Nothing remembered: the master starts compressed, the link measures slow, and it is
    kept (no second login). The next master starts compressed too."""
    throttle(user, FAST, tmp_path / "first.json", delay=HELD)
    zeros(user)

    first = user.sync()

    assert first.returncode == 0, first.stderr
    assert "Compression=yes" in master_options(user)
    assert remembered(user) == ["yes"]
    assert AGAIN not in first.stderr
    assert counted(user, tmp_path / "first.json") < ZEROS // 8
    throttle(user, FAST, tmp_path / "second.json", delay=HELD)
    zeros(user, "more.bin")

    second = user.sync()

    assert second.returncode == 0, second.stderr
    assert "Compression=yes" in master_options(user)
    assert AGAIN not in second.stderr  # started as remembered: no second login
    assert counted(user, tmp_path / "second.json") < ZEROS // 8
    for name in ("zeros.bin", "more.bin"):
        assert (user.server_home / "Documents" / name).read_bytes() == bytes(ZEROS)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("setting", "held", "compressed"), [("yes", 0.0, True),
                                                             ("no", HELD, False)])
def test_yes_and_no_stand_whatever_the_link(user: Setup, tmp_path: Path, setting: str,
                                            held: float, compressed: bool) -> None:
    user.configure(server={"compression": setting})
    throttle(user, FAST, tmp_path / "count.json", delay=held)
    zeros(user)

    assert user.sync().returncode == 0

    assert f"Compression={setting}" in master_options(user)
    assert remembered(user) == []  # nothing measured
    assert (counted(user, tmp_path / "count.json") < ZEROS // 8) is compressed


@pytest.mark.timeout(120)
def test_ssh_options_that_compress_stand_and_nothing_is_measured(user: Setup,
                                                                 tmp_path: Path) -> None:
    throttle(user, FAST, tmp_path / "count.json")
    user.configure(server={**user.config["server"],
                           "ssh_options": [*user.config["server"]["ssh_options"], "-C"]})
    zeros(user)

    assert user.sync().returncode == 0

    assert not [o for o in master_options(user) if o.startswith("Compression=")]
    assert remembered(user) == []
    assert counted(user, tmp_path / "count.json") < ZEROS // 8


@pytest.mark.timeout(180)
@pytest.mark.parametrize("watch", [False, True])
def test_the_daemon_compresses_a_slow_link(watched: Setup, tag: str, tmp_path: Path,
                                           watch: bool) -> None:
    """Interval mode, and real-time mode (its session's master carries the monitor's
    exchange too)."""
    user = watched
    user.configure(sync={"watch": watch, "interval": 2 if not watch else 3600})
    throttle(user, FAST, tmp_path / "count.json", delay=HELD)
    daemon = DaemonProcess(user)
    try:
        daemon.wait_for_log("in sync", timeout=FIRST_PASS)
        if watch:
            wait_for(lambda: len(monitors_of(user.home, tag)) == 2, 30,
                     "a monitor on each end")
        zeros(user)
        wait_for(appears(user.server_home / "Documents" / "zeros.bin", "\0" * ZEROS), 60,
                 "the file on the server")
        assert "Compression=yes" in master_options(user)
    finally:
        stop_as_logout([daemon])
    assert counted(user, tmp_path / "count.json") < ZEROS // 8
