"""Timing, peak memory and the table: small pure helpers plus thin process shells."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One line of the table: our figures against a baseline, with the target they must meet."""

    number: str
    what: str
    unit: str  # "s", "ms" or "MiB"
    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    baseline: str = ""
    target: float | None = None  # the most ours / baseline may be
    limit: float | None = None  # the most ours may be, in `unit`
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.base or statistics.median(self.base) <= 0:
            return None
        return statistics.median(self.ours) / statistics.median(self.base)

    @property
    def met(self) -> bool | None:
        """Whether every target of this row is met; None when it has none (or no figures)."""
        checks = []
        if self.target is not None and self.ratio is not None:
            checks.append(self.ratio <= self.target)
        if self.limit is not None and self.ours:
            checks.append(statistics.median(self.ours) <= self.limit)
        return all(checks) if checks else None


def cell(values: Sequence[float], unit: str) -> str:
    """`median unit (min-max, n)`; one value is shown alone."""
    if not values:
        return "—"
    digits = {"s": 3, "ms": 1, "MiB": 1, "turns": 0}.get(unit, 2)
    med = f"{statistics.median(values):.{digits}f} {unit}"
    if len(values) == 1:
        return med
    return f"{med} ({min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"


def render(rows: Sequence[Row]) -> str:
    """The results as one markdown table."""
    lines = ["| # | measurement | roaming-homes | baseline | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        base = cell(row.base, row.unit) if row.base else ""
        if row.baseline:
            base = f"{base} {row.baseline}".strip() if base else row.baseline
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "—"
        targets = [f"≤ {row.target:g}x"] if row.target is not None else []
        targets += [f"≤ {row.limit:g} {row.unit}"] if row.limit is not None else []
        target = ", ".join(targets) or "—"
        met = {True: "yes", False: "**no**", None: "—"}[row.met]
        ours = cell(row.ours, row.unit) + (f" — {row.note}" if row.note else "")
        lines.append(f"| {row.number} | {row.what} | {ours} | {base or '—'} | {ratio} | "
                     f"{target} | {met} |")
    return "\n".join(lines) + "\n"


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)$")


def import_cost_us(stderr: str, prefix: str) -> int:
    """Cumulative microseconds of the top-level imports named `prefix*` in -X importtime output.

    Modules a top-level import pulls in are nested under it (deeper indentation), so the
    top-level entries add up to everything that importing `prefix` cost.
    """
    total = 0
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1 and match.group(4).startswith(prefix):
            total += int(match.group(2))
    return total


def timed(argv: Sequence[str], env: dict[str, str] | None = None,
          expect: Sequence[int] = (0,), timeout: float = 600) -> float:
    """Wall time of one run in seconds; fails loudly when the exit code is unexpected."""
    start = time.perf_counter()
    result = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                            check=False)
    elapsed = time.perf_counter() - start
    if result.returncode not in expect:
        output = result.stdout.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[0]} … exited {result.returncode}, expected {list(expect)}:"
                           f"\n{output}")
    return elapsed


def repeat(times: int, *runs: Callable[[], float]) -> list[list[float]]:
    """Run each callable `times` times, interleaved (a, b, a, b …) so drift hits all alike."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(times):
        for i, run in enumerate(runs):
            results[i].append(run())
    return results


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            todo.append(child)
    return found


def peak_rss(argv: Sequence[str], env: dict[str, str], interval: float = 0.005,
             expect: Sequence[int] = (0,)) -> dict[str, float]:
    """Peak resident memory (MiB) of `argv` ("main") and of its descendants, by program name.

    VmHWM (the kernel's high-water mark) is read every `interval` seconds; it only grows, so
    the last reading of each process is its peak up to then.
    """
    peaks: dict[int, tuple[str, int]] = {}
    with subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    status = _status(pid)
                    if "VmHWM" in status:
                        kib = int(status["VmHWM"].split()[0])
                        name = "main" if pid == proc.pid else status["Name"].strip()
                        if kib >= peaks.get(pid, ("", 0))[1]:
                            peaks[pid] = (name, kib)
                time.sleep(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        done.set()
        sampler.join()
    if proc.returncode not in expect:
        raise RuntimeError(f"{argv[0]} … exited {proc.returncode} while measuring memory")
    by_name: dict[str, float] = {}
    for name, kib in peaks.values():
        by_name[name] = max(by_name.get(name, 0.0), kib / 1024)
    return by_name


def machine(scratch: Path) -> dict[str, str]:
    """Cores, Python and unison versions, date: the header of the results.

    unison insists on a HOME even to print its version: give it `scratch`.
    """
    import platform

    env = {**os.environ, "HOME": str(scratch), "UNISON": str(scratch / ".unison")}
    unison = subprocess.run(["unison", "-version"], capture_output=True, text=True, env=env,
                            check=False).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "unison": unison or "unknown",
        "kernel": platform.release(),
    }
