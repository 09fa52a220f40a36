"""`sync --dry-run`: what a pass would do, in each direction, and what the guards would say —
with nothing changed; the real pass that follows does exactly that."""

from __future__ import annotations

import json
import os
import time

from tests.support.homes import Setup, tree


def _changes(user: Setup) -> None:
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    for name in ("keep", "edit-here", "edit-there", "drop-here", "drop-there"):
        (docs / name).write_text(name)
    assert user.sync().returncode == 0
    (docs / "new-here").write_text("new")
    (docs / "edit-here").write_text("edited here")
    (docs / "drop-here").unlink()
    (sdocs / "new-there").write_text("new")
    (sdocs / "edit-there").write_text("edited there")
    os.utime(sdocs / "edit-there", (time.time() + 5, time.time() + 5))
    (sdocs / "drop-there").unlink()


def test_dry_run_changes_nothing_and_the_real_pass_does_what_it_said(user: Setup) -> None:
    _changes(user)
    before = (tree(user.home), tree(user.server_home))
    history = (user.state_home / "roaming-homes" / "history.jsonl").read_text()

    dry = user.run("sync", "--dry-run", "--json")

    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert (tree(user.home), tree(user.server_home)) == before
    assert (user.state_home / "roaming-homes" / "history.jsonl").read_text() == history
    assert planned["refusal"] == "" and planned["first_run"] is False
    assert {(i["path"], i["direction"]) for i in planned["items"]} == {
        ("Documents/new-here", "to server"), ("Documents/edit-here", "to server"),
        ("Documents/drop-here", "to server"), ("Documents/new-there", "to local"),
        ("Documents/edit-there", "to local"), ("Documents/drop-there", "to local")}
    text = user.run("sync", "--dry-run").stdout
    assert "dry run, nothing was changed: 6 item(s) would sync" in text
    assert "---->  deleted" in text and "Documents/drop-here" in text

    code, outcome = user.sync_json()

    assert code == 0 and outcome["transferred"] == len(planned["items"])
    assert tree(user.home / "Documents") == tree(user.server_home / "Documents")


def test_dry_run_says_what_the_guards_would_refuse(user: Setup) -> None:
    docs = user.home / "Documents"
    docs.mkdir()
    for i in range(40):
        (docs / f"f{i:02d}").write_text(str(i))
    assert user.sync().returncode == 0
    for i in range(30):
        (docs / f"f{i:02d}").unlink()

    dry = user.run("sync", "--dry-run")

    assert dry.returncode == 4
    assert "the guards would refuse it: 30 of 40 files were deleted on this computer" in dry.stdout
    assert len(list((user.server_home / "Documents").iterdir())) == 40
    assert user.sync().returncode == 4  # the real pass agrees
