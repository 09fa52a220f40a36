"""One person, many computers (issue 16), end to end: several computers of one user, each with
its own HOME, state, runtime and configuration, on one server home over one real sshd; the real
CLI, the real daemon (interval and real-time mode) and the real unison.

What `tests/test_computers_e2e.py` does not show already: passes of three computers at the same
moment, a confirmed deletion followed in every mode, a computer that has not synced for long,
a computer joining a home that already has its files, and a renamed computer as the others see
it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from roaming_homes.actions.computers import CACHE_FILE, REPUBLISH_AFTER
from roaming_homes.server.records import DIRECTORY
from tests.support.daemon import DaemonProcess, stop_as_logout
from tests.support.fsmonitor import monitors_of
from tests.support.homes import CLI, Setup
from tests.support.ledger import checksums, digest
from tests.support.notifications import RecordingServer
from tests.support.programs import SYSTEM_PATH
from tests.support.sshd import SshServer
from tests.support.transfer import MB, THROTTLE
from tests.support.waiting import wait_for

NAMES = ("laptop-ana", "desk-ana", "tablet-ana")
MakeComputers = Callable[..., list[Setup]]


def reconfigure(computer: Setup, **sections: dict[str, Any]) -> None:
    """Change some keys of a computer's configuration, keeping the others (its server home,
    its name)."""
    merged = {name: dict(keys) for name, keys in computer.config.items()}
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    computer.configure(**merged)


def make_family(tmp_path: Path, sshd: SshServer, count: int,
                **sections: dict[str, Any]) -> list[Setup]:
    """`count` computers of one person on the first one's server home, named after NAMES."""
    family: list[Setup] = []
    for name in NAMES[:count]:
        computer = Setup(tmp_path / name, sshd)
        server = {"home": str(family[0].server_home)} if family else {}
        reconfigure(computer, server=server, client={"name": name}, **sections)
        family.append(computer)
    return family


@pytest.fixture
def computers(tmp_path: Path, sshd: SshServer) -> Iterator[MakeComputers]:
    made: list[Setup] = []

    def make(count: int, **sections: dict[str, Any]) -> list[Setup]:
        family = make_family(tmp_path, sshd, count, **sections)
        made.extend(family)
        return family

    yield make
    for computer in made:
        computer.close()


@pytest.fixture
def daemons() -> Iterator[Callable[[Setup], DaemonProcess]]:
    """Starts `roaming-homes daemon` for a computer; at the end stops it as logout does (ours
    only, by its PID), then kills it if it is still there."""
    started: list[DaemonProcess] = []

    def start(computer: Setup) -> DaemonProcess:
        daemon = DaemonProcess(computer)
        started.append(daemon)
        return daemon

    yield start
    stop_as_logout(started)


def docs(computer: Setup) -> Path:
    path = computer.home / "Documents"
    path.mkdir(exist_ok=True)
    return path


def server_docs(computer: Setup) -> Path:
    return Path(computer.config["server"]["home"]) / "Documents"


def populate(computer: Setup, count: int) -> Path:
    folder = docs(computer)
    for i in range(count):
        (folder / f"f{i:02d}.txt").write_text(f"file {i}")
    return folder


