"""End to end: the real CLI, the real unison, a real sshd on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.homes import Setup, tree
from tests.support.sshd import SshServer
from tests.support.transfer import MB, copying, throttle
from tests.support.waiting import wait_for

ODD_NAMES = ["with space.txt", "ünïcödé €.txt", "-leading-dash", "[] brackets  ", "a -> b",
             "esc\x1b]0;title\x07", "tab\tand\x01"]
# Never synced: a line break could forge a line of unison's output (IGNORE_LINE_BREAKS)
CONTROL_NAMES = ["new\nline", "carriage\rreturn"]


def test_first_sync_copies_both_ways_and_runs_as_first_run(user: Setup) -> None:
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "local.txt").write_text("from laptop")
    (user.server_home / "Documents").mkdir()
    (user.server_home / "Documents" / "server.txt").write_text("from server")

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert outcome["first_run"] is True
    assert outcome["result"] == "in-sync"
    assert (user.server_home / "Documents" / "local.txt").read_text() == "from laptop"
    assert (user.home / "Documents" / "server.txt").read_text() == "from server"
    assert tree(user.home / "Documents") == tree(user.server_home / "Documents")


def test_create_change_delete_on_each_side_arrive_on_the_other(user: Setup) -> None:
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    for name in ["keep.txt", "change-here.txt", "change-there.txt", "del-here", "del-there"]:
        (docs / name).write_text(name)
    assert user.sync().returncode == 0

    (docs / "new-here.txt").write_text("new here")
    (sdocs / "new-there.txt").write_text("new there")
    (docs / "change-here.txt").write_text("changed here")
    (sdocs / "change-there.txt").write_text("changed there")
    (docs / "del-here").unlink()
    (sdocs / "del-there").unlink()
    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert outcome["first_run"] is False
    assert outcome["transferred"] == 6
    expected = {"keep.txt": "keep.txt", "change-here.txt": "changed here",
                "change-there.txt": "changed there", "new-here.txt": "new here",
                "new-there.txt": "new there"}
    for side in (docs, sdocs):
        assert {p.name: p.read_text() for p in side.iterdir()} == expected


def test_odd_names_empty_dirs_symlinks_and_mtimes_survive(user: Setup) -> None:
    docs = user.home / "Documents"
    docs.mkdir()
    for name in ODD_NAMES + CONTROL_NAMES:
        (docs / name).write_text(f"content of {name!r}")
    (docs / "empty dir").mkdir()
    (docs / "link").symlink_to("with space.txt")
    old = time.time() - 86400 * 30
    os.utime(docs / "with space.txt", (old, old))

    code, outcome = user.sync_json()

    assert code == 0, outcome
    sdocs = user.server_home / "Documents"
    assert tree(sdocs) == {k: v for k, v in tree(docs).items() if k not in CONTROL_NAMES}
    assert all((docs / name).exists() for name in CONTROL_NAMES)  # left alone here
    assert (sdocs / "link").is_symlink() and os.readlink(sdocs / "link") == "with space.txt"
    assert (sdocs / "empty dir").is_dir()
    assert abs((sdocs / "with space.txt").stat().st_mtime - old) < 2


def test_second_pass_without_changes_transfers_nothing(user: Setup) -> None:
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a").write_text("a")
    assert user.sync().returncode == 0

    code, outcome = user.sync_json()

    assert code == 0
    assert outcome["transferred"] == 0
    assert outcome["message"] == "in sync: nothing to do"


def test_a_pass_costs_the_server_one_ssh_session_and_no_new_login(tmp_path: Path) -> None:
    """The shared connection saves the handshake; the server judges its replica (marker, file
    count) in unison's own session, so a pass starts one command on the server, not two."""
    with SshServer(tmp_path / "sshd", extra_config="LogLevel VERBOSE\n") as sshd:
        user = Setup(tmp_path / "user", sshd)
        try:
            (user.home / "Documents").mkdir()
            (user.home / "Documents" / "a").write_text("a")
            assert user.sync().returncode == 0
            before = sshd.log_file.read_text()

            code, outcome = user.sync_json()

            assert code == 0, outcome
            new = sshd.log_file.read_text()[len(before):]
            assert new.count("Starting session: command") == 1, new
            assert "Accepted publickey" not in new
            assert user.status()["result"] == "in-sync"
        finally:
            user.close()


