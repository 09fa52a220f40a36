"""`bench/run [--quick] [--output FILE]`: measure a sync against raw unison and rsync.

Builds everything in a temporary directory (an sshd on loopback from the test fixtures,
generated homes), prints one markdown table and writes it (with the machine's description)
to docs/performance.md; removes everything and stops every server it started at the end.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.homes import CLI, Setup
from tests.support.sshd import SshServer, free_port

from bench import computers, fleet, frontends, link, realtime, storm, trees
from bench.blackhole import BlackHole
from bench.measure import Row, import_cost_us, machine, peak_rss, render, repeat, timed
from roaming_homes import config as config_mod
from roaming_homes.actions import sync as engine
from roaming_homes.paths import Locations
from roaming_homes.session import unchanged
from roaming_homes.unison import profile
from roaming_homes.unison import ssh as transport

ROOT = Path(__file__).resolve().parents[1]
RAW_PROFILE = "rh-raw"
OFFLINE = 75


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or the CI smoke test."""

    sizes: tuple[int, ...]
    touched_home: int
    mixed_bytes: int
    pair_runs: dict[int, int]
    touch_runs: int
    first_runs: int
    offline_runs: int
    blackhole_timeout: float
    start_runs: int
    small_first: int = 0  # files in the first sync of small files (row 3); 0: not measured
    # the most a no-change pass may take, as a share of raw unison's, by number of files
    no_change_targets: dict[int, float] = dataclasses.field(
        default_factory=lambda: {10_000: 0.8, 100_000: 1.0})

    @classmethod
    def full(cls) -> Plan:
        return cls(sizes=(1_000, 10_000, 100_000), touched_home=100_000, mixed_bytes=1 << 30,
                   pair_runs={1_000: 9, 10_000: 11, 100_000: 11}, touch_runs=5, first_runs=3,
                   offline_runs=5, blackhole_timeout=3, start_runs=20, small_first=100_000)

    @classmethod
    def quick(cls) -> Plan:
        return cls(sizes=(1_000,), touched_home=1_000, mixed_bytes=16 << 20,
                   pair_runs={1_000: 3}, touch_runs=2, first_runs=1, offline_runs=2,
                   blackhole_timeout=1, start_runs=5)


def _n(count: int) -> str:
    return f"{count:,}".replace(",", " ")


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class Home:
    """One generated user over the benchmark's sshd, plus the raw unison run of its profile."""

    def __init__(self, base: Path, sshd: SshServer) -> None:
        self.setup = Setup(base, sshd)
        self.docs = self.setup.home / "Documents"

    def sync(self, *args: str, expect: tuple[int, ...] = (0,), timeout: float = 600) -> float:
        return timed([*CLI, "sync", *args], self.setup.env, expect, timeout)

    def write_raw_profile(self) -> None:
        """Our profile as roaming-homes writes it, but with connection sharing off.

        Same roots, paths, ignores and ssh options; no ControlPath, so every run of it pays its
        own ssh handshake, as the original scripts' `unison` did.
        """
        locations = Locations.from_env(self.setup.env)
        cfg = config_mod.load(locations, self.setup.config_path)
        server = dataclasses.replace(transport.Server.from_config(cfg["server"]),
                                     connection_reuse=0)
        paths, _ = engine.sync_paths(cfg, locations)
        plan = engine.build_plan(cfg, locations, server, None, paths)
        self.setup.unison_dir.mkdir(parents=True, exist_ok=True)
        (self.setup.unison_dir / f"{RAW_PROFILE}.prf").write_text(profile.build_profile(plan))

    def raw_argv(self, first_run: bool = False) -> list[str]:
        """unison on its own (-batch: no plan read, no guard), on the raw profile."""
        argv = profile.build_argv("unison", first_run, guarded=False)
        return [argv[0], RAW_PROFILE, "-batch", *argv[2:]]

    def raw(self, first_run: bool = False) -> float:
        return timed(self.raw_argv(first_run), self.unison_env)

    def over_shared_connection(self) -> float:
        """unison alone on the profile roaming-homes wrote, through its open ssh connection."""
        return timed([*profile.build_argv("unison", False, guarded=False), "-batch"],
                     self.unison_env)

    @property
    def unison_env(self) -> dict[str, str]:
        return {**self.setup.env, "UNISON": str(self.setup.unison_dir)}

    def close_connection(self) -> None:
        """Close the shared ssh connection (Setup.close removes the runtime dir; recreate it)."""
        self.setup.close()
        self.setup.runtime.mkdir(mode=0o700)

    def close(self) -> None:
        self.setup.close()


