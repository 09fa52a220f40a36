"""Unit tests: reading progress from unison's output, showing it, publishing it, status."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from roaming_homes.actions.status import Overview, State
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session import progress
from roaming_homes.session.lock import SyncLock
from roaming_homes.session.progress import FIRST_RUN_LINE, Progress, ProgressParser, format_line
from roaming_homes.unison.output import parse_plan_line


def _captured(text: str) -> list[str]:
    """Lines of a capture, one per segment, with the two spaces unison ends every plan item
    with (an editor strips them)."""
    return [line + "  " if parse_plan_line(line + "  ") else line for line in text.splitlines()]


# Captured from unison 2.52.1 (-batch -color false -dumbtty) over ssh.
FIRST_SYNC = _captured(f"""{FIRST_RUN_LINE}
Looking for changes
  Waiting for changes from server
Reconciling changes
         <---- dir        Documents
local        : absent
vm           : dir                modified on 2026-11-25 at 14:19:59  size 209715200 rwxr-xr-x
Propagating updates
[BGN] Copying Documents from //vm//srv/home to /home/u
""")

# Captured from a second pass with every kind of item (x/y is a conflict: skipped in batch).
MIXED = _captured("""Looking for changes
\\ d/f16
Reconciling changes
changed  <-?-> changed    x/y
a            : changed file       modified on 2026-11-25 at 14:19:34  size 10        rw-r--r--
b            : changed file       modified on 2026-11-25 at 14:19:34  size 10        rw-r--r--
         <---- changed    d/f1
a            : unchanged file     modified on 2026-11-25 at 14:19:28  size 5000000   rw-r--r--
b            : changed file       modified on 2026-11-25 at 14:19:34  size 3000000   rw-r--r--
deleted  ---->            d/f2
a            : deleted
b            : unchanged file     modified on 2026-11-25 at 14:19:28  size 5000000   rw-r--r--
         <---- new file   newfile
