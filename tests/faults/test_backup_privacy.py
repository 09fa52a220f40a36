"""Backups are as private as the files they keep: another account on the server cannot list or
read them, in single passes and in real-time mode."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fsmonitor import write_wrapper
from tests.support.homes import Setup
from tests.support.programs import SYSTEM_PATH
from tests.support.sshd import SshServer
from tests.support.waiting import wait_for
from tests.support.watcher import Watcher


@pytest.fixture
def other_account() -> Iterator[str]:
    """An unprivileged account of the test's own, removed afterwards."""
    name = f"rh{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any account may walk."""
    base = Path(tempfile.mkdtemp(prefix="rh-open-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def open_server(tmp_path: Path, open_dir: Path) -> Iterator[SshServer]:
    """An sshd whose unison directory (archives) lies where any account may walk."""
    write_wrapper(tmp_path / "bin")
    with SshServer(tmp_path / "sshd", server_unison_dir=open_dir / "unison",
                   env={"PATH": f"{tmp_path / 'bin'}:{SYSTEM_PATH}"}) as server:
        yield server


def _as(account: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", account, "--", *argv], capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.mark.parametrize("mode", ["pass", "watch"])
def test_another_server_account_cannot_read_the_backups(
        open_server: SshServer, other_account: str, open_dir: Path, mode: str) -> None:
    # A server home any account may walk: only the modes of what is made in it (the backups
    # in its .roaming-homes) protect them.
    user = Setup(open_dir / "user", open_server)
    for directory in (user.base, user.server_home):
        os.chmod(directory, 0o755)
    try:
        docs = user.home / "Documents"
        docs.mkdir()
        (docs / "diary.txt").write_text("private, first version")
        os.chmod(docs / "diary.txt", 0o600)
        assert user.sync().returncode == 0
        (docs / "diary.txt").write_text("private, second version")
        if mode == "pass":
            assert user.sync().returncode == 0
        else:
            watcher = Watcher(user).start()
            try:
                wait_for(lambda: (user.server_home / "Documents" / "diary.txt").read_text()
                         == "private, second version", 30, "the change in real time")
            finally:
                assert watcher.finish().reason == "stopped"
        backup = user.server_home / ".roaming-homes" / "backup"
        kept = [p for p in backup.rglob("*") if p.is_file()]
        assert kept and kept[0].read_text() == "private, first version"
        assert kept[0].stat().st_mode & 0o777 == 0o600  # the original's mode

        listing = _as(other_account, "ls", str(backup / "Documents"))
        reading = _as(other_account, "cat", str(kept[0]))

        assert listing.returncode != 0 and "Permission denied" in listing.stderr
        assert reading.returncode != 0 and "private" not in reading.stdout
        for directory in [backup, *[p for p in backup.rglob("*") if p.is_dir()]]:
            assert directory.stat().st_mode & 0o077 == 0, directory
    finally:
        user.close()
