"""Real-time mode's small files, new or edited, sent on their own and settled by unison after:
the real daemon, CLI, sshd, unison and our monitors on both ends (`watched`, `tag`).

Each case acts right after the file sent on its own is on the server, well within the
`sending.SETTLE_AFTER` seconds before the session settles it by itself."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from roaming_homes.actions import sending
from roaming_homes.unison import push
from tests.support.daemon import DaemonProcess, StartDaemon, appears, watching
from tests.support.homes import Setup, tree
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

PREFERS = ["newer", "server", "none"]
SENT = "--- sent on its own: "


def sent(user: Setup) -> list[str]:
    """The names the session's log says it sent on their own, as the log escapes them (it
    says so once the server answered: a moment after the file is there)."""
    log = user.state_dir / "sync.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line.partition(SENT)[2] for line in text.splitlines() if SENT in line]


def backed_up(user: Setup) -> list[bytes]:
    """The contents of every version kept in the server's backups."""
    root = user.server_home / ".roaming-homes" / "backup"
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()] if root.exists() else []


def documents(root: Path) -> dict[str, str]:
    return tree(root / "Documents")


def settled(user: Setup) -> None:
    """Past the session's own settling, and its pass ended."""
    time.sleep(sending.SETTLE_AFTER + 1)
    wait_for(lambda: user.status()["state"] != "syncing", 60, "the settling pass to end")


def sent_first(user: Setup, tag: str, start_daemon: StartDaemon, name: str, text: str,
               **sync: object) -> tuple[Path, Path, DaemonProcess]:
    """A watching daemon, and a new file `name` it sent: on the server now. Returns both
    Documents folders (here, there) and the daemon."""
    daemon = watching(user, tag, **sync)(start_daemon)
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    (docs / name).write_text(text)
    wait_for(appears(sdocs / name, text), 20, f"{name} on the server")
    return docs, sdocs, daemon


def test_a_new_file_is_on_the_server_at_once_as_it_is_here_and_unison_then_knows_it(
        watched: Setup, tag: str, start_daemon: StartDaemon) -> None:
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "new.txt", "hello")

    here, there = os.stat(docs / "new.txt"), os.stat(sdocs / "new.txt")
    assert (there.st_mtime_ns, there.st_mode) == (here.st_mtime_ns, here.st_mode)
    wait_for(lambda: sent(watched) == ["Documents/new.txt"], 10, "the log line")
    settled(watched)
    # the settling pass is when `status` and the history hear of it
    assert watched.status()["message"] == "in sync: 1 item(s) transferred"
    # unison recorded it: a change on the server now is an ordinary update, not a conflict
    (sdocs / "new.txt").write_text("edited on the server")
    wait_for(appears(docs / "new.txt", "edited on the server"), 30, "the server's edit here")
    assert documents(watched.home) == documents(watched.server_home)
    assert list(documents(watched.home)) == ["new.txt"]


@pytest.mark.parametrize("prefer", PREFERS)
@pytest.mark.parametrize("where", ["here", "on the server"])
def test_a_file_sent_then_changed_again_on_one_side_ends_as_changed(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str, where: str) -> None:
    """Changed again here: this side's version wins and the one sent goes to the server's
    backups. Changed on the server (another computer): the server's wins."""
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "draft.txt", "first",
                                prefer=prefer)
    changed, other = (docs, sdocs) if where == "here" else (sdocs, docs)

    (changed / "draft.txt").write_text("second, longer")

    wait_for(appears(other / "draft.txt", "second, longer"), 30, "the second version there")
    settled(watched)
    assert documents(watched.home) == documents(watched.server_home) == {
        "draft.txt": b"second, longer".hex()}
    # changed again here, it is sent again on its own, over the version sent (no later than
    # the settling pass: the server's version is then the one it made)
    assert (sent(watched) == ["Documents/draft.txt"] if where == "on the server"
            else set(sent(watched)) == {"Documents/draft.txt"})
    assert (b"first" in backed_up(watched)) is (where == "here")


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_settled_then_edited_goes_on_its_own_over_the_version_made_there(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "memo.txt", "first", prefer=prefer)
    settled(watched)

    (docs / "memo.txt").write_text("second, once settled")

    wait_for(appears(sdocs / "memo.txt", "second, once settled"), 20, "the edit there")
    wait_for(lambda: sent(watched) == ["Documents/memo.txt"] * 2, 10, "both sent on their own")
    assert backed_up(watched) == [b"first"]
    settled(watched)
    assert documents(watched.home) == documents(watched.server_home) == {
        "memo.txt": b"second, once settled".hex()}


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_saved_again_and_again_is_on_the_server_each_time_and_ends_in_sync(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    """An autosave: each save goes on its own over the version sent before (or, once settled,
    over the version synced), which goes to the server's backups."""
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "autosave.txt", "save 0",
                                prefer=prefer)
    for number in range(1, 4):
        text = f"save {number}" * number
        (docs / "autosave.txt").write_text(text)
        wait_for(appears(sdocs / "autosave.txt", text), 20, f"save {number} on the server")

    # each save went on its own, unless the session settled the file while a save was not
    # reported yet (a loaded machine): the settling pass then carried that one
    assert set(sent(watched)) == {"Documents/autosave.txt"} and len(sent(watched)) >= 3
    settled(watched)
    assert documents(watched.home) == documents(watched.server_home) == {
        "autosave.txt": b"save 3save 3save 3".hex()}
    assert {b"save 0", b"save 1", b"save 2save 2"} <= set(backed_up(watched))


