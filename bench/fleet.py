"""`bench/run --fleet [--quick]`: what one server pays for each of many users (issue 19).

On this one machine: N server users (real Unix accounts made here with useradd and removed at the
end, whatever happens; SIGINT, SIGTERM and SIGHUP end the run through the same clean-up), one
loopback sshd with its own config and port, and for each user one simulated computer (a HOME,
state, runtime directory and config of its own) running the real `roaming-homes daemon`. Each
server home and each computer holds the same F small files in Documents (synced once before
the measurement, as after a first sync).

The server side runs as it does on a real server: each user's `unison -server` and
`unison-fsmonitor` (a console script like the packages install, on the system python3, from a
world-readable copy of this tree's package) in the user's own account, archives in their own
~/.unison.

Per server user, from /proc, for every process in the subtree of the sshd connection(s) of
that user (the `sshd: USER [priv]` and `sshd: USER@notty` processes and what they run):
- RSS (VmRSS) and PSS (smaps_rollup: shared pages divided among their users) of the monitor,
  of `unison -server` (its peak, sampled every 50 ms while changes propagate) and of sshd;
- inotify watches: the `inotify wd:` lines of /proc/PID/fdinfo of each inotify descriptor;
- idle CPU: utime + stime + cutime + cstime (children that ended meanwhile included) of the
  whole subtree over a window with nothing changing, scaled to an hour;
- propagation while all N are connected (real-time mode): a new file on a computer until it is
  complete on the server ("up"), and a new file in a server home until it is complete on the
  computer ("down"); one at a time on random users, then a burst (every user at once).

Interval mode is measured for CPU and memory: its latency is its interval by design.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import platform
import pwd
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess
from tests.support.homes import Setup
from tests.support.sshd import SshServer

from bench import trees
from bench.realtime import percentile

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
COMMENT = "roaming-homes fleet bench"  # the GECOS field of every account the bench makes
PREFIX = "rhf"  # account names: rhf<run tag><number>
POLL = 0.02
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or the harness's smoke test."""

    counts: tuple[int, ...]  # numbers of users measured together
    files: int  # files in each home
    big: int  # files of the one big home measured alone (0: none)
    idle_seconds: float  # real-time mode's idle window
    interval: int  # interval mode's sync.interval
    interval_periods: int  # interval mode's idle window, in intervals
    writes: int  # one-at-a-time propagation samples per direction
    bursts: bool  # every user writes at once, too
    start_gap: float  # seconds between two daemons' starts

    @classmethod
    def full(cls) -> Plan:
        return cls(counts=(10, 50, 100), files=2_000, big=100_000, idle_seconds=300,
                   interval=60, interval_periods=5, writes=40, bursts=True, start_gap=0.3)

    @classmethod
    def quick(cls) -> Plan:
        return cls(counts=(2,), files=40, big=0, idle_seconds=2, interval=1,
                   interval_periods=2, writes=2, bursts=True, start_gap=0.1)


def _log(text: str) -> None:
    print(f"fleet: {text}", file=sys.stderr, flush=True)


# --- reading /proc (pure where it can be) -----------------------------------------------------

def children_cpu(stat: str) -> float:
    """cutime + cstime of one /proc/PID/stat text, in seconds: the children that ended and
    were waited for (each pass's `unison -server`, shells)."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[13:15]) / _CLOCK_TICKS


def runtime(pid: int) -> float:
    """CPU seconds the threads of a live process ran, to the nanosecond (schedstat): utime and
    stime count whole ticks of 10 ms, too coarse for a monitor that wakes for a millisecond."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                total += int(_read(f"/proc/{pid}/task/{task}/schedstat").split()[0])
    return total / 1e9


def watches_in(fdinfo: str) -> int:
    """The inotify watches an inotify descriptor's /proc/PID/fdinfo/FD lists."""
    return sum(1 for line in fdinfo.splitlines() if line.startswith("inotify wd:"))


