"""One status model: the state of this user's sync at a glance, from the recorded outcomes.

`roaming-homes status` (text and `--json`) and the daemon's line in `systemctl --user status`
are two views of the same `Overview`: the state, since when the server has been out of reach,
the last pass that said something about the home, and the command that helps.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from roaming_homes.actions.computers import known
from roaming_homes.outcome import ATTENTION, REMEDIES, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety import backups
from roaming_homes.server.records import Freshness, age_of, freshness
from roaming_homes.session import pause, progress
from roaming_homes.session.computer import recorded_id
from roaming_homes.session.lock import lock_holder, lock_purpose
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape, printable


class State(enum.StrEnum):
    SYNCING = "syncing"
    IN_SYNC = "in-sync"
    OFFLINE = "offline"
    NEEDS_ATTENTION = "needs-attention"
    NEVER_SYNCED = "never-synced"
    PAUSED = "paused"


def clock(timestamp: str) -> str:
    """HH:MM:SS of an ISO timestamp, as the user reads it in `systemctl status`."""
    try:
        return datetime.fromisoformat(timestamp).strftime("%H:%M:%S")
    except ValueError:
        return timestamp


@dataclass
class Overview:
    """What the user needs to know first. `last` is the last pass that looked at the home (a
    pass skipped because another one ran says nothing about it); `running` the progress line of
    a pass running now; `note` a problem outside the passes (a configuration that no longer
    loads); `paused` the pause in force (`roaming-homes pause`)."""

    last: SyncOutcome | None
    offline_since: str | None = None
    running: str | None = None
    note: str = ""
    sync_log: str = "the sync log"  # where unison's output is, as the `run:` line names it
    paused: pause.Pause | None = None

    @classmethod
    def of(cls, history: Sequence[SyncOutcome], running: str | None = None,
           sync_log: str = "the sync log", paused: pause.Pause | None = None) -> Overview:
        passes = [entry for entry in history if entry.result not in _SAY_NOTHING]
        since = None
        for entry in reversed(passes):
            if entry.result != Result.OFFLINE:
                break
            since = entry.started
        return cls(passes[-1] if passes else None, since, running, sync_log=sync_log,
                   paused=paused)

    @property
    def state(self) -> State:
        """What the user sees first: a pass running; then what needs them; then a pause (they
        chose it, but must not forget it); then how the last pass left the home."""
        last = self.last
        if self.running is not None:
            return State.SYNCING
        if self.note or self.needs_attention():
            return State.NEEDS_ATTENTION
        if self.paused is not None:
            return State.PAUSED
        if last is None:
            return State.NEVER_SYNCED
        if self.offline_since is not None or last.result == Result.OFFLINE:
            return State.OFFLINE
        if last.result in (Result.IN_SYNC, Result.EXCLUDED):
            return State.IN_SYNC
        return State.NEEDS_ATTENTION

    @property
    def action(self) -> str | None:
        """The command to run, when one helps: the one the outcome names, else its result's.
        A pass running now does not hide what the last one left (in real-time mode one often
        runs)."""
        state, last = self.state, self.last
        if state == State.SYNCING and self.needs_attention():
            state = State.NEEDS_ATTENTION
        if state == State.NEVER_SYNCED:
            return REMEDIES[Result.NEVER_SYNCED]
        if state != State.NEEDS_ATTENTION or last is None or self.note:
            return None
        if last.action:
            return last.action
        remedy = REMEDIES.get(last.result, "roaming-homes -v sync")
        if last.result == Result.PARTIAL:
            return f"{remedy}  (details in {self.sync_log})"
        return remedy

    @property
    def headline(self) -> str:
        """The first line of `roaming-homes status`."""
        state, last = self.state, self.last
        if state == State.SYNCING:
            return f"syncing now: {self.running or 'starting'}"
        if self.note:
            return f"needs attention: {self.note}"
        if state == State.PAUSED and self.paused is not None:
            return f"{self.paused.line()} ({pause.RESUME_COMMAND})"
        if last is None:
            return "no sync has run yet"
        if state == State.OFFLINE:
            return f"offline since {self.offline_since or last.started}: {last.message}"
        if state == State.NEEDS_ATTENTION:
            return f"needs attention: {last.message}"
        return last.message

    def line(self) -> str:
        """The daemon's one line for systemd's STATUS= (`systemctl --user status`)."""
        state, last = self.state, self.last
        if state == State.OFFLINE:
            return f"offline since {clock(self.offline_since or (last.started if last else ''))}"
        if state in (State.NEEDS_ATTENTION, State.SYNCING, State.PAUSED):
            return self.headline
        if last is None:
            return "first sync running"
        if last.result == Result.IN_SYNC:
            return f"last sync {clock(last.finished)}: in sync"
        return f"last pass {clock(last.finished)}: {last.message}"

    def needs_attention(self) -> bool:
        return self.last is not None and self.last.result in ATTENTION


# Outcomes that say nothing about the home: another pass held the lock, or syncing is paused.
_SAY_NOTHING = frozenset({Result.BUSY, Result.PAUSED})


def computers(locations: Locations, stale_after: int, forget_after_days: int,
              now: datetime | None = None) -> list[dict[str, Any]]:
    """The user's computers as the last passes brought them back from the server: each with
    its last successful sync, and a warning when that is older than `stale_after` seconds (its
    changes may be missing from the server) or `forget_after_days` (stale; never removed)."""
    now = now or datetime.now().astimezone()
    mine = recorded_id(locations)
    listed = []
    for record in sorted(known(locations), key=lambda r: (r.id != mine, r.name)):
        since = age_of(record.last_success, now)
        fresh = freshness(since, stale_after, forget_after_days)
        warning = None
        if fresh is Freshness.STALE:
            warning = "stale: " + ("never synced" if since is None else
                                   f"not synced for {round(since / 86400)} days")
        elif fresh is Freshness.BEHIND and since is not None:
            warning = (f"not synced for {_days(since)}: its changes may be missing from the "
                       "server")
        listed.append({"id": record.id, "name": record.name, "this": record.id == mine,
                       "last_success": record.last_success, "last_pass": record.last_pass,
                       "result": record.result, "version": record.version,
                       "warning": warning})
    return listed


def _days(seconds: float) -> str:
    hours = seconds / 3600
    return f"{round(hours)} hours" if hours < 48 else f"{round(hours / 24)} days"


@dataclass(frozen=True)
class Activity:
    """Who holds the sync lock now: a pass (its pid and progress), or the daemon watching."""

    pid: int | None = None
    watching: int | None = None
    progress: progress.Progress | None = None

    @property
    def line(self) -> str | None:
        """The running pass's progress line; None when no pass runs."""
        if self.pid is None:
            return None
        return progress.describe(self.progress) if self.progress else "starting"