def files(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below `folder`."""
    return checksums(folder)


def history(computer: Setup) -> list[dict[str, Any]]:
    path = computer.state_home / "roaming-homes" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def backups(computer: Setup) -> Path:
    return computer.state_home / "roaming-homes" / "backup"


def computer_id(computer: Setup) -> str:
    data = json.loads((computer.state_home / "roaming-homes" / "computer.json").read_text())
    return str(data["id"])


def record_file(server_home: Path, computer: Setup) -> Path:
    return server_home / DIRECTORY / "computers" / f"{computer_id(computer)}.json"


def listed(computer: Setup) -> dict[str, dict[str, Any]]:
    """The computers this one's `status --json` lists, by name."""
    return {item["name"]: item for item in computer.status()["computers"]}


def republishing_falls_due(computer: Setup) -> None:
    """REPUBLISH_AFTER seconds pass for this computer's record (the only clock in the decision
    to publish again, and with it to read the others' records back)."""
    cache = computer.state_home / "roaming-homes" / CACHE_FILE
    data = json.loads(cache.read_text())
    data["written"] = time.time() - REPUBLISH_AFTER - 1
    cache.write_text(json.dumps(data) + "\n")


# --- 1. three computers, passes at the same moment ----------------------------------------------

def everything(family: list[Setup]) -> set[str]:
    """Every content on every replica and in every backup directory (both ends)."""
    assert family[0].sshd is not None and family[0].sshd.server_unison_dir is not None
    roots = [*(c.home for c in family), *(backups(c) for c in family),
             server_docs(family[0]), family[0].sshd.server_unison_dir / "backup"]
    return {h for root in roots for h in checksums(root).values()}


def sync_all_at_once(family: list[Setup]) -> list[tuple[int, dict[str, Any]]]:
    """`sync --json` on every computer, the processes started together."""
    procs = [subprocess.Popen([*CLI, "sync", "--json"], env=c.env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for c in family]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert out, err
        results.append((proc.returncode, json.loads(out)))
    return results


def test_three_computers_syncing_at_the_same_moment_end_identical_and_lose_nothing(
        computers: MakeComputers) -> None:
    family = computers(3)
    a = family[0]
    populate(a, 12)
    for computer in family:
        assert computer.sync().returncode == 0
    da, db, dc = (docs(computer) for computer in family)
    (da / "f00.txt").write_text("edited on the laptop")
    (da / "from-laptop.txt").write_text("new on the laptop")
    (db / "f01.txt").write_text("edited on the desk")
    (db / "f02.txt").unlink()
    (db / "from-desk").mkdir()
    (db / "from-desk" / "notes.txt").write_text("new on the desk")
    (dc / "f03.txt").write_text("edited on the tablet")
    (dc / "f04.txt").unlink()
    (dc / "from-tablet.txt").write_text("new on the tablet")
    before = everything(family)
    expected = files(da) | files(db) | files(dc)
    for gone in ("f02.txt", "f04.txt"):
        del expected[gone]
    for name, text in (("f00.txt", "edited on the laptop"), ("f01.txt", "edited on the desk"),
                       ("f03.txt", "edited on the tablet")):
        expected[name] = digest(text.encode())

    results = sync_all_at_once(family)
    for _ in range(2):  # a couple more passes each: what the others brought arrives
        if all(files(docs(computer)) == expected for computer in family):
            break
        results += [computer.sync_json() for computer in family]

    assert all((code, outcome["result"]) in ((0, "in-sync"), (75, "busy"))
               for code, outcome in results), results
    for computer in family:
        assert files(docs(computer)) == expected, computer.config["client"]["name"]
    assert files(server_docs(a)) == expected
    assert before <= everything(family), "a version was lost"
    records = sorted((a.server_home / DIRECTORY / "computers").glob("*.json"))
    assert [p.name for p in records] == sorted(f"{computer_id(c)}.json" for c in family)
    # A computer brings the others' records back when it publishes its own: when its result
    # or name changed, else once in REPUBLISH_AFTER. The first to publish saw only itself.
    for computer in family:
        republishing_falls_due(computer)
        assert computer.sync().returncode == 0
    for computer in family:
        assert set(listed(computer)) == set(NAMES), computer.config["client"]["name"]


# --- 2. a confirmed deletion, followed in every mode -------------------------------------------

def confirm_a_mass_deletion(a: Setup) -> None:
    """On A: 30 of the 40 synced files deleted, refused, then confirmed (`sync --force`)."""
    for i in range(30):
        (docs(a) / f"f{i:02d}.txt").unlink()
    assert a.sync().returncode == 4  # refused until the user says so
    assert a.sync("--force").returncode == 0


def followed(b: Setup, since: int) -> bool:
    """Whether B's passes since the `since`th in its history have done with A's deletions:
    all 30 gone (a real-time cycle may see them in more than one batch), or one refused (the
    test fails at once then, with the history)."""
    passes = history(b)[since:]
    gone = len(list(docs(b).iterdir())) == 10
    return any(p["result"] == "refused" for p in passes) or (gone and any(
        "following a deletion confirmed on laptop-ana" in p["message"] for p in passes))


def assert_followed(b: Setup, since: int, *, also: tuple[str, ...] = ()) -> None:
    """B deleted the 30 files as A's user confirmed, kept them in its backups, and never
    refused (nor asked the user again) on the way; `also`: other files B has."""
    names = sorted(p.name for p in docs(b).iterdir())
    assert names == sorted([f"f{i:02d}.txt" for i in range(30, 40)] + list(also))
    assert len(list((backups(b) / "Documents").iterdir())) == 30
    passes = history(b)[since:]
    assert not [p for p in passes if p["result"] != "in-sync"], passes
    assert any("following a deletion confirmed on laptop-ana" in p["message"]
               for p in passes), passes


def follower_daemon(b: Setup, start: Callable[[Setup], DaemonProcess]) -> tuple[DaemonProcess,
                                                                                 int]:
    daemon = start(b)
    daemon.wait_for_log("in sync")
    wait_for(lambda: len(list(docs(b).iterdir())) == 40, 20, "the 40 files on the follower")
    return daemon, len(history(b))


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_confirmed_deletion_is_followed_by_a_daemon_in_interval_mode(
        computers: MakeComputers, daemons: Callable[[Setup], DaemonProcess],
        prefer: str) -> None:
    a, b = computers(2, sync={"prefer": prefer})
    populate(a, 40)
    assert a.sync().returncode == 0
    reconfigure(b, sync={"interval": 1, "watch": False})
    daemon, since = follower_daemon(b, daemons)

    confirm_a_mass_deletion(a)

    wait_for(lambda: followed(b, since), 30, "the follower's pass that followed it")
    assert_followed(b, since)
    assert daemon.proc.poll() is None


@contextlib.contextmanager
def sync_running(computer: Setup, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`sync --json ARGS` of `computer` in the background, for what happens while it runs; at
    the end it is killed if it still runs (a test that failed meanwhile leaves nothing)."""
    proc = subprocess.Popen([*CLI, "sync", "--json", *args], env=computer.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def slow_link(computer: Setup, count_file: Path) -> None:
    """The computer's next passes go through a relay of 1 MB/s (tests/support/throttle.py)."""
    assert computer.sshd is not None
    proxy = (f"ProxyCommand={sys.executable} {THROTTLE} 127.0.0.1 {computer.sshd.port} {MB} "
             f"{count_file}")
    computer.close_connection()  # the shared connection would bypass the relay
    reconfigure(computer, server={"ssh_options": [*computer.sshd.ssh_options(), "-o", proxy]})


def test_a_pass_that_looked_before_the_deletions_and_ended_after_them_hides_nothing(
        computers: MakeComputers, tmp_path: Path) -> None:
    """B's pass scans the server, then copies a big file over a slow link while A's user
    confirms the deletions: it ends in sync after the confirmation without having seen them.
    B's next pass follows them (it must not take the confirmation for one it had followed)."""
    a, b = computers(2)
    populate(a, 40)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    since = len(history(b))
    (docs(a) / "big.bin").write_bytes(os.urandom(8 * MB))
    assert a.sync().returncode == 0  # on the server; B does not have it yet
    for i in range(30):
        (docs(a) / f"f{i:02d}.txt").unlink()
    assert a.sync().returncode == 4
    slow_link(b, tmp_path / "count.json")
    with sync_running(b) as slow:
        wait_for(lambda: (p := b.status()["progress"]) and p["bytes_done"] > 0, 30,
                 "B's pass copying the big file")
        assert a.sync("--force").returncode == 0  # confirmed and recorded ...
        assert slow.poll() is None  # ... while B's pass still runs
        out, _ = slow.communicate(timeout=60)
    looked = json.loads(out)
    assert looked["result"] == "in-sync" and looked["transferred"] == 1, looked
    assert len(list(docs(b).iterdir())) == 41  # it saw none of the deletions

    code, outcome = b.sync_json()

    assert code == 0, outcome
    assert_followed(b, since, also=("big.bin",))


@pytest.fixture
def watched_pair(tmp_path: Path, tag: str) -> Iterator[tuple[Setup, Setup]]:
    """Two computers on an sshd (of this test) whose sessions run our unison-fsmonitor."""
    path = f"{tmp_path / 'bin'}:{SYSTEM_PATH}"
    with SshServer(tmp_path / "sshd", env={"PATH": path}) as sshd:
        family = make_family(tmp_path, sshd, 2)
        try:
            yield family[0], family[1]
        finally:
            for computer in family:
                computer.close()


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_confirmed_deletion_is_followed_by_a_daemon_in_real_time_mode(
        watched_pair: tuple[Setup, Setup], tag: str,
        daemons: Callable[[Setup], DaemonProcess], prefer: str) -> None:
    a, b = watched_pair
    reconfigure(a, sync={"prefer": prefer})
    populate(a, 40)
    assert a.sync().returncode == 0
    reconfigure(b, sync={"prefer": prefer, "watch": True, "interval": 3600})
    daemon, since = follower_daemon(b, daemons)
    wait_for(lambda: len(monitors_of(b.home, tag)) == 2, 30, "a monitor on each end")

    confirm_a_mass_deletion(a)

    wait_for(lambda: followed(b, since), 30, "the follower's cycle that followed it")
    assert_followed(b, since)
    assert "falling back" not in daemon.log
    assert b.status()["watching_pid"] == daemon.proc.pid


def test_a_confirmation_is_on_the_server_before_any_of_its_deletions(
        computers: MakeComputers, tmp_path: Path) -> None:
    """A computer watching in real time judges deletions the moment they reach the server:
    the confirmation must be there first. A's confirmed pass also uploads a big file over a
    slow link (unison deletes last): while it uploads, the confirmation is on the server
    already; when the pass ends it is recorded again, with the time it ended."""
    a, b = computers(2)
    populate(a, 40)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    since = len(history(b))
    for i in range(30):
        (docs(a) / f"f{i:02d}.txt").unlink()
    assert a.sync().returncode == 4
    (docs(a) / "zz-big.bin").write_bytes(os.urandom(6 * MB))  # about 6 s to upload
    count = tmp_path / "count.json"
    slow_link(a, count)
    confirmed = a.server_home / DIRECTORY / "confirmed"
    with sync_running(a, "--force") as forced:
        wait_for(lambda: count.exists() and json.loads(count.read_text())["up"] > 2 * MB, 30,
                 "A's pass uploading the big file")
        during = [json.loads(f.read_text()) for f in confirmed.glob("*.json")]
        out, _ = forced.communicate(timeout=60)
    outcome = json.loads(out)
    (after,) = [json.loads(f.read_text()) for f in confirmed.glob("*.json")]

    assert forced.returncode == 0, outcome
    assert [c["paths"] for c in during] == [[f"Documents/f{i:02d}.txt" for i in range(30)]]
    assert after["paths"] == during[0]["paths"]  # the same record, with the time it ended
    assert datetime.fromisoformat(after["time"]) >= datetime.fromisoformat(outcome["finished"])
    code, followed_outcome = b.sync_json()
    assert code == 0, followed_outcome
    assert_followed(b, since, also=("zz-big.bin",))


def test_sync_anyway_on_a_notification_is_followed_by_the_other_computer(
        computers: MakeComputers, notifications: RecordingServer) -> None:
    a, b = computers(2)
    reconfigure(a, notify={"enabled": True})
    env = {"DBUS_SESSION_BUS_ADDRESS": notifications.address}
    populate(a, 40)
    assert a.sync(env=env).returncode == 0
    assert b.sync().returncode == 0
    since = len(history(b))
    for i in range(30):
        (docs(a) / f"f{i:02d}.txt").unlink()
    assert a.sync(env=env).returncode == 4
    shown = notifications.wait_for(1)[0]
    assert shown["actions"]["confirm"] == "Sync anyway"

    notifications.invoke(shown["id"], "confirm")

    wait_for(lambda: a.status()["result"] == "in-sync", 30, "the confirmed pass on the laptop")
    assert len(list(server_docs(a).iterdir())) == 10
    code, outcome = b.sync_json()
    assert code == 0, outcome
    assert_followed(b, since)


# --- 3. a computer that has not synced for long -------------------------------------------------

def test_a_computer_silent_for_days_is_warned_about_then_stale_and_never_removed(
        computers: MakeComputers) -> None:
    a, b = computers(2)
    populate(b, 1)
    assert b.sync().returncode == 0
    record = record_file(a.server_home, b)
    ten_days_ago = (datetime.now().astimezone() - timedelta(days=10)).isoformat(
        timespec="seconds")
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "last_pass": ten_days_ago,
                                  "last_success": ten_days_ago}))  # B last synced 10 days ago
    assert a.sync().returncode == 0  # brings the records back

    warned = listed(a)["desk-ana"]
    text = a.run("status").stdout
    reconfigure(a, client={"forget_after": 7})
    stale = listed(a)["desk-ana"]
    stale_text = a.run("status").stdout
    republishing_falls_due(a)
    assert a.sync().returncode == 0

    assert warned["warning"] == ("not synced for 10 days: its changes may be missing from "
                                 "the server")
    assert listed(a)["laptop-ana"]["warning"] is None
    assert "desk-ana: last sync" in text and "not synced for 10 days" in text
    assert stale["warning"] == "stale: not synced for 10 days"
    assert "desk-ana: last sync" in stale_text and "stale: not synced for 10 days" in stale_text
    assert record.exists() and "desk-ana" in listed(a)  # listed as stale, never removed


