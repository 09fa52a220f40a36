"""A login storm (row 13): N computers start a sync in the same second against one sshd with
its default `MaxStartups 10:30:100`, as a class room does at 8:00 or every laptop after a
network outage. Each is the real CLI with a HOME, state, runtime directory and config of its
own and one new file to put on the server.

Measured: the time until the last of them has finished, how many were turned away at least
once (and asked again within their pass), and their exit codes (all must be 0).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

from tests.conftest import without_monitor
from tests.support.homes import CLI, Setup
from tests.support.sshd import SshServer

from bench.measure import Row

BOUND = 600  # seconds the storm may take before the run fails


@dataclasses.dataclass(frozen=True)
class Plan:
    computers: int

    @classmethod
    def full(cls) -> Plan:
        return cls(computers=200)

    @classmethod
    def quick(cls) -> Plan:
        return cls(computers=12)


def _storm(users: list[Setup]) -> tuple[float, list[int], int]:
    """Start every sync at once; (seconds until all ended, exit codes, turned away)."""
    started = time.monotonic()
    procs = [subprocess.Popen([*CLI, "sync", "--json"], env=user.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for user in users]
    try:
        answers = [proc.communicate(timeout=max(0.1, started + BOUND - time.monotonic()))
                   for proc in procs]
    finally:
        for proc in procs:  # only when the bound was missed
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    took = time.monotonic() - started
    turned_away = sum("turned the login away" in err for _, err in answers)
    codes = [proc.returncode for proc in procs]
    for (out, _err), code in zip(answers, codes, strict=True):
        if code:
            print(f"storm: exit {code}: {json.loads(out or '{}').get('message', '')}")
    return took, codes, turned_away


def measure(base: Path, plan: Plan) -> list[Row]:
    """Row 13: one storm of `plan.computers` first syncs."""
    with SshServer(base / "storm-sshd", env={"PATH": without_monitor(base / "no-monitor")},
                   max_startups="10:30:100") as sshd:
        users = [Setup(base / f"storm{n}", sshd) for n in range(plan.computers)]
        try:
            for n, user in enumerate(users):
                (user.home / "Documents").mkdir()
                (user.home / "Documents" / f"from-{n}.txt").write_text(str(n))
            took, codes, turned_away = _storm(users)
            arrived = sum((user.server_home / "Documents" / f"from-{n}.txt").exists()
                          for n, user in enumerate(users))
        finally:
            for user in users:
                user.close()
    ok = codes.count(0)
    return [Row("13", f"login storm: {plan.computers} computers start a first sync in the same "
                "second, sshd's default MaxStartups 10:30:100", "s", [took],
                note=f"{ok} of {plan.computers} exit 0, {turned_away} turned away at least "
                f"once and asked again, {arrived} files on the server")]


NOTES = """\
Login storm (row 13): computers with a HOME, state, runtime directory and config of their own
start `roaming-homes sync` in the same second against one loopback sshd with the default
`MaxStartups 10:30:100`; each puts one new file on the server. The time is until the last one
ended; a computer turned away by sshd asks again within its pass (server busy, not offline).
"""
