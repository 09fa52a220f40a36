"""What a pass hands the next pass's server command to clean (`actions.leftovers`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from roaming_homes.actions import leftovers

TEMP = ".unison.f.0123456789ab.unison.tmp"


def test_the_folders_of_a_pass_are_recalled_by_the_next_and_an_empty_pass_forgets_them(
        tmp_path: Path) -> None:
    assert leftovers.recalled(tmp_path) == []
    leftovers.remember(tmp_path, ["Documents", "Documents/a b", os.fsdecode(b"x\xe9")])
    assert leftovers.recalled(tmp_path) == ["Documents", "Documents/a b", os.fsdecode(b"x\xe9")]
    leftovers.remember(tmp_path, [])
    assert leftovers.recalled(tmp_path) == []


def test_at_most_max_folders_are_handed_on(tmp_path: Path) -> None:
    leftovers.remember(tmp_path, [f"d{i:04d}" for i in range(leftovers.MAX_FOLDERS + 50)])
    assert len(leftovers.recalled(tmp_path)) == leftovers.MAX_FOLDERS


def test_a_file_that_is_not_a_list_of_folders_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / leftovers.FOLDERS_FILE).write_text('{"rm -rf": 1}')
    assert leftovers.recalled(tmp_path) == []
    assert not (tmp_path / leftovers.FOLDERS_FILE).exists()


def test_nothing_to_clean_adds_nothing_to_the_server_command() -> None:
    assert leftovers.server_script("/srv/home", []) == ""


def test_the_server_script_removes_only_old_leftovers_directly_in_the_folders(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = time.time() - 3600
    for folder in ("-name", "a", "a/deeper", "elsewhere"):
        (root / folder).mkdir(parents=True)
        (root / folder / TEMP).write_text("half")
        os.utime(root / folder / TEMP, (old, old))
    (root / "a" / ".unison.g.0123456789ab.unison.tmp").write_text("a live transfer")
    (root / "a" / "kept.txt").write_text("a file")
    (root / TEMP).write_text("at the root")
    os.utime(root / TEMP, (old, old))

    script = leftovers.server_script(str(root), ["-name", "a", ""])
    done = subprocess.run(["sh", "-c", f"{script}echo done"], capture_output=True, text=True,
                          check=True, timeout=30)

    assert done.stdout == "done\n" and done.stderr == ""
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "a/.unison.g.0123456789ab.unison.tmp", "a/deeper/" + TEMP, "a/kept.txt",
        "elsewhere/" + TEMP]


def test_a_missing_root_is_no_failure(tmp_path: Path) -> None:
    script = leftovers.server_script(str(tmp_path / "gone"), ["a"])
    done = subprocess.run(["sh", "-c", f"{script}echo done"], capture_output=True, text=True,
                          check=True, timeout=30)
    assert (done.stdout, done.stderr) == ("done\n", "")
