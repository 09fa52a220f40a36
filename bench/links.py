"""`bench/run --links`: the passes of rows 1-4 and 7 over emulated links, and round trips.

Each link profile (`bench.link.PROFILES`) gets a real sshd behind an emulated link of its own
(`bench.link.Link`), validated first (ssh round trip and throughput through it), then:
- rows 1, 2, 3 exactly as over loopback (`bench.main.Bench`), through the link;
- row 4, offline: the link drops every packet, with no shared connection open yet, and while
  one is open (a laptop losing its network between two passes);
- row 7, real-time mode's propagation (`bench.realtime`), through the link;
- row 11, round trips: request/response turns counted by the link's relay for one pass;
- row 12 (full run): levers, each against the same run without it, interleaved;
- row 14, interrupted links: a first sync and a pass cut off mid-transfer, then the next pass.
Every row names its link. Everything it starts is stopped and removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.ledger import UNISON_TEMP, checksums
from tests.support.sshd import SshServer

from bench import main as loopback
from bench import realtime, trees
from bench.link import PROFILES, Link, Profile, Validation, validate
from bench.measure import Row, repeat, timed
from roaming_homes.session import unchanged

OFFLINE = loopback.OFFLINE


@dataclasses.dataclass(frozen=True)
class Plan:
    profiles: tuple[str, ...]
    passes: loopback.Plan  # rows 1-3 (mixed_bytes is the most a first sync may copy)
    first_seconds: float  # the first sync's tree: this many seconds of the profile's rate
    writes: int  # real-time propagation samples
    turn_runs: int
    validate_seconds: float
    levers: bool
    full_first_bytes: int = 0  # also a first sync of this size, ours against rsync (0: none)
    full_first_files: int = 0  # and one of this many small files, ours against rsync (0: none)
    full_cut_bytes: int = 0  # row 14 also at this size (0: only at `first_bytes`)
    text_first: bool = False  # row 3 also on a tree of text, which compression shrinks

    @classmethod
    def full(cls, profiles: tuple[str, ...]) -> Plan:
        passes = loopback.Plan(
            sizes=(10_000, 100_000), touched_home=100_000, mixed_bytes=256 << 20,
            pair_runs={10_000: 7, 100_000: 5}, touch_runs=5, first_runs=3, offline_runs=3,
            blackhole_timeout=3, start_runs=0, small_first=5_000,
            no_change_targets={10_000: 0.6, 100_000: 0.6})
        return cls(profiles, passes, first_seconds=6, writes=30, turn_runs=3,
                   validate_seconds=2, levers=True, full_first_bytes=1 << 30,
                   full_first_files=100_000, full_cut_bytes=1 << 30, text_first=True)

    @classmethod
    def quick(cls, profiles: tuple[str, ...]) -> Plan:
        passes = loopback.Plan(
            sizes=(200,), touched_home=200, mixed_bytes=2 << 20, pair_runs={200: 2},
            touch_runs=1, first_runs=1, offline_runs=1, blackhole_timeout=1, start_runs=0,
            small_first=100)
        return cls(profiles, passes, first_seconds=0.2, writes=3, turn_runs=1,
                   validate_seconds=0.3, levers=False)

    def first_bytes(self, profile: Profile) -> int:
        return min(self.passes.mixed_bytes,
                   int(profile.bytes_per_second * self.first_seconds))

    def full_first_runs(self, profile: Profile, size: int) -> int:
        """Runs of a full-size first sync of `size` bytes: three where one takes under half a
        minute, one where it takes minutes (1 GiB on `mobile`: about 15 minutes for each of
        ours and rsync)."""
        return 3 if size / profile.bytes_per_second < 30 else 1


def _turns(link: Link, run: Callable[[], object]) -> tuple[int, int]:
    """Request/response turns and bytes (both ways) the relay carried while `run` ran."""
    before = link.counters()
    run()
    after = link.counters()
    return after.turns - before.turns, after.up + after.down - before.up - before.down


def round_trips(bench: loopback.Bench, link: Link, runs: int) -> None:
    """Row 10: what a no-change pass costs in round trips (and bytes), against raw unison."""
    home, size = bench.homes[0], bench.plan.sizes[0]
    # After row 2's changed files: a pass with nothing to do, then (the trees settled) one
    # that records the digests, as passes a minute apart find a home nobody touched.
    home.sync()
    time.sleep(unchanged.SETTLE_NS / 1e9 + 1.5)
    home.sync()
    control = next((home.setup.runtime / "roaming-homes").glob("ssh-*"))
    one_command = ["ssh", *link.front.ssh_options(), "-o", f"ControlPath={control}",
                   "-p", str(link.front.port), f"{link.front.user}@127.0.0.1", "true"]
    files = sorted(home.docs.rglob("*.txt"))

    def moving(run: Callable[[], float]) -> Callable[[], float]:
        def touched_run() -> float:
            trees.touch(bench.pool.rng.sample(files, 10), bench.pool)
            return run()
        return touched_run

    measured = {name: [_turns(link, run) for _ in range(runs)] for name, run in (
        ("ours", home.sync), ("alone", home.over_shared_connection), ("raw", home.raw),
        ("one", lambda: timed(one_command, home.setup.env)),
        ("ours moving", moving(home.sync)), ("raw moving", moving(home.raw)))}

    def turns(name: str) -> list[float]:
        return [float(count) for count, _ in measured[name]]

    def kib(name: str) -> str:
        return f"{statistics.median(b for _, b in measured[name]) / 1024:.0f} KiB carried"

    what = f"round trips of a no-change pass, {loopback._n(size)} files"
    raw = "raw unison (its own ssh login)"
    bench.add(Row("11", what, "turns", turns("ours"), turns("raw"), raw, note=kib("ours")))
    bench.add(Row("11", f"… unison alone over our shared connection, {loopback._n(size)} "
                  "files", "turns", turns("alone"), turns("raw"), raw, note=kib("alone")))
    bench.add(Row("11", "… one `ssh … true` over our shared connection", "turns",
                  turns("one"), note=kib("one")))
    bench.add(Row("11", f"round trips of a pass that moves 10 files of {loopback._n(size)}",
                  "turns", turns("ours moving"), turns("raw moving"), raw,
                  note=kib("ours moving")))


def offline(bench: loopback.Bench, link: Link, runs: int) -> None:
    """Row 4 over the link: it drops every packet, before a pass and during an open session.

    `connect_timeout` is the plan's `blackhole_timeout`, as in row 4 over loopback."""
    timeout = bench.plan.blackhole_timeout
    home = bench.home("offline")
    home.docs.mkdir()
    home.setup.configure(server={"connect_timeout": timeout})
    home.sync()  # a first sync: later passes are normal ones

    def fresh() -> float:
        home.close_connection()
        with link.cut():
            return home.sync(expect=(OFFLINE,))

    def while_open() -> float:
        home.sync()  # the shared connection is open, as after any pass
        with link.cut():
            return home.sync(expect=(OFFLINE,))

    cut, cut_open = repeat(runs, fresh, while_open)
    bench.add(Row("4", f"offline exit 75, link drops every packet (connect_timeout {timeout:g} "
                  "s)", "s", cut, [timeout], "connect_timeout", 1.1))
    # ssh's keep-alives (ServerAliveInterval = connect_timeout, 3 unanswered) end a dead session
    bench.add(Row("4", "offline exit 75, link drops every packet while the shared connection "
                  "is open", "s", cut_open, [4 * timeout], "connect_timeout x 4 (keep-alives)",
                  1.1))


