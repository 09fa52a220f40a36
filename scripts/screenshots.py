"""What scripts/screenshots shows, made by roaming-homes' own code on the session bus it is given.

`notification`: the conflict notification, as a pass that left two conflicts sends it (texts,
urgency, icon, and the buttons when the server offers actions).

`tray STATE WORLD`: the daemon's tray icon (`actions.tray.Tray`) for a user whose home is the
directory WORLD, in STATE: `needs-you` (the last pass left a conflict) or `syncing` (a pass
holds the sync lock and publishes its progress). Prints "ready" once the panel took the icon,
then serves it until SIGTERM. The state is recorded with the project's own state files; no
pass runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from roaming_homes import config as config_mod
from roaming_homes.actions.tray import Tray
from roaming_homes.desktop.dbus import Bus
from roaming_homes.desktop.messages import DEFAULT_MESSAGES, build_request
from roaming_homes.desktop.policy import Decision
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.session import progress
from roaming_homes.session.lock import SyncLock
from roaming_homes.session.state import StateStore, write_atomic

STAMP = "2026-11-29T10:22:00+01:00"
HOST = "homes.example.org"


def notification() -> None:
    bus = Bus()
    decision = Decision("conflicts", fields={
        "paths": "Documents/report.odt, Pictures/plan.svg", "count": "2"})
    request = build_request(decision, DEFAULT_MESSAGES,
                            {"host": HOST, "user": "ann", "command": "roaming-homes resolve",
                             "email": ""},
                            with_actions="actions" in bus.capabilities(), support_email="")
    bus.notify(request)
    bus.close()


def _record(locations: Locations, state: str) -> SyncLock | None:
    """The state files of a user in `state`; the lock a syncing pass holds."""
    store = StateStore(locations.state_dir)
    if state == "needs-you":
        store.record(SyncOutcome(Result.CONFLICTS, "1 conflict: Documents/report.odt",
                                 STAMP, STAMP, 1.2, HOST, conflicts=["Documents/report.odt"]))
        return None
    store.record(SyncOutcome(Result.IN_SYNC, "in sync", STAMP, STAMP, 0.4, HOST))
    lock = SyncLock(locations.lock_file)
    lock.acquire()
    now = time.time()
    running = progress.Progress(
        pid=os.getpid(), phase="propagating", started=now - 20, updated=now, items_total=5,
        items_done=2, items_to_send=3, bytes_total=180_000_000, bytes_done=60_000_000,
        bytes_to_send=180_000_000, percent=33, rate=12_000_000, eta=10, current="Videos/talk.mp4")
    write_atomic(progress.progress_file(locations), json.dumps(running.to_dict()))
    return lock


def tray(state: str, world: Path) -> None:
    env = {**os.environ, "HOME": str(world / "home"), "XDG_STATE_HOME": str(world / "state"),
           "XDG_CONFIG_HOME": str(world / "config"), "XDG_RUNTIME_DIR": str(world / "run"),
           "ROAMING_HOMES_CONFIG": str(world / "roaming-homes.toml")}
    for name in ("home", "run"):
        (world / name).mkdir(parents=True, exist_ok=True, mode=0o700)
    (world / "roaming-homes.toml").write_text(f'[server]\nroot = "{world / "server"}"\n')
    locations = Locations.from_env(env)
    held = _record(locations, state)
    config = config_mod.load(locations, world / "roaming-homes.toml")
    shown = Tray(lambda: config, locations, lambda: None, lambda: "")
    shown.start()
    if not shown.item.registered.wait(20):
        sys.exit("the panel did not take the tray icon")
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    shown.close()
    if held is not None:
        held.release()


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if sys.argv[1:2] == ["notification"]:
        notification()
    elif sys.argv[1:2] == ["tray"] and len(sys.argv) == 4:
        tray(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit("usage: screenshots.py notification | tray needs-you|syncing WORLD")


if __name__ == "__main__":
    main()
