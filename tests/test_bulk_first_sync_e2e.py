"""A first sync into a side that holds no file goes by rsync, then unison builds its archives on
the copy (issue 22, `unison.bulk`), end to end over the real sshd with the real CLI, the real
daemon (real-time mode) and the real unison and rsync, in both `prefer` modes.

What must hold: the copy is the source's tree by unison's rules (ignored entries stay behind),
every later change syncs both ways and conflicts are found as ever (unison's archives built
without reading the files must not hide anything), a file changed after the copy makes unison
read every file again, a copy cut off loses nothing and the next pass finishes it, a server
home that is not there gets nothing, and without rsync on the server unison copies as before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roaming_homes.unison.bulk import MIN_BYTES, MIN_FILES
from tests.conftest import without_monitor
from tests.support.daemon import DaemonProcess, appears, stop_as_logout
from tests.support.homes import CLI, Setup, tree
from tests.support.programs import faked
from tests.support.sshd import SshServer
from tests.support.transfer import MB, THROTTLE, random_files, size_of, throttle
from tests.support.waiting import wait_for

COPYING = "with rsync; unison then builds its archives on the copy"
AGAIN = "unison reads every file again"
COPIED = MIN_BYTES // MB + 2  # files of 1 MB: a tree just big enough for the copy
HOSTILE = ["with space", "it's", 'say "x"', "$(touch CANARY)", "-rf", "tab\there", "star*",
           "`id`"]


def log_of(user: Setup) -> str:
    log = user.state_dir / "sync.log"
    return log.read_text(errors="replace") if log.exists() else ""


def fill(root: Path) -> None:
    """A home's worth of odd things: nested folders, an empty one, a link, hostile and
    non-UTF-8 names, an ignored folder and an ignored name; and enough files for the copy to
    pay (`MIN_FILES`)."""
    docs = root / "Documents"
    (docs / "deep" / "deeper").mkdir(parents=True)
    (docs / "many").mkdir()
    for number in range(MIN_FILES):
        (docs / "many" / f"{number:04}").write_text(str(number))
    (docs / "empty").mkdir()
    (docs / "deep" / "deeper" / "note.txt").write_text("deep note")
    (docs / "big.bin").write_bytes(os.urandom(3 * MB))
    for name in HOSTILE:
        (docs / name).write_text(f"content of {name}")
    (docs / os.fsdecode(b"latin\xe9.txt")).write_bytes(b"latin")
    (docs / "link").symlink_to("deep/deeper/note.txt")
    (docs / "cache").mkdir()
    (docs / "cache" / "junk").write_text("ignored path")
    (docs / "scratch.tmp").write_text("ignored name")
    (docs / "line\nbreak").write_text("never synced")


def synced(root: Path) -> dict[str, str]:
    """`tree` of the Documents folder, less what unison does not sync."""
    return {path: content for path, content in tree(root / "Documents").items()
            if not path.startswith("cache") and path != "scratch.tmp" and "\n" not in path}


def configure(user: Setup, prefer: str, **sync: object) -> None:
    user.configure(sync={"prefer": prefer, "ignore_paths": ["Documents/cache"],
                         "ignore_names": ["*.tmp"], **sync})


def sync(user: Setup, *args: str) -> dict[str, object]:
    code, outcome = user.sync_json(*args)
    assert code == 0, outcome
    return outcome


def assert_later_changes_sync_both_ways(user: Setup, prefer: str) -> None:
    """After a copied first sync: edits on either side go across, and an edit on both sides is
    a conflict, as after any first sync."""
    docs, server = user.home / "Documents", user.server_home / "Documents"
    assert sync(user)["message"] == "in sync: nothing to do"
    note = docs / "deep" / "deeper" / "note.txt"
    copied = note.stat().st_mtime
    note.write_text("DEEP NOTE")  # same size, new time
    # unison's quick check takes a same-size rewrite within a second of the version it saw as
    # unchanged (docs/unison.md, fastcheck): with a quick first sync that is this one. An
    # edit seconds later, as a person's would be, keeps its time.
    os.utime(note, (copied + 5, copied + 5))
    time.sleep(0.05)
    (server / "with space").write_text("the server's edit")
    assert sync(user)["transferred"] == 2
    assert (server / "deep" / "deeper" / "note.txt").read_text() == "DEEP NOTE"
    assert (docs / "with space").read_text() == "the server's edit"
    (docs / "it's").write_text("edited here")
    time.sleep(0.05)
    (server / "it's").write_text("edited there, later")
    code, outcome = user.sync_json()
    if prefer == "none":
        assert (code, outcome["conflicts"]) == (1, ["Documents/it's"]), outcome
    else:
        assert code == 0 and len(outcome["settled"]) == 1, outcome
        assert (docs / "it's").read_text() == "edited there, later"
        assert [p.name for p in docs.glob("it's (conflict*")], "the losing edit was not kept"
        assert synced(user.home) == synced(user.server_home)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_new_laptop_receives_the_home_by_rsync(user: Setup, prefer: str) -> None:
    configure(user, prefer)
    fill(user.server_home)

    outcome = sync(user)

    assert COPYING in log_of(user) and AGAIN not in log_of(user)
    assert outcome["first_run"] is True and outcome["transferred"] == MIN_FILES + 12, outcome
    assert synced(user.home) == synced(user.server_home)
    assert not (user.home / "Documents" / "cache").exists()
    assert not (user.home / "Documents" / "scratch.tmp").exists()
    assert not list(user.base.rglob("CANARY"))
    assert not (user.state_dir / "bulk").exists() and not (user.state_dir / "bulk-files").exists()
    assert_later_changes_sync_both_ways(user, prefer)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_an_empty_server_home_receives_the_laptops_files_by_rsync(user: Setup,
                                                                   prefer: str) -> None:
    configure(user, prefer)
    fill(user.home)

    sync(user, "--first-run")

    assert COPYING in log_of(user) and AGAIN not in log_of(user)
    assert synced(user.server_home) == synced(user.home)
    assert not (user.server_home / "Documents" / "cache").exists()
    # the copy's temporary directory went with unison's run (`bulk.server_cleanup`)
    assert not (user.server_home / ".roaming-homes" / "bulk-tmp").exists()
    assert_later_changes_sync_both_ways(user, prefer)


@pytest.mark.parametrize("side", ["laptop", "server"])
def test_a_home_too_small_for_the_copy_to_pay_is_synced_by_unison_alone(user: Setup,
                                                                        side: str) -> None:
    configure(user, "newer")
    full = user.home if side == "laptop" else user.server_home
    random_files(full / "Documents", 5, MB)

    outcome = sync(user)

    assert COPYING not in log_of(user) and outcome["transferred"] == 1, outcome
    assert tree(user.home / "Documents") == tree(user.server_home / "Documents")
    assert not (user.server_home / ".roaming-homes" / "bulk-tmp").exists()
    assert sync(user)["message"] == "in sync: nothing to do"


def test_with_files_on_both_sides_unison_takes_the_union_as_ever(user: Setup) -> None:
    configure(user, "none")
    for side, text in ((user.home, "mine"), (user.server_home, "theirs")):
        (side / "Documents").mkdir()
        (side / "Documents" / "same.txt").write_text(text)
        (side / "Documents" / f"only-{text}.txt").write_text(text)

    code, outcome = user.sync_json()

    assert (code, outcome["conflicts"]) == (1, ["Documents/same.txt"]), outcome
    assert COPYING not in log_of(user)
    assert (user.home / "Documents" / "only-theirs.txt").read_text() == "theirs"
    assert (user.server_home / "Documents" / "only-mine.txt").read_text() == "mine"


def unison_that_edits(tmp_path: Path, path: Path) -> str:
    """A unison that, when run to build archives on a copy, first edits `path` (the same size,
    a new time): a change after the copy was checked is the worst moment for one."""
    program = tmp_path / "unison-editing"
    program.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"if '-fastercheckUNSAFE' in sys.argv:\n"
        f"    path = {str(path)!r}\n"
        "    size = os.path.getsize(path)\n"
        "    open(path, 'w').write('E' * size)\n"
        "    os.utime(path, (time.time() + 5, time.time() + 5))\n"
        "os.execvp('unison', ['unison', *sys.argv[1:]])\n")
    program.chmod(0o755)
    return str(program)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_changed_after_the_copy_makes_unison_read_every_file(user: Setup, tmp_path: Path,
                                                                    prefer: str) -> None:
    fill(user.server_home)
    edited = user.home / "Documents" / "deep" / "deeper" / "note.txt"
    configure(user, prefer, unison=unison_that_edits(tmp_path, edited))

    server_copy = user.server_home / "Documents" / "deep" / "deeper" / "note.txt"
    server_time = server_copy.stat().st_mtime_ns

    code, outcome = user.sync_json()

    # unison's run on the copy saw the edit as a new time on a file it took for the same, and
    # was stopped before it copied that time across: the server's file keeps its own, so
    # unison's usual first sync finds a conflict, and `newer` picks the edit
    assert COPYING in log_of(user) and AGAIN in log_of(user)
    assert "unison found the copy different from its source" in log_of(user)
    assert "Copying properties" not in log_of(user)
    if prefer == "none":
        assert (code, outcome["conflicts"]) == (1, ["Documents/deep/deeper/note.txt"]), outcome
        assert edited.read_text() == "E" * len("deep note")
        assert server_copy.read_text() == "deep note"
        assert server_copy.stat().st_mtime_ns == server_time
    else:  # the newer edit wins; the server's version is kept beside it
        assert code == 0, outcome
        assert server_copy.read_text() == "E" * len("deep note")
        assert list(server_copy.parent.glob("note (conflict*"))


MADE = "made after this side was listed"


def rsync_that_edits(tmp_path: Path, path: Path, search: str, new: bool = False) -> str:
    """A PATH whose rsync, run here for the copy, first edits `path` (the same size, a new
    time), or makes it (`new`, `MADE`): a file written after the copy's source was listed
    (this side's while the pass connected), before rsync reads it."""
    write = ("open(path, 'x').write(MADE)\n" if new else
             "size = os.path.getsize(path)\n"
             "open(path, 'w').write('E' * size)\n"
             "os.utime(path, (time.time() + 5, time.time() + 5))\n")
    program = (f"#!{sys.executable}\nimport os, shutil, sys, time\n"
               f"path, MADE = {str(path)!r}, {MADE!r}\n"
               f"{write}"
               f"os.environ['PATH'] = os.environ['PATH'].split(':', 1)[1]\n"
               "os.execvp('rsync', ['rsync', *sys.argv[1:]])\n")
    return faked(tmp_path / "bin", "rsync", program, search)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_written_during_the_copy_makes_unison_read_every_file(user: Setup,
                                                                     tmp_path: Path,
                                                                     prefer: str) -> None:
    configure(user, prefer)
    fill(user.home)
    edited = user.home / "Documents" / "deep" / "deeper" / "note.txt"

    result = user.sync("--json", "--first-run",
                       env={"PATH": rsync_that_edits(tmp_path, edited, user.env["PATH"])})

    # rsync copied the edit, so unison's run on the copy found both sides the same: only the
    # check of both sides against what was listed before the copy sees that the file is not
    # as listed, and unison's first sync then reads every file
    assert result.returncode == 0, result.stdout + result.stderr
    assert COPYING in log_of(user)
    assert "a file changed since it was copied" in log_of(user)
    assert "unison found the copy different" not in log_of(user)
    server_copy = user.server_home / "Documents" / "deep" / "deeper" / "note.txt"
    assert server_copy.read_text() == edited.read_text() == "E" * len("deep note")
    assert synced(user.server_home) == synced(user.home)
    assert_later_changes_sync_both_ways(user, prefer)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_file_made_here_after_this_side_was_listed_is_synced(user: Setup, tmp_path: Path,
                                                               prefer: str) -> None:
    """This side is listed while the pass connects: a file made after that is not in the copy,
    and unison's run on the copy finds it (the copy's check, `_Judge.copy_check`)."""
    configure(user, prefer)
    fill(user.home)
    made = user.home / "Documents" / "deep" / "made.txt"

    result = user.sync("--json", "--first-run",
                       env={"PATH": rsync_that_edits(tmp_path, made, user.env["PATH"], True)})

    assert result.returncode == 0, result.stdout + result.stderr
    assert COPYING in log_of(user)
    # unison's run on the copy finds the file only here and is stopped before it propagates
    assert "unison found the copy different" in log_of(user), log_of(user)[-6000:]
    assert AGAIN in log_of(user)
    assert (user.server_home / "Documents" / "deep" / "made.txt").read_text() == MADE
    assert synced(user.server_home) == synced(user.home)
    assert_later_changes_sync_both_ways(user, prefer)


def test_a_copy_cut_off_loses_nothing_and_the_next_pass_finishes_it(user: Setup,
                                                                    tmp_path: Path) -> None:
    total = random_files(user.server_home / "Documents", COPIED, MB)
    before = tree(user.server_home / "Documents")
    throttle(user, 16 * MB, tmp_path / "first.json")  # about 4 s for the whole tree
    first = subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: size_of(user.home) >= total // 4 or first.poll() is not None, 60,
                 "a quarter of the tree")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a power loss would
        first.wait()
    copied = tree(user.home / "Documents")
    assert 0 < len(copied) < COPIED, "the copy was to be cut, not finished"
    assert all(before[path] == content for path, content in copied.items())  # no half file
    assert tree(user.server_home / "Documents") == before
    user.close_connection()
    throttle(user, 400 * MB, tmp_path / "second.json")

    sync(user)

    # the next pass took the copy up (the side holds only what it copied), and finished it
    assert log_of(user).count(COPYING) == 2 and AGAIN not in log_of(user)
    assert tree(user.home / "Documents") == before == tree(user.server_home / "Documents")
    assert sync(user)["message"] == "in sync: nothing to do"


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_copy_cut_off_is_not_taken_up_over_a_file_written_since(user: Setup, tmp_path: Path,
                                                                   prefer: str) -> None:
    """After a cut copy, the side it went into holds a file the copy did not put there as it
    is (edited since): no copy goes on, unison's first sync takes the union, and the edit is
    judged as on any first sync (a conflict; `newer`: the edit wins, the other kept)."""
    configure(user, prefer)
    random_files(user.server_home / "Documents", COPIED, MB)
    throttle(user, 16 * MB, tmp_path / "first.json")
    first = subprocess.Popen([*CLI, "sync"], env=user.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(tree(user.home / "Documents")) >= 3 or first.poll() is not None,
                 60, "three files copied")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    edited = sorted((user.home / "Documents").iterdir())[0]
    server_copy = user.server_home / "Documents" / edited.name
    theirs = server_copy.read_bytes()
    edited.write_bytes(b"edited after the cut")
    user.close_connection()
    throttle(user, 400 * MB, tmp_path / "second.json")

    code, outcome = user.sync_json()

    assert log_of(user).count(COPYING) == 1, "the copy was taken up over an edited file"
    if prefer == "none":
        assert (code, outcome["conflicts"]) == (1, [f"Documents/{edited.name}"]), outcome
        assert (edited.read_bytes(), server_copy.read_bytes()) == (b"edited after the cut",
                                                                   theirs)
    else:
        assert code == 0, outcome
        assert server_copy.read_bytes() == b"edited after the cut"
        kept = list(server_copy.parent.glob(f"{edited.stem} (conflict*"))
        assert [path.read_bytes() for path in kept] == [theirs]
    assert not (user.state_dir / "bulk-copy.json").exists()


