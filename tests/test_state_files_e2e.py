"""State files of the wrong shape, end to end: valid JSON of the wrong types or with keys
missing, written into a synced user's state, then the real CLI (with the real unison over the
real sshd). Each is moved aside as NAME.broken-YYYYMMDD-HHMMSS with one warning, the command
goes on as if the file were absent (exit code as usual), and the next pass is quiet."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.homes import CLI, Setup
from tests.support.waiting import wait_for

Check = Callable[[Setup, subprocess.CompletedProcess[str]], None]


def _first_run(user: Setup, result: subprocess.CompletedProcess[str]) -> None:
    """Without its state, the pass is a first sync: a union that deletes nothing."""
    assert json.loads((user.state_dir / "state.json").read_text())["last"]["first_run"] is True


def _status_json(user: Setup, result: subprocess.CompletedProcess[str]) -> None:
    assert json.loads(result.stdout)["state"] == "in-sync"


def _nothing_to_restore(user: Setup, result: subprocess.CompletedProcess[str]) -> None:
    assert "nothing to restore" in result.stdout


def _notify_state(user: Setup, result: subprocess.CompletedProcess[str]) -> None:
    state = json.loads((user.state_dir / "notify.json").read_text())
    assert state["active"] is None and isinstance(state["serial"], int)


def _baseline(user: Setup, result: subprocess.CompletedProcess[str]) -> None:
    assert json.loads((user.state_dir / "baseline.json").read_text())["total"] == 2


@dataclass(frozen=True)
class Broken:
    name: str
    text: str
    command: tuple[str, ...] = ("sync",)
    change: bool = False  # a new file first: the plan has an item (the baseline is read)
    notify: bool = False
    check: Check | None = None

    def __str__(self) -> str:
        return self.name


OUTCOME = {"result": "in-sync", "message": "in sync: nothing to do", "started": "2026-01-01",
           "finished": "2026-01-01", "server": "s"}
CASES = [
    # a list where an object belongs (the replica ids)
    Broken("state.json", '{"synced_roots": [], "replicas": []}\n', check=_first_run),
    # a string where a number belongs (a pass's duration)
    Broken("history.jsonl", json.dumps({**OUTCOME, "duration": "0.5"}) + "\n",
           command=("status", "--json"), check=_status_json),
    # a string where a number belongs (the notification serial)
    Broken("notify.json", '{"serial": "7", "active": null}\n', notify=True, check=_notify_state),
    # a key missing (the per-directory counts)
    Broken("baseline.json", '{"rules": [], "total": 3, "recent": []}', change=True,
           check=_baseline),
    # a list where an object belongs (the directories seen)
    Broken("counts-local.json", '{"rules": [], "dirs": []}', change=True),
    # a key missing (the held-back paths)
    Broken("refused.json", '{"key": "k", "side": "local", "loss": "delete"}',
           command=("restore", "--refused"), check=_nothing_to_restore),
]


def synced(user: Setup) -> None:
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a.txt").write_text("a")
    assert user.sync().returncode == 0


def warning_line(path: Path) -> re.Pattern[str]:
    return re.compile(rf"roaming-homes: {re.escape(str(path))} is broken \(.+\): moved aside "
                      rf"to {re.escape(path.name)}\.broken-\d{{8}}-\d{{6}}, starting afresh")


def assert_moved_aside(path: Path, text: str, stderr: str) -> None:
    """One warning line and nothing else on stderr; the file kept aside as it was."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and warning_line(path).fullmatch(lines[0]), stderr
    aside = list(path.parent.glob(f"{path.name}.broken-*"))
    assert len(aside) == 1 and aside[0].read_text() == text


def assert_next_pass_quiet(user: Setup) -> None:
    again = user.sync()
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert user.status()["state"] == "in-sync"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_wrong_shape_file_is_moved_aside_and_the_next_pass_works(user: Setup,
                                                                   case: Broken) -> None:
    synced(user)
    if case.notify:
        user.configure(notify={"enabled": True})
    path = user.state_dir / case.name
    path.write_text(case.text)
    if case.change:
        (user.home / "Documents" / "b.txt").write_text("b")

    result = user.run(*case.command)

    assert result.returncode == 0, result.stderr
    assert_moved_aside(path, case.text, result.stderr)
    if case.check is not None:
        case.check(user, result)
    assert_next_pass_quiet(user)


def test_a_wrong_shape_progress_file_is_moved_aside_while_a_pass_runs(
        user: Setup, tmp_path: Path) -> None:
    synced(user)
    go, started = tmp_path / "go", tmp_path / "started"
    gated = tmp_path / "gated-unison"
    gated.write_text(f"#!/bin/sh\ntouch {started}\nwhile [ ! -e {go} ]; do sleep 0.05; done\n"
                     'exec unison "$@"\n')
    gated.chmod(0o755)
    user.configure(sync={**user.config["sync"], "unison": str(gated)})
    (user.home / "Documents" / "b.txt").write_text("b")
    running = subprocess.Popen([*CLI, "sync"], env=user.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(started.exists, 30, "the pass to start unison")
        path = user.state_dir / "progress.json"
        snapshot = json.loads(path.read_text())  # written as the pass started; not until unison
        text = json.dumps({**snapshot, "phase": "propagating", "bytes_done": "100"})
        path.write_text(text)  # a string where a number belongs

        status = user.run("status", "--json")

        assert status.returncode == 0, status.stderr
        assert_moved_aside(path, text, status.stderr)
        shown = json.loads(status.stdout)
        assert shown["running"] is True and shown["progress"] is None
        assert shown["progress_line"] == "starting"
        go.touch()
        assert running.wait(timeout=60) == 0
    finally:
        go.touch()
        if running.poll() is None:
            running.kill()
        running.wait(timeout=10)
        assert running.stderr is not None
        stderr = running.stderr.read()
        running.stderr.close()
    assert stderr == ""
    assert_next_pass_quiet(user)
