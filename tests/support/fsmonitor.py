"""Drive our unison-fsmonitor as unison does: a child process, lines on its stdin and stdout.

Also writes a `unison-fsmonitor` wrapper into a directory for PATH, so unison (local or on
the test sshd) runs this work tree's monitor whatever is installed.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.procfs import processes_with

SRC = Path(__file__).resolve().parents[2] / "src"
COMMAND = [sys.executable, "-m", "roaming_homes.unison.fsmonitor"]


def write_wrapper(directory: Path, tag: str = "") -> Path:
    """A `unison-fsmonitor` in `directory` that runs this work tree's module.

    With `tag`, the monitors it starts carry RH_TEST_TAG=`tag` in their environment, so that a
    test finds exactly its own (`monitors_tagged`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "unison-fsmonitor"
    tagged = f"RH_TEST_TAG={tag} " if tag else ""
    script.write_text(f"#!/bin/sh\n{tagged}PYTHONPATH={SRC} exec {sys.executable} -m "
                      "roaming_homes.unison.fsmonitor \"$@\"\n")
    script.chmod(0o755)
    return script


def monitors_tagged(tag: str) -> list[int]:
    """PIDs of running monitors started through a wrapper written with `tag` (on the server)."""
    return processes_with(f"RH_TEST_TAG={tag}", b"roaming_homes.unison.fsmonitor")


def monitors_of(home: Path, tag: str) -> list[int]:
    """PIDs of the real-time monitors of the user whose home is `home`: the server's (started
    through the wrapper written with `tag`) and this computer's (a child of the daemon, whose
    environment names the home)."""
    return [*monitors_tagged(tag), *local_monitors_of(home)]


def local_monitors_of(home: Path) -> list[int]:
    """PIDs of the monitors of this computer's real-time mode for the user whose home is
    `home` (children of the daemon, whose environment names the home)."""
    return processes_with(f"HOME={home}", b"roaming_homes.unison.fsmonitor")


class MonitorSession:
    """One running monitor; `send` a line, `expect` the next line within a deadline."""

    def __init__(self, command: Sequence[str] = COMMAND) -> None:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._buffer = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float = 10) -> str | None:
        """The next line, or None when none came within `timeout` (or the output ended)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, line: str, timeout: float = 10) -> None:
        got = self.read_line(timeout)
        assert got == line, f"expected {line!r}, got {got!r}; stderr: {self.stderr_so_far()}"

    def expect_silence(self, seconds: float = 1.5) -> None:
        got = self.read_line(seconds)
        assert got is None, f"expected no reply, got {got!r}"

    def changes(self, hash_: str) -> list[str]:
        """Ask for the changes of a replica: the RECURSIVE paths up to DONE."""
        self.send(f"CHANGES {hash_}")
        paths = []
        while (line := self.read_line()) != "DONE":
            assert line is not None and line.startswith("RECURSIVE "), line
            paths.append(line[len("RECURSIVE "):])
        return paths

    def scan(self, hash_: str, fspath: str, path: str = "", dirs: Sequence[str] = ("",)) -> None:
        """A START ... DONE exchange announcing `dirs` (encoded as unison does)."""
        self.send(f"START {hash_} {fspath} {path}")
        self.expect("OK")
        for rel in dirs:
            self.send(f"DIR {rel}")
            self.expect("OK")
        self.send("DONE")

    def stderr_so_far(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> int:
        """Close stdin (as unison's exit does) and return the exit code."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
