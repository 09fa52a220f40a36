"""The cost of a failover (issue 20): a pass when the first listed front-end is down and the
second serves, with and without the memory of the one that failed.

One sshd on 127.0.0.2 is the front-end that serves; the one that is down is 127.0.0.3 on the
same port (nothing listens there: connection refused, as a stopped sshd) or a black hole (a
veth pair into a namespace that drops every packet: as a front-end that crashed or was cut
off, `bench.blackhole`). The home holds 1 000 small files, unchanged; every pass finds the
shared ssh connection to the serving front-end open, as any pass after the first of a session.

- **baseline**: `server.host` names the serving front-end alone.
- **no memory**: the computer's memory of failed front-ends
  (`$XDG_RUNTIME_DIR/roaming-homes/frontends.json`) is removed before each pass, so each pass
  tries the dead front-end first (as the first pass after one went down).
- **remembered**: the memory is kept, so the pass starts with the front-end that worked (every
  pass within 5 minutes of the failure).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.support.homes import CLI, Setup
from tests.support.sshd import SshServer

from bench import trees
from bench.blackhole import BlackHole
from bench.measure import Row, repeat, timed

SERVING = "127.0.0.2"
REFUSING = "127.0.0.3"


@dataclasses.dataclass(frozen=True)
class Plan:
    runs: int
    files: int
    timeout: float  # connect_timeout: what a black hole costs

    @classmethod
    def full(cls) -> Plan:
        return cls(runs=9, files=1_000, timeout=3)

    @classmethod
    def quick(cls) -> Plan:
        return cls(runs=2, files=100, timeout=1)


class _Computer:
    def __init__(self, base: Path, sshd: SshServer, plan: Plan, pool: trees.Pool) -> None:
        self.setup = Setup(base, sshd)
        self.timeout = plan.timeout
        docs = self.setup.home / "Documents"
        trees.small_files(docs, plan.files, pool)
        trees.copy_tree(docs, self.setup.server_home / "Documents")
        self.through([SERVING])
        self.sync()  # the first sync: archives for identical sides

    def through(self, hosts: list[str]) -> None:
        self.setup.configure(server={"host": hosts, "connect_timeout": self.timeout})

    def sync(self) -> float:
        return timed([*CLI, "sync"], self.setup.env)

    def forgetting(self) -> float:
        (self.setup.runtime / "roaming-homes" / "frontends.json").unlink(missing_ok=True)
        return self.sync()

    def measure(self, runs: int, dead: str, what: str) -> list[Row]:
        self.through([SERVING])
        self.sync()
        base = repeat(runs, self.sync)[0]
        self.through([dead, SERVING])
        fresh, remembered = repeat(runs, self.forgetting, self.sync)
        baseline = "the serving front-end alone"
        return [Row("10", f"pass, first front-end {what}, second serves, no memory", "s",
                    fresh, base, baseline),
                Row("10", "… the same, the failed front-end remembered", "s", remembered,
                    base, baseline)]


def measure(base: Path, plan: Plan, pool: trees.Pool | None = None) -> list[Row]:
    """Rows 10: a failover's extra cost per pass, with and without the memory."""
    with SshServer(base / "frontends-sshd", listen=SERVING) as sshd:
        computer = _Computer(base / "frontends", sshd, plan, pool or trees.Pool())
        try:
            rows = computer.measure(plan.runs, REFUSING, "down (connection refused)")
            try:
                with BlackHole() as hole:
                    rows += computer.measure(
                        plan.runs, hole.address,
                        f"a black hole (connect_timeout {plan.timeout:g} s)")
            except OSError as exc:
                rows.append(Row("10", "pass, first front-end a black hole", "s",
                                note=f"not measured: {exc}"))
        finally:
            computer.setup.close()
    return rows


NOTES = """\
Failover (row 10): a pass over an unchanged home of 1 000 files when `server.host` lists a
front-end that is down before the one that serves (an sshd on 127.0.0.2), against the serving
one listed alone; the shared ssh connection to the serving one is open, as for any pass after
the first of a session. *Down* is a closed port (a stopped sshd) or a black hole (a crashed or
cut-off host). *No memory*: the computer's memory of failed front-ends is removed before each
pass (the first pass after a front-end went down); *remembered*: it is kept (every pass within
5 minutes of the failure), so the pass starts with the front-end that worked.
"""
