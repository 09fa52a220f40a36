"""Bringing files back: `restore --refused` undoes what the loss guard refused to propagate.

When the guard refuses a pass, the side that would have lost the files still has them: the
restore syncs just the refused paths with that side's version winning (unison -force), so
the deleted files come back and the overwritten ones get their old content again; what the
damaged side held is kept in its backups, like everything a sync replaces.
"""

from __future__ import annotations

from roaming_homes.actions import sync as engine
from roaming_homes.config import Config
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety import refused
from roaming_homes.session.lock import SyncLock
from roaming_homes.session.state import StateStore
from roaming_homes.unison import ssh as transport


def restore_refused(config: Config, locations: Locations) -> SyncOutcome:
    """Put back what the last refused pass would have deleted or overwritten, from the side
    that still has it. Raises RoamingHomesError when nothing was refused (or the lock is
    held); the outcome is recorded like a pass."""
    pending = refused.load(locations.state_dir)
    if pending is None:
        raise RoamingHomesError("nothing to restore: the last pass was not refused by the "
                                "mass-deletion guard", ExitCode.IN_SYNC)
    server = transport.Server.from_config(config["server"])
    with SyncLock(locations.lock_file) as lock:
        store = StateStore(locations.state_dir)
        job = engine.Pass(config, locations, server, store, lock_fd=lock.fileno)
        outcome = engine.record(store, engine.guarded_pass(
            job, engine.outcomes(server), force=True, only=pending.paths, winner=pending.side))
    if outcome.result == Result.IN_SYNC:
        refused.clear(locations.state_dir, pending.key)
        outcome.message = (f"restored {len(pending.paths)} item(s) from "
                           f"{'the server' if pending.side == 'server' else 'this computer'}: "
                           f"{outcome.message}")
    return outcome