def kind_of(argv: Sequence[str]) -> str:
    """monitor, unison (its server), sshd or other, from a command line."""
    words = [os.path.basename(word) for word in argv[:3]]
    if any(word.endswith("unison-fsmonitor") for word in words) or any(
            "roaming_homes.unison.fsmonitor" in word for word in argv[:4]):
        return "monitor"
    if words and words[0].startswith("unison") and "-server" in argv:
        return "unison"
    if words and words[0].startswith("sshd"):
        return "sshd"
    return "other"


@dataclasses.dataclass
class Proc:
    pid: int
    ppid: int
    uid: int
    kind: str
    cpu: float
    rss_kib: int
    pss_kib: int = 0
    watches: int = 0
    fds: int = 0


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _proc(pid: int, detail: bool) -> Proc | None:
    """One process; with `detail`, its PSS and inotify watches too (more reading)."""
    base = f"/proc/{pid}"
    try:
        stat = _read(f"{base}/stat")
        status = dict(line.split(":", 1) for line in _read(f"{base}/status").splitlines()
                      if ":" in line)
        argv = [os.fsdecode(a) for a in Path(base, "cmdline").read_bytes().split(b"\0") if a]
    except (OSError, ValueError):
        return None
    uid = int(status["Uid"].split()[1])  # effective
    rss = int(status.get("VmRSS", "0 kB").split()[0])
    proc = Proc(pid, int(stat.rsplit(")", 1)[1].split()[1]), uid, kind_of(argv),
                runtime(pid) + children_cpu(stat), rss)
    if detail:
        with contextlib.suppress(OSError):
            for line in _read(f"{base}/smaps_rollup").splitlines():
                if line.startswith("Pss:"):
                    proc.pss_kib = int(line.split()[1])
        with contextlib.suppress(OSError):
            fds = os.listdir(f"{base}/fd")
            proc.fds = len(fds)
            for fd in fds:
                with contextlib.suppress(OSError):
                    if os.readlink(f"{base}/fd/{fd}") == "anon_inode:inotify":
                        proc.watches += watches_in(_read(f"{base}/fdinfo/{fd}"))
    return proc


def server_processes(listener: int, detail: bool = False) -> dict[int, list[Proc]]:
    """uid of the server user -> the processes of that user's sshd connections (the whole
    subtree of each child of the `listener` sshd, the root-owned privileged part included)."""
    procs = [p for pid in os.listdir("/proc") if pid.isdigit()
             if (p := _proc(int(pid), detail)) is not None]
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    found: dict[int, list[Proc]] = {}
    for connection in children.get(listener, []):
        subtree, todo = [], [connection]
        while todo:
            proc = todo.pop()
            subtree.append(proc)
            todo += children.get(proc.pid, [])
        users = {p.uid for p in subtree if p.uid != 0}
        if len(users) == 1:  # authenticated; one still logging in has no user process yet
            found.setdefault(users.pop(), []).extend(subtree)
    return found


# --- the accounts -----------------------------------------------------------------------------

def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, stdin=subprocess.DEVNULL)


def leftover_accounts() -> list[str]:
    """Accounts an earlier run of the bench made and could not remove (it was SIGKILLed): ours by
    their comment, and their home (in that run's directory) is gone."""
    return [entry.pw_name for entry in pwd.getpwall()
            if entry.pw_gecos.startswith(COMMENT) and entry.pw_name.startswith(PREFIX)
            and not os.path.exists(entry.pw_dir)]


def remove_account(name: str) -> None:
    """Remove an account the bench made (and its group), after killing what still runs as it."""
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(name).pw_uid
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    os.kill(pid, signal.SIGKILL)
    subprocess.run(["userdel", "-f", name], capture_output=True, check=False)
    with contextlib.suppress(KeyError):
        grp.getgrnam(name)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


@dataclasses.dataclass
class Account:
    name: str
    uid: int
    gid: int
    server_home: Path
    computer: Setup
    daemon: DaemonProcess | None = None

    @property
    def docs(self) -> Path:
        return self.computer.home / "Documents"

    @property
    def server_docs(self) -> Path:
        return self.server_home / "Documents"


