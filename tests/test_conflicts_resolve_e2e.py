"""`roaming-homes conflicts resolve PATH --keep both|local|server|newer` through the real CLI
and unison over sshd (issue 18, item 3): the conflict is settled on both sides by one command."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.homes import CLI, Setup


def conflict(user: Setup, name: str = "report.txt") -> tuple[Path, Path]:
    """`name` edited on both sides after a sync (here later); prefer = none leaves it."""
    user.configure(sync={"prefer": "none"})
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    (docs / name).write_text("original")
    assert user.sync().returncode == 0
    there = user.server_home / "Documents" / name
    there.write_text("server edit")
    os.utime(there, (time.time() - 60, time.time() - 60))
    (docs / name).write_text("laptop edit")
    assert user.sync().returncode == 1
    return docs / name, there


def resolve(user: Setup, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "conflicts", "resolve", *args], env=user.env, cwd=cwd,
                          text=True, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize(("keep", "winner"), [("local", "laptop edit"),
                                              ("server", "server edit"),
                                              ("newer", "laptop edit")])
def test_one_side_wins_on_both_sides_and_the_loser_is_in_the_backups(
        user: Setup, keep: str, winner: str) -> None:
    here, there = conflict(user)

    result = resolve(user, "--keep", keep, "--json", str(here))

    outcome = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert outcome["result"] == "in-sync" and outcome["conflicts"] == []
    assert here.read_text() == there.read_text() == winner
    assert user.status()["conflicts"] == []
    assert "(the other in the backups)" in outcome["message"]
    assert not [p for p in here.parent.iterdir() if "conflict" in p.name]


def test_keep_both_keeps_this_version_and_the_other_as_a_copy_everywhere(user: Setup) -> None:
    here, there = conflict(user)

    result = resolve(user, "--keep", "both", "report.txt", cwd=here.parent)

    assert result.returncode == 0, result.stderr
    assert "kept both versions of Documents/report.txt" in result.stdout
    assert here.read_text() == there.read_text() == "laptop edit"
    for docs in (here.parent, there.parent):
        (copy,) = [p for p in docs.iterdir() if "conflict" in p.name]
        assert copy.name.startswith("report (conflict from the server ")
        assert copy.read_text() == "server edit"
    assert user.sync().returncode == 0  # and it stays settled


def test_a_path_that_is_not_a_conflict_is_a_usage_error(user: Setup) -> None:
    here, there = conflict(user)

    result = resolve(user, "--keep", "local", str(here.parent / "other.txt"))
    outside = resolve(user, "--keep", "local", "/etc/passwd")

    assert result.returncode == 64 and "not an unresolved conflict" in result.stderr
    assert outside.returncode == 64 and "is not inside the home" in outside.stderr
    assert there.read_text() == "server edit" and here.read_text() == "laptop edit"
    assert user.run("conflicts").returncode == 0  # the listing still works


def test_with_the_session_daemon_running_resolve_waits_its_turn(user: Setup) -> None:
    from tests.support.daemon import DaemonProcess
    from tests.support.waiting import wait_for

    here, there = conflict(user)
    user.configure(sync={"prefer": "none", "interval": 1})
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: user.status()["finished"] is not None
                 and user.status()["result"] == "conflicts", 30, "a pass of the daemon's")

        result = resolve(user, "--keep", "server", str(here))  # its passes run every second

        assert result.returncode == 0, result.stderr
        assert here.read_text() == there.read_text() == "server edit"
        assert daemon.proc.poll() is None
    finally:
        daemon.close()
