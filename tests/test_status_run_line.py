"""`status`'s `run:` line is a command the user can paste: every path in it written out."""

from __future__ import annotations

import pytest

from roaming_homes.outcome import ATTENTION, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session.state import StateStore
from tests.support.homes import Setup


def _run_line(setup: Setup) -> str:
    result = setup.run("status")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("  run:")]
    return line.split(":", 1)[1].strip()


@pytest.mark.parametrize("result", sorted(ATTENTION))
def test_run_line_has_no_unexpanded_variable(local_user: Setup, result: Result) -> None:
    locations = Locations.from_env(local_user.env)
    stamp = "2026-11-29T10:00:00+00:00"
    StateStore(locations.state_dir).record(
        SyncOutcome(result, f"{result} message", stamp, stamp, 1.0, "server"))
    command = _run_line(local_user)
    assert command.startswith("roaming-homes ")
    assert "$" not in command and "XDG_" not in command and "~" not in command
    if result == Result.PARTIAL:
        assert command == (f"roaming-homes -v sync  (details in "
                           f"{local_user.state_home / 'roaming-homes' / 'sync.log'})")


def test_never_synced_says_what_to_run(local_user: Setup) -> None:
    assert _run_line(local_user) == "roaming-homes sync"