# --- the fleet --------------------------------------------------------------------------------

def _monitor_script(lib: Path) -> str:
    """`unison-fsmonitor` as the packages install it (a console script on the system python3),
    importing the package from `lib`."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return (f"#!{python}\nimport sys\nsys.path.insert(0, {str(lib)!r})\n"
            "from roaming_homes.unison.fsmonitor import main\nsys.exit(main())\n")


class Fleet:
    def __init__(self, base: Path, plan: Plan) -> None:
        self.base, self.plan = base, plan
        self.tag = uuid.uuid4().hex[:4]
        self.accounts: list[Account] = []
        self.made: list[str] = []  # account names, for the clean-up
        self.templates: dict[int, Path] = {}
        self.pool = trees.Pool()
        base.chmod(0o755)  # the server users reach their homes, the monitor and the keys here
        lib = base / "lib"
        shutil.copytree(ROOT / "src" / "roaming_homes", lib / "roaming_homes",
                        ignore=shutil.ignore_patterns("__pycache__"))
        script = base / "bin" / "unison-fsmonitor"
        script.parent.mkdir()
        script.write_text(_monitor_script(lib))
        script.chmod(0o755)
        python = script.read_text().splitlines()[0][2:]
        subprocess.run([python, "-m", "compileall", "-q", str(lib)], check=True)
        self.path = f"{script.parent}:{SYSTEM_PATH}"
        self.sshd = SshServer(base / "sshd", env={"PATH": self.path}, unison_env=False,
                              max_startups="200", extra_config="MaxSessions 1000\n").start()

    @property
    def listener(self) -> int:
        assert self.sshd.proc is not None
        return self.sshd.proc.pid

    def template(self, files: int) -> Path:
        """A Documents tree of `files` small files, made once per size."""
        if files not in self.templates:
            path = self.base / "templates" / str(files) / "Documents"
            _log(f"making a home of {files} files")
            trees.small_files(path, files, self.pool)
            self.templates[files] = path
        return self.templates[files]

    def add(self, files: int) -> Account:
        """One more server user with a home of `files` files, its computer, synced once."""
        number = len(self.made)
        name = f"{PREFIX}{self.tag}{number:03d}"
        server_home = self.base / "srv" / name
        server_home.parent.mkdir(exist_ok=True)
        self.made.append(name)
        _run("useradd", "--no-create-home", "--home-dir", str(server_home), "--shell", "/bin/sh",
             "--password", "*", "--comment", f"{COMMENT} {self.tag}", "--user-group", name)
        entry = pwd.getpwnam(name)
        template = self.template(files)
        trees.copy_tree(template, server_home / "Documents")
        _run("chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(server_home))
        server_home.chmod(0o700)
        computer = Setup(self.base / "computers" / name, self.sshd)
        computer.env["PATH"] = f"{self.path}"
        trees.copy_tree(template, computer.home / "Documents")
        account = Account(name, entry.pw_uid, entry.pw_gid, server_home, computer)
        self.configure(account, watch=False, interval=3600)
        result = computer.sync()
        if result.returncode != 0:
            raise RuntimeError(f"first sync of {name}: {result.stdout}{result.stderr}")
        self.accounts.append(account)
        return account

    def configure(self, account: Account, watch: bool, interval: int) -> None:
        account.computer.configure(
            server={"user": account.name, "home": str(account.server_home)},
            sync={"watch": watch, "interval": interval, "logout_timeout": 60},
            client={"name": f"computer-of-{account.name}"})

    # -- daemons --

    def start(self, accounts: list[Account], watch: bool, interval: int) -> None:
        """Every account's daemon, started `start_gap` apart; returns once each is in sync (and,
        watching, its monitor runs on the server)."""
        for account in accounts:
            self.configure(account, watch, interval)
            account.daemon = DaemonProcess(account.computer)
            time.sleep(self.plan.start_gap)
        deadline = time.monotonic() + 120 + 3 * len(accounts)
        waiting = list(accounts)
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not in sync in time: {[a.name for a in waiting]}; "
                                   f"{waiting[0].daemon.log if waiting[0].daemon else ''}")
            monitors = ({uid for uid, procs in server_processes(self.listener).items()
                         if any(p.kind == "monitor" for p in procs)} if watch else set())
            waiting = [a for a in waiting if not self._ready(a, watch, monitors)]
            time.sleep(0.2)
        for account in accounts:
            assert account.daemon is not None
            if watch and "falling back" in account.daemon.log:
                raise RuntimeError(f"{account.name} fell back to interval mode: "
                                   f"{account.daemon.log}")

    @staticmethod
    def _ready(account: Account, watch: bool, monitors: set[int]) -> bool:
        daemon = account.daemon
        assert daemon is not None
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon of {account.name} exited: {daemon.log}")
        return "in sync" in daemon.log and (not watch or account.uid in monitors)

    def stop(self, accounts: list[Account]) -> None:
        """SIGTERM every daemon at once (their logout passes), then wait for each."""
        for account in accounts:
            if account.daemon is not None and account.daemon.proc.poll() is None:
                account.daemon.signal(signal.SIGTERM)
        for account in accounts:
            if account.daemon is not None:
                try:
                    account.daemon.wait(120)
                finally:
                    account.daemon.close()
                account.daemon = None
            account.computer.close_connection()
        deadline = time.monotonic() + 30
        uids = {a.uid for a in accounts}
        while set(server_processes(self.listener)) & uids and time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        for account in self.accounts:
            with contextlib.suppress(Exception):
                if account.daemon is not None:
                    account.daemon.close()
            account.computer.close()
        self.sshd.stop()
        for name in self.made:
            remove_account(name)


# --- measuring --------------------------------------------------------------------------------

@dataclasses.dataclass
class UserFigures:
    """What one server user cost in one round."""

    monitor_rss: float = 0.0  # MiB, idle
    monitor_pss: float = 0.0
    sshd_rss: float = 0.0
    sshd_pss: float = 0.0
    unison_peak_rss: float = 0.0  # MiB, while changes propagated (0: none seen)
    watches: int = 0
    idle_cpu_hour: float = 0.0  # CPU seconds per hour, whole connection subtree
    processes: int = 0
    fds: int = 0  # open file descriptors of all of them


@dataclasses.dataclass
class Round:
    users: int
    files: int
    mode: str  # "real-time" or "interval"
    window: float  # seconds of the idle window
    figures: list[UserFigures]
    up: list[float] = dataclasses.field(default_factory=list)
    down: list[float] = dataclasses.field(default_factory=list)
    burst_up: list[float] = dataclasses.field(default_factory=list)
    burst_down: list[float] = dataclasses.field(default_factory=list)
    load: str = ""


def snapshot(fleet: Fleet, accounts: list[Account]) -> dict[int, UserFigures]:
    """Memory, watches and processes of each account's server side now."""
    found = server_processes(fleet.listener, detail=True)
    figures = {}
    for account in accounts:
        mine = found.get(account.uid, [])
        figure = UserFigures(processes=len(mine))
        for proc in mine:
            if proc.kind == "monitor":
                figure.monitor_rss += proc.rss_kib / 1024
                figure.monitor_pss += proc.pss_kib / 1024
            elif proc.kind == "sshd":
                figure.sshd_rss += proc.rss_kib / 1024
                figure.sshd_pss += proc.pss_kib / 1024
            figure.watches += proc.watches
            figure.fds += proc.fds
        figures[account.uid] = figure
    return figures