def _tree(root: Path) -> dict[str, str]:
    """Every file below `root` by its content's digest (unison's temporary files left out)."""
    return {path: sha for path, sha in checksums(root).items()
            if not os.path.basename(path).startswith(UNISON_TEMP)}


def _carried(link: Link, down: bool) -> int:
    """Bytes the link carried so far to the client (`down`), or to the server."""
    counters = link.counters()
    return counters.down if down else counters.up


def _cut_mid_pass(home: loopback.Home, link: Link, size: int, *args: str,
                  down: bool = False) -> tuple[float, int, int]:
    """A pass that sends (`down`: fetches) about `size` bytes, cut (every packet dropped) once
    40 % of them went through; returns the seconds from the cut until the pass ended, its exit
    code, and the bytes it moved that way."""
    before = _carried(link, down)
    proc = subprocess.Popen([*loopback.CLI, "sync", *args], env=home.setup.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _carried(link, down) - before < 0.4 * size:
            if proc.poll() is not None:
                raise RuntimeError(f"the pass ended before the cut (exit {proc.returncode})")
            time.sleep(0.02)
        with link.cut():
            cut = time.monotonic()
            code = proc.wait(timeout=600)
            ended = time.monotonic() - cut
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ended, code, _carried(link, down) - before


def _until_in_sync(home: loopback.Home) -> tuple[float, int]:
    """Passes until one ends in sync (at most three): right after a cut, the server's side of
    the cut pass may still hold its temporary files until sshd notices the dead connection,
    and the next pass then fails those items (exit 2), as a daemon's next pass would retry."""
    took = 0.0
    for count in range(1, 4):
        started = time.monotonic()
        code = subprocess.run([*loopback.CLI, "sync"], env=home.setup.env, check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        took += time.monotonic() - started
        if code == 0:
            return took, count
        if code != 2:
            raise RuntimeError(f"a pass after the cut exited {code}")
    raise RuntimeError("three passes after the cut did not bring the server home in sync")


def interrupted(bench: loopback.Bench, link: Link, profile: Profile, size: int) -> None:
    """Row 14: a first sync up (a new server home), a pass that rewrote half of the tree, and a
    first sync down (a new laptop), each cut off mid-transfer; how soon the pass ends, that
    nothing is lost, and how much the next pass moves again."""
    timeout = bench.plan.blackhole_timeout
    home = bench.home(f"interrupted-{size}")
    files, size = trees.mixed_tree(home.docs, size, bench.pool)
    # Rewriting half of the bytes may overwrite more than half of the files: that is the
    # measurement, not ransomware (the loss guard is measured elsewhere).
    home.setup.configure(server={"connect_timeout": timeout}, sync={"max_change": 100})
    server = home.setup.server_home / "Documents"
    server.mkdir(parents=True, exist_ok=True)
    mib = size / (1 << 20)
    laptop = bench.home(f"interrupted-laptop-{size}")
    laptop.setup.configure(server={"connect_timeout": timeout})
    laptop_server = laptop.setup.server_home / "Documents"

    def rewrite_half() -> int:
        written = 0
        for path in sorted(home.docs.rglob("*.bin"), key=lambda p: -p.stat().st_size):
            if written >= size / 2:
                break
            length = path.stat().st_size
            with path.open("wb") as out:  # new bytes: unison's rsync finds nothing to reuse
                for offset in range(0, length, 1 << 20):
                    out.write(os.urandom(min(1 << 20, length - offset)))
            written += length
        return written

    def new_laptop() -> int:
        laptop_server.mkdir(parents=True, exist_ok=True)
        trees.copy_tree(home.docs, laptop_server)
        return size

    for what, user, source, target, prepare, down in (
            ("first sync", home, home.docs, server, lambda: size, False),
            ("pass after half the tree was rewritten", home, home.docs, server, rewrite_half,
             False),
            ("first sync of a new laptop", laptop, laptop_server, laptop.docs, new_laptop,
             True)):
        _log(f"{profile.name}: {what}, cut mid-transfer")
        sending = prepare()
        here = _tree(source)
        ended, code, sent = _cut_mid_pass(user, link, sending, *(
            ("--first-run",) if what.startswith("first") else ()), down=down)
        assert _tree(source) == here, "the cut pass changed the side it copied from"
        before = _carried(link, down)
        resumed, passes = _until_in_sync(user)
        again = _carried(link, down) - before + sent - sending
        assert _tree(target) == here, "the next passes did not bring both sides in sync"
        label = f"{what}, {mib:.0f} MiB in {loopback._n(files)} files ({profile.name})"
        bench.add(Row("14", f"cut mid-transfer: {label}, until the pass ends", "s", [ended],
                      [4 * timeout], f"connect_timeout {timeout:g} s x 4 (keep-alives)", 1.1,
                      note=f"exit {code}; nothing lost"))
        moved = "fetched" if down else "sent"
        bench.add(Row("14", f"… the next pass: {moved} again of {sending / (1 << 20):.0f} MiB",
                      "MiB", [max(again, 0) / (1 << 20)], [sending / (1 << 20)],
                      f"what the cut pass had to {'fetch' if down else 'send'}",
                      note=f"{passes} pass(es) after it, {resumed:.1f} s"))


def levers(bench: loopback.Bench, link: Link, runs: int) -> None:
    """Row 11: raw unison's first sync of the mixed tree with one lever, against without."""
    home = next(home for home in bench.homes if home.setup.base.name == "mixed")
    target = home.setup.server_home / "Documents"
    ssh = ["ssh", *link.front.ssh_options(), "-o", "BatchMode=yes"]
    options = {
        "ssh compression (`-C`)": ["-sshargs", shlex.join([*ssh[1:], "-C"])],
        "cipher aes128-gcm": ["-sshargs", shlex.join([*ssh[1:], "-c",
                                                      "aes128-gcm@openssh.com"])],
        "`maxthreads = 64`": ["-maxthreads", "64"],
        "`copyprog` rsync for files > 1 MiB": [
            "-copythreshold", "1024", "-copyprog",
            f"rsync --inplace -e '{shlex.join([*ssh, '-p', str(link.front.port)])}'"],
    }

    def first(extra: list[str]) -> Callable[[], float]:
        def run() -> float:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for archive in home.setup.unison_dir.glob("[af][rp]*"):
                archive.unlink()
            return timed([*home.raw_argv(first_run=True), *extra], home.unison_env)
        return run

    for name, extra in options.items():
        what = f"lever: {name}, raw unison's first sync of the mixed tree"
        try:
            with_it, without = repeat(runs, first(extra), first([]))
        except RuntimeError as exc:  # a lever that does not work here is a finding too
            bench.add(Row("12", what, "s", note=f"failed: {str(exc).splitlines()[0]}"))
            continue
        bench.add(Row("12", what, "s", with_it, without, "the same without it"))


def measure_profile(base: Path, profile: Profile, plan: Plan,
                    pool: trees.Pool) -> tuple[Validation, list[Row]]:
    links: list[Link] = []

    def serve(workdir: Path, env: dict[str, str]) -> SshServer:
        link = Link(workdir, profile, env)
        links.append(link)
        return link.__enter__().front

    _log(f"{profile.label}: the link")
    world = realtime.World(base / "rt", serve)
    try:
        link = links[0]
        validation = validate(link, plan.validate_seconds)
        _log(validation.describe(profile))
        passes = dataclasses.replace(plan.passes, mixed_bytes=plan.first_bytes(profile))
        bench = loopback.Bench(base, passes, world.sshd, label=profile.name, pool=pool)
        try:
            bench.small_homes()
            round_trips(bench, link, plan.turn_runs)
            bench.first_sync()
            if plan.full_first_bytes:
                bench.full_size_first_sync(plan.full_first_bytes, plan.full_first_runs(
                    profile, plan.full_first_bytes))
            if plan.full_first_files:
                bench.full_count_first_sync(plan.full_first_files, plan.full_first_runs(
                    profile, plan.full_first_files * trees.SMALL_MEAN))
            if plan.text_first:
                bench.text_first_sync(plan.passes.first_runs)
            offline(bench, link, plan.passes.offline_runs)
            # at least a second's worth on the quick run's link: the cut must come mid-pass
            interrupted(bench, link, profile, max(plan.first_bytes(profile), 8 << 20))
            if plan.full_cut_bytes:  # the size the issue names: what a cut costs at 1 GiB
                interrupted(bench, link, profile, plan.full_cut_bytes)
            if plan.levers:
                levers(bench, link, plan.passes.first_runs)
        finally:
            bench.close()
        bench.rows += propagation(world, profile, plan.writes)
        return validation, bench.rows
    finally:
        world.close()
        for link in links:
            link.close()


def propagation(world: realtime.World, profile: Profile, writes: int) -> list[Row]:
    """Row 7 over the link: watch mode, a local write until it is on the server."""
    _log(f"{profile.name}: real-time propagation, {writes} writes")
    user = world.user("latency")
    realtime.edited_files(user)
    daemon = world.start(user, watch=True, interval=3600)
    found = realtime.latencies(world, user, writes, 1.0)
    edits = realtime.latencies(world, user, writes, 1.0, edits=True)
    world.stop(daemon)
    what = f"{profile.name}: local write → file on the server, over {writes} writes, watch mode"
    budget = 0.5 + 4 * profile.rtt_ms / 1000
    edited = f"{profile.name}: … an edit of a synced file, over {writes} edits"
    return [Row("7", f"{what}, p50", "s", [realtime.percentile(found, 0.5)], limit=budget),
            Row("7", f"{what}, p99", "s", [realtime.percentile(found, 0.99)]),
            Row("7", f"{edited}, p50", "s", [realtime.percentile(edits, 0.5)], limit=budget),
            Row("7", f"{edited}, p99", "s", [realtime.percentile(edits, 0.99)])]


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def measure(base: Path, plan: Plan) -> tuple[list[str], list[Row]]:
    """Every profile of `plan`, one after the other: the validations and the rows."""
    pool = trees.Pool()
    validations, rows = [], []
    for name in plan.profiles:
        profile = PROFILES[name]
        validation, found = measure_profile(base / name, profile, plan, pool)
        validations.append(validation.describe(profile))
        rows += found
    return validations, rows


NOTES = """\
Emulated links: the sshd runs in a network namespace of its own behind a veth pair whose two
ends are each capped at the profile's rate by `tc … tbf` (this kernel has no `netem`); the
latency is added by a user-space TCP relay on loopback in front of it, which holds every chunk
for half the round trip in each direction (a timestamped queue per direction: order and
throughput kept). Rates are the same both ways. The validation lines above are measured through
ssh over each link before its rows: an echo's round trip through `ssh … cat`, and random data
through one ssh session each way (less a session's own setup).
- Rows 1-3 are measured as over loopback (see above), through the link, at 10 000 and 100 000
  files (10 changed: in 100 000). The first sync is measured twice: on a mixed tree scaled to
  about 6 s of the link's rate (at most 256 MiB; against raw unison and the lever too, three
  runs each), and at the target's own sizes, 1 GiB and 100 000 small files, against `rsync -a`
  alone (three runs where one takes under half a minute, else one: 1 GiB takes about 3 minutes
  on `broadband` and 15 on `mobile`). The scaled tree shows the fixed cost of a first sync
  (about twenty round trips of unison's, and our two listings of the server); the full size
  shows what it weighs where the target is set.
- **Text** (row 3): a first sync of five copies of the Python sources of this Python's
  standard library (its tests and installed packages left out: about 55 MB of text in 3 200
  files, which compresses 4:1), ours against `rsync -a` (which does not compress unless
  asked). The generated trees are random bytes; this row is where the shared connection's
  compression (`server.compression = "auto"`: on when an exchange over it takes 50 ms or
  more) shows, either way: on where the link is slow, off where compressing would be the
  bottleneck.
- **Round trips** (row 11): the relay counts a request/response turn each time data from the
  server follows data from the client on a connection; a pass's count is the difference over
  the run (an ssh keep-alive in that window would add one).
- **Offline** (row 4): the namespace drops every packet (nftables) before the pass starts,
  either with no shared connection open (ssh's ConnectTimeout decides) or with one open from
  the pass before (ssh's keep-alives decide: `ServerAliveInterval = connect_timeout`,
  `ServerAliveCountMax = 3`).
- **Levers** (row 12): raw unison's first sync of the mixed tree into an empty server home,
  with the lever on the command line, against the same run without it, interleaved.
- **Interrupted** (row 14): `roaming-homes sync` runs in the background (a first sync of the
  mixed tree into an empty server home; then a pass after half the tree's bytes were
  rewritten; then a new laptop's first sync of the same tree from its server home); once 40 %
  of what it moves went through the relay, the namespace drops every packet until the pass has
  ended (the time from the cut). The side it copies from must be as it was; the link comes
  back and the next passes (at most three: right after a cut the server's side of the cut pass
  may still hold its temporary files, and the next pass fails those items, exit 2) must leave
  the other side identical to it. *Sent (fetched) again*: what the relay carried that way in
  all of them less what there was to move (less than nothing counts as 0). Going up, the
  server's rsync of the cut copy is still waiting on its dead connection when the next pass
  starts, so the file it was receiving is sent again whole; coming down, the laptop's rsync
  keeps its part and the next copy fetches only the rest.
"""