class Bench:
    """The measurements of rows 1-6, over an sshd of its own on loopback, or over `sshd` (an
    emulated link: then every row's measurement starts with `label`, the link's name)."""

    def __init__(self, base: Path, plan: Plan, sshd: SshServer | None = None,
                 label: str = "", pool: trees.Pool | None = None) -> None:
        self.base = base
        self.plan = plan
        self.pool = pool or trees.Pool()
        self.rows: list[Row] = []
        self.homes: list[Home] = []
        self.label = label
        self.sshd = sshd or SshServer(base / "sshd").start()

    def add(self, row: Row) -> None:
        if self.label:
            row = dataclasses.replace(row, what=f"{self.label}: {row.what}")
        self.rows.append(row)
        _log("  " + render([row]).splitlines()[-1])

    def home(self, name: str) -> Home:
        home = Home(self.base / name, self.sshd)
        self.homes.append(home)
        return home

    def close(self) -> None:
        for home in self.homes:
            home.close()
        self.sshd.stop()

    # --- 1, 2, 6: passes over homes of small files ------------------------------------------

    def small_homes(self) -> None:
        for size in self.plan.sizes:
            home = self.home(f"home-{size}")
            _log(f"building a home of {_n(size)} files")
            paths = trees.small_files(home.docs, size, self.pool)
            trees.copy_tree(home.docs, home.setup.server_home / "Documents")
            home.sync()  # first sync: archives for identical sides
            home.write_raw_profile()
            home.sync()  # opens the shared connection, as any earlier pass of the day did
            # Passes a minute apart find a home still since the last one: the pass before the
            # runs, on trees that were just written, has nothing to do once they are settled
            # (session.unchanged.SETTLE_NS, whole seconds on the server) and records them.
            time.sleep(unchanged.SETTLE_NS / 1e9 + 1.5)
            home.sync()
            runs = self.plan.pair_runs[size]
            _log(f"no-change passes over {_n(size)} files, {runs}x each")
            ours, alone, raw = repeat(runs, home.sync, home.over_shared_connection, home.raw)
            self.add(Row("1", f"no-change pass, {_n(size)} files", "s", ours, raw,
                         "raw unison", self.plan.no_change_targets.get(size)))
            self.add(Row("1", f"… unison alone over our shared connection, {_n(size)} files",
                         "s", alone, raw, "raw unison"))
            if size == self.plan.touched_home:
                self._touched(home, paths)
                self._memory(home, size)

    def _touched(self, home: Home, paths: list[Path]) -> None:
        rng = self.pool.rng
        size = len(paths)

        def after_touch(run: Callable[[], float]) -> Callable[[], float]:
            def touched_run() -> float:
                trees.touch(rng.sample(paths, 10), self.pool)
                return run()
            return touched_run

        _log(f"passes after touching 10 of {_n(size)} files, {self.plan.touch_runs}x each")
        ours, raw = repeat(self.plan.touch_runs, after_touch(home.sync), after_touch(home.raw))
        self.add(Row("2", f"10 files changed in {_n(size)}", "s", ours, raw,
                             "raw unison"))

    def _memory(self, home: Home, size: int) -> None:
        _log(f"peak memory of a no-change pass over {_n(size)} files")
        # A pass that runs unison (one that skips it has no unison client to measure).
        home.setup.configure(sync={**home.setup.config["sync"], "skip_unchanged": "never"})
        try:
            ours = peak_rss([*CLI, "sync"], home.setup.env)
        finally:
            home.setup.configure(sync={key: value for key, value in
                                       home.setup.config["sync"].items()
                                       if key != "skip_unchanged"})
        raw = peak_rss(home.raw_argv(), home.unison_env)
        self.add(Row("6", f"peak RSS, wrapper (Python), {_n(size)} files", "MiB",
                             [ours["main"]]))
        self.add(Row("6", f"peak RSS, unison client, {_n(size)} files", "MiB",
                             [ours.get("unison", 0.0)], [raw["main"]],
                             "raw unison"))

    # --- 3: first sync of a mixed tree against rsync ----------------------------------------

    def first_sync(self) -> None:
        home = self.home("mixed")
        files, size = trees.mixed_tree(home.docs, self.plan.mixed_bytes, self.pool)
        label = f"{size / (1 << 20):.0f} MiB" if size < 1 << 30 else f"{size / (1 << 30):.1f} GiB"
        self._first_sync(home, f"{label} in {_n(files)} files")
        if self.plan.small_first:
            home = self.home("small-first")
            trees.small_files(home.docs, self.plan.small_first, self.pool)
            self._first_sync(home, f"{_n(self.plan.small_first)} small files")

    def full_size_first_sync(self, size: int, runs: int) -> None:
        """Row 3 at the size the target names (1 GiB), ours against `rsync -a` only: over a
        slow link one such run takes minutes, and raw unison's and the lever's would double it."""
        home = self.home("full-size")
        files, size = trees.mixed_tree(home.docs, size, self.pool)
        # 1 GiB at 10 Mbit/s is about 15 minutes a run: far beyond the usual bound of a run
        self._first_sync(home, f"{size / (1 << 30):.1f} GiB in {_n(files)} files", runs,
                         levers=False, timeout=4 * 3600)

    def text_first_sync(self, runs: int) -> None:
        """Row 3 on text, ours against `rsync -a` only: five copies of the Python sources of
        this Python's standard library (`trees.python_sources`: about 55 MB in 3 200 files,
        its tests left out). The generated trees do not compress; this one does, which is
        what the shared connection's compression (`server.compression`) is for."""
        home = self.home("text")
        files, size = trees.python_sources(home.docs, copies=5)
        self._first_sync(home, f"text, {size / (1 << 20):.0f} MiB in {_n(files)} files of "
                         "Python's library", runs, levers=False)

    def full_count_first_sync(self, count: int, runs: int) -> None:
        """Row 3 with as many small files as the target names (100 000), ours against `rsync
        -a` only, as `full_size_first_sync`."""
        home = self.home("full-count")
        trees.small_files(home.docs, count, self.pool)
        self._first_sync(home, f"{_n(count)} small files", runs, levers=False,
                         timeout=4 * 3600)

    def _first_sync(self, home: Home, what: str, runs: int = 0, levers: bool = True,
                    timeout: float = 600) -> None:
        """Row 3: `sync --first-run` into an empty server home, against raw unison's, `rsync
        -a`'s, and the lever of a bulk copy that unison then builds its archives on (`levers`:
        the last two; `runs`: each this many times, else the plan's)."""
        target = home.setup.server_home / "Documents"
        server = transport.Server.from_config(
            config_mod.load(Locations.from_env(home.setup.env), home.setup.config_path)["server"])
        ssh = " ".join(["ssh", *transport.ssh_options(server, None), "-p", str(server.port)])
        rsync = ["rsync", "-a", "-e", ssh, f"{home.docs}/",
                 f"{server.user}@{server.host}:{target}/"]

        def fresh() -> None:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for archive in home.setup.unison_dir.glob("[af][rp]*"):
                archive.unlink()
            home.close_connection()

        def ours() -> float:
            fresh()
            return home.sync("--first-run", timeout=timeout)

        def raw_unison() -> float:
            fresh()
            return home.raw(first_run=True)

        def theirs() -> float:
            fresh()
            return timed(rsync, home.setup.env, timeout=timeout)

        def bulk_then_unison() -> float:
            fresh()
            return timed(rsync, home.setup.env) + home.raw(first_run=True)

        runs = runs or self.plan.first_runs
        _log(f"first sync of {what}, {runs}x each")
        home.write_raw_profile()
        what = f"first sync, {what}"
        rsync_label = "`rsync -a` over the same ssh"
        if not levers:
            mine, base = repeat(runs, ours, theirs)
            self.add(Row("3", f"{what} (`--first-run`)", "s", mine, base, rsync_label, 1.1))
            return
        mine, alone, bulk, base = repeat(runs, ours, raw_unison, bulk_then_unison, theirs)
        self.add(Row("3", f"{what} (`--first-run`)", "s", mine, base, rsync_label, 1.1))
        self.add(Row("3", f"… raw unison `-ignorearchives`, {what}", "s", alone, base,
                     rsync_label))
        self.add(Row("3", f"… lever: `rsync -a`, then raw unison `-ignorearchives` on the copy "
                     f"(builds its archives), {what}", "s", bulk, base, rsync_label))

    # --- 4: offline --------------------------------------------------------------------------

    def offline(self) -> None:
        home = self.home("offline")
        (home.docs).mkdir()
        timeout = self.plan.blackhole_timeout
        home.setup.configure(server={"port": free_port(), "connect_timeout": timeout})
        _log("offline: closed port")
        closed = repeat(self.plan.offline_runs, lambda: home.sync(expect=(OFFLINE,)))[0]
        self.add(Row("4", f"offline exit 75, closed port (connect_timeout {timeout:g} s)",
                             "s", closed, [timeout], "connect_timeout", 1.1))
        _log("offline: black hole")
        try:
            with BlackHole() as hole:
                home.setup.configure(server={"host": hole.address, "port": 22,
                                             "connect_timeout": timeout})
                dropped = repeat(self.plan.offline_runs,
                                 lambda: home.sync(expect=(OFFLINE,)))[0]
            self.add(Row("4", f"offline exit 75, black hole (connect_timeout "
                                 f"{timeout:g} s)", "s", dropped, [timeout], "connect_timeout",
                                 1.1))
        except (OSError, subprocess.CalledProcessError) as exc:
            self.add(Row("4", "offline exit 75, black hole", "s",
                                 note=f"not measured: {exc}"))

    # --- 5: start-up -------------------------------------------------------------------------

    def start_up(self) -> None:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src"), "LANG": "C.UTF-8"}
        _log(f"CLI start, {self.plan.start_runs}x")
        script = Path(sys.executable).parent / "roaming-homes"
        version = [str(script)] if script.exists() else CLI
        ours, bare = repeat(self.plan.start_runs, lambda: timed([*version, "--version"], env),
                            lambda: timed([sys.executable, "-c", "pass"], env))
        self.add(Row("5", "CLI start, `roaming-homes --version`", "ms",
                             [t * 1000 for t in ours], [t * 1000 for t in bare],
                             "`python -c pass`", limit=100))
        costs = []
        for _ in range(self.plan.start_runs // 2 or 1):
            result = subprocess.run([sys.executable, "-X", "importtime", "-c",
                                     "import roaming_homes.cli, roaming_homes.actions.sync"],
                                    env=env, capture_output=True, text=True, check=True)
            costs.append(import_cost_us(result.stderr, "roaming_homes") / 1000)
        self.add(Row("5", "imports of the sync path (cli + engine and all they pull in)",
                             "ms", costs))


def header(info: dict[str, str], plan_name: str, command: str = "bench/run") -> str:
    return (f"Measured {info['date']} by `{command}{' --quick' if plan_name == 'quick' else ''}`"
            f" on {info['cores']} cores, Linux {info['kernel']}, Python {info['python']}, "
            f"{info['unison']}.\n")


BASELINES = """\
Baselines, all in the same run on the same machine, interleaved with our runs:
- **raw unison**: `unison rh-raw -batch -color false -dumbtty` with `UNISON` set to the same
  directory (same archives) and the profile roaming-homes writes, with connection sharing off
  (same roots, paths, ignores and ssh options, but no `ControlPath`): every run pays its own ssh
  handshake, as the original scripts' `unison` did. roaming-homes runs as `python -m
  roaming_homes sync` after an earlier pass left its shared ssh connection open (as any pass
  after the first of a session finds it).
- **rsync**: `rsync -a -e "ssh <the same ssh options>"` into an empty directory; roaming-homes
  does `sync --first-run` into an empty server home with no archives and no open connection.
- **connect_timeout**: the configured value; the black hole is a veth pair into a network
  namespace that drops every packet.
- **`python -c pass`**: the interpreter's own start, for scale.
- Cells: median (min-max, n runs). Ratio: median over median.
"""


def only(rows_of: Callable[[Path], list[Row]], quick: bool) -> int:
    """Some rows alone (for a change that touches only what they measure): the table to paste."""
    base = Path(tempfile.mkdtemp(prefix="rhbench-"))
    try:
        info = machine(base)
        rows = rows_of(base)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    print(header(info, "quick" if quick else "full"))
    print(render(rows), end="")
    return 0 if all(row.met is not False for row in rows) else 1


def realtime_rows(base: Path, quick: bool, pool: trees.Pool) -> list[Row]:
    """Rows 7, 8 (one computer in real-time mode) and 9 (two and three at once)."""
    return [*realtime.measure(base, realtime.Plan.quick() if quick else realtime.Plan.full(),
                              pool),
            *computers.measure(base, computers.Plan.quick() if quick
                               else computers.Plan.full())]


def bench_rows(base: Path, quick: bool, measure: Callable[[Bench], None]) -> list[Row]:
    """Some of rows 1-6 alone, as `measure` takes them (`Bench.small_homes`: rows 1, 2 and 6;
    `Bench.first_sync`: row 3)."""
    bench = Bench(base, Plan.quick() if quick else Plan.full())
    try:
        measure(bench)
    finally:
        bench.close()
    return bench.rows


LINKS_HEADING = "## Over emulated links"


def links_section(output: Path, quick: bool, profiles: tuple[str, ...]) -> int:
    """Measure over emulated links; write the section of `output` that holds them (replacing
    the one there, keeping the loopback table above it)."""
    # Imported here: bench.links builds on this module's Bench.
    from bench import links

    plan = links.Plan.quick(profiles) if quick else links.Plan.full(profiles)
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rhbench-"))
    try:
        info = machine(base)
        load = os.getloadavg()
        validations, rows = links.measure(base, plan)
        load_after = os.getloadavg()
    finally:
        _log("removing the generated homes")
        subprocess.run(["rm", "-rf", str(base)], check=False)
    table = render(rows)
    measured = header(info, "quick" if quick else "full", "bench/run --links")
    section = (f"{LINKS_HEADING}\n\n{measured}"
               f"Load average (1, 5, 15 min) at the start {_loads(load)}, at the end "
               f"{_loads(load_after)}.\n\nThe links, as measured before their rows:\n"
               + "".join(f"- {line}\n" for line in validations)
               + f"\n{table}\n{links.NOTES}\nWhole run: {time.monotonic() - started:.0f} s.\n")
    print("".join(f"{line}\n" for line in validations) + table, end="")
    kept = _split_links(output)[0]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f"{kept}\n\n{section}")
    return 0 if all(row.met is not False for row in rows) else 1


