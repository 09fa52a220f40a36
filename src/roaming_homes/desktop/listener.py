"""The detached listener of a notification with actions (`python -m
roaming_homes.desktop.listener`, the job as JSON on stdin).

It subscribes to `ActionInvoked` first (no click can be missed), sends `Notify`, reports the id
to its caller on stdout, forks, and then waits for a click, the notification's closing, or
being superseded by a newer notification (it compares its serial with notify.json), at most
`LISTEN_LIMIT` seconds. Only signals from the server that showed the notification count.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from roaming_homes.desktop.dbus import BUS_TIMEOUT, Bus
from roaming_homes.desktop.messages import Request, mailto
from roaming_homes.desktop.notify import read_state, state_lock, write_state

LISTEN_LIMIT = 12 * 3600  # seconds a listener waits for a click before it gives up

# The two ways out of a loss refusal, run by the listener with the Python that runs us (a
# development tree has no `roaming-homes` on the PATH; an installed one is the same program).
HELD_BACK_COMMANDS = {"restore": ("restore", "--refused"), "confirm": ("sync", "--force")}


# --- the listener -----------------------------------------------------------------------------

def _is_current(job: dict[str, Any]) -> bool:
    active = read_state(Path(job["state_dir"]), Path(job["runtime_dir"])).active
    return active is not None and active.serial == job["serial"]


def run_action(action: str, job: dict[str, Any]) -> None:
    """Do what the user clicked: start the resolver, restore or confirm what the loss guard held
    back, draft a mail, or silence this key."""
    state_dir, runtime_dir = Path(job["state_dir"]), Path(job["runtime_dir"])
    if action == "resolve":
        subprocess.run(job["resolve_command"], stdin=subprocess.DEVNULL, check=False)
    elif action in HELD_BACK_COMMANDS:
        # The listener closed its stdout (its caller read the id from it): give the command
        # streams of its own, or its pipes to unison could land on descriptors 1 and 2.
        subprocess.run([sys.executable, "-m", "roaming_homes", *HELD_BACK_COMMANDS[action]],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    elif action == "email":
        subprocess.run(["xdg-email", mailto(*job["email"])], stdin=subprocess.DEVNULL,
                       check=False)
    elif action == "ignore":
        with state_lock(state_dir):
            state = read_state(state_dir, runtime_dir)
            if job["key"] not in state.ignored:
                state.ignored.append(job["key"])
            write_state(state_dir, runtime_dir, state)


def listen(job: dict[str, Any], out: Any) -> None:
    """Subscribe, notify, report the id on `out`, then act on one click (see the docstring)."""
    request = Request(**job["request"])
    bus = Bus()
    handle = bus.subscribe()
    notification_id = bus.notify(request)
    out.write(f"{notification_id}\n")
    out.flush()
    out.close()
    if os.fork():
        os._exit(0)  # the caller waits for this process only; the grandchild listens on
    deadline = time.monotonic() + LISTEN_LIMIT
    with handle as queue:
        while time.monotonic() < deadline:
            try:
                signal = bus.signal(queue, BUS_TIMEOUT)
            except TimeoutError:
                if not _is_current(job):
                    return
                continue
            if signal is None or not signal[1] or signal[1][0] != notification_id:
                continue
            member, body = signal
            if member == "NotificationClosed":
                return
            if member == "ActionInvoked" and len(body) > 1:
                if _is_current(job):
                    if body[1] == "ignore":
                        with contextlib.suppress(Exception):
                            bus.close_notification(notification_id)
                    run_action(str(body[1]), job)
                return


def _main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        listen(job, sys.stdout)
    except Exception as exc:  # reported to the caller, which logs it
        with contextlib.suppress(Exception):
            print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
