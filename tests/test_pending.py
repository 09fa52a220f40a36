"""Unit tests: which files a session that ends offline leaves only here, and how they are told."""

from __future__ import annotations

import os
import time
from pathlib import Path

from roaming_homes.actions.pending import SHOWN_NAMES, Pending
from roaming_homes.unison.ignore import changed_since


def _aged(path: Path, text: str, seconds_ago: float) -> None:
    """A file last modified `seconds_ago` (its change time is now: only the kernel sets it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    then = time.time() - seconds_ago
    os.utime(path, (then, then))


def test_changed_files_under_the_synced_paths_by_unisons_ignore_rules(tmp_path: Path) -> None:
    docs = tmp_path / "Documents"
    _aged(docs / "old.txt", "synced before", 3600)
    since = time.time() + 0.5  # the last sync ended after every file so far was written...
    time.sleep(1.0)  # ...and what follows is later, by mtime and ctime alike
    for name in ("new.txt", "sub/deep.odt", "notes.txt~", ".cache/x", "tab\there"):
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text("changed")
    (docs / "link").symlink_to("new.txt")
    os.chmod(docs / "old.txt", 0o600)  # permissions changed: ctime, not mtime
    (tmp_path / "Music").mkdir()
    (tmp_path / "Music" / "elsewhere.mp3").write_text("not synced")

    found, complete = changed_since(tmp_path, ["Documents"], ["Documents/.cache"], ["*~"],
                                    since)

    assert complete
    assert found == ["Documents/link", "Documents/new.txt", "Documents/old.txt",
                     "Documents/sub/deep.odt", "Documents/tab\there"]


def test_the_look_stops_when_its_time_is_up(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / "Documents" / f"d{index}").mkdir(parents=True)
        (tmp_path / "Documents" / f"d{index}" / "f").write_text("x")

    found, complete = changed_since(tmp_path, ["Documents"], [], [], 0.0, budget=0.0)

    assert (found, complete) == ([], False)


def test_the_line_names_a_few_escaped_and_counts_them_all() -> None:
    many = Pending([f"Documents/f{index}" for index in range(7)], True,
                   "2026-11-29T14:02:00+00:00")
    odd = Pending(["Documents/a\x1b[31mb"], False, None)

    assert many.count == "7" and odd.count == "at least 1"
    assert many.names() == ", ".join(f"Documents/f{index}" for index in range(SHOWN_NAMES)) + " …"
    assert odd.names() == "Documents/a\\x1b[31mb …"
    assert odd.line("syncing is paused") == (
        "at least 1 file(s) changed here since the last sync (never) are not on the server yet "
        "(syncing is paused): Documents/a\\x1b[31mb …; they sync the next time it is reached")
