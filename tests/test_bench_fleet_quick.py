"""`bench/run --fleet --quick`: the capacity benchmark's harness works, end to end, and leaves
nothing behind (no accounts, homes, processes). No figure is judged: on a shared machine a
smoke-test's times are noise.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench import fleet

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="the fleet benchmark makes server users: root, useradd")


def _run_dirs() -> set[str]:
    """The bench's directories in /tmp (where it goes when TMPDIR is not reachable for the
    users it makes, as under pytest's private temporary directory)."""
    return {p.name for p in Path("/tmp").glob("rhfleet-*")}


def _accounts() -> set[str]:
    return {entry.pw_name for entry in pwd.getpwall() if entry.pw_gecos.startswith(fleet.COMMENT)}


def test_quick_fleet_bench_measures_every_round_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    output = tmp_path / "capacity.md"
    before, dirs_before = _accounts(), _run_dirs()
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--fleet", "--quick", "--output", str(output)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable,
             "LANG": "C.UTF-8", "TMPDIR": str(temp_dir)},
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert re.search(r"on .*\d+ cores, \d+ GiB, Linux .*OpenSSH", text)
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.splitlines() if re.match(r"\| \d", line)]
    assert [(row[0], row[2]) for row in rows] == [("2", "real-time"), ("2", "interval")]
    watching, polling = rows
    assert re.match(r"\d+\.\d MiB|\d+\.\d", watching[3]) and float(watching[3].split()[0]) > 1
    assert int(watching[7].split()[0]) >= 1  # inotify watches of the server's monitor
    processes, fds = map(int, watching[8].split(" / "))
    assert processes >= 3 and fds > 0  # sshd's two and the monitor, at least
    for cell in watching[10:14]:  # up, down, burst up, burst down: p50 / p99 seconds
        assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d", cell), watching
    assert polling[3] == "0.0" and float(polling[9].split()[0]) > 0  # no monitor; passes cost
    # nothing left: accounts, their homes, processes
    assert _accounts() == before
    assert list(temp_dir.iterdir()) == []
    made = _run_dirs() - dirs_before
    assert not made, made
    ours = [str(temp_dir).encode(), *(f"/tmp/{name}".encode() for name in made)]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert not any(part in cmdline for part in ours), f"left running: {cmdline!r}"


def test_the_fleet_bench_reads_cpu_watches_and_kinds_from_proc() -> None:
    stat = "42 (sshd: ana@notty) S 1 42 42 0 -1 4194560 1 0 0 0 7 3 250 150 20 0 1 0 9 0 0"
    assert fleet.children_cpu(stat) == pytest.approx(4.0)  # (250 + 150) ticks of 1/100 s
    assert fleet.watches_in("pos:\t0\nflags:\t02004000\ninotify wd:1 ino:2 sdev:3 mask:fce "
                            "ignored_mask:0\ninotify wd:2 ino:9 sdev:3 mask:fce "
                            "ignored_mask:0\n") == 2
    assert fleet.kind_of(["/usr/bin/python3", "/usr/bin/unison-fsmonitor", "--idle-timeout",
                          "300"]) == "monitor"
    assert fleet.kind_of(["python3", "-m", "roaming_homes.unison.fsmonitor"]) == "monitor"
    assert fleet.kind_of(["unison", "-server", "__new-rpc-mode"]) == "unison"
    assert fleet.kind_of(["sshd: ana@notty"]) == "sshd"
    assert fleet.kind_of(["sh", "-c", "true"]) == "other"
