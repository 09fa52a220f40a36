"""Several computers live at once (issue 16): a write on computer A, until it is on every other.

Each computer is a real `roaming-homes daemon` in real-time mode (`sync.watch = true`), with a
HOME, state, runtime directory and config of its own, all of them on one server home over one
loopback sshd whose ssh user has our unison-fsmonitor on its PATH (`realtime.World`). A change
on A reaches B by two cycles: A's own monitor sees it and A's pass puts it on the server; B's
monitor on the server sees that and B's pass brings it home.

- Latency: one new small file at a time on A, written at a random moment, until its complete
  content is on every other computer (and, timed from the same writes, on the server: the first
  half of the way, for reference). Polled every 20 ms.
- Two and three computers are measured in alternating blocks of writes (C's daemon is started
  for a block of three and stopped after it), so that the machine's drift hits both alike.
- At the end every home holds the same files as the server.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
import uuid
from pathlib import Path

from tests.support.daemon import DaemonProcess
from tests.support.homes import Setup, tree

from bench.measure import Row
from bench.realtime import World, percentile

POLL = 0.02  # seconds between two looks at every target
TIMEOUT = 120  # seconds a write may take to reach every computer before the run fails


@dataclasses.dataclass(frozen=True)
class Plan:
    writes: int  # samples per number of computers
    block: int  # writes in a row with one number of computers, before switching
    spread: float  # a write comes 0.2 s to 0.2 + spread s after the previous one arrived
    counts: tuple[int, ...] = (2, 3)  # numbers of computers measured

    @classmethod
    def full(cls) -> Plan:
        return cls(writes=50, block=10, spread=1.0)

    @classmethod
    def quick(cls) -> Plan:
        return cls(writes=3, block=3, spread=0.3)

    def blocks(self) -> list[int]:
        """The number of computers of each block, in the order run: 2, 3, 2, 3 …"""
        return [count for _ in range(-(-self.writes // self.block)) for count in self.counts]


@dataclasses.dataclass
class Sample:
    server: float  # seconds from the write on A until the file was complete on the server
    others: dict[str, float]  # … until it was complete on each other computer

    @property
    def everywhere(self) -> float:
        return max(self.others.values())


def arrivals(targets: dict[str, Path], content: str, started: float,
             timeout: float = TIMEOUT) -> dict[str, float]:
    """Seconds after `started` at which each target first held exactly `content`."""
    found: dict[str, float] = {}
    while len(found) < len(targets):
        now = time.monotonic()
        for name, path in targets.items():
            if name not in found and _holds(path, content):
                found[name] = now - started
        if len(found) < len(targets):
            if now - started > timeout:
                missing = sorted(set(targets) - set(found))
                raise TimeoutError(f"after {timeout} s, not yet on {', '.join(missing)}")
            time.sleep(POLL)
    return found


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _holds(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except OSError:
        return False


class Computers:
    """Computers A, B, C … of one user on one server home, each with its own daemon."""

    def __init__(self, world: World, count: int) -> None:
        self.world = world
        self.setups: list[Setup] = []
        for i in range(count):
            name = chr(ord("a") + i)
            setup = world.user(f"computer-{name}")
            if self.setups:  # every computer syncs with A's server home
                setup.server_home.rmdir()
                setup.server_home = self.setups[0].server_home
            self.setups.append(setup)
        self.daemons: dict[int, DaemonProcess] = {}

    def name(self, index: int) -> str:
        return chr(ord("A") + index)

    def start(self, index: int) -> None:
        daemon = self.world.start(self.setups[index], watch=True, interval=3600,
                                  client={"name": f"computer-{self.name(index)}"})
        self.daemons[index] = daemon

    def stop(self, index: int) -> None:
        daemon = self.daemons.pop(index)
        self.world.stop(daemon)

    def write(self, number: int, others: int) -> Sample:
        """One new file on A; when it was complete on the server and on each of `others`."""
        a = self.setups[0]
        name = f"from-a-{number:03d}-{uuid.uuid4().hex[:8]}.txt"
        content = f"write {number} on computer A at {time.time():.6f}\n"
        targets = {"server": a.server_home / "Documents" / name}
        for index in range(1, 1 + others):
            targets[self.name(index)] = self.setups[index].home / "Documents" / name
        started = time.monotonic()
        (a.home / "Documents" / name).write_text(content)
        found = arrivals(targets, content, started)
        return Sample(found.pop("server"), found)

    def check_same(self) -> None:
        """Every computer's synced folder holds what the server's does (once all are idle)."""
        server = tree(self.setups[0].server_home / "Documents")
        for index, setup in enumerate(self.setups):
            mine = tree(setup.home / "Documents")
            if mine != server:
                differ = sorted(set(mine.items()) ^ set(server.items()))[:5]
                raise AssertionError(f"computer {self.name(index)} differs from the server: "
                                     f"{differ}")


def samples(world: World, plan: Plan) -> dict[int, list[Sample]]:
    """`plan.writes` samples for each number of computers, in alternating blocks."""
    most = max(plan.counts)
    computers = Computers(world, most)
    rng = random.Random(16)
    found: dict[int, list[Sample]] = {count: [] for count in plan.counts}
    for index in range(min(plan.counts)):
        computers.start(index)
    number = 0
    for count in plan.blocks():
        if len(found[count]) >= plan.writes:
            continue
        running = set(computers.daemons)
        for index in range(most):  # exactly `count` computers watch during this block
            if index < count and index not in running:
                computers.start(index)
            elif index >= count and index in running:
                computers.stop(index)
        block = []
        for _ in range(min(plan.block, plan.writes - len(found[count]))):
            time.sleep(rng.uniform(0.2, 0.2 + plan.spread))
            block.append(computers.write(number, count - 1))
            number += 1
        found[count] += block
        _log(f"{count} computers: on the server after "
             f"{' '.join(f'{s.server:.2f}' for s in block)} s; everywhere after "
             f"{' '.join(f'{s.everywhere:.2f}' for s in block)} s")
    for index in range(most):  # every computer catches up on what it missed while stopped
        if index not in computers.daemons:
            computers.start(index)
    time.sleep(2)  # the last cycles' echoes (each computer's monitors see its own pass) settle
    computers.check_same()
    for index in list(computers.daemons):
        computers.stop(index)
    return found


def rows(found: dict[int, list[Sample]]) -> list[Row]:
    table = []
    for count, taken in found.items():
        others = " and ".join(chr(ord("B") + i) for i in range(count - 1))
        what = (f"write on A → on {others}, {count} computers watching, "
                f"over {len(taken)} writes")
        everywhere = [s.everywhere for s in taken]
        server = [s.server for s in taken]
        each = ", ".join(
            f"{name} {percentile([s.others[name] for s in taken], 0.5):.3f} s"
            for name in sorted(taken[0].others)) if count > 2 else ""
        for share, name, limit in ((0.5, "p50", 3.0), (0.99, "p99", 6.0)):
            table.append(Row("9", f"{what}, {name}", "s", [percentile(everywhere, share)],
                             [percentile(server, share)], "A → server, the same writes",
                             limit=limit,
                             note=f"p50 each: {each}" if each and name == "p50" else ""))
    return table


def measure(base: Path, plan: Plan) -> list[Row]:
    world = World(base / "computers")
    try:
        return rows(samples(world, plan))
    finally:
        world.close()


NOTES = """\
Several computers (row 9): computers A, B (and C) of one user, each a `roaming-homes daemon`
in real-time mode with a HOME, state, runtime directory and config of its own, on one server
home over the loopback sshd (whose ssh user has our `unison-fsmonitor` on its PATH).
- **Latency**: one new small file at a time on A, written at a random moment, until its
  complete content is on every other computer (polled every 20 ms); the baseline is the same
  writes' arrival on the server (A's half of the way). Two and three computers alternate in
  blocks of writes (C's daemon starts before a block of three and stops after it); at the end
  every home must hold what the server holds.
"""
