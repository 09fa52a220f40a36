"""Two computers of one person live at once, both in real-time mode (issue 16): a write on one
reaches the other through the server, and the other's write comes back.

Each computer is a real `roaming-homes daemon` with a HOME, state, runtime directory and config
of its own, both on one server home over one sshd whose ssh user has our monitor on its PATH
(fixtures `watched` and `tag`): each daemon runs a monitor here and one on the server.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, appears
from tests.support.fsmonitor import local_monitors_of, monitors_tagged
from tests.support.homes import Setup, tree
from tests.support.waiting import wait_for

BOUND = 30  # seconds a change may take from one computer to the other (about 2 s measured)


def monitors_up(home: Path, tag: str, computers: int) -> Callable[[], bool]:
    """This computer's monitor runs, and one on the server for each of the `computers`."""
    return lambda: (len(local_monitors_of(home)) == 1
                    and len(monitors_tagged(tag)) == computers)


@pytest.fixture
def two(tmp_path: Path, watched: Setup, tag: str) -> Iterator[tuple[Setup, Setup]]:
    """Computers A (`watched`) and B on A's server home, each with its daemon watching (with
    an interval and a rescan too long to explain any propagation)."""
    a = watched
    b = Setup(tmp_path / "b", a.sshd)
    b.server_home.rmdir()
    b.server_home = a.server_home
    (b.home / "Documents").mkdir()
    daemons: list[DaemonProcess] = []
    try:
        for user, name in ((a, "laptop"), (b, "desk")):
            user.configure(sync={"watch": True, "interval": 3600, "logout_timeout": 10},
                           client={"name": name})
            daemon = DaemonProcess(user)
            daemons.append(daemon)
            daemon.wait_for_log("in sync")
            wait_for(monitors_up(user.home, tag, len(daemons)), 30,
                     f"the monitors of {name} on each end")
        yield a, b
    finally:
        for daemon in daemons:  # ours, by PID: as logout stops them, then killed if need be
            if daemon.proc.poll() is None:
                daemon.signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daemon.wait(30)  # else killed
            daemon.close()
        b.close()


def test_a_write_on_one_computer_reaches_the_other_and_the_others_edit_comes_back(
        two: tuple[Setup, Setup]) -> None:
    a, b = two
    docs_a, docs_b = a.home / "Documents", b.home / "Documents"

    (docs_a / "plan.txt").write_text("written on the laptop\n")
    wait_for(appears(docs_b / "plan.txt", "written on the laptop\n"), BOUND,
             "the laptop's new file on the desk")
    (docs_b / "plan.txt").write_text("edited on the desk\n")
    (docs_b / "notes").mkdir()
    (docs_b / "notes" / "desk.txt").write_text("a new folder on the desk\n")
    wait_for(appears(docs_a / "plan.txt", "edited on the desk\n"), BOUND,
             "the desk's edit back on the laptop")
    wait_for(appears(docs_a / "notes" / "desk.txt", "a new folder on the desk\n"), BOUND,
             "the desk's new folder on the laptop")

    server = a.server_home / "Documents"
    assert tree(docs_a) == tree(docs_b) == tree(server)  # and no conflict copy anywhere
    assert sorted(tree(server)) == ["notes", "notes/desk.txt", "plan.txt"]


def test_a_deletion_and_a_rename_on_one_computer_are_followed_by_the_other(
        two: tuple[Setup, Setup]) -> None:
    a, b = two
    docs_a, docs_b = a.home / "Documents", b.home / "Documents"
    for name in ("keep.txt", "drop.txt", "old-name.txt"):
        (docs_b / name).write_text(f"{name} from the desk\n")
    for name in ("keep.txt", "drop.txt", "old-name.txt"):
        wait_for(appears(docs_a / name, f"{name} from the desk\n"), BOUND,
                 f"{name} on the laptop")

    (docs_a / "drop.txt").unlink()
    (docs_a / "old-name.txt").rename(docs_a / "new-name.txt")
    wait_for(appears(docs_b / "new-name.txt", "old-name.txt from the desk\n"), BOUND,
             "the renamed file on the desk")
    wait_for(lambda: not (docs_b / "drop.txt").exists()
             and not (docs_b / "old-name.txt").exists(), BOUND,
             "the deleted and the renamed file gone from the desk")

    assert tree(docs_a) == tree(docs_b) == tree(a.server_home / "Documents")
    assert sorted(tree(docs_b)) == ["keep.txt", "new-name.txt"]
