"""The detached listener of a notification with actions (`python -m
roaming_homes.desktop.listener`, the job as JSON on stdin).

It subscribes to `ActionInvoked` first (no click can be missed), sends `Notify`, reports the id
to its caller on stdout, forks, and then waits for a click, the notification's closing, or
being superseded by a newer notification (it compares its serial with notify.json), at most
`LISTEN_LIMIT` seconds. Only signals from the server that showed the notification count. A
resident notification (one that needs the user) stays on screen after a click, and so does its
listener: its other actions keep working.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from roaming_homes.desktop import opener
from roaming_homes.desktop.dbus import BUS_TIMEOUT, Bus
from roaming_homes.desktop.messages import Request, mailto
from roaming_homes.desktop.notify import read_state, state_lock, write_state
from roaming_homes.session.state import write_atomic

log = logging.getLogger(__name__)

LISTEN_LIMIT = 12 * 3600  # seconds a listener waits for a click before it gives up

# The two ways out of a loss refusal, run by the listener with the Python that runs us (a
# development tree has no `roaming-homes` on the PATH; an installed one is the same program).
HELD_BACK_COMMANDS = {"restore": ("restore", "--refused"), "confirm": ("sync", "--force")}


# --- the listener -----------------------------------------------------------------------------

def _is_current(job: dict[str, Any]) -> bool:
    active = read_state(Path(job["state_dir"]), Path(job["runtime_dir"])).active
    return active is not None and active.serial == job["serial"]


# The conflict notification's ways out: `conflicts resolve --keep …` on the paths it names.
KEEP_ACTIONS = {"default": "both", "keep-local": "local", "keep-server": "server"}


def _program(*args: str) -> None:
    """Run roaming-homes with the Python that runs us (a development tree has no
    `roaming-homes` on the PATH; an installed one is the same program). The listener closed
    its stdout (its caller read the id from it): the command gets streams of its own, or its
    pipes to unison could land on descriptors 1 and 2."""
    subprocess.run([sys.executable, "-m", "roaming_homes", *args], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _show_folder(job: dict[str, Any]) -> None:
    """Show the files the notification names in the file manager (no error without one)."""
    opener.show([Path(job["home"], path) for path in job.get("paths") or [""]])


def _email(job: dict[str, Any]) -> Request | None:
    """Draft the support mail with xdg-email; without it, write the report to a file in the
    state directory and return the notification that says where."""
    address, subject, body = job["email"]
    if shutil.which("xdg-email") is not None:
        subprocess.run(["xdg-email", mailto(address, subject, body)], stdin=subprocess.DEVNULL,
                       check=False)
        return None
    report = Path(job["state_dir"], f"support-report-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    write_atomic(report, f"To: {address}\nSubject: {subject}\n\n{body}\n")
    return Request(summary="Support report saved",
                   body=f"No mail program was found (xdg-email): send {report} to {address}.",
                   icon="dialog-information", urgency=1, category="transfer", replaces_id=0,
                   actions=[])


def _ignore(job: dict[str, Any]) -> None:
    state_dir, runtime_dir = Path(job["state_dir"]), Path(job["runtime_dir"])
    with state_lock(state_dir):
        state = read_state(state_dir, runtime_dir)
        if job["key"] not in state.ignored:
            state.ignored.append(job["key"])
        write_state(state_dir, runtime_dir, state)


def run_action(action: str, job: dict[str, Any]) -> Request | None:
    """Do what the user clicked: settle the conflicts, open their folder, start the resolver,
    restore or confirm what the loss guard held back, draft a mail, or silence this key.
    Returns a notification to show about it, if any."""
    if action in KEEP_ACTIONS:
        home = Path(job["home"])
        paths = [str(home / path) for path in job.get("paths", [])]
        if paths:  # absolute paths after "--": a name is never read as an option
            _program("conflicts", "resolve", "--keep", KEEP_ACTIONS[action], "--", *paths)
    elif action == "show":
        _show_folder(job)
    elif action == "resolve":
        subprocess.run(job["resolve_command"], stdin=subprocess.DEVNULL, check=False)
    elif action in HELD_BACK_COMMANDS:
        _program(*HELD_BACK_COMMANDS[action])
    elif action == "email":
        return _email(job)
    elif action == "ignore":
        _ignore(job)
    return None


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
            if member == "ActionInvoked" and len(body) > 1 and (
                    not _is_current(job)
                    or not _clicked(bus, notification_id, str(body[1]), job, request.resident)):
                return


def _clicked(bus: Bus, notification_id: int, action: str, job: dict[str, Any],
             resident: bool) -> bool:
    """Act on a click; whether to go on listening: a resident notification stays on screen
    and its actions keep working (until it is closed, replaced or ignored)."""
    if action == "ignore":
        with contextlib.suppress(Exception):
            bus.close_notification(notification_id)
    told = run_action(action, job)
    if told is not None:
        with contextlib.suppress(Exception):
            bus.notify(told)
    return resident and action != "ignore"


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