def _split_links(output: Path) -> tuple[str, str]:
    """`output` as the loopback rows and the section over emulated links (with the blank line
    before it; "" when there is none): each kind of run rewrites its part and keeps the other."""
    text = output.read_text() if output.exists() else "# Performance\n"
    before, found, section = text.partition(f"\n{LINKS_HEADING}\n")
    return before.rstrip("\n"), f"\n{LINKS_HEADING}\n{section}" if found else ""


def _loads(loads: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in loads)


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM ends the run as Ctrl-C does: through every `finally`, which removes what it
    made (servers, namespaces, homes)."""
    raise KeyboardInterrupt(f"signal {signum}")


def compiled() -> None:
    """The product's bytecode, compiled as a package compiles it when installed. Without it, a
    module edited since its bytecode was written (or every module, where PYTHONDONTWRITEBYTECODE
    is set, as in some containers) is compiled again at every start of `roaming-homes`: about
    50 ms a pass on this machine, which no user pays."""
    compileall.compile_dir(ROOT / "src" / "roaming_homes", quiet=1)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small subset in under a minute (the CI smoke test)")
    parser.add_argument("--output", type=Path,
                        help="where to write the table (default: docs/performance.md; with "
                        "--fleet docs/capacity-measured.md)")
    parser.add_argument("--passes", action="store_true",
                        help="only the rows of passes over small files and their memory (1, 2, "
                        "6): print them, write no file")
    parser.add_argument("--first", action="store_true",
                        help="only row 3 (first syncs), printed to paste")
    parser.add_argument("--realtime", action="store_true",
                        help="only the real-time rows (7, 8, 9): print them, write no file")
    parser.add_argument("--frontends", action="store_true",
                        help="only the failover rows (10): print them, write no file")
    parser.add_argument("--computers", action="store_true",
                        help="only the rows of several computers at once (9): print them, "
                        "write no file")
    parser.add_argument("--storm", action="store_true",
                        help="only the login storm row (13; 200 computers at once): print it, "
                        "write no file")
    parser.add_argument("--links", action="store_true",
                        help="rows over emulated network links (lan, broadband, mobile): "
                        "written as their own section of --output")
    parser.add_argument("--profile", action="append", choices=sorted(link.PROFILES),
                        help="with --links: only this link profile (may be repeated; default: "
                        "all, or broadband with --quick)")
    parser.add_argument("--fleet", action="store_true",
                        help="only the capacity of one server for many users (needs root: it "
                        "makes server users); writes docs/capacity-measured.md unless --output")
    parser.add_argument("--users", type=lambda text: tuple(int(n) for n in text.split(",")),
                        help="with --fleet: the numbers of users measured (default 10,50,100)")
    parser.add_argument("--files", type=int, help="with --fleet: files in each home (2000)")
    parser.add_argument("--big", type=int,
                        help="with --fleet: files of the one big home (100000; 0: none)")
    parser.add_argument("--modes", default="real-time,interval",
                        help="with --fleet: real-time, interval or both (the default)")
    args = parser.parse_args(argv)
    compiled()
    if args.fleet:
        plan = fleet.Plan.quick() if args.quick else fleet.Plan.full()
        plan = dataclasses.replace(plan, **{
            key: value for key, value in (("counts", args.users), ("files", args.files),
                                          ("big", args.big)) if value is not None})
        return fleet.main(plan, args.output or ROOT / "docs" / "capacity-measured.md",
                          args.modes.split(","), args.quick)
    if args.links:
        # The quick run proves the harness on one link; every profile is the same code.
        every = ("broadband",) if args.quick else tuple(link.PROFILES)
        return links_section(args.output or ROOT / "docs" / "performance.md", args.quick,
                             tuple(args.profile or every))
    if args.passes:
        return only(lambda base: bench_rows(base, args.quick, Bench.small_homes), args.quick)
    if args.first:
        return only(lambda base: bench_rows(base, args.quick, Bench.first_sync), args.quick)
    if args.realtime:
        return only(lambda base: realtime_rows(base, args.quick, trees.Pool()), args.quick)
    if args.frontends:
        failover = frontends.Plan.quick() if args.quick else frontends.Plan.full()
        return only(lambda base: frontends.measure(base, failover), args.quick)
    if args.storm:
        crowd = storm.Plan.quick() if args.quick else storm.Plan.full()
        return only(lambda base: storm.measure(base, crowd), args.quick)
    if args.computers:
        several = computers.Plan.quick() if args.quick else computers.Plan.full()
        return only(lambda base: computers.measure(base, several), args.quick)
    plan = Plan.quick() if args.quick else Plan.full()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rhbench-"))
    bench = None
    try:
        info = machine(base)
        bench = Bench(base, plan)
        bench.start_up()
        bench.offline()
        bench.small_homes()
        bench.first_sync()
        bench.rows += realtime_rows(base, args.quick, bench.pool)
        bench.rows += frontends.measure(base, frontends.Plan.quick() if args.quick
                                        else frontends.Plan.full(), bench.pool)
    finally:
        if bench is not None:
            bench.close()
        _log("removing the generated homes")
        subprocess.run(["rm", "-rf", str(base)], check=False)
    rows = sorted(bench.rows, key=lambda row: int(row.number))  # 10 after 9
    table = render(rows)
    name = "quick" if args.quick else "full"
    text = (f"# Performance\n\n{header(info, name)}\n{table}\n{BASELINES}\n{realtime.NOTES}\n"
            f"{computers.NOTES}\n{frontends.NOTES}\n"
            f"Whole run: {time.monotonic() - started:.0f} s.\n")
    print(table, end="")
    output = args.output or ROOT / "docs" / "performance.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + _split_links(output)[1])
    return 0 if all(row.met is not False for row in rows) else 1