def test_a_server_home_that_is_not_there_gets_nothing(user: Setup) -> None:
    fill(user.home)
    user.server_home.rmdir()

    code, outcome = user.sync_json("--first-run")

    assert code == 4 and outcome["result"] == "refused", outcome
    assert not user.server_home.exists()


def test_without_rsync_on_the_server_unison_copies(tmp_path: Path) -> None:
    path = without_monitor(tmp_path / "bin")
    no_rsync = tmp_path / "no-rsync"
    no_rsync.mkdir()
    for directory in path.split(":"):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            if program.name != "rsync" and not (no_rsync / program.name).exists():
                (no_rsync / program.name).symlink_to(program)
    with SshServer(tmp_path / "sshd", env={"PATH": str(no_rsync)}) as sshd:
        user = Setup(tmp_path / "user", sshd)
        try:
            configure(user, "newer")
            fill(user.server_home)

            sync(user)

            assert "rsync's copy ended failed; unison copies what is missing" in log_of(user)
            assert synced(user.home) == synced(user.server_home)
        finally:
            user.close()


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_starts_a_new_laptop_with_the_copy(watched: Setup,
                                                                prefer: str) -> None:
    user = watched
    fill(user.server_home)
    configure(user, prefer, watch=True, interval=3600)
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: "--- pass ended" in log_of(user), 60, "the first pass")
        assert COPYING in log_of(user)
        assert synced(user.home) == synced(user.server_home)
        (user.home / "Documents" / "live.txt").write_text("real time")
        wait_for(appears(user.server_home / "Documents" / "live.txt", "real time"), 60,
                 "a change in real time")
        (user.server_home / "Documents" / "with space").write_text("from the server")
        wait_for(appears(user.home / "Documents" / "with space", "from the server"), 60,
                 "the server's change in real time")
    finally:
        stop_as_logout([daemon])
    assert AGAIN not in log_of(user), log_of(user)[-6000:]


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_reads_every_file_when_one_was_written_during_the_copy(
        watched: Setup, tmp_path: Path, prefer: str) -> None:
    user = watched
    fill(user.server_home)
    edited = user.server_home / "Documents" / "deep" / "deeper" / "note.txt"
    configure(user, prefer, watch=True, interval=3600)
    # this computer's rsync only (the server's PATH has a bin of its own under tmp_path)
    search = rsync_that_edits(tmp_path / "here", edited, user.env["PATH"])
    daemon = DaemonProcess(user, {"PATH": search})
    try:
        wait_for(lambda: "--- pass ended" in log_of(user), 60, "the first pass")
        # the server's file was edited after it was listed, before rsync read it: unison's run
        # on the copy found nothing to do, the check did, and unison read every file
        assert COPYING in log_of(user)
        assert "a file changed since it was copied" in log_of(user), log_of(user)[-6000:]
        assert "unison found the copy different" not in log_of(user)
        here = user.home / "Documents" / "deep" / "deeper" / "note.txt"
        assert here.read_text() == edited.read_text() == "E" * len("deep note")
        assert synced(user.home) == synced(user.server_home)
    finally:
        stop_as_logout([daemon])


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_syncs_a_file_made_after_this_side_was_listed(
        watched: Setup, tmp_path: Path, prefer: str) -> None:
    """A laptop's home copied up to an empty server home by the daemon's first pass: a file
    made here after this side was listed is not in the copy; unison's run on it finds it."""
    user = watched
    fill(user.home)
    made = user.home / "Documents" / "deep" / "made.txt"
    configure(user, prefer, watch=True, interval=3600)
    search = rsync_that_edits(tmp_path / "here", made, user.env["PATH"], new=True)
    daemon = DaemonProcess(user, {"PATH": search})
    try:
        wait_for(lambda: "--- pass ended" in log_of(user), 60, "the first pass")
        assert COPYING in log_of(user)
        assert "unison found the copy different" in log_of(user), log_of(user)[-6000:]
        assert AGAIN in log_of(user)
        assert (user.server_home / "Documents" / "deep" / "made.txt").read_text() == MADE
        assert synced(user.home) == synced(user.server_home)
    finally:
        stop_as_logout([daemon])