def activity(locations: Locations) -> Activity:
    held = lock_purpose(locations.lock_file)
    # Real-time mode holds the lock all the time: that is not "a sync runs now", nor is each
    # of its passes looking for changes (every change seen on one side is looked at again when
    # it arrives on the other): a real-time pass runs, for the user, while it copies.
    watching = held[0] if held and held[1] == "watch" else None
    holder = lock_holder(locations.lock_file)
    current = progress.read(locations) if holder else None
    if watching and current is not None and not progress.copying(current):
        current = None
    pid = (holder if current else None) if watching else holder
    return Activity(pid, watching, current)


def overview(locations: Locations, store: StateStore | None = None,
             now: Activity | None = None) -> Overview:
    """The state at a glance, from the saved state, the lock and the pause (never runs a
    sync)."""
    store = store or StateStore(locations.state_dir)
    last = store.last()
    return Overview.of(store.history() or ([last] if last else []),
                       (now or activity(locations)).line, str(store.log_file),
                       paused=pause.paused(locations))


def report(locations: Locations, stale_after: int = 86400,
           forget_after_days: int = 90) -> dict[str, Any]:
    """Everything `status` shows, from the saved state and the lock (never runs a sync)."""
    store = StateStore(locations.state_dir)
    data = store.load()
    last = store.last()
    now = activity(locations)
    pid, current = now.pid, now.progress
    glance = overview(locations, store, now)
    shown = last.to_dict() if last else {}
    result: dict[str, Any] = {
        "result": shown.get("result", str(Result.NEVER_SYNCED)),
        "exit_code": shown.get("exit_code"),
        "message": shown.get("message", "no sync has run yet"),
        **{key: shown.get(key) for key in ("started", "finished", "duration", "server")},
        **{key: shown.get(key, 0) for key in ("transferred", "skipped", "failed")},
        "conflicts": shown.get("conflicts", []),
        "settled": shown.get("settled", []),
        "settled_recently": _settled(store.history()),
        "notes": shown.get("notes", []),
        "last_success": store.last_success(),
        "running": pid is not None,
        "running_pid": pid,
        "watching_pid": now.watching,
        "progress": current.to_dict() if current else None,
        "progress_line": progress.format_line(current) if current else now.line,
        "paused": glance.paused.to_dict() if glance.paused else None,
        "state": str(glance.state),
        "headline": glance.headline,
        "action": glance.action,
        "offline_since": glance.offline_since,
        "computers": computers(locations, stale_after, forget_after_days),
        "backups": _backups(locations),
    }
    if "damaged" in data:
        result["warning"] = f"state file unreadable, starting afresh: {data['damaged']}"
    return result