a            : absent
b            : new file           modified on 2026-11-25 at 14:19:34  size 123       rw-r--r--
changed  ---->            s.txt
a            : changed file       modified on 2026-11-25 at 14:19:34  size 11        rw-r--r--
b            : unchanged file     modified on 2026-11-25 at 14:19:28  size 6         rw-r--r--
Propagating updates
""")


def _parse(lines: list[str], now: float = 1000.0) -> ProgressParser:
    parser = ProgressParser(pid=7, now=now)
    for line in lines:
        parser.feed(line, now)
    return parser


def test_item_list_gives_items_and_bytes_to_fetch_before_propagation() -> None:
    p = _parse(FIRST_SYNC).progress

    assert (p.phase, p.first_run, p.items_total, p.items_done) == ("propagating", True, 1, 0)
    assert p.bytes_total == p.bytes_to_fetch == 209715200
    assert p.bytes_to_send == 0
    assert p.current == "Documents"


def test_sizes_count_the_sending_side_and_skip_conflicts_and_deletions() -> None:
    p = _parse(MIXED).progress

    assert p.items_total == 4  # the conflict is skipped in batch mode
    assert p.bytes_to_fetch == 3000000 + 123
    assert p.bytes_to_send == 11
    assert p.bytes_total == 3000134
    assert p.first_run is False


def test_scanning_shows_the_path_being_looked_at() -> None:
    p = _parse(MIXED[:2]).progress

    assert (p.phase, p.current) == ("scanning", "d/f16")
    assert format_line(p) == "syncing: looking for changes (d/f16)"


def test_progress_bar_gives_bytes_done_rate_and_eta() -> None:
    parser = _parse(FIRST_SYNC)
    parser.feed("  0%  00:04 ETA", 1000.0)
    parser.feed(" 25%  00:03 ETA", 1001.0)
    parser.feed(" 50%  00:02 ETA", 1002.0)
    p = parser.progress

    assert p.percent == 50 and p.bytes_done == 209715200 // 2
    assert p.rate == 209715200 / 2 / 2  # half the bytes in two seconds
    assert p.eta == 2.0
    assert format_line(p) == ("first sync: 0/1 items, 104.9 MB/209.7 MB (50%), 52.4 MB/s, "
                              "ETA 0:02")


def test_before_a_rate_is_known_the_eta_is_unisons() -> None:
    parser = _parse(FIRST_SYNC)
    parser.feed("  3%  1:02:03 ETA", 1000.0)

    assert parser.progress.rate == 0.0 and parser.progress.eta == 3723.0
    assert format_line(parser.progress).endswith("(3%), ETA 1:02:03")


def test_end_lines_count_items_and_finish_completes_the_bytes_only_when_all_ended() -> None:
    parser = _parse(MIXED)
    for line in ["[BGN] Updating file d/f1 from /b to /a", "[END] Updating file d/f1",
                 "[BGN] Copying newfile from /b to /a", "[END] Copying newfile",
                 "Failed [s.txt]: permission denied"]:
        parser.feed(line, 1000.0)
    assert parser.progress.items_done == 3
    assert format_line(parser.finish(1001.0)) == "done: 3/4 items, 0 B/3.0 MB (0%)"

    parser.feed("[END] Deleting d/f2", 1002.0)
    done = parser.finish(1003.0)
    assert done.phase == "done" and done.bytes_done == done.bytes_total
    assert format_line(done) == "done: 4/4 items, 3.0 MB/3.0 MB (100%)"


def test_a_second_unison_run_in_the_same_pass_starts_counting_afresh() -> None:
    parser = _parse([*FIRST_SYNC, "[END] Copying Documents", "100%  00:00 ETA"])
    parser.feed("Looking for changes", 1001.0)

    p = parser.progress
    assert (p.phase, p.items_total, p.bytes_total, p.first_run) == ("scanning", 0, 0, True)


def test_plain_display_writes_a_line_per_phase_and_per_tenth_of_the_bytes() -> None:
    out = io.StringIO()
    display = progress.TerminalDisplay(out, live=False)
    parser = ProgressParser(now=0.0)
    display(parser.progress)  # "starting" says nothing yet
    for line in [*FIRST_SYNC, *(f"{n:3d}%  00:01 ETA" for n in range(0, 100, 4))]:
        if parser.feed(line, 0.0):
            display(parser.progress)
    parser.feed("[END] Copying Documents", 1.0)
    display(parser.finish(1.0))

    lines = out.getvalue().splitlines()
    assert lines[:3] == ["first sync: looking for changes", "first sync: reconciling changes",
                         "first sync: 0/1 items, 0 B/209.7 MB (0%)"]
    assert len(lines) == 3 + 10 - 1 + 1  # tenths 1..9 after the first, then done
    assert lines[-1] == "done: 1/1 items, 209.7 MB/209.7 MB (100%)"


def test_live_display_redraws_one_line_and_ends_it() -> None:
    out = io.StringIO()
    display = progress.TerminalDisplay(out, live=True)
    parser = _parse(FIRST_SYNC)
    display(parser.progress)
    parser.feed("[END] Copying Documents")
    display(parser.finish())

    text = out.getvalue()
    assert text.startswith("\rfirst sync: 0/1 items") and "\n" not in text[:-1]
    assert text.endswith("\r\x1b[Kdone: 1/1 items, 209.7 MB/209.7 MB (100%)\n")


def _locations(tmp_path: Path) -> Locations:
    return Locations.from_env({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s"),
                               "XDG_RUNTIME_DIR": str(tmp_path / "r")})


def test_tracker_publishes_while_running_and_removes_the_file_at_the_end(tmp_path: Path) -> None:
    locations = _locations(tmp_path)
    seen: list[str] = []
    lock = SyncLock(locations.lock_file)
    lock.acquire()
    try:
        tracker = progress.Tracker(locations, lambda p: seen.append(p.phase))
        sink = tracker.wrap(lambda line: None)
        for line in FIRST_SYNC:
            sink(line)
        saved = json.loads(progress.progress_file(locations).read_text())
        running = progress.read(locations)
        line = format_line(running) if running else None
        tracker.close()
    finally:
        lock.release()

    assert saved["phase"] == "propagating" and saved["pid"] == os.getpid()
    assert saved["bytes_to_fetch"] == 209715200
    assert running is not None and running.items_total == 1
    assert line == "first sync: 0/1 items, 0 B/209.7 MB (0%)"
    assert seen[0] == "starting" and seen[-1] == "done"
    assert not progress.progress_file(locations).exists()


def test_a_file_left_by_a_killed_pass_is_not_believed(tmp_path: Path) -> None:
    locations = _locations(tmp_path)
    path = progress.progress_file(locations)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(Progress(pid=os.getpid(), phase="propagating").to_dict()))

    assert progress.read(locations) is None  # nobody holds the sync lock
    path.write_text("{not json")
    assert progress.read(locations) is None


def _pass(result: str, message: str = "", started: str = "t", action: str = "") -> SyncOutcome:
    return SyncOutcome(Result(result), message or f"{result} message", started, started, 0.1,
                       "s", action=action)


def test_status_overview_answers_at_a_glance() -> None:
    in_sync = _pass("in-sync", "in sync: nothing to do", "t1")
    offline = [_pass("offline", "server unreachable", t) for t in ("t2", "t3")]
    busy = _pass("busy", "another sync", "t4")
    conflicts = _pass("conflicts", "1 conflict(s) need you: a")

    never = Overview.of([])
    assert (never.state, never.action) == (State.NEVER_SYNCED, "roaming-homes sync")
    assert Overview.of([in_sync]).headline == "in sync: nothing to do"
    gone = Overview.of([in_sync, *offline, busy])
    assert (gone.state, gone.offline_since) == (State.OFFLINE, "t2")
    assert gone.headline == "offline since t2: server unreachable"
    stuck = Overview.of([in_sync, conflicts])
    assert stuck.state == State.NEEDS_ATTENTION
    assert stuck.headline == "needs attention: 1 conflict(s) need you: a"
    assert stuck.action == "roaming-homes conflicts"
    running = Overview.of([in_sync], running="syncing: x")
    assert (running.state, running.headline) == (State.SYNCING, "syncing now: syncing: x")
    assert running.action is None and Overview.of([], running="x").action is None
    # a pass running (a real-time cycle, often) does not hide what the last one left
    assert Overview.of([in_sync, conflicts], running="x").action == "roaming-homes conflicts"


def test_a_refusal_points_at_the_way_out_its_outcome_names() -> None:
    """The outcome says what helps (data, not a command fished out of its message)."""
    mass = _pass("refused", "… `roaming-homes sync --force` …",
                 action="roaming-homes restore --refused")
    plain = _pass("refused", "refused: run `roaming-homes sync --force`")

    assert Overview.of([mass]).action == "roaming-homes restore --refused"
    assert Overview.of([plain]).action == "roaming-homes check"


def test_the_daemon_line_and_the_status_are_one_model() -> None:
    """systemd's STATUS= line is a view of the same overview `status` shows."""
    done = _pass("in-sync", "in sync: nothing to do", "2025-01-02T12:01:07+01:00")
    away = _pass("offline", "server unreachable", "2025-01-02T12:03:00+01:00")

    assert Overview.of([done]).line() == "last sync 12:01:07: in sync"
    assert Overview.of([done, away]).line() == "offline since 12:03:00"
    assert Overview.of([]).line() == "first sync running"
    assert Overview(done, note="config broken").line() == "needs attention: config broken"


