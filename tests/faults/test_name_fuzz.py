"""File names from every byte: synced both ways, twice, with nothing lost, no guard tripped,
and every name that is shown shown escaped. In single passes and in real-time mode.

Line breaks (0x0a, 0x0d) are the one exception: unison's output is read line by line, so those
names are never synced (profile.IGNORE_LINE_BREAKS); they stay where they are, untouched.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.homes import Setup
from tests.support.waiting import wait_for
from tests.support.watcher import Watcher

LINE_BREAKS = (0x0A, 0x0D)
BYTES = [b for b in range(1, 256) if b != 0x2F and b not in LINE_BREAKS]
# Terminal-unsafe output: C0 controls but tab and newline, DEL, and the C1 controls.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def fuzz_names(tag: bytes) -> list[bytes]:
    """Relative paths (bytes) below Documents: each byte inside and at the start of a name,
    leading dashes, a 255-byte name, a 100-deep path."""
    names = [b"in-" + tag + bytes([b]) + b"-x" for b in BYTES]
    names += [bytes([b]) + tag + b"-lead" for b in BYTES if b != 0x2E]  # no "." or ".." names
    names += [b"-" + tag + b"-rf", b"--" + tag + b"-help"]
    names.append(tag + b"L" * (255 - len(tag)))
    names.append(b"/".join([tag + b"d"] + [b"d"] * 99) + b"/deep")
    return names


def write_all(root: Path, names: list[bytes], content: bytes) -> None:
    for rel in names:
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content + rel)


def files(root: Path) -> dict[bytes, bytes]:
    """Every file below `root`: relative path (bytes) -> content."""
    found = {}
    top = os.fsencode(root)
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, top)] = handle.read()
            except FileNotFoundError:  # a temporary file of unison's, renamed meanwhile
                continue
    return found


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert not _UNSAFE.search(text), repr(_UNSAFE.search(text))
        text.encode("utf-8")  # no lone surrogates: every byte that was not UTF-8 is escaped


@pytest.fixture
def documents(watched: Setup) -> Iterator[tuple[Setup, Path, Path]]:
    yield watched, watched.home / "Documents", watched.server_home / "Documents"


def _sync(user: Setup) -> None:
    result = user.run("-v", "sync", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout)
    assert outcome["result"] == "in-sync" and outcome["reason"] == ""
    assert_clean(result.stderr)


def test_every_byte_in_a_name_syncs_both_ways_twice_in_single_passes(
        documents: tuple[Setup, Path, Path]) -> None:
    user, docs, sdocs = documents
    breaks = [b"break" + bytes([b]) + b"x" for b in LINE_BREAKS]
    write_all(docs, breaks, b"local only ")
    here, there = fuzz_names(b"H"), fuzz_names(b"S")
    write_all(docs, here, b"from here ")
    write_all(sdocs, there, b"from there ")

    for round_ in (1, 2):
        _sync(user)
        synced = files(sdocs)
        assert files(docs) == {**synced, **{b: b"local only " + b for b in breaks}}
        assert set(synced) == set(here) | set(there)
        if round_ == 1:  # the second time: every file changed, half on each side
            write_all(docs, here, b"changed here ")
            write_all(sdocs, there, b"changed there ")
    assert files(sdocs)[here[0]] == b"changed here " + here[0]
    assert files(docs)[there[0]] == b"changed there " + there[0]

    status = user.run("status")
    assert status.returncode == 0
    assert_clean(status.stdout, status.stderr)


def test_every_byte_in_a_name_syncs_in_real_time(documents: tuple[Setup, Path, Path]) -> None:
    user, docs, sdocs = documents
    assert user.sync().returncode == 0
    watcher = Watcher(user).start()
    try:
        wait_for(lambda: user.status()["watching_pid"] is not None or watcher.result, 30,
                 "the watch to start")
        here, there = fuzz_names(b"H"), fuzz_names(b"S")
        write_all(docs, here, b"from here ")
        write_all(sdocs, there, b"from there ")

        wait_for(lambda: files(docs) == files(sdocs)
                 and len(files(docs)) == len(here) + len(there), 120,
                 "every name on both sides")
    finally:
        result = watcher.finish(60)
    assert result.reason == "stopped", result
    assert all(o.result in ("in-sync",) for o in watcher.outcomes), [
        (o.result, o.message) for o in watcher.outcomes]


def test_a_conflict_on_a_name_that_is_not_utf8_is_listed_escaped(user: Setup) -> None:
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    name = b"caf\xe9 \x1b[31mred.txt"
    write_all(docs, [name], b"original ")
    user.configure(sync={"prefer": "none"})
    assert user.sync().returncode == 0
    write_all(sdocs, [name], b"server edit ")
    os.utime(os.path.join(os.fsencode(sdocs), name), (1_600_000_000, 1_600_000_000))
    write_all(docs, [name], b"laptop edit, longer ")

    synced = user.sync()
    listed = user.run("conflicts")
    as_json = json.loads(user.run("conflicts", "--json").stdout)

    assert synced.returncode == 1
    assert_clean(synced.stdout, synced.stderr, listed.stdout, listed.stderr)
    assert "caf\\xe9 \\x1b[31mred.txt" in listed.stdout
    assert "absent or unknown" not in listed.stdout  # both sides found by their real bytes
    (conflict,) = as_json["conflicts"]
    assert os.fsencode(conflict["path"]) == b"Documents/" + name
    assert conflict["server"]["mtime"] == 1_600_000_000
    status = user.run("status").stdout
    assert_clean(status)
    assert "caf\\xe9 \\x1b[31mred.txt" in status