def cpu_by_user(fleet: Fleet) -> dict[int, float]:
    return {uid: sum(p.cpu for p in procs)
            for uid, procs in server_processes(fleet.listener).items()}


@contextlib.contextmanager
def unison_peaks(fleet: Fleet) -> Iterator[dict[int, float]]:
    """uid -> the largest RSS (MiB) a `unison -server` of that user had while inside."""
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for uid, procs in server_processes(fleet.listener).items():
                for proc in procs:
                    if proc.kind == "unison":
                        peaks[uid] = max(peaks.get(uid, 0.0), proc.rss_kib / 1024)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        done.set()
        thread.join()


def _holds(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except OSError:
        return False


def arrivals(targets: dict[int, tuple[Path, str, float]], timeout: float = 300) -> dict[int, float]:
    """key -> seconds from its write until its path held its content."""
    found: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(targets):
        now = time.monotonic()
        for key, (path, content, written) in targets.items():
            if key not in found and _holds(path, content):
                found[key] = now - written
        if len(found) < len(targets):
            if now > deadline:
                raise TimeoutError(f"{len(targets) - len(found)} writes not there after "
                                   f"{timeout} s")
            time.sleep(POLL)
    return found


def write_up(account: Account, label: str) -> tuple[Path, str, float]:
    """A new file on the account's computer; (where it must arrive, content, when written)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}.txt"
    content = f"{label} {time.time():.6f}\n"
    written = time.monotonic()
    (account.docs / name).write_text(content)
    return account.server_docs / name, content, written


def write_down(account: Account, label: str) -> tuple[Path, str, float]:
    """A new file in the account's server home, the user's own (made aside, then moved in, as
    another computer's unison does); (where it must arrive, content, when written)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}.txt"
    content = f"{label} {time.time():.6f}\n"
    aside = account.server_home / f".bench-{name}"
    aside.write_text(content)
    os.chown(aside, account.uid, account.gid)
    written = time.monotonic()
    aside.rename(account.server_docs / name)
    return account.docs / name, content, written


def propagation(accounts: list[Account], plan: Plan, rng: random.Random,
                figures: Round) -> None:
    writers: dict[str, Callable[[Account, str], tuple[Path, str, float]]] = {
        "up": write_up, "down": write_down}
    for direction, write in writers.items():
        samples = []
        for number in range(plan.writes):
            time.sleep(rng.uniform(0.2, 1.0))
            account = rng.choice(accounts)
            samples.append(arrivals({0: write(account, f"{direction}{number}")})[0])
        getattr(figures, direction).extend(samples)
        _log(f"  {direction}, one at a time: p50 {percentile(samples, 0.5):.2f} s, "
             f"p99 {percentile(samples, 0.99):.2f} s")
        if plan.bursts:
            time.sleep(2)
            targets = {i: write(account, f"burst-{direction}") for i, account
                       in enumerate(accounts)}
            burst = list(arrivals(targets).values())
            getattr(figures, f"burst_{direction}").extend(burst)
            _log(f"  {direction}, all {len(accounts)} at once: p50 "
                 f"{percentile(burst, 0.5):.2f} s, p99 {percentile(burst, 0.99):.2f} s")
    time.sleep(2)  # the last cycles' echoes settle before the daemons stop


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def measure_round(fleet: Fleet, accounts: list[Account], files: int, mode: str,
                  rng: random.Random) -> Round:
    plan = fleet.plan
    watch = mode == "real-time"
    _log(f"{len(accounts)} users, {mode}: starting their daemons")
    fleet.start(accounts, watch, plan.interval if not watch else 3600)
    time.sleep(2 if watch else 0)  # start-up settles before the window opens
    window = plan.idle_seconds if watch else plan.interval * plan.interval_periods
    _log(f"  idle window of {window:g} s")
    before, started = cpu_by_user(fleet), time.monotonic()
    time.sleep(window)  # the measurement itself: time has to pass
    after, elapsed = cpu_by_user(fleet), time.monotonic() - started
    figures = snapshot(fleet, accounts)
    for account in accounts:
        figure = figures[account.uid]
        figure.idle_cpu_hour = ((after.get(account.uid, 0.0) - before.get(account.uid, 0.0))
                                * 3600 / elapsed)
    result = Round(len(accounts), files, mode, elapsed, list(figures.values()), load=_load())
    if watch:
        with unison_peaks(fleet) as peaks:
            propagation(accounts, plan, rng, result)
        for account in accounts:
            figures[account.uid].unison_peak_rss = peaks.get(account.uid, 0.0)
    _log(f"  idle CPU per user and hour: median "
         f"{statistics.median(f.idle_cpu_hour for f in result.figures):.3f} s; monitor RSS "
         f"median {statistics.median(f.monitor_rss for f in result.figures):.1f} MiB")
    fleet.stop(accounts)
    return result


# --- the table --------------------------------------------------------------------------------

def _med(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1 or max(values) == min(values):
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} (max {max(values):.{digits}f})"


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{percentile(list(values), 0.5):.2f} / {percentile(list(values), 0.99):.2f}"


def render(rounds: Sequence[Round]) -> str:
    """One markdown table, a row per round; per-user cells are median (max) over the users."""
    lines = [
        "| users | files each | mode | monitor RSS MiB | monitor PSS MiB | unison -server peak "
        "RSS MiB | sshd RSS / PSS MiB | inotify watches | processes / fds | idle CPU-s per hour "
        "| up p50 / p99 s | down p50 / p99 s | burst up p50 / p99 s | burst down p50 / p99 s "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        f = r.figures
        peaks = [x.unison_peak_rss for x in f if x.unison_peak_rss]
        lines.append(
            f"| {r.users} | {r.files} | {r.mode} | {_med([x.monitor_rss for x in f])} | "
            f"{_med([x.monitor_pss for x in f])} | {_med(peaks)} | "
            f"{statistics.median(x.sshd_rss for x in f):.1f} / "
            f"{statistics.median(x.sshd_pss for x in f):.1f} | "
            f"{_med([float(x.watches) for x in f], 0)} | "
            f"{statistics.median(x.processes for x in f):.0f} / "
            f"{statistics.median(x.fds for x in f):.0f} | "
            f"{_med([x.idle_cpu_hour for x in f], 3)} | {_pct(r.up)} | {_pct(r.down)} | "
            f"{_pct(r.burst_up)} | {_pct(r.burst_down)} | {r.load} |")
    return "\n".join(lines) + "\n"


def machine_text() -> str:
    cores = os.cpu_count()
    with contextlib.suppress(OSError):
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        mem_gib = int(mem.split()[1]) / 1024 / 1024
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr
    unison = subprocess.run(["unison", "-version"], capture_output=True, text=True, check=False,
                            env={**os.environ, "HOME": "/tmp"}).stdout
    python = _monitor_script(Path("/")).splitlines()[0][2:]
    server_python = subprocess.run([python, "--version"], capture_output=True, text=True,
                                   check=False).stdout.strip()
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {cores} cores, {mem_gib:.0f} GiB, Linux "
            f"{platform.release()}, {ssh.strip()}, {unison.strip()}, server-side monitor on "
            f"{server_python}; load average at the start {_load()}")


# --- the run ----------------------------------------------------------------------------------

class _Stopped(BaseException):
    pass


def _on_signal(signo: int, _frame: Any) -> None:
    raise _Stopped(f"stopped by signal {signo}")


def run(plan: Plan, base: Path, modes: Sequence[str], rounds: list[Round],
        on_round: Callable[[], None]) -> None:
    """Measure into `rounds`, calling `on_round` after each."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        raise SystemExit("bench/run --fleet needs root and useradd (it makes server users)")
    for name in leftover_accounts():
        _log(f"removing {name}, left by an earlier run")
        remove_account(name)
    with _inotify_instances(3 * max(plan.counts, default=1)):
        fleet = Fleet(base, plan)
        try:
            _rounds(fleet, plan, modes, rounds, on_round)
        finally:
            fleet.close()


INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextlib.contextmanager
def _inotify_instances(more: int) -> Iterator[None]:
    """`more` inotify instances for root for the run: every simulated computer is root's here
    (a daemon and its local monitor each hold one), which a real computer is not. The limit is
    put back afterwards, unless something else changed it meanwhile."""
    old = int(INSTANCES.read_text())
    if more:
        INSTANCES.write_text(f"{old + more}\n")
        _log(f"fs.inotify.max_user_instances {old} -> {old + more} for the run (this machine's "
             "computers are all root's)")
    try:
        yield
    finally:
        # put back unless another run changed it meanwhile (it puts back its own)
        if more and int(INSTANCES.read_text()) == old + more:
            INSTANCES.write_text(f"{old}\n")


def _rounds(fleet: Fleet, plan: Plan, modes: Sequence[str], rounds: list[Round],
            on_round: Callable[[], None]) -> None:
    """Each number of users in each mode, then the big home alone; `rounds` grows as they
    are measured (what was measured before a failure is kept)."""
    rng = random.Random(19)
    for count in plan.counts:
        while len(fleet.accounts) < count:
            fleet.add(plan.files)
        accounts = fleet.accounts[:count]
        for mode in modes:
            rounds.append(measure_round(fleet, accounts, plan.files, mode, rng))
            on_round()
    if plan.big:
        big = fleet.add(plan.big)
        for mode in modes:
            rounds.append(measure_round(fleet, [big], plan.big, mode, rng))
            on_round()


def _reachable(directory: str) -> str:
    """`directory` if every server user can pass through it to reach its home and sshd's keys
    in the run's directory (sshd reads authorized_keys as the user), else /tmp."""
    path = Path(directory).resolve()
    for part in [path, *path.parents]:
        if not part.stat().st_mode & 0o001:
            return "/tmp"
    return str(path)


def main(plan: Plan, output: Path | None, modes: Sequence[str], quick: bool) -> int:
    """Run, writing the table to `output` after every round (a run cut short keeps what it
    measured, marked as such), and print it at the end."""
    import tempfile

    for signo in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, _on_signal)
    started = time.monotonic()
    info = machine_text()
    command = f"bench/run --fleet{' --quick' if quick else ''}"
    rounds: list[Round] = []

    def write(status: str) -> None:
        if output is not None and rounds:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(
                f"# Capacity, as measured\n\nMeasured by `{command}` on {info}. "
                f"{status} {time.monotonic() - started:.0f} s.\n\n{render(rounds)}\n{NOTES}")

    base = Path(tempfile.mkdtemp(prefix="rhfleet-", dir=_reachable(tempfile.gettempdir())))
    try:
        run(plan, base, modes, rounds, lambda: write("Still running after"))
    except BaseException:
        write("Cut short (failed or stopped) after")
        raise
    finally:
        _log("removing the homes")
        subprocess.run(["rm", "-rf", str(base)], check=False)
    write("Whole run:")
    print(render(rounds), end="")
    return 0


NOTES = """\
Per server user, median over the users of a round (max in brackets):
- **monitor RSS / PSS**: the user's `unison-fsmonitor` on the server, idle, after the window.
  PSS divides pages shared with other processes (the interpreter, libc) among them: the sum
  over users of PSS is what they take together.
- **unison -server peak RSS**: the largest of the user's `unison -server` while changes
  propagated (sampled every 50 ms; real-time mode runs one per change, none while idle).
- **sshd RSS / PSS**: the user's connection (`sshd: USER [priv]` and `sshd: USER@notty`).
- **inotify watches**: counted in /proc/PID/fdinfo of the monitor's inotify descriptor.
- **processes / fds**: the processes of the user's connection, idle, and the file descriptors
  they hold together.
- **idle CPU-s per hour**: CPU time (schedstat, to the nanosecond; plus cutime + cstime for
  children that ended) of the whole subtree of the user's sshd connection
  (sshd, monitor, every `unison -server` and shell of the passes, those that ended included)
  over the idle window, scaled to an hour. Real-time mode's full rescan (`sync.rescan_interval`,
  hourly by default) is a no-change pass: add one interval-mode pass (its CPU is the interval
  row's per-hour figure divided by the passes per hour).
- **up / down**: a new file on a computer until it is complete on the server / in a server home
  until it is complete on the computer; one at a time on random users (all users connected),
  then **burst**: every user at once.
"""