def _make_conflict(user: Setup) -> tuple[Path, Path]:
    (user.home / "Documents").mkdir()
    local = user.home / "Documents" / "report.txt"
    local.write_text("original")
    assert user.sync().returncode == 0
    server = user.server_home / "Documents" / "report.txt"
    server.write_text("server edit")
    os.utime(server, (time.time() - 60, time.time() - 60))
    local.write_text("laptop edit, newer")
    return local, server


def test_conflict_with_prefer_none_keeps_both_and_is_listed(user: Setup) -> None:
    user.configure(sync={"prefer": "none"})
    local, server = _make_conflict(user)

    code, outcome = user.sync_json()

    assert code == 1, outcome
    assert outcome["result"] == "conflicts"
    assert outcome["conflicts"] == ["Documents/report.txt"]
    assert local.read_text() == "laptop edit, newer"
    assert server.read_text() == "server edit"
    status = user.status()
    assert status["conflicts"] == ["Documents/report.txt"]
    assert status["exit_code"] == 1


def test_conflict_with_prefer_newer_takes_the_newer_and_keeps_a_copy(user: Setup) -> None:
    user.configure(sync={"prefer": "newer"})
    _, server = _make_conflict(user)

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert server.read_text() == "laptop edit, newer"
    copies = [p for p in server.parent.iterdir() if "conflict" in p.name]
    assert [p.read_text() for p in copies] == ["server edit"]
    # Named after whose version it keeps (the server's: no other computer known), its time and
    # its content.
    stamp = time.strftime("%Y-%m-%d %H-%M", time.localtime(copies[0].stat().st_mtime))
    digest = hashlib.sha256(b"server edit").hexdigest()[:8]
    assert copies[0].name == f"report (conflict from the server {stamp} {digest}).txt"
    # the copy reached this computer under that name in the same pass
    assert (user.home / "Documents" / copies[0].name).read_text() == "server edit"
    assert user.sync().returncode == 0


def test_an_item_unison_cannot_sync_is_named_and_is_no_conflict(user: Setup) -> None:
    """A pipe (unison syncs files, folders and links only) on either side: the rest syncs, the
    pass names what it left and why, and nothing calls it a conflict, pass after pass."""
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    sdocs.mkdir()
    os.mkfifo(docs / "here (pipe)")
    os.mkfifo(sdocs / "there")
    (sdocs / "report.txt").write_text("from the server")
    for _ in range(2):
        code, outcome = user.sync_json()
        assert code == 2 and outcome["result"] == "partial", outcome
        assert sorted(outcome["failed_paths"]) == ["Documents/here (pipe)", "Documents/there"]
        assert outcome["conflicts"] == []
        assert "2 item(s) not synced for an error on one side" in outcome["message"]
    assert (docs / "report.txt").read_text() == "from the server"
    listed = user.run("conflicts", "--json")
    assert json.loads(listed.stdout)["conflicts"] == [], listed.stdout


@contextlib.contextmanager
def _a_pass_copying(user: Setup, tmp_path: Path, prefer: str, size: int, name: str = "big.bin"
                    ) -> Iterator[tuple[Path, Path, Future[tuple[int, Any]]]]:
    """A file of `size` MB (`name`) made here after a first pass, and the pass (`sync --json`,
    in a thread) that copies it to the server over a link of 1 MB/s: the block starts once the
    copy has. Yields the file, the server's Documents and the pass."""
    user.configure(sync={"prefer": prefer})
    # before any pass: a connection opened before would carry the copy at full speed
    throttle(user, 1 * MB, tmp_path / "count.json")
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    assert user.sync().returncode == 0
    big = docs / name
    big.write_bytes(os.urandom(size * MB))
    with ThreadPoolExecutor(1) as pool:
        passing = pool.submit(user.sync_json)
        wait_for(lambda: copying(sdocs, name) or passing.done(), 30, "the copy's start")
        assert not passing.done(), passing.result()
        yield big, sdocs, passing


