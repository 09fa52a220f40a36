"""End to end: progress of long passes, resume after a kill, sync.first_paths, status."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TypeVar

from tests.support.homes import CLI, Setup, tree
from tests.support.transfer import MB, random_files, size_of, throttle
from tests.support.waiting import wait_for

T = TypeVar("T")


def _digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below `root` (cheaper than tree() for big files)."""
    import hashlib

    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in root.rglob("*") if f.is_file()}



def _run_on_pty(user: Setup, *args: str, timeout: float = 120) -> tuple[int, str]:
    main, child = pty.openpty()
    proc = subprocess.Popen([*CLI, *args], env=user.env, stdin=child, stdout=child,
                            stderr=child, close_fds=True)
    os.close(child)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child side is closed
            break
        if not data:
            break
        output += data
    os.close(main)
    return proc.wait(timeout=10), output.decode("utf-8", errors="replace")


def test_sync_on_a_terminal_shows_one_live_progress_line(user: Setup, tmp_path: Path) -> None:
    total = random_files(user.server_home / "Documents", 40, 5 * MB)  # 210 MB
    # about 3.5 s at most, whatever the machine: long enough for a rate to be measured
    throttle(user, 60 * MB, tmp_path / "count.json")

    code, output = _run_on_pty(user, "sync")

    assert code == 0, output
    frames = [f for f in output.split("\r") if "% ETA" not in f and "items" in f]
    percents = [int(m.group(1)) for f in frames if (m := re.search(r"\((\d+)%\)", f))]
    assert len(set(percents)) >= 3, output  # the line was redrawn as bytes arrived
    assert percents == sorted(percents)
    assert any(re.search(r"MB/s, ETA \d+:\d\d", f) for f in frames), output
    assert "\n" not in "".join(frames[:-1]).replace("\r\n", ""), "redrawn in place, not scrolled"
    # a new laptop: rsync copies the 40 files (`unison.bulk`), unison then moves nothing
    assert f"done: 40/40 items, {total / 1e6:.1f} MB/{total / 1e6:.1f} MB (100%)" in output
    assert "in sync: 40 item(s) transferred" in output
    assert _digests(user.home / "Documents") == _digests(user.server_home / "Documents")


def test_sync_without_a_terminal_logs_plain_lines_and_quiet_silences_them(user: Setup) -> None:
    random_files(user.server_home / "Documents", 10, MB)

    result = user.sync()

    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    # 10 files of 1 MB: too few for the first sync's bulk copy (`unison.bulk.worth_copying`)
    assert lines[:2] == ["first sync: looking for changes", "first sync: reconciling changes"]
    assert lines[-2:] == ["done: 1/1 items, 10.5 MB/10.5 MB (100%)",
                          "in sync: 1 item(s) transferred"]
    (user.home / "Documents" / "new").write_text("x")
    quiet = user.run("-q", "sync")
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_status_shows_progress_while_a_pass_runs_and_watch_follows_it(
        user: Setup, tmp_path: Path) -> None:
    total = random_files(user.server_home / "Documents", 32, MB)
    throttle(user, 8 * MB, tmp_path / "count.json")  # about 4 s
    progress_file = user.state_home / "roaming-homes" / "progress.json"
    sync = subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.PIPE, text=True)
    try:
        status = wait_for(lambda: (s := user.status())["progress"] and
                           s["progress"]["bytes_done"] > 0 and s, 60, "progress in status")
        watch = user.run("status", "--watch")
    finally:
        sync.communicate(timeout=120)

    assert status["state"] == "syncing" and status["running"] is True
    p = status["progress"]
    assert p["pid"] == status["running_pid"] == sync.pid
    assert p["phase"] == "propagating" and p["first_run"] is True
    assert p["items_total"] == 1 and p["bytes_total"] == p["bytes_to_fetch"] == total
    assert 0 < p["bytes_done"] < total
    assert status["progress_line"].startswith("first sync: 0/1 items, ")
    assert status["headline"].startswith("syncing now: first sync: downloading 1 file, ")
    # --watch printed progress lines while the pass ran and returned when it ended
    assert watch.returncode == 0
    assert re.search(r"^first sync: 0/1 items, .*\(\d+%\)", watch.stdout, re.M), watch.stdout
    assert "roaming-homes: in sync: 1 item(s) transferred" in watch.stdout.splitlines()
    assert sync.returncode == 0
    assert not progress_file.exists()
    after = user.status()
    assert after["progress"] is None and after["state"] == "in-sync"


def test_first_pass_killed_at_half_resumes_without_fetching_again(
        user: Setup, tmp_path: Path) -> None:
    total = random_files(user.server_home / "Documents", 200, MB)
    throttle(user, 50 * MB, tmp_path / "first.json")  # about 4 s for the whole tree
    first = subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for(lambda: size_of(user.home) >= total // 2 or first.poll() is not None, 60,
                  "half of the tree")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a logout or power loss would
        first.wait()
    arrived = size_of(user.home)
    assert total * 0.4 < arrived < total * 0.8, arrived
    user.close_connection()
    throttle(user, 200 * MB, tmp_path / "second.json")

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert outcome["first_run"] is True
    fetched = json.loads((tmp_path / "second.json").read_text())["down"]
    assert fetched <= (total - arrived) + 0.1 * total, (fetched, arrived, total)
    assert _digests(user.home / "Documents") == _digests(user.server_home / "Documents")
    assert not [p for p in user.home.iterdir() if p.name.startswith(".unison")]


def test_first_paths_arrive_in_a_pass_before_the_rest(user: Setup) -> None:
    user.configure(sync={"paths": ["Documents", "Music"],
                         "first_paths": ["Documents/urgent", "Elsewhere"]})
    for rel in ["Documents/urgent", "Documents/later", "Music"]:
        (user.server_home / rel).mkdir(parents=True)
        (user.server_home / rel / "f").write_text(rel)

    result = user.run("-v", "sync")

    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "sync.first_paths: 'Elsewhere' is not below a synced path; left out" in log
    urgent = log.index("[BGN] Copying Documents/urgent ")
    rest = log.index("[BGN] Copying Documents/later ")
    assert log.index("first sync: Documents/urgent before the rest") < urgent < rest
    assert (user.home / "Music" / "f").read_text() == "Music"
    assert not (user.home / "Elsewhere").exists()
    # Everything but the replica markers (each root has its own id) is the same on both sides.
    synced = [{k: v for k, v in tree(root).items() if not k.startswith(".roaming-homes")}
              for root in (user.home, user.server_home)]
    assert synced[0] == synced[1]
    # Later passes are not first runs: no separate pass any more.
    (user.server_home / "Documents" / "urgent" / "g").write_text("g")
    again = user.run("-v", "sync")
    assert again.returncode == 0 and "before the rest" not in again.stderr