@pytest.mark.parametrize("prefer", PREFERS)
def test_a_file_sent_then_deleted_here_is_deleted_there_and_stays_deleted(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "download.part", "partial",
                                prefer=prefer)

    (docs / "download.part").rename(docs / "download.bin")

    wait_for(lambda: not (sdocs / "download.part").exists(), 30, "the old name gone there")
    wait_for(appears(sdocs / "download.bin", "partial"), 30, "the new name there")
    settled(watched)
    time.sleep(2)  # a resurrection would come with the server's echo
    assert documents(watched.home) == documents(watched.server_home) == {
        "download.bin": b"partial".hex()}
    assert b"partial" in backed_up(watched)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_sent_then_changed_on_both_sides_loses_neither_version(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    docs, sdocs, _ = sent_first(watched, tag, start_daemon, "both.txt", "original",
                                prefer=prefer)

    (sdocs / "both.txt").write_text("server's edit")
    (docs / "both.txt").write_text("laptop's edit")

    def kept() -> bool:
        contents = {*documents(watched.home).values(), *documents(watched.server_home).values()}
        return {b"server's edit".hex(), b"laptop's edit".hex()} <= contents
    wait_for(kept, 60, "both versions kept")
    settled(watched)
    assert kept()


def test_names_no_shell_may_see_arrive_as_they_are(
        watched: Setup, tag: str, start_daemon: StartDaemon) -> None:
    watching(watched, tag)(start_daemon)
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    names = ["back\\slash %s %n \\101", "$(touch pwned)", "'quoted' \"twice\" `ticks`",
             "-dash", " spaced ", "ünïcödé ✓", "*", os.fsdecode(b"not utf-8 \xff")]
    for number, name in enumerate(names):
        (docs / name).write_bytes(f"file {number}".encode())

    for number, name in enumerate(names):
        wait_for(appears(sdocs / name, f"file {number}"), 30, f"{name!r} on the server")
    # all but " spaced ": a profile cannot name a path that ends in white space, so unison's
    # pass over its folder carries it
    wait_for(lambda: len(sent(watched)) == len(names) - 1, 10, "a log line for each")
    assert "Documents/ spaced " not in sent(watched)
    assert not list(watched.base.rglob("pwned")) and not Path("pwned").exists()
    settled(watched)
    assert documents(watched.home) == documents(watched.server_home)


def synced_before(user: Setup, files: dict[str, str]) -> tuple[Path, Path]:
    """`files` in Documents on both sides, alike to the nanosecond (the session's first pass
    writes nothing then, so no report of its own writes comes back to hold a first edit up).
    Returns both Documents folders (here, there)."""
    docs, sdocs = user.home / "Documents", user.server_home / "Documents"
    for name, text in files.items():
        for folder in (docs, sdocs):
            (folder / name).write_text(text)
            os.utime(folder / name, ns=(1_700_000_000_123_456_789,) * 2)
    return docs, sdocs


def test_what_is_not_a_small_file_with_new_contents_goes_through_unison(
        watched: Setup, tag: str, start_daemon: StartDaemon) -> None:
    docs, sdocs = synced_before(watched, {"known.txt": "synced before"})
    watching(watched, tag)(start_daemon)

    os.chmod(docs / "known.txt", 0o600)  # its mode alone: no contents to send
    (docs / "big.bin").write_bytes(b"b" * (push.FILE_LIMIT + 1))
    os.symlink("known.txt", docs / "link")

    wait_for(lambda: (sdocs / "known.txt").stat().st_mode & 0o777 == 0o600, 30, "the mode")
    wait_for(lambda: (sdocs / "big.bin").exists()
             and (sdocs / "big.bin").stat().st_size == push.FILE_LIMIT + 1, 30, "the big file")
    wait_for(lambda: (sdocs / "link").is_symlink(), 30, "the link")
    assert sent(watched) == []
    assert backed_up(watched) == []


@pytest.mark.parametrize("prefer", PREFERS)
def test_an_edit_is_on_the_server_at_once_its_old_version_kept_and_unison_then_knows_it(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str,
        tmp_path: Path) -> None:
    docs, sdocs = synced_before(watched, {"report.txt": "as synced", "other.txt": "other"})
    watching(watched, tag, prefer=prefer)(start_daemon)

    (docs / "report.txt").write_text("edited here")

    wait_for(appears(sdocs / "report.txt", "edited here"), 20, "the edit on the server")
    here, there = os.stat(docs / "report.txt"), os.stat(sdocs / "report.txt")
    assert (there.st_mtime_ns, there.st_mode) == (here.st_mtime_ns, here.st_mode)
    wait_for(lambda: sent(watched) == ["Documents/report.txt"], 10, "the log line")
    assert backed_up(watched) == [b"as synced"]
    settled(watched)
    assert watched.status()["message"] == "in sync: 1 item(s) transferred"
    # the version replaced is found where `restore` looks, as one unison replaced
    into = tmp_path / "restored"
    restored = watched.run("restore", str(docs / "report.txt"), "--to", str(into))
    assert restored.returncode == 0, restored.stderr
    assert [p.read_text() for p in into.rglob("report.txt")] == ["as synced"]
    # unison recorded it: a change on the server now is an ordinary update, not a conflict
    (sdocs / "report.txt").write_text("then edited on the server")
    wait_for(appears(docs / "report.txt", "then edited on the server"), 30, "that edit here")
    assert documents(watched.home) == documents(watched.server_home) == {
        "report.txt": b"then edited on the server".hex(), "other.txt": b"other".hex()}


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_an_edit_meeting_another_computers_edit_loses_neither(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    """The server's file is not the version synced any more: the edit is not sent over it
    (`push.synced_as`, the script's own check), and unison's pass finds the conflict."""
    docs, sdocs = synced_before(watched, {"shared.txt": "as synced"})
    watching(watched, tag, prefer=prefer)(start_daemon)

    (sdocs / "shared.txt").write_text("another computer's edit")
    (docs / "shared.txt").write_text("this computer's edit")

    def kept() -> bool:
        contents = {*documents(watched.home).values(), *documents(watched.server_home).values()}
        return {b"another computer's edit".hex(), b"this computer's edit".hex()} <= contents
    wait_for(kept, 60, "both versions kept")
    settled(watched)
    assert kept()
    assert sent(watched) == []


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_edits_of_most_files_at_once_are_held_back_by_the_loss_guard(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    """Rewriting every file (ransomware, a botched script) in real time: the edits count in
    the loss guard's window before they are sent, and no more of them reach the server than a
    pass would overwrite (`sync.max_change`, 50 %); the pass that carries the rest is refused,
    and every version the server had is still there or in its backups."""
    names = [f"file-{number:02}.txt" for number in range(20)]
    docs, _ = synced_before(watched, {name: f"{name} as synced" for name in names})
    watching(watched, tag, prefer=prefer)(start_daemon)

    for name in names:
        (docs / name).write_text(f"{name} encrypted!")

    wait_for(lambda: watched.status()["result"] == "refused", 30, "the refusal")
    there = documents(watched.server_home)
    rewritten = [name for name in names if there[name] == f"{name} encrypted!".encode().hex()]
    assert len(rewritten) <= len(names) // 2
    kept = set(backed_up(watched))
    assert all(there[name] == f"{name} as synced".encode().hex()
               or f"{name} as synced".encode() in kept for name in names)
    assert all((docs / name).read_text() == f"{name} encrypted!" for name in names)


def test_nothing_is_sent_into_a_server_home_that_lost_its_marker(
        watched: Setup, tag: str, start_daemon: StartDaemon) -> None:
    daemon = watching(watched, tag)(start_daemon)
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    (watched.server_home / ".roaming-homes-root").unlink()

    (docs / "new.txt").write_text("must not land in an unmounted home")

    daemon.wait_for_log("marker", timeout=30)
    time.sleep(1)
    assert not (sdocs / "new.txt").exists()
    assert sent(watched) == []


@pytest.mark.parametrize("prefer", PREFERS)
@pytest.mark.parametrize("sent_as", ["new", "edit"])
def test_a_session_killed_before_it_settled_leaves_a_pass_that_loses_nothing(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str, sent_as: str) -> None:
    """The one case the ledger cannot cover: it was in the killed daemon's memory."""
    if sent_as == "new":
        docs, sdocs, daemon = sent_first(watched, tag, start_daemon, "notes.txt", "sent",
                                         prefer=prefer)
    else:
        docs, sdocs = synced_before(watched, {"notes.txt": "as synced"})
        daemon = watching(watched, tag, prefer=prefer)(start_daemon)
        (docs / "notes.txt").write_text("sent")
        wait_for(lambda: sent(watched) == ["Documents/notes.txt"], 20, "the edit sent")
        assert (sdocs / "notes.txt").read_text() == "sent"
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    os.utime(docs / "notes.txt")
    (docs / "notes.txt").write_text("edited after the kill")

    result = watched.sync()

    assert result.returncode in (0, 1, 2), result.stderr
    versions = [*documents(watched.home).values(), *documents(watched.server_home).values()]
    assert b"edited after the kill".hex() in versions
    if prefer == "newer":
        assert (sdocs / "notes.txt").read_text() == "edited after the kill"


def test_new_files_and_edits_in_turn_all_arrive_and_end_in_sync(
        watched: Setup, tag: str, start_daemon: StartDaemon) -> None:
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    for number in range(3):
        (docs / f"edited-{number}.txt").write_text("before")
    watching(watched, tag)(start_daemon)
    for turn in range(12):
        # each edit a size of its own: unison takes a same-size file written within the same
        # two seconds as the version it synced for unchanged (docs/unison.md, fastcheck)
        name, text = ((f"new-{turn}.txt", "new") if turn % 2 else
                      (f"edited-{turn % 3}.txt", "edit" * (turn + 2)))
        (docs / name).write_text(text)
        wait_for(appears(sdocs / name, text), 30, f"{name} with {text!r} on the server")
        time.sleep(0.3 * (turn % 4))
    settled(watched)
    assert documents(watched.home) == documents(watched.server_home)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_files_sent_then_deleted_at_once_are_judged_by_the_loss_guard_and_held_back_once(
        watched: Setup, tag: str, start_daemon: StartDaemon, prefer: str) -> None:
    """Settling is a guarded pass: deleting twenty files just sent is a mass deletion, refused;
    the server keeps them, nothing brings them back here, and the session does not try again
    on its timer."""
    watching(watched, tag, prefer=prefer)(start_daemon)
    docs, sdocs = watched.home / "Documents", watched.server_home / "Documents"
    names = [f"batch-{number:02}.txt" for number in range(20)]
    for name in names:
        (docs / name).write_text(name)
    wait_for(lambda: len(sent(watched)) == len(names), 20, "all of them sent on their own")

    for name in names:
        (docs / name).unlink()

    wait_for(lambda: watched.status()["result"] == "refused", 30, "the refusal")
    log = watched.state_dir / "sync.log"
    passes = log.read_text().count("--- pass started")
    time.sleep(sending.SETTLE_AFTER * 3)
    assert log.read_text().count("--- pass started") == passes
    assert all((sdocs / name).exists() for name in names)
    assert not any((docs / name).exists() for name in names)
