"""Pausing syncing: `roaming-homes pause [DURATION]`, `resume`, and the tray's "Pause for 1 h".

A pause is one small file, `$XDG_STATE_HOME/roaming-homes/pause.json`: when it began and until
when it lasts (`null`: until `resume`). It lives with the state, not in the runtime directory,
so that "pause for 2 h" still holds after a logout and login within those two hours; a pause
without an end is shown by `status` (and the daemon's status line) for as long as it lasts.

Who honours it: the session daemon (no interval pass, no real-time mode, no final pass at
logout while paused; one pass to catch up as soon as it ends or `resume` is called: the daemon
watches this file) and the login/logout hooks' `sync --skip-if-daemon` (result `paused`, exit
75). An explicit `roaming-homes sync` runs anyway: the user asked for that pass; automatic
syncing stays paused.

Reading never fails: a pause that has ended reads as no pause, and a file of the wrong shape
is moved aside with one warning (`files.read_checked`) and reads as no pause either. Syncing
then goes on, which is the safe side for the files: a pause only ever holds changes back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from roaming_homes.files import Shape, is_str, optional, read_json
from roaming_homes.paths import Locations

PAUSE_FILE = "pause.json"
RESUME_COMMAND = "roaming-homes resume"

# 30m, 1h, 2h30m, 1d, 90s: at least one part, each unit at most once, in this order.
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (86400, 3600, 60, 1)
MAX_DURATION = timedelta(days=365)

_PAUSE = Shape.complete({"since": is_str, "until": optional(is_str)})


@dataclass(frozen=True)
class Pause:
    """A pause in force: since when, and until when (None: until `resume`)."""

    since: datetime
    until: datetime | None

    def line(self) -> str:
        """`paused until 14:30` (the date too when it is not today), `paused until resumed`."""
        if self.until is None:
            return "paused until resumed"
        local = self.until.astimezone()
        today = datetime.now().astimezone().date()
        shown = local.strftime("%H:%M") if local.date() == today else \
            local.strftime("%Y-%m-%d %H:%M")
        return f"paused until {shown}"

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(timespec="seconds"),
                "until": self.until.isoformat(timespec="seconds") if self.until else None}

    @classmethod
    def from_dict(cls, data: Any) -> Pause:
        """The pause pause.json holds; ValueError when it is not of that shape."""
        data = _PAUSE.checked(data)
        since = _aware(datetime.fromisoformat(data["since"]))
        until = _aware(datetime.fromisoformat(data["until"])) if data["until"] else None
        return cls(since, until)


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.astimezone()


def parse_duration(text: str) -> timedelta:
    """`30m`, `1h`, `2h30m`, `1d`, `90s` as a duration; ValueError for anything else (zero and
    more than a year included)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 1h, 2h30m)")
    seconds = sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True)
                  if part)
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r}: a pause lasts from 1 s to {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def pause_file(locations: Locations) -> Path:
    return locations.state_dir / PAUSE_FILE


def pause(locations: Locations, until: datetime | None, now: datetime | None = None) -> Pause:
    """Pause syncing until `until` (None: until `resume`); replaces any pause in force."""
    from roaming_homes.session.state import write_atomic

    now = now or datetime.now().astimezone()
    made = Pause(_aware(now), _aware(until) if until else None)
    write_atomic(pause_file(locations), json.dumps(made.to_dict()) + "\n")
    return made


def resume(locations: Locations, now: datetime | None = None) -> Pause | None:
    """End the pause; returns the one that was in force (None: syncing was not paused)."""
    was = paused(locations, now)
    pause_file(locations).unlink(missing_ok=True)
    return was


def paused(locations: Locations, now: datetime | None = None) -> Pause | None:
    """The pause in force at `now`; None when there is none, it has ended, or the file is
    broken (moved aside, with a warning)."""
    try:
        found = read_json(pause_file(locations), Pause.from_dict)
    except OSError:
        return None  # unreadable (permissions): not ours to judge; syncing goes on
    now = now or datetime.now().astimezone()
    if found is None or (found.until is not None and found.until <= now):
        return None
    return found

