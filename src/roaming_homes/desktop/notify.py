"""Desktop notifications after a pass: the glue between the pure policy (`policy`), the texts
(`messages`) and the D-Bus client (`dbus`).

`after_pass()` loads what was shown before from `$XDG_STATE_HOME/roaming-homes/notify.json`,
asks the policy, sends `Notify` / `CloseNotification` and saves the state. It never raises: no
session bus means one log line and the sync goes on with its own exit code.

Actions ("Keep both", "Keep this computer's", "Keep the other", "Show…", "Email support",
"Ignore", "Restore files", "Sync anyway") are offered only when the server lists the "actions"
capability; otherwise the body says which command to run.
A click must be answered by a process that is still connected when the user clicks, hours later
perhaps, while a one-shot `roaming-homes sync` must exit at once. So a notification with actions
is sent by a small detached listener (`roaming_homes.desktop.listener`), and the daemon uses the
same path, so there is one mechanism to test.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from roaming_homes.desktop.dbus import BUS_TIMEOUT, Bus
from roaming_homes.desktop.messages import Request, build_request, load_messages, support_mail
from roaming_homes.desktop.policy import (
    Decision,
    NotifyState,
    decide,
    decide_again,
    decide_first_sync,
    decide_unsynced,
)
from roaming_homes.errors import DiskFull
from roaming_homes.files import read_json
from roaming_homes.outcome import SyncOutcome
from roaming_homes.session.progress import Progress
from roaming_homes.session.state import StateStore, ensure_private_dir, write_atomic

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20  # lines of sync.log in a support mail


def check_config(config: Any) -> None:
    """Raise ConfigError (exit 78) when notify.messages names a bad file; run before a pass."""
    if config["notify"]["enabled"]:
        load_messages(config["notify"]["messages"])


# --- the state file ---------------------------------------------------------------------------

def state_file(state_dir: Path) -> Path:
    return state_dir / "notify.json"


def spill_file(runtime_dir: Path) -> Path:
    """Where the state goes while notify.json cannot be written (a full disk): what was shown
    must be remembered, or every pass would show it again, and a listener would take its
    notification for superseded. The runtime directory is another file system (a tmpfs)."""
    return runtime_dir / "roaming-homes-notify.json"


def read_state(state_dir: Path, runtime_dir: Path) -> NotifyState:
    """What was shown: the spilled state when there is one (it is newer), else notify.json.

    A fresh state when there is none, or when it was broken (it is moved aside): at worst a
    notification already on screen is shown once more, or a first sync announced again.
    """
    places = [state_file(state_dir)]
    if runtime_dir != state_dir:
        places.insert(0, spill_file(runtime_dir))
    for path in places:
        try:
            state = read_json(path, NotifyState.from_dict)
        except OSError:
            state = None
        if state is not None:
            return state
    return NotifyState()


def write_state(state_dir: Path, runtime_dir: Path, state: NotifyState) -> None:
    """Save the state in notify.json; while the disk is full, in the runtime directory."""
    text = json.dumps(state.to_dict(), indent=2) + "\n"
    try:
        write_atomic(state_file(state_dir), text)
    except DiskFull:
        if runtime_dir == state_dir:
            raise
        write_atomic(spill_file(runtime_dir), text, durable=False)
        return
    if runtime_dir != state_dir:
        spill_file(runtime_dir).unlink(missing_ok=True)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Serializes read-modify-write of notify.json between a pass and a listener's "Ignore"."""
    ensure_private_dir(state_dir)
    fd = os.open(state_dir / "notify.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _log_lines(state_dir: Path) -> list[str]:
    try:
        return (state_dir / "sync.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []



# --- after a pass -----------------------------------------------------------------------------

def after_pass(config: Any, locations: Any, outcome: SyncOutcome, *,
               now: datetime | None = None) -> None:
    """Notify about this pass if it calls for it. Never raises: a sync never fails on this."""
    if not config["notify"]["enabled"]:
        return
    try:
        with state_lock(locations.state_dir):
            _after_pass(config, locations, outcome, now or datetime.now().astimezone())
    except Exception as exc:  # notifications must never break a sync
        log.debug("notification not shown: %s", exc)


def _after_pass(config: Any, locations: Any, outcome: SyncOutcome, now: datetime) -> None:
    previous = read_state(locations.state_dir, locations.runtime_dir)
    lines = _log_lines(locations.state_dir)
    decision, new = decide(previous, outcome,
                           last_success=StateStore(locations.state_dir).last_success(),
                           now=now, stale_after=config["notify"]["stale_after"])
    _apply(config, locations, previous, decision, new, outcome, lines)


def _apply(config: Any, locations: Any, previous: NotifyState, decision: Decision | None,
           new: NotifyState, outcome: SyncOutcome | None, lines: list[str]) -> None:
    """Show `decision` and remember `new`, or, when it could not be shown, `previous`'s view
    of the screen (the next pass tries again)."""
    where = (locations.state_dir, locations.runtime_dir)
    if decision is None:
        write_state(*where, new)
        return
    try:
        notification_id = _deliver(config, locations, outcome, decision, new, lines)
    except Exception:
        write_state(*where, new.undelivered(previous))
        raise
    if new.active is not None and decision.kind is not None:
        new.active.id = notification_id
    write_state(*where, new)


def first_sync_started(config: Any, locations: Any, *, first_run: bool,
                       to_transfer: int) -> None:
    """Announce a big first sync (see `decide_first_sync`). Never raises, like `after_pass`."""
    if not config["notify"]["enabled"]:
        return
    try:
        with state_lock(locations.state_dir):
            previous = read_state(locations.state_dir, locations.runtime_dir)
            decision, new = decide_first_sync(previous, first_run=first_run,
                                              to_transfer=to_transfer)
            # First-sync notifications have no actions: no support mail, no log needed.
            _apply(config, locations, previous, decision, new, None, [])
    except Exception as exc:  # notifications must never break a sync
        log.debug("notification not shown: %s", exc)


def show_again(config: Any, locations: Any, kind: str, outcome: SyncOutcome,
               files: tuple[str, ...] = (), **fields: str) -> None:
    """Show the notification of `kind` about `outcome` now, with its actions on `files` (the
    user asked for it from the tray icon). Raises when it could not be shown."""
    with state_lock(locations.state_dir):
        previous = read_state(locations.state_dir, locations.runtime_dir)
        decision, new = decide_again(previous, kind, files, **fields)
        _apply(config, locations, previous, decision, new, outcome,
               _log_lines(locations.state_dir))


def tell(summary: str, body: str, icon: str = "dialog-information") -> None:
    """A notification that only informs (no actions, low urgency, replaces nothing), e.g. the
    status the tray icon's "Open status" shows. `body` is plain text: it is escaped for a
    server that renders markup. Raises when no server took it."""
    bus = Bus()
    try:
        if "body-markup" in bus.capabilities():
            body = html.escape(body, quote=False)
        bus.notify(Request(summary=summary, body=body, icon=icon, urgency=0, category="transfer",
                           replaces_id=0, actions=[]))
    finally:
        bus.close()


def unsynced(config: Any, locations: Any, *, count: str, paths: str, why: str) -> None:
    """Tell that the session ends with `count` files changed here (`paths`: a few of their
    names, escaped) not on the server, and `why`. Never raises, like `after_pass`."""
    if not config["notify"]["enabled"]:
        return
    try:
        with state_lock(locations.state_dir):
            previous = read_state(locations.state_dir, locations.runtime_dir)
            decision, new = decide_unsynced(previous, count=count, paths=paths, why=why)
            _apply(config, locations, previous, decision, new, None, [])
    except Exception as exc:  # notifications must never break a stop
        log.debug("notification not shown: %s", exc)


class FirstSyncAnnouncer:
    """An `on_progress` observer for `engine.run_pass`: when a unison run of a first pass
    starts propagating (its item list, and so the bytes to copy, are known), it calls
    `first_sync_started` once for that run; the state decides whether it is announced."""

    def __init__(self, config: Any, locations: Any) -> None:
        self.config, self.locations = config, locations
        self._asked = False

    def __call__(self, p: Progress) -> None:
        if p.phase != "propagating":
            self._asked = False  # a later run of the pass (sync.first_paths) is asked anew
            return
        if not self._asked and p.first_run:
            self._asked = True
            first_sync_started(self.config, self.locations, first_run=True,
                               to_transfer=p.bytes_to_fetch + p.bytes_to_send)


def _deliver(config: Any, locations: Any, outcome: SyncOutcome | None, decision: Decision,
             new: NotifyState, lines: list[str]) -> int:
    """Send the decision to the server; returns the notification's id (0 when only closing)."""
    settings = config["notify"]
    server = config["server"]
    # The server as the user knows it: its first front-end (or the local root).
    fields = {"host": server["host"][0] if server["host"] else server["root"],
              "user": locations.user,
              "command": " ".join(settings["resolve_command"]),
              "email": settings["support_email"]}
    messages = load_messages(settings["messages"])
    bus = Bus()
    try:
        if decision.kind is None:
            bus.close_notification(decision.close_id)
            return 0
        capabilities = bus.capabilities()
        request = build_request(decision, messages, fields,
                                with_actions="actions" in capabilities,
                                support_email=settings["support_email"],
                                markup="body-markup" in capabilities)
        if not request.actions:
            return bus.notify(request)
    finally:
        bus.close()
    subject, body = support_mail(outcome, locations.user, lines[-LOG_TAIL_LINES:])
    return _start_listener({
        "request": asdict(request), "key": decision.kind, "serial": new.serial,
        "state_dir": str(locations.state_dir), "runtime_dir": str(locations.runtime_dir),
        "resolve_command": list(settings["resolve_command"]),
        "home": str(locations.home), "paths": list(decision.paths),
        "email": [settings["support_email"], subject, body],
    })


def _start_listener(job: dict[str, Any]) -> int:
    """Start the detached listener; it sends the notification and tells us its id."""
    proc = subprocess.Popen([sys.executable, "-m", "roaming_homes.desktop.listener"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        ready, _, _ = select.select([proc.stdout], [], [], BUS_TIMEOUT * 2 + 5)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.strip().isdigit():
            raise OSError(f"notification listener failed: {line.strip() or 'no answer'}")
        # The listener forks once it has answered: this child exits now, its child listens.
        proc.wait(timeout=BUS_TIMEOUT)
        return int(line)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
