"""One person, many computers: each computer has a stable id under its changing name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from roaming_homes.paths import Locations
from roaming_homes.session import computer
from tests.support.homes import CLI, Setup


def run_as_host(user: Setup, hostname: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on a computer called `hostname` (a UTS namespace of its own)."""
    return subprocess.run(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                           hostname, *CLI, *args], env=user.env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_renaming_the_computer_is_a_normal_pass_and_deletions_still_propagate(
        user: Setup) -> None:
    docs = user.home / "Documents"
    docs.mkdir()
    for name in ("keep.txt", "drop.txt"):
        (docs / name).write_text(name)
    first = run_as_host(user, "laptop-old", "sync", "--json")
    assert first.returncode == 0, first.stderr
    (docs / "drop.txt").unlink()

    renamed = run_as_host(user, "laptop-new", "sync", "--json")

    outcome = json.loads(renamed.stdout)
    assert renamed.returncode == 0, renamed.stderr
    assert outcome["first_run"] is False and outcome["result"] == "in-sync"
    assert not (user.server_home / "Documents" / "drop.txt").exists()
    assert (user.server_home / "Documents" / "keep.txt").exists()


def _locations(tmp_path: Path) -> Locations:
    return Locations.from_env({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")})


def test_the_id_is_kept_and_made_anew_on_another_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = tmp_path / "machine-id"
    machine.write_text("a" * 32 + "\n")
    monkeypatch.setattr(computer, "MACHINE_ID_FILES", (machine,))
    locations = _locations(tmp_path)

    one = computer.this_computer(locations, "desk")
    assert computer.this_computer(locations, "renamed").id == one.id  # same machine: kept
    assert len(one.id) == 16 and one.name == "desk"
    machine.write_text("b" * 32 + "\n")  # the home (with its state) copied to another machine
    assert computer.this_computer(locations).id != one.id
    (locations.state_dir / computer.ID_FILE).write_text('{"id": ["not", "an", "id"]}')
    assert len(computer.this_computer(locations).id) == 16  # damaged: made anew
