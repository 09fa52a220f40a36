"""One person, many computers: each computer has a stable id under its changing name."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roaming_homes.paths import Locations
from roaming_homes.session import computer
from tests.support.homes import CLI, Setup
from tests.support.sshd import SshServer


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


@pytest.fixture
def two(tmp_path: Path, sshd: SshServer) -> Iterator[tuple[Setup, Setup]]:
    """Two computers of one person (own HOME, state, runtime, config) on one server home."""
    a, b = Setup(tmp_path / "a", sshd), Setup(tmp_path / "b", sshd)
    a.configure(client={"name": "laptop-ana"})
    b.configure(server={"home": str(a.server_home)}, client={"name": "desk-ana"})
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _populate(computer: Setup, count: int) -> Path:
    docs = computer.home / "Documents"
    docs.mkdir(exist_ok=True)
    for i in range(count):
        (docs / f"f{i:02d}.txt").write_text(f"file {i}")
    return docs


def test_a_deletion_confirmed_on_one_computer_is_followed_by_the_other(
        two: tuple[Setup, Setup]) -> None:
    a, b = two
    docs_a = _populate(a, 40)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    for i in range(30):
        (docs_a / f"f{i:02d}.txt").unlink()
    assert a.sync().returncode == 4  # refused until the user says so
    assert a.sync("--force").returncode == 0

    code, outcome = b.sync_json()

    assert code == 0, outcome
    assert "following a deletion confirmed on laptop-ana" in outcome["message"]
    assert "30 file(s), kept in backups" in outcome["message"]
    assert sorted(p.name for p in (b.home / "Documents").iterdir()) == [
        f"f{i:02d}.txt" for i in range(30, 40)]
    kept = b.state_home / "roaming-homes" / "backup" / "Documents"
    assert len(list(kept.iterdir())) == 30  # every file it removed, in its backups


def test_a_deletion_confirmed_nowhere_is_still_refused(two: tuple[Setup, Setup]) -> None:
    a, b = two
    _populate(a, 40)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    for i in range(30):  # gone on the server, by no computer's pass
        (a.server_home / "Documents" / f"f{i:02d}.txt").unlink()

    assert b.sync().returncode == 4
    assert len(list((b.home / "Documents").iterdir())) == 40


def test_status_shows_every_computer_and_which_one_this_is(two: tuple[Setup, Setup]) -> None:
    a, b = two
    _populate(a, 1)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0

    listed = {c["name"]: c for c in b.status()["computers"]}
    text = b.run("status").stdout

    assert set(listed) == {"laptop-ana", "desk-ana"}
    assert listed["desk-ana"]["this"] and not listed["laptop-ana"]["this"]
    assert all(c["result"] == "in-sync" and c["warning"] is None for c in listed.values())
    assert "desk-ana (this one): last sync" in text and "laptop-ana: last sync" in text


def test_a_conflict_copy_names_the_other_computer_whose_version_it_keeps(
        two: tuple[Setup, Setup]) -> None:
    """B's edit reached the server; A edited the same file later: the server's version (B's)
    is kept as a copy named after desk-ana, and the copy reaches both computers."""
    a, b = two
    for each in (a, b):
        each.configure(server=each.config["server"],
                       client=each.config["client"], sync={"prefer": "newer"})
    docs_a = _populate(a, 1)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    edited = b.home / "Documents" / "f00.txt"
    edited.write_text("desk edit")
    os.utime(edited, (time.time() - 60, time.time() - 60))
    assert b.sync().returncode == 0
    (docs_a / "f00.txt").write_text("laptop edit, later")

    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    assert a.sync().returncode == 0

    for home in (a.home, b.home, a.server_home):
        (copy,) = [p for p in (home / "Documents").iterdir() if "conflict" in p.name]
        assert copy.name.startswith("f00 (conflict from desk-ana ")
        assert copy.read_text() == "desk edit"
        assert (home / "Documents" / "f00.txt").read_text() == "laptop edit, later"


def _edited_on_both(a: Setup, b: Setup) -> Path:
    """f00.txt edited on desk-ana (synced) and then on laptop-ana: a conflict that A's pass
    leaves (prefer = none). Returns A's Documents."""
    for each in (a, b):
        each.configure(server=each.config["server"],
                       client=each.config["client"], sync={"prefer": "none"})
    docs_a = _populate(a, 1)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    (b.home / "Documents" / "f00.txt").write_text("desk edit")
    assert b.sync().returncode == 0
    (docs_a / "f00.txt").write_text("laptop edit")
    assert a.sync().returncode == 1
    return docs_a


def test_conflicts_say_which_computer_made_each_version(two: tuple[Setup, Setup]) -> None:
    a, b = two
    _edited_on_both(a, b)

    listed = a.run("conflicts").stdout
    (conflict,) = json.loads(a.run("conflicts", "--json").stdout)["conflicts"]

    assert "(this computer, laptop-ana)" in listed and "(last synced by desk-ana)" in listed
    assert (conflict["local"]["by"], conflict["server"]["by"]) == ("laptop-ana", "desk-ana")


def test_keep_both_names_the_copy_after_the_other_computer_and_it_reaches_it(
        two: tuple[Setup, Setup]) -> None:
    a, b = two
    docs_a = _edited_on_both(a, b)

    settled = a.run("conflicts", "resolve", "--keep", "both", str(docs_a / "f00.txt"))
    assert settled.returncode == 0, settled.stderr
    assert b.sync().returncode == 0

    for home in (a.home, a.server_home, b.home):
        (copy,) = [p for p in (home / "Documents").iterdir() if "conflict" in p.name]
        assert copy.name.startswith("f00 (conflict from desk-ana ")
        assert copy.read_text() == "desk edit"
        assert (home / "Documents" / "f00.txt").read_text() == "laptop edit"
