"""Whether the shared connection compresses what it carries (`server.compression`).

ssh compresses with zlib, a connection at a time: on a slow link it multiplies what fits
through, on a fast one it is the bottleneck. A first sync of 53 MB of text (Python's library)
over emulated links took, ours with compression against without: 1.8x as long on `lan`
(1 Gbit/s, 1 ms), half as long on `broadband` (50 Mbit/s, 30 ms) and a third as long on
`mobile` (10 Mbit/s, 80 ms) (docs/performance.md). One setting cannot suit a laptop that
moves between them, so by default (`auto`) the link decides:

- Once a new master has logged in, an exchange over it is timed (`true`, run by the server
  account's shell: two round trips, and the start of ssh here and of the shell there). When
  the fastest of up to `EXCHANGES` takes `SLOW` or more, the link is a slow one: over a LAN
  one takes 15-30 ms, over 30 ms of round trip at least 75. A busy computer makes a LAN's
  slower for a moment: one under `SLOW` ends it, and `CLEARLY` exchanges of twice `SLOW` end
  it the other way (two on `mobile`). A server account whose shell is slow
  to start (a `~/.bashrc` that runs `conda init`) looks like a slow link: such a home is
  better served by `yes` or `no`, and `roaming-homes check` shows what was measured.
- The master starts as the last measurement of this server said (`Remembered`, in the runtime
  directory, gone at reboot: compressed then, `starts_compressed`). When the new measurement
  says otherwise, that master is replaced at once, before anything uses it: one more login
  when the link changed. A login is a few round trips: 0.3 s over broadband, 0.8 s over
  mobile, a few milliseconds over a LAN; so with nothing to go by the master starts as a slow
  link wants it, and the replacement falls on the link where it costs least.
- When ssh's own settings already turn compression on (`-C` in `ssh_options`, `Compression
  yes` in an ssh configuration file: `ssh -G`), they stand and nothing is measured.

`yes` and `no` set it without measuring. Without a shared connection (`connection_reuse = 0`)
ssh's own settings decide. Only the master's setting counts: a client of the shared
connection carries its channels on the master's connection.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SLOW = 0.05  # seconds: an exchange over the master at least this long means a slow link
EXCHANGES = 5  # timed exchanges at most; the fastest counts (the first below SLOW ends it)
CLEARLY = 2  # exchanges of 2 x SLOW or more that end the measurement: a slow link


class Setting(enum.Enum):
    """`server.compression`."""

    AUTO = "auto"
    YES = "yes"
    NO = "no"


def option(compress: bool) -> list[str]:
    """ssh's option for it; after the administrator's options, which come first and win."""
    return ["-o", f"Compression={'yes' if compress else 'no'}"]


@dataclass(frozen=True)
class Measured:
    """What the link was found to be: whether to compress, and the fastest exchange's time
    (None: not measured)."""

    compress: bool
    seconds: float | None = None

    def text(self) -> str:
        """As `Remembered` keeps it: one line, `yes` or `no` and the seconds."""
        return f"{'yes' if self.compress else 'no'} {self.seconds or 0:.6f}\n"


NOT_MEASURED = Measured(compress=False)
_LINE = re.compile(r"(yes|no) ([0-9]{1,4}\.[0-9]{6})\n")


def parse(text: str) -> Measured:
    """A line `Measured.text` wrote; anything else is not a measurement."""
    match = _LINE.fullmatch(text)
    if match is None:
        return NOT_MEASURED
    return Measured(match.group(1) == "yes", float(match.group(2)))


def measure(run: Callable[[], object], exchanges: int = EXCHANGES) -> Measured:
    """Time `run` (an exchange over the master) up to `exchanges` times: the link is slow when
    the fastest takes `SLOW` or more. One under it is enough to say it is not (a busy moment
    only makes an exchange slower, never faster); `CLEARLY` exchanges of twice `SLOW` or more
    are enough to say it is (no busy moment is needed to explain them: the link's own round
    trips do)."""
    taken: list[float] = []
    for _ in range(exchanges):
        started = time.monotonic()
        run()
        taken.append(time.monotonic() - started)
        if min(taken) < SLOW or sum(t >= 2 * SLOW for t in taken) >= CLEARLY:
            break
    return Measured(min(taken) >= SLOW, min(taken))


def starts_compressed(last: Measured) -> bool:
    """How a new master starts under `auto`: as `last` measured; compressed when nothing was
    measured (see the module's docstring)."""
    return last.compress if last.seconds is not None else True


class Remembered:
    """The last measurement for one shared connection, in a file beside its socket (the
    runtime directory: private to the user, gone at reboot)."""

    def __init__(self, socket: Path) -> None:
        self.path = socket.with_name(f"compression-{socket.name}")

    def load(self) -> Measured:
        """The last measurement (`NOT_MEASURED`: none, or not one of ours)."""
        try:
            with self.path.open("rb") as file:
                return parse(file.read(64).decode("ascii", errors="replace"))
        except OSError:
            return NOT_MEASURED

    def save(self, measured: Measured) -> None:
        """Kept for the next master; not kept (a full disk): measured again then."""
        draft = self.path.with_name(f".{self.path.name}.draft")
        with contextlib.suppress(OSError):
            draft.write_text(measured.text())
            os.replace(draft, self.path)