# --- 4. joining a home that already has files --------------------------------------------------

def joining(computers: MakeComputers, prefer: str) -> tuple[Setup, Setup]:
    """A's home (synced) and C's, not synced yet: the same files in both (`same.txt`,
    `shared/same-too.txt`, A's times kept, as a copy with `cp -a` or a restore keeps them),
    one that differs, and one of each's own."""
    a, c = computers(2, sync={"prefer": prefer})
    share_a_home(a, c)
    return a, c


def share_a_home(a: Setup, c: Setup) -> None:
    """The home `joining` describes, synced from A; C holds its own copy, not synced yet."""
    da, dc = docs(a), docs(c)
    for folder in (da, dc):
        (folder / "shared").mkdir()
    for name, text in (("same.txt", "the same on both"), ("shared/same-too.txt", "also")):
        (da / name).write_text(text)
        (dc / name).write_text(text)
        stat = (da / name).stat()
        os.utime(dc / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (da / "differs.txt").write_text("the home's version")
    (da / "only-home.txt").write_text("only in the home")
    assert a.sync().returncode == 0
    (dc / "differs.txt").write_text("the joining computer's version")
    (dc / "only-joining.txt").write_text("only on the joining computer")


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_computer_joining_an_existing_home_keeps_both_versions_of_what_differs(
        computers: MakeComputers, prefer: str) -> None:
    a, c = joining(computers, prefer)
    dc, server = docs(c), server_docs(a)
    versions = {digest(b"the home's version"), digest(b"the joining computer's version")}

    code, outcome = c.sync_json()

    assert outcome["first_run"] is True
    for name in ("same.txt", "shared/same-too.txt"):
        assert not [n for n in outcome["conflicts"] if name in n], outcome
        assert (server / name).read_text() == (dc / name).read_text()
    if prefer == "none":  # both kept where they were, the conflict left to the user
        assert (code, outcome["conflicts"]) == (1, ["Documents/differs.txt"]), outcome
        assert (dc / "differs.txt").read_text() == "the joining computer's version"
        assert (server / "differs.txt").read_text() == "the home's version"
    else:  # the newer wins, the other is kept beside it as a conflict copy
        assert code == 0, outcome
        for computer in (c, a):  # the conflict copy travels like any file
            assert computer.sync().returncode == 0
        for folder in (server, dc, docs(a)):
            kept = {h for n, h in files(folder).items() if n.startswith("differs")}
            assert kept == versions, folder
            assert len([n for n in files(folder) if n.startswith("differs")]) == 2
    for folder in (server, dc):
        assert (folder / "only-home.txt").exists() and (folder / "only-joining.txt").exists()
    assert not [n for n in files(server) if "conflict" in n and "same" in n]


@pytest.mark.parametrize("prefer", ["newer", "none"])
@pytest.mark.parametrize("copy_is", ["older", "newer"])
def test_a_joining_computer_whose_identical_files_have_other_times_has_no_conflict(
        computers: MakeComputers, prefer: str, copy_is: str) -> None:
    """The same files copied to the new computer without their times (`cp`, a download: the
    copy is newer) or restored from an old backup (older). With `prefer = none` the older time
    wins, on both sides, in the same pass; with `newer`, the newer."""
    a, c = joining(computers, prefer)
    wanted = copied_with_other_times(a, c, copy_is, prefer)

    code, outcome = c.sync_json()

    assert [n for n in outcome["conflicts"] if "same" in n] == [], outcome
    assert code == (1 if prefer == "none" else 0), outcome  # differs.txt stays listed
    assert_identical_with_time(a, c, wanted)
    assert c.sync_json()[1]["conflicts"] == outcome["conflicts"]  # settled for good


SAME = ("same.txt", "shared/same-too.txt")


def copied_with_other_times(a: Setup, c: Setup, copy_is: str, prefer: str) -> float:
    """Moves the times of C's identical copies a day away; returns the time both sides should
    end with."""
    shift = -86400 if copy_is == "older" else 86400
    home_time = (server_docs(a) / SAME[0]).stat().st_mtime
    for name in SAME:
        moved = (docs(c) / name).stat().st_mtime + shift
        os.utime(docs(c) / name, (moved, moved))
    times = (home_time, home_time + shift)
    return min(times) if prefer == "none" else max(times)


def assert_identical_with_time(a: Setup, c: Setup, wanted: float) -> None:
    for name in SAME:
        here, there = docs(c) / name, server_docs(a) / name
        assert here.read_text() == there.read_text()
        assert abs(here.stat().st_mtime - wanted) < 2, (name, here.stat().st_mtime, wanted)
        assert abs(there.stat().st_mtime - wanted) < 2, (name, there.stat().st_mtime, wanted)
    assert not [n for n in files(docs(c)) if "conflict" in n and "same" in n]


@pytest.mark.parametrize("prefer", ["newer", "none"])
def test_a_joining_computers_daemon_in_real_time_mode_settles_identical_files_too(
        watched_pair: tuple[Setup, Setup], daemons: Callable[[Setup], DaemonProcess],
        prefer: str) -> None:
    a, c = watched_pair
    reconfigure(a, sync={"prefer": prefer})
    share_a_home(a, c)
    wanted = copied_with_other_times(a, c, "newer", prefer)
    reconfigure(c, sync={"prefer": prefer, "watch": True, "interval": 3600})

    daemons(c)

    logged = c.state_home / "roaming-homes" / "history.jsonl"
    wait_for(lambda: logged.exists() and history(c), 60, "the joining computer's first pass")
    first = history(c)[0]
    assert first["first_run"] is True, first
    assert [n for n in first["conflicts"] if "same" in n] == [], first
    assert_identical_with_time(a, c, wanted)


# --- 5. renaming a computer ---------------------------------------------------------------------

def test_a_renamed_computer_shows_under_its_new_name_once_on_the_others(
        computers: MakeComputers) -> None:
    a, b = computers(2)
    populate(a, 1)
    assert a.sync().returncode == 0
    assert b.sync().returncode == 0
    republishing_falls_due(a)  # A reads the records back (see the three computers' test)
    assert a.sync().returncode == 0
    assert set(listed(a)) == {"laptop-ana", "desk-ana"}
    old_id = listed(a)["desk-ana"]["id"]

    reconfigure(b, client={"name": "desk-ana-renamed"})
    assert b.sync().returncode == 0
    republishing_falls_due(a)
    assert a.sync().returncode == 0

    shown = listed(a)
    assert len(a.status()["computers"]) == 2
    assert set(shown) == {"laptop-ana", "desk-ana-renamed"}
    assert shown["desk-ana-renamed"]["id"] == old_id
    assert "desk-ana-renamed: last sync" in a.run("status").stdout
    assert set(listed(b)) == {"laptop-ana", "desk-ana-renamed"}
    assert listed(b)["desk-ana-renamed"]["this"]