def _settled(history: Sequence[SyncOutcome]) -> int:
    """How many conflicts `sync.prefer` settled in the recorded history (each path once)."""
    return len({path for entry in history for path in entry.settled})


def _backups(locations: Locations) -> dict[str, Any] | None:
    """The backups' sizes on both sides as the last retention run measured them."""
    found = backups.measured(locations.state_dir)
    if not isinstance(found.get("sizes"), dict) or not isinstance(found.get("pruned"), float):
        return None
    measured = datetime.fromtimestamp(found["pruned"]).astimezone()
    return {"sizes": found["sizes"], "measured": measured.isoformat(timespec="seconds")}


def render(report: dict[str, Any]) -> str:
    """`status` as text: every name in it escaped (a file name is never a terminal command)."""
    lines = [f"roaming-homes: {printable(report['headline'])}"]
    if report["action"]:
        lines.append(f"  run:              {report['action']}")
    if report["finished"]:
        lines.append(f"  last pass:        {report['finished']} ({report['result']}, "
                     f"{report['duration']} s, {report['transferred']} transferred)")
    lines.append(f"  last success:     {report['last_success'] or 'never'}")
    if report["server"]:
        lines.append(f"  server:           {printable(report['server'])}")
    conflicts = ", ".join(escape(name) for name in report["conflicts"]) or "none"
    lines.append(f"  conflicts:        {conflicts}")
    if report["settled"] or report["settled_recently"]:
        names = ", ".join(escape(name) for name in report["settled"][:5]) or "none"
        lines.append(f"  settled:          {names} in the last pass; "
                     f"{report['settled_recently']} in the recorded history (sync.prefer "
                     "kept both versions)")
    running = f"yes (pid {report['running_pid']})" if report["running"] else "no"
    lines.append(f"  sync running now: {running}")
    if report["paused"] and report["state"] != "paused":
        shown = pause.Pause.from_dict(report["paused"]).line()
        lines.append(f"  paused:           {shown} ({pause.RESUME_COMMAND})")
    if report["watching_pid"]:
        lines.append(f"  real-time mode:   watching (daemon pid {report['watching_pid']})")
    lines += [f"  note:             {printable(note)}" for note in report["notes"]]
    for item in report["computers"]:
        who = printable(item["name"]) + (" (this one)" if item["this"] else "")
        when = item["last_success"] or "never"
        line = f"  computer:         {who}: last sync {when}, {item['result']}"
        lines.append(line + (f"; {item['warning']}" if item["warning"] else ""))
    if kept := report["backups"]:
        sizes = ", ".join(f"{side} {progress.human_bytes(size)}"
                          for side, size in kept["sizes"].items())
        lines.append(f"  backups:          {sizes} (measured {kept['measured']})")
    if "warning" in report:
        lines.append(f"  warning:          {printable(report['warning'])}")
    return "\n".join(lines)
