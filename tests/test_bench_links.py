"""`bench/run --links --quick` over one link profile: the harness of emulated links works.

No timing is asserted (times on a shared machine are noise). What is checked: the link was
built and validated, every measurement ran through it and landed in its row with the link's
name (a pass cut off mid-transfer lost nothing and the next one synced it all: row 14 checks
that as it measures), the section was written after the loopback table (which is kept), and
the run removed its namespace, veth pair, processes and files.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bench_quick import ROOT, _namespaces, _rows, assert_nothing_left_of

pytestmark = pytest.mark.skipif(
    subprocess.run(["id", "-u"], capture_output=True, text=True, check=False).stdout.strip()
    != "0", reason="network namespaces need root")

EXPECTED_ROWS = [
    ("1", "broadband: no-change pass, 200 files"),
    ("1", "broadband: … unison alone over our shared connection, 200 files"),
    ("2", "broadband: 10 files changed in 200"),
    ("6", "broadband: peak RSS, wrapper (Python), 200 files"),
    ("6", "broadband: peak RSS, unison client, 200 files"),
    ("11", "broadband: round trips of a no-change pass, 200 files"),
    ("11", "broadband: … unison alone over our shared connection, 200 files"),
    ("11", "broadband: … one `ssh … true` over our shared connection"),
    ("11", "broadband: round trips of a pass that moves 10 files of 200"),
    ("3", "broadband: first sync, "),
    ("3", "broadband: … raw unison `-ignorearchives`, first sync, "),
    ("3", "broadband: … lever: `rsync -a`, then raw unison `-ignorearchives` on the copy"),
    ("3", "broadband: first sync, 100 small files (`--first-run`)"),
    ("3", "broadband: … raw unison `-ignorearchives`, first sync, 100 small files"),
    ("3", "broadband: … lever: `rsync -a`, then raw unison `-ignorearchives` on the copy"),
    ("4", "broadband: offline exit 75, link drops every packet (connect_timeout 1 s)"),
    ("4", "broadband: offline exit 75, link drops every packet while the shared connection"),
    ("14", "broadband: cut mid-transfer: first sync, 8 MiB in "),
    ("14", "broadband: … the next pass: sent again of "),
    ("14", "broadband: cut mid-transfer: pass after half the tree was rewritten, 8 MiB in "),
    ("14", "broadband: … the next pass: sent again of "),
    ("14", "broadband: cut mid-transfer: first sync of a new laptop, 8 MiB in "),
    ("14", "broadband: … the next pass: fetched again of "),
    ("7", "broadband: local write → file on the server, over 3 writes, watch mode, p50"),
    ("7", "broadband: local write → file on the server, over 3 writes, watch mode, p99"),
    ("7", "broadband: … an edit of a synced file, over 3 edits, p50"),
    ("7", "broadband: … an edit of a synced file, over 3 edits, p99"),
]
_FIGURE = re.compile(r"\d+(\.\d+)? (s|MiB|turns)")
_VALIDATION = re.compile(r"broadband \(50 Mbit/s, 30 ms RTT\): measured through ssh over the "
                         r"link: round trip \d+\.\d ms, download \d+\.\d Mbit/s, upload")


def test_quick_links_bench_measures_through_the_link_and_cleans_up(tmp_path: Path) -> None:
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    output = tmp_path / "performance.md"
    output.write_text("# Performance\n\nthe loopback table\n")
    before = _namespaces()
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--links", "--quick", "--profile", "broadband",
         "--output", str(output)],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable,
             "LANG": "C.UTF-8", "TMPDIR": str(temp_dir)},
        capture_output=True, text=True, timeout=280, check=False)
    # 1 means a target was missed (nothing to judge at these sizes); anything else broke.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    text = output.read_text()
    assert text.startswith("# Performance\n\nthe loopback table\n\n## Over emulated links\n")
    assert _VALIDATION.search(text), text
    rows = _rows(text)
    assert len(rows) == len(EXPECTED_ROWS), text
    for (number, label), row in zip(EXPECTED_ROWS, rows, strict=True):
        assert row[0] == number and row[1].startswith(label), row
        assert _FIGURE.match(row[2]), f"no figure for {label!r}: {row[2]}"
    assert_nothing_left_of(temp_dir)
    assert not set(_namespaces()) - set(before)  # none of its own left (others may come and go)
