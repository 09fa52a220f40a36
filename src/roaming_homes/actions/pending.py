"""What this computer changed that the server may not have yet, told when the session ends
while the server is out of reach or syncing is paused (`tell`: the daemon's stop, the logout
hook's `sync --logout`): in the log, sync.log and a notification, so nobody closes the lid
believing it is all on the server.

Without a connection unison cannot say what it would propagate (its archives are read against
both replicas), so this is read from the files themselves: those written, made, renamed or
changed in their permissions (mtime or ctime) since the last successful sync ended, under the
synced paths and unison's ignore rules. Deletions leave no file to find and are not counted;
files a pass brought here were changed before it ended and are not counted either.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from roaming_homes.actions import sync as engine
from roaming_homes.config import Config
from roaming_homes.desktop import notify
from roaming_homes.errors import RoamingHomesError
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session.progress import human_time
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import changed_since

SHOWN_NAMES = 5  # names a log line or a notification lists; the count says how many in all
WALK_BUDGET = 5.0  # seconds the look may take: it runs at logout, inside the stop's margin
# A session's last pass that leaves this computer's changes here, and why, as the user is told.
HELD_BACK = {Result.OFFLINE: "the server is out of reach", Result.PAUSED: "syncing is paused"}


@dataclass(frozen=True)
class Pending:
    """Files changed here since the last successful sync (`since`, ISO; None: never synced)."""

    paths: list[str]
    complete: bool  # False: the look ran out of time, there are at least this many
    since: str | None

    @property
    def count(self) -> str:
        return str(len(self.paths)) if self.complete else f"at least {len(self.paths)}"

    def names(self) -> str:
        """A few of the names, escaped (a file name is never a terminal command)."""
        shown = ", ".join(escape(path) for path in self.paths[:SHOWN_NAMES])
        return shown + (" …" if len(self.paths) > SHOWN_NAMES or not self.complete else "")

    def line(self, why: str) -> str:
        """One line for the log: how many, a few names, since when, and why."""
        return (f"{self.count} file(s) changed here since the last sync "
                f"({human_time(self.since)}) are not on the server yet ({why}): "
                f"{self.names()}; they sync the next time it is reached")


def local_changes(config: Config, locations: Locations) -> Pending | None:
    """The files changed here since the last successful sync; None when there are none."""
    last = StateStore(locations.state_dir).last_success()
    try:
        # The end is recorded to the second: what the pass itself wrote here (in that second,
        # at the latest) is never counted; a change in the second after it could be missed.
        since = datetime.fromisoformat(last).timestamp() + 1 if last else 0.0
    except ValueError:
        since = 0.0
    paths, _ = engine.sync_paths(config, locations)
    server = transport.Server.from_config(config["server"])
    plan = engine.build_plan(config, locations, server, None, paths)
    found, complete = changed_since(locations.home, paths, plan.ignore_paths,
                                    plan.ignore_names, since, WALK_BUDGET)
    return Pending(found, complete, last) if found else None


def tell(config: Config, locations: Locations, last: SyncOutcome) -> str | None:
    """After the session's last pass: when it could not sync (`HELD_BACK`) and files changed
    here since the last successful sync, say so in sync.log and a notification; returns the
    line for the caller's log (None: nothing to tell)."""
    why = HELD_BACK.get(last.result)
    found = local_changes(config, locations) if why else None
    if why is None or found is None:
        return None
    line = f"stopping with {found.line(why)}"
    with contextlib.suppress(OSError, RoamingHomesError), \
            StateStore(locations.state_dir).open_log() as transcript:
        transcript.write(line)
    notify.unsynced(config, locations, count=found.count, paths=found.names(), why=why)
    return line
