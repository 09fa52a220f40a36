"""Edits on both sides between two passes (fault scenario 7): the conflict policy decides,
nothing is lost, and `roaming-homes conflicts` lists what needs the user."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.homes import CLI, Setup, tree
from tests.support.ledger import Ledger, digest


def _edit_both_sides(user: Setup) -> tuple[Path, Path, set[str]]:
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    for name in ("same.txt", "mine.txt", "theirs.txt", "del-vs-mod.txt", "dir-vs-file"):
        (docs / name).write_text(f"original {name}\n")
    assert user.sync().returncode == 0
    old = time.time() - 120
    # the same file, differently on each side (the laptop's edit is newer)
    (sdocs / "same.txt").write_text("server edit\n")
    os.utime(sdocs / "same.txt", (old, old))
    (docs / "same.txt").write_text("laptop edit, newer\n")
    # different files on each side
    (docs / "mine.txt").write_text("laptop changed mine\n")
    (sdocs / "theirs.txt").write_text("server changed theirs\n")
    # deleted on the laptop, modified on the server
    (docs / "del-vs-mod.txt").unlink()
    (sdocs / "del-vs-mod.txt").write_text("server kept working on it\n")
    # a file changed on the laptop became a directory on the server
    (docs / "dir-vs-file").write_text("laptop changed the file\n")
    (sdocs / "dir-vs-file").unlink()
    (sdocs / "dir-vs-file").mkdir()
    (sdocs / "dir-vs-file" / "inside.txt").write_text("inside the new directory\n")
    written = {digest(t.encode()) for t in (
        "server edit\n", "laptop edit, newer\n", "laptop changed mine\n",
        "server changed theirs\n", "server kept working on it\n",
        "inside the new directory\n", "laptop changed the file\n")}
    return docs, sdocs, written


def test_prefer_none_keeps_both_versions_and_lists_the_conflicts(user: Setup,
                                                                 ledger: Ledger) -> None:
    user.configure(sync={"paths": ["Documents"], "excluded_users": [], "prefer": "none"})
    docs, sdocs, written = _edit_both_sides(user)
    before = ledger.snapshot()

    code, outcome = user.sync_json()

    assert code == 1, outcome
    assert sorted(outcome["conflicts"]) == ["Documents/del-vs-mod.txt",
                                            "Documents/dir-vs-file", "Documents/same.txt"]
    # different files merged; every conflicting version still where it was
    assert (sdocs / "mine.txt").read_text() == "laptop changed mine\n"
    assert (docs / "theirs.txt").read_text() == "server changed theirs\n"
    assert (docs / "same.txt").read_text() == "laptop edit, newer\n"
    assert (sdocs / "same.txt").read_text() == "server edit\n"
    assert not (docs / "del-vs-mod.txt").exists()
    assert (sdocs / "del-vs-mod.txt").exists() and (sdocs / "dir-vs-file").is_dir()
    assert (docs / "dir-vs-file").read_text() == "laptop changed the file\n"
    ledger.assert_nothing_lost(before, written)

    listed = user.run("conflicts", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {c["path"]: c for c in json.loads(listed.stdout)["conflicts"]}
    same = items["Documents/same.txt"]
    assert same["local"]["size"] == len("laptop edit, newer\n")
    assert same["server"]["size"] == len("server edit\n")
    assert same["local"]["mtime"] > same["server"]["mtime"]
    deleted_here = items["Documents/del-vs-mod.txt"]["local"]
    assert (deleted_here["mtime"], deleted_here["size"]) == (None, None)
    human = user.run("conflicts").stdout
    assert "Documents/same.txt" in human and "19 bytes" in human and "absent" in human


@pytest.mark.parametrize("prefer", ["newer", "local", "server"])
def test_a_preferring_policy_decides_and_keeps_the_loser(user: Setup, ledger: Ledger,
                                                         prefer: str) -> None:
    user.configure(sync={"paths": ["Documents"], "excluded_users": [], "prefer": prefer})
    docs, sdocs, written = _edit_both_sides(user)
    before = ledger.snapshot()

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert outcome["conflicts"] == []
    winner = {"newer": "laptop edit, newer\n", "local": "laptop edit, newer\n",
              "server": "server edit\n"}[prefer]
    assert (docs / "same.txt").read_text() == (sdocs / "same.txt").read_text() == winner
    assert (sdocs / "mine.txt").read_text() == "laptop changed mine\n"
    assert (docs / "theirs.txt").read_text() == "server changed theirs\n"
    # the losing versions: conflict copies on the replicas, or the backups
    ledger.assert_nothing_lost(before, written)
    # and one pass leaves both sides equal (the copies included)
    assert tree(docs) == tree(sdocs)
    assert (docs / "del-vs-mod.txt").exists() == (prefer != "local")


def test_resolve_in_the_text_ui_settles_a_conflict_and_keeps_the_loser(
        user: Setup, ledger: Ledger) -> None:
    user.configure(sync={"paths": ["Documents"], "excluded_users": [], "prefer": "none"})
    _docs, sdocs, written = _edit_both_sides(user)
    assert user.sync().returncode == 1
    before = ledger.snapshot()

    # The user answers unison's text UI, which lists the conflicts by path: "same.txt" goes
    # laptop -> server (">"), the others are skipped ("/"), then "y" to proceed.
    conflicts = sorted(user.status()["conflicts"])
    assert conflicts == ["Documents/del-vs-mod.txt", "Documents/dir-vs-file",
                         "Documents/same.txt"]
    answers = "".join(">\n" if c.endswith("same.txt") else "/\n" for c in conflicts) + "y\n"
    result = subprocess.run([*CLI, "resolve"], env=user.env, input=answers, text=True,
                            capture_output=True, timeout=60)

    assert result.returncode == 1, result.stderr  # two conflicts left for later
    assert (sdocs / "same.txt").read_text() == "laptop edit, newer\n"
    assert "Documents/same.txt" not in user.status()["conflicts"]
    ledger.assert_nothing_lost(before, written)
