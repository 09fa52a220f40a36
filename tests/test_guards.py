"""The pure safety decisions: replica markers, the mass-deletion rule, and the file count that
both sides measure the same way (locally by walking, on the server by a `find` script)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from roaming_homes import counting, guards
from roaming_homes.guards import Probe

NAMES = {"local": "/home/u", "server": "u@h:/home/u"}
IDS = {"local": "a" * 32, "server": "b" * 32}


def _both(local: Probe, server: Probe) -> dict[str, Probe]:
    return {"local": local, "server": server}


def test_markers_that_match_the_recorded_ids_pass() -> None:
    found = _both(Probe(True, "a" * 32, 5), Probe(True, "b" * 32, 5))
    assert guards.marker_refusal(IDS, found, NAMES) is None


def test_a_side_without_a_recorded_id_is_not_judged() -> None:
    found = _both(Probe(True, None, 0), Probe(False, None, 0))
    assert guards.marker_refusal({"local": "", "server": ""}, found, NAMES) is None


@pytest.mark.parametrize(("server", "words"), [
    (Probe(True, None, 0), "lacks its marker"),
    (Probe(False, None, 0), "is missing"),
    (Probe(True, "c" * 32, 9), "different replica"),
])
def test_a_lost_missing_or_foreign_marker_refuses(server: Probe, words: str) -> None:
    refusal = guards.marker_refusal(IDS, _both(Probe(True, "a" * 32, 5), server), NAMES)
    assert refusal is not None
    assert words in refusal and "the server home u@h:/home/u" in refusal
    assert "\n" not in refusal


@pytest.mark.parametrize(("before", "now", "max_delete", "refused"), [
    (100, 49, 50, True),    # lost 51 % > 50 %
    (100, 50, 50, False),   # lost exactly 50 %: allowed
    (100, 0, 100, False),   # 100 % switches the check off
    (1000, 899, 10, True),  # lost 101 of 1000 > 10 %
    (20, 9, 50, True),      # lost 11 > MIN_DELETIONS and > 50 %
    (10, 0, 50, False),     # lost all 10: not more than MIN_DELETIONS
    (100, 150, 0, False),   # gained files
])
def test_mass_deletion_rule(before: int, now: int, max_delete: int, refused: bool) -> None:
    found = _both(Probe(True, None, before), Probe(True, None, now))
    refusal = guards.deletion_refusal({"local": before, "server": before}, found, NAMES,
                                      max_delete)
    assert (refusal is not None) == refused
    # the server applies the same rule as a floor (guards.guard_command)
    assert (now < guards.deletion_floor(before, max_delete)) == refused
    if refused:
        assert f"lost {before - now} of {before}" in refusal and "--force" in refusal


def test_no_recorded_count_means_no_mass_deletion_check() -> None:
    found = _both(Probe(True, None, 0), Probe(True, None, 0))
    assert guards.deletion_refusal({}, found, NAMES, 0) is None


@pytest.mark.parametrize(("text", "expected"), [
    (guards.marker_text("f" * 32), "f" * 32),
    ("roaming-homes replica nothex\n", None),
    ("", None),
    ("something else", None),
])
def test_parse_marker(text: str, expected: str | None) -> None:
    assert guards.parse_marker(text) == expected


def _tree(root: Path) -> None:
    files = ["Documents/a", "Documents/sub/b", "Documents/sub/c~", "Documents/.cache/x",
             "Documents/.cache/y", "Music/m", "Music/new\nline", "Other/o", "Documents/t;$(x)"]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "Documents" / "link").symlink_to("a")
    (root / "Documents" / "empty").mkdir()


PATHS = ("Documents", "Music", "Absent")
IGNORES = (("Documents/.cache",), ("*~",))


def test_local_count_skips_ignored_paths_and_names_and_counts_links(tmp_path: Path) -> None:
    _tree(tmp_path)
    # a, sub/b, link, t;$(x), Music/m, Music/new\nline; not c~, .cache/*, Other/o
    assert guards.count_files(tmp_path, PATHS, *IGNORES) == 6


def test_server_probe_script_agrees_with_the_local_count(tmp_path: Path) -> None:
    _tree(tmp_path)
    guards.write_local_marker(tmp_path, "d" * 32)
    script = guards.probe_script(str(tmp_path), PATHS, *IGNORES)

    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            check=True).stdout

    assert guards.parse_probe(output) == guards.probe_local(tmp_path, PATHS, *IGNORES)
    assert guards.parse_probe(output) == Probe(True, "d" * 32, 6)


def test_server_probe_of_a_missing_root_and_a_broken_answer(tmp_path: Path) -> None:
    script = guards.probe_script(str(tmp_path / "gone"), PATHS, *IGNORES)
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert guards.parse_probe(output) == Probe(False, None, 0)
    assert guards.parse_probe("root present\nmarker \n") is None


def test_marker_script_keeps_an_existing_marker(tmp_path: Path) -> None:
    first = subprocess.run(["sh", "-c", guards.write_marker_script(str(tmp_path), "1" * 32)],
                           capture_output=True, text=True, check=True).stdout
    second = subprocess.run(["sh", "-c", guards.write_marker_script(str(tmp_path), "2" * 32)],
                            capture_output=True, text=True, check=True).stdout
    assert guards.parse_marker(first) == guards.parse_marker(second) == "1" * 32
    assert guards.probe_local(tmp_path, (), (), ()).marker == "1" * 32


def test_local_count_and_server_probe_agree_on_literal_and_glob_ignores(tmp_path: Path) -> None:
    for rel in ("Documents/a", "Documents/deep/skip/x", "Documents/deep/keep/y",
                "Documents/deep/keep/z.tmp", "Documents/other/skip/w", "Music/.cache/c"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    # a literal path deep down, a glob path that matches at any depth, a literal name
    ignores = (("Documents/deep/skip", "Documents/*.tmp"), (".cache",))
    script = guards.probe_script(str(tmp_path), ("Documents", "Music"), *ignores)
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            check=True).stdout

    # a, deep/keep/y, other/skip/w; not deep/skip/x, deep/keep/z.tmp, Music/.cache/c
    assert guards.count_files(tmp_path, ("Documents", "Music"), *ignores) == 3
    assert guards.parse_probe(output) == Probe(True, None, 3)


def _guarded(tmp_path: Path, root: Path, **judge: object) -> subprocess.CompletedProcess[str]:
    """guard_command as the server's shell runs it (unison appends `-server …`), with a
    `unison` on the PATH that only prints its arguments and working directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "unison"
    fake.write_text('#!/bin/sh\necho "unison server $* in $PWD"\n')
    fake.chmod(0o755)
    probe = guards.probe_script(str(root), PATHS, *IGNORES, **judge)
    return subprocess.run(["sh", "-c", f"{guards.guard_command(probe)} -server __new-rpc-mode"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


@pytest.mark.parametrize(("judge", "runs"), [
    ({}, True),                                              # first pass: report only
    ({"expect_marker": "d" * 32, "min_files": 6}, True),     # as recorded
    ({"expect_marker": "e" * 32}, False),                    # another replica
    ({"min_files": 7}, False),                               # lost files
])
def test_server_guard_runs_unison_only_when_its_replica_passes(
        tmp_path: Path, judge: dict[str, object], runs: bool) -> None:
    root = tmp_path / "replica"
    root.mkdir()
    _tree(root)
    guards.write_local_marker(root, "d" * 32)

    result = _guarded(tmp_path, root, **judge)

    # the report goes to stderr: stdout is unison's protocol channel, untouched until exec
    assert guards.parse_probe(result.stderr) == Probe(True, "d" * 32, 6)
    assert guards.refused(result.stderr.splitlines()) == (not runs)
    if runs:
        # unison's server starts where the login shell left it, not in the probed root
        assert result.returncode == 0
        assert result.stdout == f"unison server -server __new-rpc-mode in {tmp_path}\n"
    else:
        assert result.returncode == 1 and result.stdout == ""


def test_server_guard_refuses_a_missing_root_it_expects_a_marker_in(tmp_path: Path) -> None:
    result = _guarded(tmp_path, tmp_path / "gone", expect_marker="d" * 32)
    assert result.returncode == 1 and result.stdout == ""
    assert guards.parse_probe(result.stderr) == Probe(False, None, 0)


def _settle_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the cache remember directories changed just now (it skips the last 3 s, which a
    test cannot wait for); a change must then come at least one clock tick later."""
    monkeypatch.setattr(counting, "_SETTLED_NS", -10_000_000_000)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = os.scandir

    def scandir(path: str) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(counting.os, "scandir", scandir)
    return reads


def test_cached_count_reads_only_changed_directories_and_agrees_with_a_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home"
    _tree(root)
    (root / "Documents" / "deep" / "er").mkdir(parents=True)
    (root / "Documents" / "deep" / "er" / "f").write_text("f")
    _settle_everything(monkeypatch)
    cache = guards.DirCache(tmp_path / "counts.json", ["rules"])
    assert guards.count_files(root, PATHS, *IGNORES, cache) == 7
    time.sleep(0.05)  # past the clock tick of the tree's creation
    reads = _count_reads(monkeypatch)

    again = guards.DirCache(tmp_path / "counts.json", ["rules"])  # as the next pass loads it
    assert guards.count_files(root, PATHS, *IGNORES, again) == 7
    assert reads == []  # nothing changed: nothing read, every directory only looked at
    (root / "Documents" / "deep" / "er" / "g").write_text("new")  # added deep down
    (root / "Music" / "m").unlink()  # removed
    (root / "Documents" / "sub").rename(root / "Documents" / "moved")  # renamed, with b and c~
    (root / "Documents" / "deep" / "er" / "f").write_text("rewritten")  # no entry changed

    counted = guards.count_files(root, PATHS, *IGNORES,
                                 guards.DirCache(tmp_path / "counts.json", ["rules"]))

    assert sorted(Path(r).relative_to(root).as_posix() for r in reads) == [
        "Documents", "Documents/deep/er", "Documents/moved", "Music"]
    assert counted == guards.count_files(root, PATHS, *IGNORES) == 7


def test_cache_forgets_what_it_cannot_trust(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home"
    _tree(root)
    path = tmp_path / "counts.json"
    guards.count_files(root, PATHS, *IGNORES, guards.DirCache(path, ["rules"]))
    assert not path.exists()  # all changed in the last seconds: nothing kept
    _settle_everything(monkeypatch)
    guards.count_files(root, PATHS, *IGNORES, guards.DirCache(path, ["rules"]))
    assert "Documents/sub" in json.loads(path.read_text())["dirs"]
    reads = _count_reads(monkeypatch)

    # other rules (paths, ignores): walked afresh; a broken file: walked afresh
    assert guards.count_files(root, PATHS, (), (),
                              guards.DirCache(path, ["other rules"])) == 9
    assert len(reads) == 5
    path.write_text("{not json")
    assert guards.count_files(root, PATHS, *IGNORES, guards.DirCache(path, ["rules"])) == 6


def test_a_synced_path_that_is_a_link_counts_as_one_file_as_find_does(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a").write_text("a")
    (tmp_path / "Documents").symlink_to("real")
    script = guards.probe_script(str(tmp_path), ("Documents",), (), ())
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    assert guards.count_files(tmp_path, ("Documents",), (), ()) == 1
    assert guards.parse_probe(output) == Probe(True, None, 1)


@pytest.mark.parametrize("python", [guards.SERVER_PYTHON, "/nonexistent/python3"])
def test_a_large_server_counts_with_its_python_and_a_cache_or_else_with_find(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str) -> None:
    system = python == guards.SERVER_PYTHON
    if system and not Path(python).exists():
        pytest.skip(f"no {python} here")
    monkeypatch.setattr(guards, "SERVER_PYTHON", python)
    root, unison_dir = tmp_path / "replica", tmp_path / "server-unison"
    _tree(root)
    unison_dir.mkdir()
    if system:  # a server's tree has been there a while: its directories get remembered
        time.sleep(counting._SETTLED_NS / 1e9 + 0.1)
    env = {"PATH": "/usr/bin:/bin", "UNISON": str(unison_dir)}

    def probe() -> Probe | None:
        script = guards.probe_script(str(root), PATHS, *IGNORES, cached=True)
        return guards.parse_probe(subprocess.run(["sh", "-c", script], capture_output=True,
                                                 text=True, env=env, check=True).stdout)

    assert probe() == Probe(True, None, 6) == guards.probe_local(root, PATHS, *IGNORES)
    (root / "Music" / "m").unlink()
    assert probe() == Probe(True, None, 5)
    caches = list(unison_dir.glob("roaming-homes-counts-*.json"))
    if system:
        assert len(caches) == 1 and json.loads(caches[0].read_text())["rules"][0] == str(root)
    else:
        assert caches == []