@pytest.mark.parametrize("prefer", ["newer", "none"])
@pytest.mark.parametrize("name", ["big.bin", "big\x1fcontrol.bin"])
def test_a_file_saved_again_while_it_is_copied_is_copied_again_in_the_same_pass(
        user: Setup, tmp_path: Path, prefer: str, name: str) -> None:
    """unison fails an item whose file changed while it copied it; the pass copies it again at
    once, and ends in sync with the last version on both sides (not partial, not later). A name
    a profile cannot hold (a control character) is copied again with its folder."""
    with _a_pass_copying(user, tmp_path, prefer, 3, name) as (big, sdocs, passing):
        with big.open("ab") as saved:
            saved.write(b"saved again while it was copied")
        code, outcome = passing.result(90)

    assert code == 0 and outcome["result"] == "in-sync", outcome
    assert (sdocs / name).read_bytes() == big.read_bytes()
    assert big.read_bytes().endswith(b"saved again while it was copied")
    log = (user.state_dir / "sync.log").read_text()
    assert "1 item(s) changed while unison copied them: syncing them again" in log, log[-3000:]
    assert not [p for p in (*big.parent.iterdir(), *sdocs.iterdir()) if p.name != name]


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_saved_again_at_each_copy_waits_for_the_next_pass_and_says_so(
        user: Setup, tmp_path: Path, prefer: str) -> None:
    """A file that changes during the copy and again during the second: the pass ends partial
    (exit 2), says why, and the next pass, with the file still, syncs it."""
    with _a_pass_copying(user, tmp_path, prefer, 2) as (big, sdocs, passing):
        saves = 0
        while not passing.done():  # saved every 5 ms: unison's second look sees it change too
            with big.open("ab") as saved:
                saved.write(f"saved again: {saves}\n".encode())
            saves += 1
            time.sleep(0.005)
        code, outcome = passing.result(90)

    assert code == 2 and outcome["result"] == "partial", outcome
    assert outcome["message"] == ("1 item(s) kept changing while they were copied (being "
                                  "saved?): Documents/big.bin; the next pass syncs them")
    assert outcome["failed_paths"] == ["Documents/big.bin"]
    assert not (sdocs / "big.bin").exists()
    assert user.sync().returncode == 0
    assert (sdocs / "big.bin").read_bytes() == big.read_bytes()


def test_a_copy_of_this_computers_version_is_named_after_it(user: Setup) -> None:
    user.configure(sync={"prefer": "newer"}, client={"name": "laptop-ana"})
    local, server = _make_conflict(user)
    server.write_text("server edit, newest")  # now the server's version wins
    os.utime(local, (time.time() - 60, time.time() - 60))

    assert user.sync().returncode == 0

    assert local.read_text() == "server edit, newest"
    (copy,) = [p for p in local.parent.iterdir() if "conflict" in p.name]
    assert copy.read_text() == "laptop edit, newer"
    assert copy.name.startswith("report (conflict from laptop-ana ") and copy.suffix == ".txt"


def test_server_unreachable_exits_75_within_connect_timeout(user: Setup) -> None:
    from tests.support.sshd import free_port

    user.configure(server={"port": free_port(), "connect_timeout": 2})
    (user.home / "Documents").mkdir()
    started = time.monotonic()

    result = user.sync()

    assert result.returncode == 75, result.stderr
    assert time.monotonic() - started < 2 + 0.5 + 0.5  # + interpreter start-up
    assert "unreachable" in result.stderr
    assert user.status()["result"] == "offline"


def test_refused_login_exits_3_and_says_why(user: Setup) -> None:
    user.configure(server={"ssh_options": user.unknown_key_options()})
    (user.home / "Documents").mkdir()

    result = user.sync()

    assert result.returncode == 3
    assert "refused" in result.stderr and "password" in result.stderr


def test_second_sync_while_one_runs_exits_75(user: Setup, tmp_path: Path) -> None:
    slow = tmp_path / "slow-unison"
    started = tmp_path / "started"
    slow.write_text(f"#!/bin/sh\ntouch {started}\nsleep 3\nexec unison \"$@\"\n")
    slow.chmod(0o755)
    user.configure(sync={"unison": str(slow)})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f").write_text("x")
    import subprocess

    from tests.support.homes import CLI

    first = subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert user.status()["running"] is True

    second = user.sync()

    assert second.returncode == 75
    assert "another sync" in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert (user.server_home / "Documents" / "f").read_text() == "x"


