"""One definition of what is synced: the counter behind the loss guard's baseline ignores exactly
what unison ignores, held to unison's own behaviour on the same tree (the profile roaming-homes
writes, the real unison)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from roaming_homes.unison import profile
from roaming_homes.unison.ignore import count_files, is_ignored
from tests.test_unchanged import listed

NAMES = ["a.txt", ".hidden", "x~", ".x~", "notes.tmp", "keep.tmp.txt", "song.ogg", "b.txt",
         "c.TXT", "new\nline", "tab\tname", "br[k]"]
DIRS = ["", "Documents", "Documents/.cache", "Documents/deep/er", "Documents/build",
        "Music", "Music/.git", "Other"]
IGNORE_PATHS = ("Documents/.cache", "Documents/*.tmp", "Music/.*", "Documents/build",
                "*/er")
IGNORE_NAMES = ("*~", "{a,b}.txt", "*.ogg", "br[k]")
PATHS = ("Documents", "Music")


def _tree(root: Path) -> None:
    for directory in DIRS:
        for name in NAMES:
            (root / directory).mkdir(parents=True, exist_ok=True)
            (root / directory / name).write_text(name)


def _synced(tmp_path: Path, ignore_paths: tuple[str, ...],
            ignore_names: tuple[str, ...]) -> tuple[Path, set[Path]]:
    """The tree, and what the real unison copies of it (relative paths) by these rules."""
    source, copy, unison_dir = tmp_path / "home", tmp_path / "server", tmp_path / "unison"
    _tree(source)
    copy.mkdir()
    unison_dir.mkdir()
    plan = profile.Plan(local_root=str(source), server_root=str(copy), paths=PATHS,
                       ignore_paths=ignore_paths, ignore_names=ignore_names, prefer="newer")
    (unison_dir / f"{profile.PROFILE}.prf").write_text(profile.build_profile(plan))
    argv = [*profile.build_argv("unison", True, guarded=False), "-batch", "-silent"]
    subprocess.run(argv, env={**os.environ, "UNISON": str(unison_dir)}, check=True,
                   capture_output=True, timeout=60)
    return source, {p.relative_to(copy) for p in copy.rglob("*")}


def test_the_counter_ignores_what_unison_ignores(tmp_path: Path) -> None:
    source, copied = _synced(tmp_path, IGNORE_PATHS, IGNORE_NAMES)
    synced = {str(p) for p in copied if (tmp_path / "server" / p).is_file()}
    tally: dict[str, int] = {}

    counted = count_files(source, PATHS, IGNORE_PATHS, IGNORE_NAMES, tally=tally)

    assert counted == len(synced) > 0
    for directory, files in tally.items():
        assert files == sum(1 for s in synced if os.path.dirname(s) == directory), directory
    every = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()}
    below = {p for p in every if p.split("/")[0] in PATHS}
    assert {p for p in below if not is_ignored(p, IGNORE_PATHS, IGNORE_NAMES)} == synced


def test_the_still_homes_listing_holds_what_unison_syncs(tmp_path: Path) -> None:
    """This side's listing for the pass that skips unison (`session.unchanged`) holds every
    entry unison syncs, with every rule; and nothing else (but names with a line break) with
    the rules find can say exactly: names whose only glob is `*`, and paths without one."""
    exact_paths = tuple(p for p in IGNORE_PATHS if "*" not in p)
    exact_names = ("*~", "*.ogg", ".hidden")
    for rules in ((IGNORE_PATHS, IGNORE_NAMES), (exact_paths, exact_names)):
        case = tmp_path / str(len(rules[1]))
        case.mkdir()
        source, copied = _synced(case, *rules)
        synced = {str(p) for p in copied}
        found = listed(source, PATHS, *rules)
        assert synced <= found
        if rules[1] == exact_names:
            assert {p for p in found if "\n" not in p} == synced
            assert len(synced) > len(PATHS)
