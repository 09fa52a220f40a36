"""The pure parts of `conflicts`: the server-side stat script and reading its answer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from roaming_homes.actions.conflicts import Side, parse_stat, stat_script


def test_stat_script_reports_each_path_or_a_dash(tmp_path: Path) -> None:
    (tmp_path / "Documents").mkdir()
    (tmp_path / "Documents" / "odd name;$(x).txt").write_text("12345")
    os.utime(tmp_path / "Documents" / "odd name;$(x).txt", (1_700_000_000, 1_700_000_000))
    paths = ["Documents/odd name;$(x).txt", "Documents/gone", "-leading"]

    output = subprocess.run(["sh", "-c", stat_script(str(tmp_path), paths)],
                            capture_output=True, text=True, check=True).stdout

    assert parse_stat(output, 3) == [Side(1_700_000_000.0, 5), Side(None, None),
                                     Side(None, None)]


def test_a_short_or_odd_answer_reads_as_unknown() -> None:
    assert parse_stat("12 3\nnonsense here\n", 3) == [Side(12.0, 3), Side(None, None),
                                                      Side(None, None)]


def test_conflicts_survive_passes_that_did_not_look_at_the_files() -> None:
    from roaming_homes.actions.conflicts import last_known_conflicts
    from roaming_homes.outcome import Result, SyncOutcome

    def entry(result: Result, conflicts: list[str]) -> SyncOutcome:
        return SyncOutcome(result, "m", "t", "t", 0.1, "s", conflicts=conflicts)

    history = [entry(Result.CONFLICTS, ["old"]), entry(Result.CONFLICTS, ["a", "b"]),
               entry(Result.OFFLINE, []), entry(Result.REFUSED, [])]
    assert last_known_conflicts(history) == ["a", "b"]
    assert last_known_conflicts([*history, entry(Result.IN_SYNC, [])]) == []
    assert last_known_conflicts([]) == []


def test_the_choice_each_keep_makes() -> None:
    from roaming_homes.actions.conflicts import Choice, Conflict, Side, choose

    both = Conflict("a", Side(200.0, 1), Side(100.0, 1))
    deleted_here = Conflict("b", Side(None, None), Side(100.0, 1))

    assert choose(both, "both") == Choice("a", "local", copy=True)
    assert choose(both, "newer") == Choice("a", "local")
    assert choose(Conflict("a", Side(1.0, 1), Side(2.0, 1)), "newer") == Choice("a", "server")
    assert choose(both, "server") == Choice("a", "server")
    # a deletion loses to a version for "newer" and "both": nothing to keep two of
    assert choose(deleted_here, "newer") == Choice("b", "server")
    assert choose(deleted_here, "both") == Choice("b", "server")
    assert choose(deleted_here, "local") == Choice("b", "local")
