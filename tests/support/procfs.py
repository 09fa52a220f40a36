"""Reading /proc: which processes run, and who started them (tests and benchmarks only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def processes(*files: str) -> Iterator[tuple[int, dict[str, bytes]]]:
    """Every running process with the named /proc/<pid>/ files read; vanished ones are skipped."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            read = {name: (entry / name).read_bytes() for name in files}
        except OSError:
            continue
        yield int(entry.name), read


def _holds(environ: bytes, entry: str) -> bool:
    """Whether a /proc/<pid>/environ text has `entry` ("NAME=value") as one of its entries."""
    wanted = entry.encode() + b"\0"
    return environ.startswith(wanted) or b"\0" + wanted in environ


def processes_with(environ_entry: str, cmdline_part: bytes = b"") -> list[int]:
    """PIDs of running processes with `environ_entry` ("NAME=value") in their environment."""
    return [pid for pid, read in processes("cmdline", "environ")
            if cmdline_part in read["cmdline"] and _holds(read["environ"], environ_entry)]


def masters_and_others(environ_entry: str) -> tuple[list[int], list[int]]:
    """The processes with `environ_entry` in their environment, in one pass over /proc: the
    shared ssh masters (`ControlMaster=yes` on their command line), and the others but the
    masters' own children (a `ProxyCommand` lives as long as its master)."""
    found: dict[int, tuple[bool, int]] = {}
    for pid, read in processes("cmdline", "environ", "stat"):
        if _holds(read["environ"], environ_entry):
            found[pid] = (b"ControlMaster=yes" in read["cmdline"], parent_of(read["stat"]))
    masters = [pid for pid, (master, _) in found.items() if master]
    others = [pid for pid, (master, parent) in found.items()
              if not master and parent not in masters]
    return masters, others


def parent_of(stat: bytes) -> int:
    """The parent PID in a /proc/<pid>/stat text ("pid (comm) state ppid …"; comm may hold
    spaces and parentheses, so split after the last ')')."""
    return int(stat.rsplit(b")", 1)[1].split()[1])


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of all threads of `pid` so far: one per wake-up from a wait."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # a thread that just ended
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines()
                     if line.startswith("voluntary_ctxt_switches:"))
    return total
