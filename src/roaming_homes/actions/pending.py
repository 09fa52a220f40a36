"""What this computer changed that the server may not have yet, told when the session ends
while the server is out of reach or syncing is paused: the daemon's stop (a logout) logs it and
a notification says it, so nobody closes the lid believing it is all on the server.

Without a connection unison cannot say what it would propagate (its archives are read against
both replicas), so this is read from the files themselves: those written, made, renamed or
changed in their permissions (mtime or ctime) since the last successful sync ended, under the
synced paths and unison's ignore rules. Deletions leave no file to find and are not counted;
files a pass brought here were changed before it ended and are not counted either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from roaming_homes.actions import sync as engine
from roaming_homes.config import Config
from roaming_homes.desktop.policy import human_time
from roaming_homes.paths import Locations
from roaming_homes.session.state import StateStore
from roaming_homes.text import escape
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import changed_since

SHOWN_NAMES = 5  # names a log line or a notification lists; the count says how many in all
WALK_BUDGET = 5.0  # seconds the look may take: it runs at logout, inside the stop's margin


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
        since = datetime.fromisoformat(last).timestamp() if last else 0.0
    except ValueError:
        since = 0.0
    paths, _ = engine.sync_paths(config, locations)
    server = transport.Server.from_config(config["server"])
    plan = engine.build_plan(config, locations, server, None, paths)
    found, complete = changed_since(locations.home, paths, plan.ignore_paths,
                                    plan.ignore_names, since, WALK_BUDGET)
    return Pending(found, complete, last) if found else None
