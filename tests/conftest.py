"""Fixtures: a real sshd on loopback, a temporary user synced with it, a session D-Bus."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import fullfs
from tests.support.daemon import DaemonProcess, StartDaemon, stop_as_logout
from tests.support.fsmonitor import write_wrapper
from tests.support.homes import Setup
from tests.support.notifications import RecordingServer, SessionBus
from tests.support.programs import SYSTEM_PATH, faked
from tests.support.sshd import SshServer
from tests.support.usermanager import manager  # noqa: F401 (a fixture: systemd --user)


def without_monitor(directory: Path) -> str:
    """A PATH for a server without unison-fsmonitor, whatever this machine has installed (our
    own package puts one in /usr/bin): `directory` holds one that is not there."""
    return faked(directory, "unison-fsmonitor",
                 "#!/bin/sh\necho 'unison-fsmonitor: command not found' >&2\nexit 127\n")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One sshd for the session (a server that stays up), without a file monitor on its PATH
    (tests that need one use `watched`)."""
    path = without_monitor(tmp_path_factory.mktemp("no-monitor"))
    with SshServer(tmp_path_factory.mktemp("sshd"), env={"PATH": path}) as server:
        yield server


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of this test alone, for tests that stop, freeze or break it."""
    with SshServer(tmp_path / "sshd",
                   env={"PATH": without_monitor(tmp_path / "no-monitor")}) as server:
        yield server


@pytest.fixture
def user(tmp_path: Path, sshd: SshServer) -> Iterator[Setup]:
    """A user whose home syncs with a server home over the session's sshd."""
    setup = Setup(tmp_path / "user", sshd)
    yield setup
    setup.close()



@pytest.fixture
def tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Our unison-fsmonitor first on this process's PATH (unison inherits it, and so do the
    `Setup`s made after this fixture); returns the tag its monitors carry."""
    tag = uuid.uuid4().hex
    write_wrapper(tmp_path / "bin", tag)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ.get('PATH', SYSTEM_PATH)}")
    return tag


@pytest.fixture
def watched(tmp_path: Path, tag: str) -> Iterator[Setup]:
    """A user whose server (own sshd) has our monitor on the ssh user's PATH."""
    with SshServer(tmp_path / "sshd", env={"PATH": f"{tmp_path / 'bin'}:{SYSTEM_PATH}"}) as sshd:
        setup = Setup(tmp_path / "user", sshd)
        for side in (setup.home, setup.server_home):
            (side / "Documents").mkdir()
        yield setup
        setup.close()


@pytest.fixture
def local_user(tmp_path: Path) -> Iterator[Setup]:
    """A user whose server side is a local directory (server.root)."""
    setup = Setup(tmp_path / "user", None)
    yield setup
    setup.close()


@pytest.fixture
def notifications() -> Iterator[RecordingServer]:
    """A private session bus with a recording notification server (advertising "actions")."""
    bus = SessionBus(Path(tempfile.mkdtemp(prefix="rh-bus-", dir="/tmp")))
    try:
        server = RecordingServer(bus.address)
        try:
            yield server
        finally:
            server.stop()
    finally:
        bus.stop()
        shutil.rmtree(bus.config.parent, ignore_errors=True)


@pytest.fixture
def full_state_disk() -> Iterator[Callable[[Setup], fullfs.FullStateDisk]]:
    """Makes `Setup`s' state disks full for the commands run with the disk's `prefix` (a tmpfs
    in a private mount namespace, see tests/support/fullfs.py); each is stopped by its PID."""
    if why := fullfs.unavailable():
        pytest.skip(why)
    made: list[fullfs.FullStateDisk] = []

    def make(user: Setup) -> fullfs.FullStateDisk:
        made.append(fullfs.FullStateDisk(user))
        return made[-1]

    yield make
    for disk in made:
        disk.close()


@pytest.fixture
def start_daemon() -> Iterator[StartDaemon]:
    """Starts `roaming-homes daemon`; at the end stops it as logout does (then kills it)."""
    started: list[DaemonProcess] = []

    def start(user: Setup, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(user, env)
        started.append(daemon)
        return daemon

    yield start
    stop_as_logout(started)