def _kill_relay(count_file: Path) -> None:
    """The connection goes: the relay this test's ssh started (found by its count file) dies;
    not the ssh and rsync processes that name it in their arguments."""
    relays = subprocess.run(["pgrep", "-f", f"^{sys.executable} {THROTTLE} .*{count_file}"],
                            capture_output=True, text=True, check=False).stdout.split()
    assert relays, "no relay of this test found"
    for pid in relays:
        os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_the_real_time_daemon_takes_up_a_copy_its_link_cut_off(watched: Setup, tmp_path: Path,
                                                               prefer: str) -> None:
    """A new laptop's daemon, in real-time mode, loses its link in the middle of the first
    sync's copy: the pass ends offline, and when the network is back (SIGUSR1, as on
    NetworkManager's word) the daemon's next pass takes the copy up (the laptop holds only what
    it copied) and the two sides agree."""
    user = watched
    big = MIN_BYTES // 2
    random_files(user.server_home / "Documents", 3, big)
    before = tree(user.server_home / "Documents")
    configure(user, prefer, watch=True, interval=3600)
    count_file = tmp_path / "relay.json"
    throttle(user, 8 * MB, count_file)  # each connection gets a relay of its own
    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: size_of(user.home) >= big
                 and size_of(user.state_dir / "bulk") >= big // 4, 60, "a file and a quarter")
        _kill_relay(count_file)
        wait_for(lambda: "--- pass ended: offline ---" in log_of(user), 60, "offline")

        # What NetworkManager tells the daemon when the network is back: a pass now, said once
        # while the daemon is still ending the offline pass (the request must not be lost to
        # the watch's ending, nor taken for a sync of the user's own that it makes way for).
        daemon.signal(signal.SIGUSR1)
        wait_for(lambda: tree(user.home / "Documents") == before, 90,
                 "the copy taken up after the link came back")
        wait_for(lambda: "--- pass ended: in-sync ---" in log_of(user), 60, "the pass's end")
    finally:
        stop_as_logout([daemon])
    assert "the connection to the server was lost during rsync's copy" in log_of(user)
    assert log_of(user).count(COPYING) == 2 and AGAIN not in log_of(user), log_of(user)[-4000:]
    assert tree(user.server_home / "Documents") == before
    assert not (user.state_dir / "bulk-copy.json").exists()


