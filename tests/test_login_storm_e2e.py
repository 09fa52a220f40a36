"""Login storms end to end: real CLI processes against a real sshd that turns logins away
(MaxStartups). A busy server is asked again within the pass; it is never "unreachable"."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import without_monitor
from tests.support.homes import CLI, Setup
from tests.support.sshd import SshServer

STORM = 40  # computers starting a sync in the same second
STORM_BOUND = 90.0  # seconds until every one of them has finished


def _held_open(sshd: SshServer) -> socket.socket:
    """A TCP connection that never logs in: with MaxStartups 1 sshd turns away every other
    login while it is open (until LoginGraceTime)."""
    time.sleep(1.0)  # sshd's own start-up probe must have been counted out first
    held = socket.create_connection(("127.0.0.1", sshd.port))
    time.sleep(0.3)
    return held


@pytest.fixture
def full_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd that lets one unauthenticated connection in at a time (MaxStartups 1)."""
    with SshServer(tmp_path / "sshd", env={"PATH": without_monitor(tmp_path / "no-monitor")},
                   max_startups="1") as server:
        yield server


def test_a_login_turned_away_is_tried_again_and_the_sync_succeeds(
        tmp_path: Path, full_sshd: SshServer) -> None:
    user = Setup(tmp_path / "user", full_sshd)
    try:
        (user.home / "Documents").mkdir()
        (user.home / "Documents" / "a.txt").write_text("a")
        held = _held_open(full_sshd)
        with open(tmp_path / "sync.err", "wb") as err:
            sync = subprocess.Popen([*CLI, "sync"], env=user.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
            time.sleep(2.0)
            held.close()
            assert sync.wait(timeout=60) == 0
        assert "is busy (it turned the login away): trying again" in (
            tmp_path / "sync.err").read_text()
        assert (user.server_home / "Documents" / "a.txt").read_text() == "a"
    finally:
        user.close()


def test_a_server_busy_past_the_patience_is_busy_not_offline(
        tmp_path: Path, full_sshd: SshServer) -> None:
    user = Setup(tmp_path / "user", full_sshd)
    try:
        user.configure(server={"connect_timeout": 1})  # patience: 10 x 1 s
        (user.home / "Documents").mkdir()
        held = _held_open(full_sshd)
        try:
            started = time.monotonic()
            code, outcome = user.sync_json()
            took = time.monotonic() - started
        finally:
            held.close()
        assert (code, outcome["result"], outcome["reason"]) == (75, "busy", "server-busy")
        # At least the four shortest delays (0.25 + 0.5 + 1 + 2 s: a fifth of 4-8 s may not fit
        # in the patience); at most the patience, the last try's bound and start-up.
        assert 3.5 < took < 10 + 2 * 1 + 10 + 5
        status = user.status()
        assert status["state"] != "offline" and status["offline_since"] is None
    finally:
        user.close()


def test_forty_computers_starting_together_all_sync(tmp_path: Path) -> None:
    """sshd's default MaxStartups (10:30:100) drops logins past ten pending ones: without
    retrying, most of these would end "unreachable" (exit 75)."""
    with SshServer(tmp_path / "sshd", env={"PATH": without_monitor(tmp_path / "no-monitor")},
                   max_startups="10:30:100") as sshd:
        users = [Setup(tmp_path / f"user{n}", sshd) for n in range(STORM)]
        procs: list[subprocess.Popen[str]] = []
        try:
            for n, user in enumerate(users):
                (user.home / "Documents").mkdir()
                (user.home / "Documents" / f"from-{n}.txt").write_text(str(n))
            started = time.monotonic()
            procs = [subprocess.Popen([*CLI, "sync", "--json"], env=user.env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for user in users]
            answers = [proc.communicate(timeout=max(0.1, started + STORM_BOUND
                                                     - time.monotonic())) for proc in procs]
            took = time.monotonic() - started
            codes = [proc.returncode for proc in procs]
            turned_away = sum("turned the login away" in err for _, err in answers)
            print(f"{STORM} syncs in {took:.1f} s; {turned_away} were turned away at least "
                  f"once; exit codes {sorted(set(codes))}")  # shown with -s or on failure
            assert codes == [0] * STORM, [json.loads(out or "{}").get("message") or err
                                          for (out, err), code in zip(answers, codes, strict=True)
                                          if code]
            assert took < STORM_BOUND
            for n, user in enumerate(users):
                assert (user.server_home / "Documents" / f"from-{n}.txt").read_text() == str(n)
        finally:
            for proc in procs:  # only when the bound was missed: none is left behind
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for user in users:
                user.close()


def test_check_says_the_server_is_busy_not_unreachable(tmp_path: Path,
                                                       full_sshd: SshServer) -> None:
    user = Setup(tmp_path / "user", full_sshd)
    try:
        user.configure(server={"connect_timeout": 1})
        held = _held_open(full_sshd)
        try:
            result = user.run("check", "--json")
        finally:
            held.close()
        found = {item["name"]: item for item in json.loads(result.stdout)["checks"]}
        assert found["server reachable"]["status"] == "ok"
        assert found["ssh login"]["status"] == "fail"
        assert "busy" in found["ssh login"]["detail"]
        assert "MaxStartups" in found["ssh login"]["fix"]
    finally:
        user.close()
