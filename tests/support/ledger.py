"""Proof that no content was lost: checksums of every file on both replicas and in backups.

`Ledger.snapshot()` records the sha256 of every regular file under both homes and both backup
directories (the local one under the state dir, the server's in the server home's
`.roaming-homes/backup`).
`assert_nothing_lost(before)` then checks that every content that existed before still exists
somewhere, and that no file on a replica holds content that never existed (a truncated or
half-written file).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tests.support.homes import Setup

UNISON_TEMP = ".unison."  # unison's temporary files: `.unison.<name>.<hash>.unison.tmp`


def checksums(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file below root (links and dirs skipped)."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Snapshot:
    replicas: dict[str, dict[str, str]]  # "local"/"server" -> path -> sha256
    backups: set[str]

    def everything(self) -> set[str]:
        return {h for files in self.replicas.values() for h in files.values()} | self.backups


class Ledger:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup

    @property
    def backup_dirs(self) -> list[Path]:
        dirs = [self.setup.state_home / "roaming-homes" / "backup"]
        if self.setup.sshd is not None:
            dirs.append(self.setup.server_home / ".roaming-homes" / "backup")
        return dirs

    def snapshot(self) -> Snapshot:
        def replica(root: Path) -> dict[str, str]:
            return {rel: h for rel, h in checksums(root).items()
                    if not rel.startswith(".roaming-homes")}  # markers, records: not user data

        backups = {h for d in self.backup_dirs for h in checksums(d).values()}
        return Snapshot({"local": replica(self.setup.home),
                         "server": replica(self.setup.server_home)}, backups)

    def assert_nothing_lost(self, before: Snapshot, written: set[str] = frozenset()) -> Snapshot:
        """Every content of `before` survives; every replica file is a known version.

        `written`: contents the test wrote after `before` was taken (also legitimate).
        """
        after = self.snapshot()
        lost = before.everything() - after.everything()
        assert not lost, f"content lost: {sorted(lost)[:5]}"
        known = before.everything() | set(written)
        for side, files in after.replicas.items():
            for rel, digest in files.items():
                if UNISON_TEMP in rel:
                    continue
                assert digest in known, f"{side}:{rel} holds content that never existed"
        return after


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_files(root: Path) -> list[str]:
    """unison temporary files left below root (names only: cheap enough to poll)."""
    return [str(Path(dirpath, name).relative_to(root)) for dirpath, _dirs, files in os.walk(root)
            for name in files if name.startswith(UNISON_TEMP)]