def test_a_copy_whose_connection_is_lost_ends_the_pass_offline_as_a_unison_run_would(
        user: Setup, tmp_path: Path) -> None:
    """Like a unison run that loses its connection: the pass ends offline (exit 75) at once,
    rather than start unison on a link that may be down (one more connect_timeout); the next
    pass takes the copy up where it stopped, the file it was copying included, and finishes
    the sync."""
    big = MIN_BYTES // 2  # three files: the cut comes in the middle of the second
    total = random_files(user.server_home / "Documents", 3, big)
    before = tree(user.server_home / "Documents")
    count_file = tmp_path / "first.json"
    throttle(user, 8 * MB, count_file)  # about 12 s for the whole tree
    first = subprocess.Popen([*CLI, "sync", "--json"], env=user.env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        # the first file whole, and a quarter of the second, which rsync writes beside the
        # tree until it is whole
        wait_for(lambda: (size_of(user.home) >= big
                          and size_of(user.state_dir / "bulk") >= big // 4)
                 or first.poll() is not None, 60, "a file and a quarter")
        _kill_relay(count_file)
        out, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    outcome = json.loads(out)
    assert (first.returncode, outcome["result"]) == (75, "offline"), outcome
    assert "the connection to the server was lost during rsync's copy" in log_of(user)
    assert "Looking for changes" not in log_of(user)  # no unison waiting for a dead link
    assert all(before[path] == content
               for path, content in tree(user.home / "Documents").items())
    assert len(tree(user.home / "Documents")) == 1, "the cut was to come in the second file"
    kept = sum(f.stat().st_size for f in (user.state_dir / "bulk-partial").iterdir())
    assert kept >= MB, "rsync kept no partial file"
    user.close_connection()
    throttle(user, 400 * MB, tmp_path / "second.json")

    sync(user)

    assert tree(user.home / "Documents") == before == tree(user.server_home / "Documents")
    assert log_of(user).count(COPYING) == 2 and AGAIN not in log_of(user)
    # the second copy took the first up (a side that holds only what it copied), and fetched
    # the rest: neither the whole file it had nor the part of the next it kept
    fetched = json.loads((tmp_path / "second.json").read_text())["down"]
    assert fetched < total - big - kept + MB, (fetched, total, kept)
    assert not (user.state_dir / "bulk-partial").exists()
    assert not (user.state_dir / "bulk-copy.json").exists()
