"""`bench/run --quick` (the CI smoke test of the benchmarks): it must produce the whole table.

No timing is asserted: times on a shared machine are noise. What is checked is that every
measurement ran against the real unison, sshd and rsync, landed in its row, and that the run
cleaned up after itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = [
    ("1", "no-change pass, 1 000 files"),
    ("1", "… unison alone over our shared connection, 1 000 files"),
    ("2", "10 files changed in 1 000"),
    ("3", "first sync, 16 MiB in"),
    ("3", "… raw unison `-ignorearchives`, first sync, 16 MiB in"),
    ("3", "… lever: `rsync -a`, then raw unison `-ignorearchives` on the copy (builds its "
          "archives), first sync, 16 MiB in"),
    ("4", "offline exit 75, closed port"),
    ("4", "offline exit 75, black hole"),
    ("5", "CLI start, `roaming-homes --version`"),
    ("5", "imports of the sync path"),
    ("6", "peak RSS, wrapper (Python), 1 000 files"),
    ("6", "peak RSS, unison client, 1 000 files"),
    ("7", "local write → file on the server, over 10 writes, watch mode, p50"),
    ("7", "local write → file on the server, over 10 writes, watch mode, p99"),
    ("7", "… interval mode, `sync.interval = 60`, p50"),
    ("7", "… interval mode, `sync.interval = 60`, p99"),
    ("8", "idle CPU per hour, unchanged home of 1 000 files, watch mode"),
    ("9", "write on A → on B, 2 computers watching, over 3 writes, p50"),
    ("9", "write on A → on B, 2 computers watching, over 3 writes, p99"),
    ("9", "write on A → on B and C, 3 computers watching, over 3 writes, p50"),
    ("9", "write on A → on B and C, 3 computers watching, over 3 writes, p99"),
    ("10", "pass, first front-end down (connection refused), second serves, no memory"),
    ("10", "… the same, the failed front-end remembered"),
    ("10", "pass, first front-end a black hole (connect_timeout 1 s), second serves, no memory"),
    ("10", "… the same, the failed front-end remembered"),
]
_FIGURE = re.compile(r"\d+\.\d+ (s|ms|MiB)")


@dataclass
class QuickRun:
    result: subprocess.CompletedProcess[str]
    table_file: Path
    temp_dir: Path
    namespaces_before: list[str]


def _namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=False).stdout
    return sorted(word for word in listing.split() if word.startswith("rhbench-"))


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| # ")]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    base = tmp_path_factory.mktemp("bench")
    temp_dir = base / "tmp"
    temp_dir.mkdir()
    before = _namespaces()
    output = base / "performance.md"
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--output", str(output)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable,
             "LANG": "C.UTF-8", "TMPDIR": str(temp_dir)},
        capture_output=True, text=True, timeout=300, check=False)
    return QuickRun(result, output, temp_dir, before)


def test_quick_bench_writes_every_measurement_into_the_table(quick: QuickRun) -> None:
    # 1 means a target was missed (the quick sizes are too small to judge); anything else broke.
    assert quick.result.returncode in (0, 1), quick.result.stderr[-3000:]
    text = quick.table_file.read_text()
    assert re.search(r"on \d+ cores, .*Python 3\.\d+\.\d+, unison version 2\.\d+", text)
    assert quick.result.stdout.strip() in text
    rows = _rows(text)
    assert len(rows) == len(EXPECTED_ROWS), text
    for (number, label), row in zip(EXPECTED_ROWS, rows, strict=True):
        assert row[0] == number and row[1].startswith(label), row
        assert _FIGURE.match(row[2]), f"no figure for {label!r}: {row[2]}"


def assert_nothing_left_of(temp_dir: Path) -> None:
    """Nothing in `temp_dir` (the run's TMPDIR), and no process whose command line names it."""
    assert list(temp_dir.iterdir()) == []
    ours = str(temp_dir).encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert ours not in cmdline, f"left running: {cmdline!r}"


def test_quick_bench_removes_its_homes_namespace_and_servers(quick: QuickRun) -> None:
    assert_nothing_left_of(quick.temp_dir)
    assert _namespaces() == quick.namespaces_before


def test_quick_storm_runs_every_computer_and_prints_its_row(tmp_path: Path) -> None:
    """`bench/run --storm --quick`: a dozen computers at once; every one must have synced."""
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--storm", "--quick"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable,
             "LANG": "C.UTF-8", "TMPDIR": str(tmp_path)},
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = [r for r in _rows(result.stdout) if r[0] == "13"]
    assert "12 of 12 exit 0" in row[2] and "12 files on the server" in row[2], row
    assert _FIGURE.search(row[2])
    assert list(tmp_path.iterdir()) == []  # its homes and sshd are gone
