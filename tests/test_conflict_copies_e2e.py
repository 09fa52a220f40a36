"""Conflict copies that never collide and always converge (issue 18, item 5), through the real
CLI and unison over sshd: one pass leaves both sides equal after conflicts that `prefer`
settles, or its exit code says the user must act."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from roaming_homes.actions import conflict_copies
from tests.support.homes import Setup, tree

COPY = re.compile(r"^same \(conflict from .+ \d{4}-\d\d-\d\d \d\d-\d\d [0-9a-f]{8}\)\.txt$")


def edit_both(user: Setup) -> tuple[Path, Path]:
    """Synced files, then: a.txt deleted here and changed there, b.txt changed here and
    deleted there, same.txt changed on both sides (here later)."""
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "same.txt"):
        (docs / name).write_text(f"original {name}\n")
    assert user.sync().returncode == 0
    (docs / "a.txt").unlink()
    (sdocs / "a.txt").write_text("server changed a\n")
    (sdocs / "b.txt").unlink()
    (docs / "b.txt").write_text("laptop changed b\n")
    (sdocs / "same.txt").write_text("server edit\n")
    os.utime(sdocs / "same.txt", (time.time() - 60, time.time() - 60))
    (docs / "same.txt").write_text("laptop edit\n")
    return docs, sdocs


def test_prefer_newer_one_pass_leaves_both_sides_equal(user: Setup) -> None:
    user.configure(sync={"prefer": "newer"})
    docs, sdocs = edit_both(user)

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert tree(docs) == tree(sdocs)
    assert (docs / "a.txt").read_text() == "server changed a\n"  # the change wins, by its name
    assert (docs / "b.txt").read_text() == "laptop changed b\n"
    assert (docs / "same.txt").read_text() == "laptop edit\n"
    (copy,) = [p for p in docs.iterdir() if "conflict" in p.name]
    assert COPY.match(copy.name), copy.name
    assert copy.read_text() == "server edit\n"
    assert sorted(outcome["settled"]) == ["Documents/a.txt", "Documents/b.txt",
                                          "Documents/same.txt"]
    assert user.sync_json()[0] == 0
    assert tree(docs) == tree(sdocs) and (docs / "a.txt").exists()  # and it stays so


def test_prefer_none_leaves_them_to_the_user_with_exit_1(user: Setup) -> None:
    user.configure(sync={"prefer": "none"})
    docs, sdocs = edit_both(user)

    code, outcome = user.sync_json()

    assert code == 1
    assert sorted(outcome["conflicts"]) == ["Documents/a.txt", "Documents/b.txt",
                                            "Documents/same.txt"]
    assert not [p for p in [*docs.iterdir(), *sdocs.iterdir()] if "conflict" in p.name]


def test_a_copy_name_carries_its_content_and_never_nests(tmp_path: Path) -> None:
    one = conflict_copies.copy_name("report.odt", "desk", 0, "0123abcd")
    other = conflict_copies.copy_name("report.odt", "desk", 0, "fedc4321")
    nested = conflict_copies.copy_name(one, "laptop", 0, "99999999")

    assert one != other  # same computer, same minute, other content: another name
    assert nested.startswith("report (conflict from laptop ") and nested.count("conflict") == 1
    (tmp_path / "f.txt").write_text("x")
    assert len(conflict_copies.digest_of(tmp_path / "f.txt")) == 8
    assert conflict_copies.digest_of(tmp_path) == ""


@pytest.mark.parametrize("name", ["report.txt", "notes"])
def test_unisons_copy_of_a_copy_is_named_after_the_original(name: str) -> None:
    ours = conflict_copies.copy_name(name, "desk", 0, "0123abcd")
    stem, dot, ext = ours.rpartition(".") if "." in name else (ours, "", "")
    unisons = f"{stem} (conflict_on_2026-11-29){dot}{ext}"

    renamed = conflict_copies.new_name(unisons, ours, "laptop", 0, "89abcdef")

    assert renamed is not None and renamed.count("(conflict") == 1
    assert renamed.startswith(name.partition(".")[0] + " (conflict from laptop ")


def test_unisons_temporary_files_are_cleaned_after_a_pass_on_both_sides(user: Setup) -> None:
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    (docs / "big.bin").write_text("first")
    assert user.sync().returncode == 0
    here = docs / ".unison.big.bin.a1b2c3d4e5f6.unison.tmp"  # as a killed transfer leaves them
    there = sdocs / ".unison.big.bin.0f9e8d7c6b5a.unison.tmp"
    fresh = sdocs / ".unison.big.bin.123456789abc.unison.tmp"  # another computer's, now
    for leftover in (here, there, fresh):
        leftover.write_text("half")
    old = time.time() - 3600
    os.utime(there, (old, old))
    (docs / "big.bin").write_text("second")

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert not here.exists()  # here at once
    assert (sdocs / "big.bin").read_text() == "second"
    # On the server, the next pass's server command cleans the folders this one moved files in
    # (no exchange of its own), even a pass with nothing to do.
    assert there.exists()
    code, outcome = user.sync_json()
    assert (code, outcome["message"]) == (0, "in sync: nothing to do"), outcome
    assert not there.exists()
    assert fresh.exists()  # written to a moment ago: maybe a running transfer
    assert not (docs / fresh.name).exists()  # never synced


HOSTILE_FOLDERS = ["with space", "it's", 'say "x"', "$(touch CANARY)", "a;b", "back\\slash",
                   "-rf", "tab\there", "star*", "`id`"]


def test_the_server_clean_up_takes_any_folder_name_as_a_name(user: Setup) -> None:
    """The folders a pass hands the next pass's server command are data: quoted, never run,
    never read as find's options, and a name that is not UTF-8 is still cleaned."""
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    names = [*HOSTILE_FOLDERS, os.fsdecode(b"latin\xe9")]
    docs.mkdir()
    for index in range(20):  # untouched: the changes stay below the mass-change guard's limit
        (docs / f"kept{index}").write_text("kept")
    for name in names:
        (docs / name).mkdir(parents=True)
        (docs / name / "file").write_text("first")
    assert user.sync().returncode == 0
    old = time.time() - 3600
    leftovers = [sdocs / name / ".unison.file.a1b2c3d4e5f6.unison.tmp" for name in names]
    for leftover in leftovers:
        leftover.write_text("half")
        os.utime(leftover, (old, old))
        (docs / leftover.parent.name / "file").write_text("changed")

    moved, nothing = user.sync_json(), user.sync_json()

    assert moved[0] == 0 and moved[1]["transferred"] == len(names), moved
    assert nothing == (0, nothing[1]) and nothing[1]["message"] == "in sync: nothing to do"
    assert [leftover for leftover in leftovers if leftover.exists()] == []
    assert all((sdocs / name / "file").read_text() == "changed" for name in names)
    assert not list(user.base.rglob("CANARY")) and not list(user.server_home.rglob("CANARY"))