def test_describe_says_what_is_left_to_go_each_way() -> None:
    up = Progress(phase="propagating", items_total=4, items_done=1, items_to_send=4,
                  bytes_total=150_000_000, bytes_done=30_000_000, rate=12e6, eta=10.0)
    assert progress.describe(up) == "uploading 3 files, 120.0 MB, ~10 s left"
    down = Progress(phase="propagating", items_total=1, items_to_fetch=1, bytes_total=5000,
                    first_run=True, eta=None)
    assert progress.describe(down) == "first sync: downloading 1 file, 5.0 kB"
    both = Progress(phase="propagating", items_total=2, items_to_send=1, items_to_fetch=1,
                    eta=5400.0)
    assert progress.describe(both) == "uploading and downloading 2 files, ~1 h 30 min left"
    assert progress.describe(Progress(phase="scanning")) == "syncing: looking for changes"
    assert [progress.human_eta(s) for s in (0.2, 89, 90, 3000)] == ["1 s", "89 s", "2 min",
                                                                     "50 min"]


def test_item_counts_each_way_come_from_the_plan() -> None:
    p = _parse(MIXED).progress

    assert (p.items_to_fetch, p.items_to_send) == (2, 2)  # d/f1, newfile; d/f2, s.txt


def test_progress_written_without_the_counts_each_way_still_reads() -> None:
    """A pass of the version before them, still running across an upgrade."""
    older = {k: v for k, v in Progress(pid=3, items_total=2).to_dict().items()
             if k not in ("items_to_fetch", "items_to_send")}

    assert Progress.from_dict(older) == Progress(pid=3, items_total=2)


def test_a_real_time_pass_shows_in_the_status_while_it_copies_only(tmp_path: Path) -> None:
    """Watching holds the lock; a cycle looking for changes (every change arrives as one on
    the other side, to be looked at again) is not "syncing"; one that copies is."""
    from roaming_homes.actions import status

    locations = _locations(tmp_path)
    path = progress.progress_file(locations)
    lock = SyncLock(locations.lock_file)
    lock.acquire("watch")
    try:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(Progress(pid=os.getpid(), phase="scanning").to_dict()))
        looking = status.report(locations)
        path.write_text(json.dumps(Progress(
            pid=os.getpid(), phase="propagating", items_total=1, items_to_send=1,
            bytes_total=3_000_000, eta=2.0).to_dict()))
        copying = status.report(locations)
    finally:
        lock.release()

    assert (looking["running"], looking["progress"], looking["state"]) == (False, None,
                                                                           "never-synced")
    assert looking["watching_pid"] == os.getpid()
    assert copying["running"] is True and copying["running_pid"] == os.getpid()
    assert copying["headline"] == "syncing now: uploading 1 file, 3.0 MB, ~2 s left"
