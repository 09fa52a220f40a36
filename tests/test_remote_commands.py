"""What a command run on the server is given on its standard input (`ssh.run_remote_bytes`):
all of it, then its end, however late ssh starts reading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
