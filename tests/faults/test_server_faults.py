"""Faults of the server and the link: down, frozen, cut mid-transfer, full, killed syncs.

Every test takes a Ledger snapshot before the fault and proves afterwards that no content was
lost and no replica holds a partial file, then that the next pass completes the work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.homes import CLI, Setup
from tests.support.ledger import Ledger, digest, temp_files
from tests.support.sshd import _children
from tests.support.waiting import wait_for

BIG = 16 * 1024 * 1024
RATE = 8 * 1024 * 1024  # bytes/s through tests/support/throttle.py: BIG takes about 2 s
THROTTLE = Path(__file__).parents[1] / "support" / "throttle.py"



def _docs(user: Setup, files: dict[str, bytes]) -> Path:
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    for name, data in files.items():
        (docs / name).write_bytes(data)
    return docs


def _sync_until_done(user: Setup, seconds: float = 60) -> tuple[int, dict]:
    """Sync until the pass is not skipped (a killed pass's unison may still hold the lock)."""
    deadline = time.monotonic() + seconds
    while True:
        code, outcome = user.sync_json()
        if code != 75 or time.monotonic() > deadline:
            return code, outcome
        time.sleep(0.2)


def test_server_down_exits_75_fast_and_catches_up_when_back(victim: Setup,
                                                           ledger: Ledger) -> None:
    docs = _docs(victim, {"a.txt": b"first"})
    assert victim.sync().returncode == 0
    assert victim.sshd is not None
    victim.sshd.stop()
    (docs / "a.txt").write_bytes(b"edited offline")
    (docs / "b.txt").write_bytes(b"new offline")
    before = ledger.snapshot()

    started = time.monotonic()
    result = victim.sync()

    assert result.returncode == 75, result.stderr
    assert time.monotonic() - started < 5
    assert "unreachable" in result.stderr
    ledger.assert_nothing_lost(before)
    victim.sshd.start()
    assert victim.sync().returncode == 0
    sdocs = victim.server_home / "Documents"
    assert (sdocs / "a.txt").read_bytes() == b"edited offline"
    assert (sdocs / "b.txt").read_bytes() == b"new offline"
    ledger.assert_nothing_lost(before)


def test_frozen_server_ends_pass_within_15_s_and_next_pass_is_fine(victim: Setup,
                                                                  ledger: Ledger) -> None:
    docs = _docs(victim, {"a.txt": b"first"})
    assert victim.sync().returncode == 0  # leaves the shared ssh connection open
    assert victim.sshd is not None
    (docs / "a.txt").write_bytes(b"second")
    before = ledger.snapshot()
    victim.sshd.freeze()
    try:
        started = time.monotonic()
        result = victim.sync(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        victim.sshd.thaw()

    assert result.returncode != 0, result.stderr
    assert elapsed < 15, f"a frozen server held the pass {elapsed:.1f} s"
    assert (victim.server_home / "Documents" / "a.txt").read_bytes() == b"first"
    ledger.assert_nothing_lost(before)
    code, outcome = _sync_until_done(victim)
    assert code == 0, outcome
    assert (victim.server_home / "Documents" / "a.txt").read_bytes() == b"second"
    assert temp_files(victim.home) == temp_files(victim.server_home) == []
    ledger.assert_nothing_lost(before)


@pytest.fixture
def big_file(victim: Setup, tmp_path: Path) -> Iterator[tuple[Path, bytes, bytes]]:
    """A big file synced to the server (v1), then replaced locally by v2 (not synced yet);
    from now on the link runs at RATE, so the transfer of v2 lasts long enough to cut."""
    # v2 differs in size too: unison's fastcheck could miss a same-size rewrite in the same
    # second as the pass that synced v1.
    v1, v2 = os.urandom(BIG), os.urandom(BIG + 4096)
    docs = _docs(victim, {"big.bin": v1, "small.txt": b"small"})
    assert victim.sync().returncode == 0
    (docs / "big.bin").write_bytes(v2)
    assert victim.sshd is not None
    proxy = (f"ProxyCommand={sys.executable} {THROTTLE} 127.0.0.1 {victim.sshd.port} {RATE} "
             f"{tmp_path / 'relayed.json'}")
    victim.configure(server={"connect_timeout": 1,
                             "ssh_options": [*victim.sshd.ssh_options(), "-o", proxy]})
    victim.close_connection()
    yield victim.server_home / "Documents" / "big.bin", v1, v2


def _start_sync(user: Setup) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _transfer_started(user: Setup) -> Callable[[], bool]:
    return lambda: bool(temp_files(user.server_home / "Documents"))


def test_link_cut_mid_transfer_never_replaces_the_good_file(
        victim: Setup, ledger: Ledger, big_file: tuple[Path, bytes, bytes]) -> None:
    server_copy, v1, v2 = big_file
    before = ledger.snapshot()
    assert victim.sshd is not None
    sync = _start_sync(victim)
    wait_for(_transfer_started(victim), 30, "the transfer to start", interval=0.002)

    victim.sshd.stop()  # the link is gone: every connection dies mid-transfer
    _, err = sync.communicate(timeout=30)

    assert sync.returncode in (3, 75), err
    assert server_copy.read_bytes() == v1
    ledger.assert_nothing_lost(before)
    victim.sshd.start()
    code, outcome = _sync_until_done(victim)
    assert code == 0, outcome
    assert server_copy.read_bytes() == v2
    assert temp_files(victim.server_home) == []
    ledger.assert_nothing_lost(before)


@pytest.mark.parametrize("victim_process", ["sync", "unison"])
def test_kill_9_mid_transfer_then_next_pass_recovers_and_completes(
        victim: Setup, ledger: Ledger, big_file: tuple[Path, bytes, bytes],
        victim_process: str) -> None:
    server_copy, v1, v2 = big_file
    before = ledger.snapshot()
    sync = _start_sync(victim)
    wait_for(_transfer_started(victim), 30, "the transfer to start", interval=0.002)

    if victim_process == "sync":
        os.kill(sync.pid, signal.SIGKILL)
    else:
        unison = [pid for pid in _children(sync.pid)
                  if "unison" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert unison, "no unison child found"
        os.kill(unison[0], signal.SIGKILL)
    sync.communicate(timeout=30)

    assert server_copy.read_bytes() in (v1, v2)  # never a partial file
    ledger.assert_nothing_lost(before)
    code, outcome = _sync_until_done(victim)
    assert code == 0, outcome
    assert server_copy.read_bytes() == v2
    assert temp_files(victim.server_home) == []
    ledger.assert_nothing_lost(before)


def test_stale_unison_locks_of_a_killed_pass_are_recovered_with_a_log_line(
        victim: Setup, ledger: Ledger) -> None:
    docs = _docs(victim, {"a.txt": b"one"})
    assert victim.sync().returncode == 0
    assert victim.sshd is not None and victim.sshd.server_unison_dir is not None
    # What a unison killed while saving its state leaves: empty lk<hash> files on both hosts.
    for unison_dir in (victim.unison_dir, victim.sshd.server_unison_dir):
        for archive in unison_dir.glob("ar*"):
            (unison_dir / f"lk{archive.name[2:]}").touch()
    (docs / "a.txt").write_bytes(b"second version")

    code, outcome = victim.sync_json()

    assert code == 0, outcome
    assert (victim.server_home / "Documents" / "a.txt").read_bytes() == b"second version"
    log = (victim.state_home / "roaming-homes" / "sync.log").read_text()
    assert "stale unison lock" in log
    assert not list(victim.unison_dir.glob("lk*"))


@pytest.fixture
def small_server_disk(victim: Setup) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted as the server home (as root; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs",
                              str(victim.server_home)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield victim.server_home
    finally:
        victim.close()  # the shared ssh connection must not keep the mount busy
        subprocess.run(["umount", str(victim.server_home)], check=True)


def test_full_server_disk_fails_clearly_and_keeps_the_good_file(
        victim: Setup, ledger: Ledger, small_server_disk: Path) -> None:
    good = os.urandom(1024 * 1024)
    docs = _docs(victim, {"data.bin": good, "note.txt": b"note"})
    assert victim.sync().returncode == 0
    (docs / "data.bin").write_bytes(os.urandom(6 * 1024 * 1024))  # does not fit
    (docs / "note.txt").write_bytes(b"note, edited")
    before = ledger.snapshot()

    code, outcome = victim.sync_json()

    assert code in (2, 3), outcome
    assert "data.bin" in outcome["message"] or "space" in outcome["message"].lower(), outcome
    assert (small_server_disk / "Documents" / "data.bin").read_bytes() == good
    ledger.assert_nothing_lost(before)
    # Once the data fits again, the next pass completes and unison's temporary files go.
    fits = os.urandom(512 * 1024)
    (docs / "data.bin").write_bytes(fits)
    code, outcome = victim.sync_json()
    assert code == 0, outcome
    assert (small_server_disk / "Documents" / "data.bin").read_bytes() == fits
    assert (small_server_disk / "Documents" / "note.txt").read_bytes() == b"note, edited"
    assert temp_files(small_server_disk) == []
    assert digest(good) in ledger.snapshot().backups
