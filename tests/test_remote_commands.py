"""What a command run on the server is given on its standard input (`ssh.run_remote_bytes`):
all of it, then its end, however late ssh starts reading."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from roaming_homes.outcome import Reason
from roaming_homes.unison import ssh as transport
from tests.support.programs import faked

# An ssh that is slow to start reading (a busy machine, a slow login): it counts what it is
# given once its input ends. It reads nothing for longer than `run_remote_bytes` waits at a
# time, so the first wait ends with most of the data still to be written.
SLOW_SSH = "#!/bin/sh\nsleep 0.6\nwc -c\n"


def _server() -> transport.Server:
    return transport.Server(host="h", port=2222, user="u", home="/home/u", local_root="",
                            connect_timeout=1, ssh_options=(), connection_reuse=0)


@pytest.mark.parametrize("size", [0, 10, 1 << 20])
def test_the_data_and_its_end_reach_a_command_that_starts_reading_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Before the fix, data larger than a pipe holds left ssh's stdin open after the first
    wait: the server's `cat > record` waited for its end until the exchange's bound (64 s)."""
    monkeypatch.setenv("PATH", faked(tmp_path / "bin", "ssh", SLOW_SSH))
    started = time.monotonic()
    out = transport.run_remote_bytes(_server(), None, "cat", data=b"x" * size)
    assert int(out) == size
    assert time.monotonic() - started < 10


# An ssh that answers and ends, leaving a process that holds its stdout and stderr open for a
# minute, as a shared master that keeps its copies of them would.
HELD_OPEN = "#!/bin/sh\nsleep 60 &\nwc -c\n"


def test_the_answer_is_taken_soon_after_ssh_ends_though_its_pipes_stay_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fix, the exchange waited for the pipes' end: a minute here, and in CI a
    daemon's pass held at the publication of its record until the test gave up."""
    monkeypatch.setenv("PATH", faked(tmp_path / "bin", "ssh", HELD_OPEN))
    started = time.monotonic()
    out = transport.run_remote_bytes(_server(), None, "cat", data=b"record")
    assert int(out) == len(b"record")
    assert time.monotonic() - started < 10


def test_an_answer_that_streams_is_still_cut_short_at_a_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop ends an exchange whose answer keeps coming (a big listing on a slow link)."""
    monkeypatch.setenv("PATH", faked(tmp_path / "bin", "ssh",
                                     "#!/bin/sh\nwhile :; do echo more; sleep 0.05; done\n"))
    abort = threading.Event()
    threading.Timer(0.5, abort.set).start()
    started = time.monotonic()
    with pytest.raises(transport.ConnectError) as raised:
        transport.run_remote_bytes(_server(), None, "listing", abort=abort)
    assert raised.value.reason is Reason.SERVER_UNREACHABLE
    assert time.monotonic() - started < 5
