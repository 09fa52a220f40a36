"""`roaming-homes restore` through the real CLI, unison and sshd: old versions kept in the
backups of either side come back into the home (or `--to DIR`), never over a live file
without being told, and the next pass syncs them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.support.homes import CLI, Setup
from tests.support.ledger import Ledger, digest


def _docs(user: Setup, count: int = 3) -> Path:
    docs = user.home / "Documents"
    docs.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (docs / f"file{index:03}.txt").write_text(f"file {index}\n")
    assert user.sync().returncode == 0
    return docs


def _versions(user: Setup, *args: str) -> list[dict[str, Any]]:
    result = user.run("restore", "--list", "--json", *args)
    assert result.returncode == 0, result.stderr
    versions: list[dict[str, Any]] = json.loads(result.stdout)["versions"]
    return versions


def test_a_deleted_file_comes_back_and_the_next_pass_syncs_it(user: Setup) -> None:
    docs = _docs(user)
    (docs / "file001.txt").unlink()
    assert user.sync().returncode == 0
    assert not (user.server_home / "Documents" / "file001.txt").exists()
    kept = user.server_home / ".roaming-homes" / "backup" / "Documents" / "file001.txt"
    assert kept.read_text() == "file 1\n"  # in the server home, never synced

    listed = _versions(user, str(docs / "file001.txt"))
    assert [(v["side"], v["number"], v["size"]) for v in listed] == [("server", 1, 7)]
    restored = user.run("restore", str(docs / "file001.txt"))

    assert restored.returncode == 0, restored.stderr
    assert (docs / "file001.txt").read_text() == "file 1\n"
    assert user.sync().returncode == 0
    assert (user.server_home / "Documents" / "file001.txt").read_text() == "file 1\n"


def test_an_overwritten_version_comes_back_by_number_relative_to_the_current_directory(
        user: Setup) -> None:
    docs = _docs(user)
    for text in ("second, longer\n", "third, longer still\n"):  # sizes differ: fastcheck
        (user.server_home / "Documents" / "file000.txt").write_text(text)
        assert user.sync().returncode == 0
    assert (docs / "file000.txt").read_text() == "third, longer still\n"
    listed = _versions(user, str(docs / "file000.txt"))
    assert [(v["side"], v["number"]) for v in listed] == [("local", 1), ("local", 2)]
    assert listed[0]["replaced_on"] and listed[1]["replaced"] <= listed[0]["replaced"]

    # PATH as typed, relative to the current directory; the live file is in the way
    refused = subprocess.run([*CLI, "restore", "file000.txt", "--version", "2"], cwd=docs,
                             env=user.env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=False)
    assert refused.returncode == 1, refused.stderr
    assert "in the way" in refused.stderr and "--force" in refused.stderr
    assert (docs / "file000.txt").read_text() == "third, longer still\n"

    forced = subprocess.run([*CLI, "restore", "file000.txt", "--version", "2", "--force"],
                            cwd=docs, env=user.env, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert forced.returncode == 0, forced.stderr
    assert (docs / "file000.txt").read_text() == "file 0\n"
    kept = user.state_home / "roaming-homes" / "backup" / "Documents" / "file000.txt"
    assert kept.read_text() == "third, longer still\n"  # the live version was kept
    assert user.sync().returncode == 0
    assert (user.server_home / "Documents" / "file000.txt").read_text() == "file 0\n"


def test_a_mass_deletion_is_undone_in_one_command(user: Setup) -> None:
    docs, ledger = _docs(user, 30), Ledger(user)
    before = ledger.snapshot()
    for path in docs.iterdir():
        path.unlink()
    assert user.sync().returncode == 4  # the guard holds it back
    assert user.sync("--force").returncode == 0  # "intended" after all
    assert list((user.server_home / "Documents").iterdir()) == []
    ledger.assert_nothing_lost(before)
    (docs / "new.txt").write_text("written after the deletion\n")

    result = user.run("restore", "--since", "10m", "--json")

    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["restored"]) == 30
    assert (docs / "file017.txt").read_text() == "file 17\n"
    assert (docs / "new.txt").read_text() == "written after the deletion\n"
    assert user.sync().returncode == 0
    assert len(list((user.server_home / "Documents").iterdir())) == 31


def test_restore_to_a_directory_leaves_the_home_alone(user: Setup, tmp_path: Path) -> None:
    docs = _docs(user)
    (user.server_home / "Documents" / "file002.txt").write_text("changed on the server\n")
    assert user.sync().returncode == 0
    elsewhere = tmp_path / "elsewhere"

    result = user.run("restore", str(docs / "file002.txt"), "--to", str(elsewhere))

    assert result.returncode == 0, result.stderr
    assert (elsewhere / "file002.txt").read_text() == "file 2\n"
    assert (docs / "file002.txt").read_text() == "changed on the server\n"
    again = user.run("restore", str(docs / "file002.txt"), "--to", str(elsewhere))
    assert again.returncode == 1  # not over what is there now either


def test_a_path_outside_the_home_is_a_usage_error(user: Setup) -> None:
    result = user.run("restore", "/etc/passwd")
    assert result.returncode == 64 and "not inside the home" in result.stderr
    assert user.run("restore").returncode == 64
    assert user.run("restore", "--refused", "Documents").returncode == 64


def test_list_json_shows_both_sides_with_dates_and_sizes(user: Setup) -> None:
    docs = _docs(user)
    (docs / "file000.txt").write_text("laptop's new text\n")
    (user.server_home / "Documents" / "file001.txt").write_text("server's new text\n")
    assert user.sync().returncode == 0

    listed = _versions(user, str(docs))

    sides = {v["path"]: v["side"] for v in listed}
    assert sides == {"Documents/file000.txt": "server", "Documents/file001.txt": "local"}
    for version in listed:
        assert version["size"] == 7 and version["number"] == 1 and version["mtime"]
    assert digest(b"file 0\n") in Ledger(user).snapshot().backups
    assert os.path.isdir(user.server_home / ".roaming-homes" / "backup")


def _backups_state(user: Setup) -> Path:
    return user.state_home / "roaming-homes" / "backups.json"


def test_prune_drops_versions_older_than_backup_days_and_keeps_the_newest(user: Setup) -> None:
    docs = user.home / "Documents"
    docs.mkdir()
    now = time.time()
    for age, text in ((60, "one\n"), (50, "two, 2\n"), (40, "three, 3\n"), (0, "four, 4444\n")):
        (docs / "f.txt").write_text(text)
        os.utime(docs / "f.txt", (now, now - age * 86400))
        assert user.sync().returncode == 0  # the first one ran retention: not again today
    kept = user.server_home / ".roaming-homes" / "backup" / "Documents"
    assert sorted(p.name for p in kept.iterdir()) == [".bak.1.f.txt", ".bak.2.f.txt", "f.txt"]
    _backups_state(user).unlink()  # a day later
    assert user.sync().returncode == 0  # nothing to do, but a pass: retention runs

    # .bak.1 and .bak.2 were replaced 40 and 50 days ago: beyond sync.backup_days = 30
    assert sorted(p.name for p in kept.iterdir()) == ["f.txt"]
    assert (kept / "f.txt").read_text() == "three, 3\n"
    status = user.status()["backups"]
    assert status["sizes"] == {"local": 0, "server": len("three, 3\n")}
    text = user.run("status").stdout
    assert "backups:          local 0 B, server 9 B" in text


def test_prune_keeps_the_newest_versions_within_backup_max_bytes(user: Setup) -> None:
    user.configure(sync={"backup_max_bytes": 1000})
    docs = _docs(user, 0)
    for index in range(3):
        (docs / f"big{index}").write_bytes(bytes([65 + index]) * 400)
    assert user.sync().returncode == 0
    for index in range(3):
        (docs / f"big{index}").unlink()
        assert user.sync().returncode == 0
    kept = user.server_home / ".roaming-homes" / "backup" / "Documents"
    assert len(list(kept.iterdir())) == 3
    _backups_state(user).unlink()  # a day later
    assert user.sync().returncode == 0

    assert sorted(p.name for p in kept.iterdir()) == ["big1", "big2"]  # the oldest went first
    assert _backups_state(user).exists()
    assert user.sync().returncode == 0  # within the day: retention does not run again
