"""Emptied, unmounted or replaced replicas and mass deletions are refused (exit 4) with nothing
changed; backups keep every overwritten and deleted file (fault scenario 6)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.homes import Setup
from tests.support.ledger import Ledger, checksums, digest

MARKER = ".roaming-homes-root"


def _populate(user: Setup, count: int = 30, path: str = "Documents") -> Path:
    docs = user.home / path
    docs.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (docs / f"file{index:03}.txt").write_text(f"{path} file {index}\n")
    return docs


def test_first_pass_writes_a_marker_on_both_roots(user: Setup) -> None:
    _populate(user, 3)
    assert user.sync().returncode == 0
    for root in (user.home, user.server_home):
        assert re.fullmatch(r"roaming-homes replica [0-9a-f]{32}\n",
                            (root / MARKER).read_text())
    assert (user.home / MARKER).read_text() != (user.server_home / MARKER).read_text()


def test_unmounted_server_home_is_refused_and_sync_continues_after_remount(
        user: Setup, ledger: Ledger) -> None:
    docs = _populate(user)
    assert user.sync().returncode == 0
    before = ledger.snapshot()
    mounted = user.server_home.rename(user.base / "server-home.mounted")
    user.server_home.mkdir()  # the bare mount point
    (docs / "new.txt").write_text("written while the share was away")

    code, outcome = user.sync_json()

    assert code == 4, outcome
    assert outcome["result"] == "refused"
    assert "lacks its marker" in outcome["message"] and "\n" not in outcome["message"]
    assert user.status()["result"] == "refused"
    assert list(user.server_home.iterdir()) == []
    ledger.assert_nothing_lost(before, {digest(b"written while the share was away")})
    user.server_home.rmdir()
    mounted.rename(user.server_home)
    assert user.sync().returncode == 0
    assert (user.server_home / "Documents" / "new.txt").exists()
    assert len(list((user.server_home / "Documents").iterdir())) == 31


def test_missing_server_home_is_refused(user: Setup) -> None:
    _populate(user)
    assert user.sync().returncode == 0
    user.server_home.rename(user.base / "elsewhere")

    result = user.sync()

    assert result.returncode == 4
    assert "is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(list((user.home / "Documents").iterdir())) == 30


def test_emptied_laptop_home_is_refused_then_first_run_restores_it(user: Setup,
                                                                   ledger: Ledger) -> None:
    docs = _populate(user)
    assert user.sync().returncode == 0
    before = ledger.snapshot()
    for child in user.home.iterdir():  # a wiped home; the state dir lives elsewhere here
        if child.is_dir():
            for item in child.iterdir():
                item.unlink()
            child.rmdir()
        else:
            child.unlink()

    result = user.sync()

    assert result.returncode == 4, result.stderr
    assert "the local home" in result.stderr and "--first-run" in result.stderr
    assert len(list((user.server_home / "Documents").iterdir())) == 30
    assert user.sync("--first-run").returncode == 0
    assert len(list(docs.iterdir())) == 30
    ledger.assert_nothing_lost(before)
    assert user.sync().returncode == 0  # the new local marker is the one remembered now


def test_replaced_server_replica_with_another_marker_is_refused(user: Setup) -> None:
    _populate(user, 3)
    assert user.sync().returncode == 0
    (user.server_home / MARKER).write_text(f"roaming-homes replica {'e' * 32}\n")

    result = user.sync()

    assert result.returncode == 4
    assert "different replica" in result.stderr


def test_mass_deletion_is_refused_until_forced_and_deleted_files_stay_recoverable(
        user: Setup, ledger: Ledger) -> None:
    docs = _populate(user, 30)
    assert user.sync().returncode == 0
    before = ledger.snapshot()
    for path in sorted(docs.iterdir())[:20]:  # 20 of 30 = 67 % > max_delete 50 %
        path.unlink()

    code, outcome = user.sync_json()

    assert code == 4, outcome
    assert "20 of 30 files were deleted on this computer" in outcome["message"]
    assert len(list((user.server_home / "Documents").iterdir())) == 30
    code, outcome = user.sync_json("--force")
    assert code == 0, outcome
    assert len(list((user.server_home / "Documents").iterdir())) == 10
    ledger.assert_nothing_lost(before)  # the 20 deleted files are in the server's backups
    assert user.sync().returncode == 0  # the new count is the reference now


def test_deletions_below_max_delete_propagate(user: Setup) -> None:
    user.configure(sync={"paths": ["Documents"], "excluded_users": [], "max_delete": 80})
    docs = _populate(user, 30)
    assert user.sync().returncode == 0
    for path in sorted(docs.iterdir())[:20]:
        path.unlink()

    assert user.sync().returncode == 0
    assert len(list((user.server_home / "Documents").iterdir())) == 10


def test_emptying_a_small_folder_is_housekeeping_and_stays_recoverable(
        user: Setup, ledger: Ledger) -> None:
    """3 of 43 files, the folder itself kept: under every threshold (a vanished folder is
    refused whatever its size: test_safety_net_e2e)."""
    user.configure(sync={"paths": ["Documents", "Music"], "excluded_users": []})
    _populate(user, 40)
    music = _populate(user, 3, "Music")
    assert user.sync().returncode == 0
    before = ledger.snapshot()
    for path in music.iterdir():
        path.unlink()

    assert user.sync().returncode == 0

    assert list((user.server_home / "Music").iterdir()) == []
    ledger.assert_nothing_lost(before)  # the three are in the server's backups


def test_overwritten_and_deleted_files_are_recoverable_from_backups_on_each_side(
        user: Setup) -> None:
    docs, sdocs = _populate(user, 2), user.server_home / "Documents"
    assert user.sync().returncode == 0
    (docs / "file000.txt").write_text("laptop rewrote it\n")
    (sdocs / "file001.txt").unlink()
    assert user.sync().returncode == 0
    assert not (docs / "file001.txt").exists()

    server_backup = checksums(user.server_home / ".roaming-homes" / "backup")
    local_backup = checksums(user.state_home / "roaming-homes" / "backup")
    # The server lost the old file000, the laptop lost file001: each keeps what it lost,
    # outside the synced tree, under the file's own path.
    assert server_backup["Documents/file000.txt"] == digest(b"Documents file 0\n")
    assert local_backup["Documents/file001.txt"] == digest(b"Documents file 1\n")
    assert not (user.server_home / "backup").exists() and not (user.home / "backup").exists()
    # where an administrator finds them, not in unison's own directory
    assert user.sshd is not None and user.sshd.server_unison_dir is not None
    assert not (user.sshd.server_unison_dir / "backup").exists()


def test_guard_probe_reuses_the_shared_ssh_connection(user: Setup) -> None:
    _populate(user, 3)
    assert user.sync().returncode == 0
    assert user.sshd is not None
    logins = user.sshd.log_file.read_text().count("Accepted publickey")

    assert user.sync().returncode == 0

    assert user.sshd.log_file.read_text().count("Accepted publickey") == logins


def test_a_pass_removes_the_count_caches_older_versions_left_on_the_server(user: Setup) -> None:
    assert user.sshd is not None and user.sshd.server_unison_dir is not None
    _populate(user, 3)
    unison_dir = user.sshd.server_unison_dir
    unison_dir.mkdir(parents=True, exist_ok=True)
    leftover = unison_dir / "roaming-homes-counts-deadbeef.json"
    leftover.write_text('{"rules": [], "dirs": {}}')
    assert user.sync().returncode == 0
    assert not leftover.exists()
    assert any(unison_dir.glob("ar*"))  # unison's own archives stay