def test_excluded_user_exits_0_and_touches_nothing(user: Setup) -> None:
    assert user.sshd is not None
    user.configure(sync={"excluded_users": [user.sshd.user]})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f").write_text("x")
    before = tree(user.base)

    result = user.sync()

    assert result.returncode == 0
    assert "excluded" in result.stdout
    assert tree(user.base) == before


def test_xdg_user_dirs_are_the_default_paths(user: Setup) -> None:
    user.configure(sync={"paths": []})
    (user.base / "config").mkdir()
    (user.base / "config" / "user-dirs.dirs").write_text(
        'XDG_DOCUMENTS_DIR="$HOME/Dokumente"\nXDG_MUSIC_DIR="$HOME/Musik"\n'
        'XDG_DESKTOP_DIR="$HOME"\n')
    for name in ["Dokumente", "Pictures", "Elsewhere", "Musik-nope"]:
        (user.home / name).mkdir()
        (user.home / name / "f").write_text(name)

    assert user.sync().returncode == 0

    # Dokumente (user file) and Pictures (built-in default) exist; Musik does not; the home
    # itself (a disabled directory) and other directories are not synced (the replica marker
    # is each side's own).
    synced = sorted(p.name for p in user.server_home.iterdir()
                    if p.name not in (".roaming-homes-root", ".roaming-homes"))
    assert synced == ["Dokumente", "Pictures"]


def test_a_new_laptop_receives_the_home_it_does_not_have_yet(user: Setup) -> None:
    """Default paths: the XDG user directories that exist on either side (and a few dotfiles),
    so a user's Documents on the server reaches a laptop that has no ~/Documents yet."""
    user.configure(sync={"paths": []})
    (user.server_home / "Documents").mkdir()
    (user.server_home / "Documents" / "thesis.txt").write_text("chapter 1")
    (user.server_home / ".gitconfig").write_text("[user]\nname = Ana\n")
    (user.server_home / ".ssh").mkdir()
    (user.server_home / ".ssh" / "id_ed25519").write_text("private")

    code, outcome = user.sync_json()

    assert code == 0, outcome
    assert (user.home / "Documents" / "thesis.txt").read_text() == "chapter 1"
    assert (user.home / ".gitconfig").read_text().startswith("[user]")
    assert not (user.home / ".ssh").exists()  # never by default
    assert outcome["notes"] == []  # directories that exist nowhere are no typos


def test_own_state_is_never_synced_even_when_paths_cover_it(user: Setup) -> None:
    user.configure(sync={"paths": [".local"]})
    (user.home / ".local" / "share").mkdir(parents=True)
    (user.home / ".local" / "share" / "app.db").write_text("data")
    user.env["XDG_STATE_HOME"] = str(user.home / ".local" / "state")

    assert user.sync().returncode == 0

    assert (user.server_home / ".local" / "share" / "app.db").read_text() == "data"
    assert (user.home / ".local" / "state" / "roaming-homes" / "state.json").exists()
    assert not (user.server_home / ".local" / "state" / "roaming-homes").exists()


def test_local_server_root_mode_syncs_and_missing_root_is_offline(local_user: Setup) -> None:
    (local_user.home / "Documents").mkdir()
    (local_user.home / "Documents" / "f").write_text("x")
    assert local_user.sync().returncode == 0
    assert (local_user.server_home / "Documents" / "f").read_text() == "x"

    local_user.configure(server={"root": str(local_user.base / "not-mounted")})
    result = local_user.sync()
    assert result.returncode == 75
    assert "not available" in result.stderr


def test_nothing_to_sync_is_a_warning_in_sync_status_and_check(user: Setup) -> None:
    user.configure(sync={"paths": ["Documents", "Music"]})

    code, outcome = user.sync_json()
    checks = {c["name"]: c for c in json.loads(user.run("check", "--json").stdout)["checks"]}

    assert code == 0
    assert any(n.startswith("nothing to sync: none of the synced paths") for n in outcome["notes"])
    assert "note:             nothing to sync" in user.run("status").stdout
    assert checks["synced paths"]["status"] == "warn"
    assert checks["synced paths"]["detail"].startswith("nothing to sync")
    (user.server_home / "Music").mkdir()
    checks = {c["name"]: c for c in json.loads(user.run("check", "--json").stdout)["checks"]}
    assert checks["synced paths"]["status"] == "warn"  # Documents: a typo?
    assert "Documents" in checks["synced paths"]["detail"]
