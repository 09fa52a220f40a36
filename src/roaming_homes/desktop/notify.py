"""Desktop notifications over the freedesktop `org.freedesktop.Notifications` D-Bus interface.

GNOME, KDE, XFCE, dunst, mako … all implement that interface, so we talk to it directly instead
of through libnotify. The library is **jeepney**: pure Python (no C extension, no GLib main
loop), blocking I/O with timeouts, packaged by Debian and Fedora, and already our D-Bus library
for the daemon's network signals. dbus-fast needs asyncio and a compiled part for speed;
desktop-notifier wraps dbus-fast and hides the server's capabilities and the notification ids
we need for `replaces_id` and for acting on a click.

Two halves, as everywhere in this project:

- **Deciding** (pure, unit-tested): `decide()` takes what we remember (`NotifyState`), the
  outcome of the pass that just ended and the clock, and returns which notification to show,
  replace or close, or none. It is where "never nag" lives: each kind of notification is shown
  once, and again only when the state changes (new conflict paths, another kind of failure);
  transient failures wait until they persist for `TRANSIENT_PASSES` passes; being offline shows
  nothing until the last successful sync is older than `notify.stale_after`.
  `decide_first_sync()` announces a big first sync while it runs: `FirstSyncAnnouncer` watches
  the pass's progress and asks once unison has listed what it will copy.
- **Doing** (thin, end-to-end tested): `after_pass()` loads the state from
  `$XDG_STATE_HOME/roaming-homes/notify.json`, asks the server for its capabilities, sends
  `Notify` / `CloseNotification` and saves the state. It never raises: no session bus means one
  log line and the sync goes on with its own exit code.

Actions ("Resolve…", "Email support", "Ignore") are offered only when the server lists the
"actions" capability; otherwise the body says which command to run. A click must be answered
by a process that is still connected when the user clicks, hours later perhaps, while a one-shot
`roaming-homes sync` must exit at once. So a notification with actions is sent by a small
detached listener (`python -m roaming_homes.desktop.notify listen`): it subscribes to
`ActionInvoked` first (no click can be missed), sends `Notify`, reports the id to the caller on
its stdout and then waits for a click, the notification's closing, or being superseded by a
newer notification (it compares its serial with notify.json), at most `LISTEN_LIMIT` seconds.
The daemon uses the same path, so there is one mechanism to test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from roaming_homes.errors import ConfigError, Reason
from roaming_homes.session.progress import Progress, human_bytes

APP_NAME = "Roaming Homes"
TRANSIENT_PASSES = 3  # a failure that is not obviously someone's job must persist this long
LISTEN_LIMIT = 12 * 3600  # seconds a listener waits for a click before it gives up
LOG_TAIL_LINES = 20  # lines of sync.log in a support mail
BUS_TIMEOUT = 5.0  # seconds for any one D-Bus call: a stuck desktop never holds up a sync
# A first sync is announced when it copies at least this much (both directions together): a few
# seconds on a fast LAN, minutes over Wi-Fi or a VPN. Below it the home is ready before a
# notification would have told anyone anything.
FIRST_SYNC_MIN_BYTES = 100_000_000

# --- what each kind of notification looks like -----------------------------------------------


@dataclass(frozen=True)
class Kind:
    urgency: int  # 0 low, 1 normal, 2 critical (stays until dismissed on most servers)
    icon: str  # freedesktop icon naming spec
    category: str  # freedesktop notification category
    resolve: bool = False  # "Resolve…" applies
    support: bool = False  # "Email support" applies (when notify.support_email is set)
    ignorable: bool = True  # "Ignore" applies: a problem that can be silenced until it changes
    held_back: bool = False  # "Restore files" and "Sync anyway" apply: the loss guard refused


KINDS: dict[str, Kind] = {
    "conflicts": Kind(1, "dialog-warning", "transfer", resolve=True),
    "auth": Kind(2, "dialog-error", "transfer.error", support=True),
    "version": Kind(2, "dialog-error", "transfer.error", support=True),
    "guard": Kind(2, "dialog-error", "transfer.error", support=True),
    "losses": Kind(2, "dialog-warning", "transfer.error", support=True, held_back=True),
    "disk-full": Kind(2, "dialog-error", "transfer.error", support=True),
    "config": Kind(2, "dialog-error", "transfer.error", support=True),
    "failing": Kind(1, "dialog-warning", "transfer.error", support=True),
    "stale": Kind(1, "dialog-warning", "transfer"),
    "recovered": Kind(0, "dialog-information", "transfer.complete", ignorable=False),
    "first-sync": Kind(1, "folder-remote", "transfer", ignorable=False),
    "first-sync-done": Kind(0, "dialog-information", "transfer.complete", ignorable=False),
}
# Shown once, replacing what was there, and then nothing is on screen to replace or close.
_FINAL = frozenset({"recovered", "first-sync-done"})

DEFAULT_MESSAGES: dict[str, str] = {
    "conflicts.summary": "Files changed on both sides",
    "conflicts.body": "{count} file(s) changed both here and on {host}; both versions are "
                      "kept until you choose: {paths}",
    "auth.summary": "Sync refused by the server",
    "auth.body": "{host} refused the login of {user}: {message}",
    "version.summary": "Sync failed: unison versions differ",
    "version.body": "This computer and {host} run unison versions that cannot talk to each "
                    "other: {message}",
    "guard.summary": "Sync stopped to protect your files",
    "guard.body": "Nothing was changed: {message}",
    "losses.summary": "Sync held back a mass deletion or change",
    "losses.body": "{message}",
    "disk-full.summary": "Sync failed: disk full",
    "disk-full.body": "A disk is full, here or on {host}: {message}",
    "config.summary": "Sync is misconfigured",
    "config.body": "{message}",
    "failing.summary": "Sync keeps failing",
    "failing.body": "The last {count} syncs with {host} failed: {message}",
    "stale.summary": "Not synced since {since}",
    "stale.body": "{host} has not been reachable since {since}: your latest changes exist "
                  "only on this computer.",
    "recovered.summary": "Back in sync",
    "recovered.body": "Your files are in sync with {host} again.",
    "first-sync.summary": "Setting up your roaming home: {size} to sync",
    "first-sync.body": "This computer's first sync with {host}. Your files appear as they "
                       "arrive; you will be told when everything is here.",
    "first-sync-done.summary": "Your roaming home is ready",
    "first-sync-done.body": "Your files are in sync with {host} ({size} copied).",
    "hint.resolve": "To resolve, run: {command}",
    "hint.restore": "To bring the files back, run: roaming-homes restore --refused",
    "hint.confirm": "If this was intended, run: roaming-homes sync --force",
    "hint.support": "Support: {email}",
    "action.resolve": "Resolve…",
    "action.restore": "Restore files",
    "action.confirm": "Sync anyway",
    "action.email": "Email support",
    "action.ignore": "Ignore",
}
PLACEHOLDERS = ("host", "user", "paths", "count", "since", "message", "command", "email",
                "size")

# --- deciding ---------------------------------------------------------------------------------


@dataclass
class Shown:
    """The notification on screen (as far as we know): its kind, the server's id, our serial."""

    key: str
    id: int
    serial: int


@dataclass
class NotifyState:
    """What notify.json remembers between passes."""

    active: Shown | None = None
    conflicts_seen: list[str] = field(default_factory=list)
    transient_failures: int = 0
    ignored: list[str] = field(default_factory=list)
    offline_since: str | None = None
    serial: int = 0
    # The size announced for a first sync that has not completed yet (None: none announced). It
    # outlives a killed pass, so that the resumed one is not announced again but ends "ready".
    first_sync: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NotifyState:
        try:
            active = data.get("active")
            return cls(active=Shown(**active) if active else None,
                       conflicts_seen=[str(p) for p in data.get("conflicts_seen", [])],
                       transient_failures=int(data.get("transient_failures", 0)),
                       ignored=[str(k) for k in data.get("ignored", [])],
                       offline_since=data.get("offline_since"),
                       serial=int(data.get("serial", 0)),
                       first_sync=_optional_str(data.get("first_sync")))
        except (TypeError, ValueError, AttributeError):
            return cls()  # a damaged file: start afresh rather than never notify again

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def undelivered(self, previous: NotifyState) -> NotifyState:
        """This state, but with what was shown taken from `previous`: the notification did not
        reach the screen, so the next pass must try again; counters still move on."""
        return replace(self, active=previous.active, conflicts_seen=previous.conflicts_seen,
                       serial=previous.serial, first_sync=previous.first_sync)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Decision:
    """Show `kind` (replacing `replaces_id` when not 0), or only close `close_id`."""

    kind: str | None
    replaces_id: int = 0
    close_id: int = 0
    fields: dict[str, str] = field(default_factory=dict)


def failure_kind(outcome: dict[str, Any]) -> str:
    """Which failure this is: one that needs someone at once, or "failing" (maybe transient).
    Decided by the outcome's reason (errors.Reason), never by its wording."""
    if outcome["result"] == "config-error":
        return "config"
    return _KIND_OF_REASON.get(outcome.get("reason", ""),
                               "guard" if outcome["result"] == "refused" else "failing")


# Reasons that need someone at once, and the notification each gets.
_KIND_OF_REASON = {
    Reason.LOSSES: "losses",  # the two ways out: restore, confirm
    Reason.REPLICA: "guard",
    Reason.DISK_FULL: "disk-full",
    Reason.AUTH_REFUSED: "auth",
    Reason.HOST_KEY: "auth",
    Reason.VERSION_MISMATCH: "version",
}


def _age(since: str | None, now: datetime) -> float:
    if not since:
        return 0.0
    try:
        return (now - datetime.fromisoformat(since)).total_seconds()
    except (ValueError, TypeError):
        return 0.0


def human_time(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def decide(state: NotifyState, outcome: dict[str, Any], *,
           last_success: str | None, now: datetime,
           stale_after: float) -> tuple[Decision | None, NotifyState]:
    """What to show after this pass, and the state to remember (assuming it is shown).

    An announced first sync is over once a pass completes (in sync, conflicts or failed items:
    the archives exist then). In sync, "ready" replaces the announcement; otherwise what the
    pass calls for replaces it, or, when that waits (failed items are transient at first), the
    announcement is closed rather than left saying "setting up".
    """
    decision, new = _decide(state, outcome, last_success=last_success, now=now,
                            stale_after=stale_after)
    active = state.active
    if (decision is None and state.first_sync is not None and new.first_sync is None
            and active is not None and active.key == "first-sync"):
        new.active = None
        return Decision(None, close_id=active.id), new
    return decision, new


def _decide(state: NotifyState, outcome: dict[str, Any], *,
            last_success: str | None, now: datetime,
            stale_after: float) -> tuple[Decision | None, NotifyState]:
    """`decide` but for closing the first-sync announcement: what this kind of result calls for."""
    result = outcome["result"]
    new = replace(state, conflicts_seen=list(state.conflicts_seen), ignored=list(state.ignored))
    if result in ("busy", "excluded"):
        return None, state
    if result == "offline":
        return _decide_offline(state, new, outcome, last_success=last_success, now=now,
                               stale_after=stale_after)
    new.offline_since = None
    new.ignored = [k for k in state.ignored if k != "stale"]
    if result in ("in-sync", "conflicts", "partial"):
        new.first_sync = None
    if result == "in-sync":
        return _decide_in_sync(state, new)
    if result == "conflicts":
        return _decide_conflicts(state, new, outcome)
    return _decide_failure(state, new, outcome)


def _decide_offline(state: NotifyState, new: NotifyState, outcome: dict[str, Any], *,
                    last_success: str | None, now: datetime,
                    stale_after: float) -> tuple[Decision | None, NotifyState]:
    """Offline: "stale" once the last success is `stale_after` seconds old, unless ignored or
    already on screen."""
    new.offline_since = state.offline_since or outcome["finished"]
    since = last_success or new.offline_since
    active = state.active
    if (_age(since, now) < stale_after or "stale" in state.ignored
            or (active is not None and active.key == "stale")):
        return None, new
    return _show(new, "stale", active, since=human_time(since))


def _decide_in_sync(state: NotifyState, new: NotifyState) -> tuple[Decision | None, NotifyState]:
    new.transient_failures, new.conflicts_seen, new.ignored, new.active = 0, [], [], None
    active = state.active
    if state.first_sync is not None:
        return _show(new, "first-sync-done", active, size=state.first_sync)
    if active is None:
        return None, new
    if active.key in state.ignored:
        return Decision(None, close_id=active.id), new
    return _show(new, "recovered", active)


def _decide_conflicts(state: NotifyState, new: NotifyState,
                      outcome: dict[str, Any]) -> tuple[Decision | None, NotifyState]:
    new.transient_failures = 0
    paths = list(outcome.get("conflicts") or [])
    fresh = [p for p in paths if p not in state.conflicts_seen]
    new.conflicts_seen = paths
    new.ignored = [k for k in new.ignored if k == "conflicts"]
    active = state.active
    if "conflicts" in new.ignored or not paths:
        return None, new
    if not fresh and (active is None or active.key == "conflicts"):
        return None, new
    # New paths, or the screen shows something older (stale, a failure): tell what is left.
    shown = fresh or paths
    return _show(new, "conflicts", active, paths=", ".join(shown), count=str(len(shown)))


def _decide_failure(state: NotifyState, new: NotifyState,
                    outcome: dict[str, Any]) -> tuple[Decision | None, NotifyState]:
    """Any other result (partial, failed, refused, config-error): shown at once when it needs
    someone, a maybe transient one ("failing") only after `TRANSIENT_PASSES` passes in a row."""
    kind = failure_kind(outcome)
    new.ignored = [k for k in new.ignored if k in (kind, "conflicts")]
    if kind == "failing":
        new.transient_failures = state.transient_failures + 1
        if new.transient_failures < TRANSIENT_PASSES:
            return None, new
    else:
        new.transient_failures = 0
    active = state.active
    if kind in new.ignored or (active is not None and active.key == kind):
        return None, new
    return _show(new, kind, active, message=outcome["message"],
                 count=str(new.transient_failures))


def decide_first_sync(state: NotifyState, *, first_run: bool,
                      to_transfer: int) -> tuple[Decision | None, NotifyState]:
    """Whether to announce this pass as the setting up of the home, once unison has listed
    what it will copy (`to_transfer` bytes, both directions): only a first run, only at least
    `FIRST_SYNC_MIN_BYTES`, and only once until a pass completes it (a resumed pass is not
    announced again)."""
    if not first_run or state.first_sync is not None or to_transfer < FIRST_SYNC_MIN_BYTES:
        return None, state
    new = replace(state, conflicts_seen=list(state.conflicts_seen), ignored=list(state.ignored),
                  first_sync=human_bytes(to_transfer))
    return _show(new, "first-sync", state.active, size=human_bytes(to_transfer))


def _show(new: NotifyState, kind: str, active: Shown | None,
          **fields: str) -> tuple[Decision, NotifyState]:
    new.serial += 1
    if kind in _FINAL:
        new.active = None  # nothing left to replace; a later problem is a fresh one
    else:
        new.active = Shown(kind, 0, new.serial)  # the id is filled in once the server answers
    return Decision(kind, replaces_id=active.id if active else 0, fields=fields), new


# --- texts ------------------------------------------------------------------------------------

_SAMPLE = dict.fromkeys(PLACEHOLDERS, "x")


def _placeholder_problem(text: str) -> str | None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
        for name in names:
            if name not in PLACEHOLDERS:
                return (f"unknown placeholder {{{name}}} (known: "
                        f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
        text.format_map(_SAMPLE)
    except (ValueError, KeyError, IndexError) as exc:
        return f"invalid text: {exc}"
    return None


def load_messages(path: str) -> dict[str, str]:
    """The texts: DEFAULT_MESSAGES overridden by the TOML file `path` (empty: none)."""
    messages = dict(DEFAULT_MESSAGES)
    if not path:
        return messages
    from roaming_homes.config import read_toml

    data, _ = read_toml(Path(path))
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table of texts ([{section}])")
        for name, text in table.items():
            key = f"{section}.{name}"
            if key not in DEFAULT_MESSAGES:
                raise ConfigError(f"{path}: unknown message key {key} (known: "
                                  f"{', '.join(DEFAULT_MESSAGES)})")
            if not isinstance(text, str):
                raise ConfigError(f"{path}: message {key} must be a string")
            if problem := _placeholder_problem(text):
                raise ConfigError(f"{path}: message {key}: {problem}")
            messages[key] = text
    return messages


def check_config(config: Any) -> None:
    """Raise ConfigError (exit 78) when notify.messages names a bad file; run before a pass."""
    if config["notify"]["enabled"]:
        load_messages(config["notify"]["messages"])


@dataclass(frozen=True)
class Request:
    """One Notify call, ready to send."""

    summary: str
    body: str
    icon: str
    urgency: int
    category: str
    replaces_id: int
    actions: list[str]  # [key, label, key, label, …]

    def args(self) -> tuple[Any, ...]:
        hints = {"urgency": ("y", self.urgency), "category": ("s", self.category),
                 "desktop-entry": ("s", "roaming-homes")}
        return (APP_NAME, self.replaces_id, self.icon, self.summary, self.body, self.actions,
                hints, -1)


def build_request(decision: Decision, messages: dict[str, str], fields: dict[str, str], *,
                  with_actions: bool, support_email: str) -> Request:
    """The Notify call for `decision`; `fields` holds host, user, command, email."""
    assert decision.kind is not None
    kind = KINDS[decision.kind]
    values = {**_SAMPLE, "paths": "", "count": "", "since": "", "message": "", "size": "",
              **fields, **decision.fields}
    body = messages[f"{decision.kind}.body"].format_map(values)
    actions: list[str] = []
    hints: list[str] = []
    if kind.resolve:
        actions += ["resolve", messages["action.resolve"]]
        hints.append(messages["hint.resolve"].format_map(values))
    if kind.held_back:
        actions += ["restore", messages["action.restore"], "confirm", messages["action.confirm"]]
        hints += [messages["hint.restore"], messages["hint.confirm"]]
    if kind.support and support_email:
        actions += ["email", messages["action.email"]]
        hints.append(messages["hint.support"].format_map(values))
    if kind.ignorable:
        actions += ["ignore", messages["action.ignore"]]
    if not with_actions:
        body = "\n".join([body, *hints])
        actions = []
    return Request(summary=messages[f"{decision.kind}.summary"].format_map(values), body=body,
                   icon=kind.icon, urgency=kind.urgency, category=kind.category,
                   replaces_id=decision.replaces_id, actions=actions)


def support_mail(outcome: dict[str, Any], user: str, log_tail: list[str]) -> tuple[str, str]:
    """Subject and body of the "Email support" draft (the user sees it before it is sent)."""
    host = socket.gethostname()
    subject = f"roaming-homes: sync {outcome['result']} on {host} ({user})"
    body = "\n".join([
        f"Host: {host}", f"User: {user}", f"Server: {outcome.get('server', '')}",
        f"Exit code: {outcome['exit_code']}", f"Result: {outcome['result']}",
        f"Message: {outcome['message']}", f"Time: {outcome.get('finished', '')}", "",
        "Last lines of sync.log:", *log_tail])
    return subject, body


# --- doing: state file ------------------------------------------------------------------------

def state_file(state_dir: Path) -> Path:
    return state_dir / "notify.json"


def _read_state(state_dir: Path) -> NotifyState:
    try:
        data = json.loads(state_file(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return NotifyState()
    return NotifyState.from_dict(data) if isinstance(data, dict) else NotifyState()


def _write_state(state_dir: Path, state: NotifyState) -> None:
    from roaming_homes.session.state import write_atomic

    write_atomic(state_file(state_dir), json.dumps(state.to_dict(), indent=2) + "\n")


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Serializes read-modify-write of notify.json between a pass and a listener's "Ignore"."""
    from roaming_homes.session.state import ensure_private_dir

    ensure_private_dir(state_dir)
    fd = os.open(state_dir / "notify.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


# --- doing: D-Bus -----------------------------------------------------------------------------

_PATH = "/org/freedesktop/Notifications"
_IFACE = "org.freedesktop.Notifications"


class Bus:
    """The few calls we make to the notification server, each with a timeout."""

    def __init__(self) -> None:
        from jeepney import DBusAddress
        from jeepney.io.blocking import open_dbus_connection

        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            raise OSError("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        self.conn = open_dbus_connection(bus="SESSION", auth_timeout=BUS_TIMEOUT)
        self.address = DBusAddress(_PATH, bus_name=_IFACE, interface=_IFACE)

    def call(self, method: str, signature: str | None = None, body: tuple[Any, ...] = ()) -> Any:
        from jeepney import new_method_call
        from jeepney.wrappers import unwrap_msg

        msg = new_method_call(self.address, method, signature, body)
        return unwrap_msg(self.conn.send_and_get_reply(msg, timeout=BUS_TIMEOUT))

    def capabilities(self) -> list[str]:
        return list(self.call("GetCapabilities")[0])

    def notify(self, request: Request) -> int:
        return int(self.call("Notify", "susssasa{sv}i", request.args())[0])

    def close_notification(self, notification_id: int) -> None:
        self.call("CloseNotification", "u", (notification_id,))

    def subscribe(self) -> Any:
        """Ask the bus to route our server's ActionInvoked and NotificationClosed to us; the
        handle, entered, is the queue of those signals."""
        from jeepney import MatchRule, message_bus
        from jeepney.wrappers import unwrap_msg

        rule = MatchRule(type="signal", interface=_IFACE, path=_PATH)
        unwrap_msg(self.conn.send_and_get_reply(message_bus.AddMatch(rule),
                                                timeout=BUS_TIMEOUT))
        return self.conn.filter(rule)

    def close(self) -> None:
        self.conn.close()


# --- doing: after a pass ----------------------------------------------------------------------

Log = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


def after_pass(config: Any, locations: Any, outcome: dict[str, Any], *,
               log: Log = _quiet, now: datetime | None = None) -> None:
    """Notify about this pass if it calls for it. Never raises: a sync never fails on this."""
    if not config["notify"]["enabled"]:
        return
    try:
        with _state_lock(locations.state_dir):
            _after_pass(config, locations, outcome, log, now or datetime.now().astimezone())
    except Exception as exc:  # notifications must never break a sync
        log(f"notification not shown: {exc}")


def _after_pass(config: Any, locations: Any, outcome: dict[str, Any], log: Log,
                now: datetime) -> None:
    from roaming_homes.session.state import StateStore

    previous = _read_state(locations.state_dir)
    lines = _log_lines(locations.state_dir)
    decision, new = decide(previous, outcome,
                           last_success=StateStore(locations.state_dir).load().get(
                               "last_success"),
                           now=now, stale_after=config["notify"]["stale_after"])
    _apply(config, locations, previous, decision, new, outcome, lines)


def _apply(config: Any, locations: Any, previous: NotifyState, decision: Decision | None,
           new: NotifyState, outcome: dict[str, Any], lines: list[str]) -> None:
    """Show `decision` and remember `new`, or, when it could not be shown, `previous`'s view
    of the screen (the next pass tries again)."""
    if decision is None:
        _write_state(locations.state_dir, new)
        return
    try:
        notification_id = _deliver(config, locations, outcome, decision, new, lines)
    except Exception:
        _write_state(locations.state_dir, new.undelivered(previous))
        raise
    if new.active is not None and decision.kind is not None:
        new.active.id = notification_id
    _write_state(locations.state_dir, new)


def first_sync_started(config: Any, locations: Any, *, first_run: bool, to_transfer: int,
                       log: Log = _quiet) -> None:
    """Announce a big first sync (see `decide_first_sync`). Never raises, like `after_pass`."""
    if not config["notify"]["enabled"]:
        return
    try:
        with _state_lock(locations.state_dir):
            previous = _read_state(locations.state_dir)
            decision, new = decide_first_sync(previous, first_run=first_run,
                                              to_transfer=to_transfer)
            # First-sync notifications have no actions: no support mail, no log needed.
            _apply(config, locations, previous, decision, new, {}, [])
    except Exception as exc:  # notifications must never break a sync
        log(f"notification not shown: {exc}")


class FirstSyncAnnouncer:
    """An `on_progress` observer for `engine.run_pass`: when a unison run of a first pass
    starts propagating (its item list, and so the bytes to copy, are known), it calls
    `first_sync_started` once for that run; the state decides whether it is announced."""

    def __init__(self, config: Any, locations: Any, log: Log = _quiet) -> None:
        self.config, self.locations, self.log = config, locations, log
        self._asked = False

    def __call__(self, p: Progress) -> None:
        if p.phase != "propagating":
            self._asked = False  # a later run of the pass (sync.first_paths) is asked anew
            return
        if not self._asked and p.first_run:
            self._asked = True
            first_sync_started(self.config, self.locations, first_run=True,
                               to_transfer=p.bytes_to_fetch + p.bytes_to_send, log=self.log)


def _deliver(config: Any, locations: Any, outcome: dict[str, Any], decision: Decision,
             new: NotifyState, lines: list[str]) -> int:
    """Send the decision to the server; returns the notification's id (0 when only closing)."""
    settings = config["notify"]
    server = config["server"]
    fields = {"host": server["host"] or server["root"], "user": locations.user,
              "command": " ".join(settings["resolve_command"]),
              "email": settings["support_email"]}
    messages = load_messages(settings["messages"])
    bus = Bus()
    try:
        if decision.kind is None:
            bus.close_notification(decision.close_id)
            return 0
        with_actions = "actions" in bus.capabilities()
        request = build_request(decision, messages, fields, with_actions=with_actions,
                                support_email=settings["support_email"])
        if not request.actions:
            return bus.notify(request)
    finally:
        bus.close()
    subject, body = support_mail(outcome, locations.user, lines[-LOG_TAIL_LINES:])
    return _start_listener({
        "request": asdict(request), "key": decision.kind, "serial": new.serial,
        "state_dir": str(locations.state_dir),
        "resolve_command": list(settings["resolve_command"]),
        "email": [settings["support_email"], subject, body],
    })


def _start_listener(job: dict[str, Any]) -> int:
    """Start the detached listener; it sends the notification and tells us its id."""
    proc = subprocess.Popen([sys.executable, "-m", "roaming_homes.desktop.notify", "listen"],
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


# The two ways out of a loss refusal, run by the listener with the Python that runs us (a
# development tree has no `roaming-homes` on the PATH; an installed one is the same program).
HELD_BACK_COMMANDS = {"restore": ("restore", "--refused"), "confirm": ("sync", "--force")}


# --- the listener -----------------------------------------------------------------------------

def _is_current(state_dir: Path, serial: int) -> bool:
    active = _read_state(state_dir).active
    return active is not None and active.serial == serial


def run_action(action: str, job: dict[str, Any]) -> None:
    """Do what the user clicked: start the resolver, restore or confirm what the loss guard held
    back, draft a mail, or silence this key."""
    state_dir = Path(job["state_dir"])
    if action == "resolve":
        subprocess.run(job["resolve_command"], stdin=subprocess.DEVNULL, check=False)
    elif action in HELD_BACK_COMMANDS:
        # The listener closed its stdout (its caller read the id from it): give the command
        # streams of its own, or its pipes to unison could land on descriptors 1 and 2.
        subprocess.run([sys.executable, "-m", "roaming_homes", *HELD_BACK_COMMANDS[action]],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    elif action == "email":
        address, subject, body = job["email"]
        subprocess.run(["xdg-email", "--subject", subject, "--body", body, address],
                       stdin=subprocess.DEVNULL, check=False)
    elif action == "ignore":
        with _state_lock(state_dir):
            state = _read_state(state_dir)
            if job["key"] not in state.ignored:
                state.ignored.append(job["key"])
            _write_state(state_dir, state)


def listen(job: dict[str, Any], out: Any) -> None:
    """Subscribe, notify, report the id on `out`, then act on one click (see the docstring)."""
    from jeepney.low_level import HeaderFields

    request = Request(**job["request"])
    state_dir = Path(job["state_dir"])
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
                msg = bus.conn.recv_until_filtered(queue, timeout=BUS_TIMEOUT)
            except TimeoutError:
                if not _is_current(state_dir, job["serial"]):
                    return
                continue
            member = msg.header.fields.get(HeaderFields.member)
            if not msg.body or msg.body[0] != notification_id:
                continue
            if member == "NotificationClosed":
                return
            if member == "ActionInvoked":
                if _is_current(state_dir, job["serial"]):
                    if msg.body[1] == "ignore":
                        with contextlib.suppress(Exception):
                            bus.close_notification(notification_id)
                    run_action(msg.body[1], job)
                return


def _main(argv: list[str]) -> int:
    if argv != ["listen"]:
        print("usage: python -m roaming_homes.desktop.notify listen < JOB.json", file=sys.stderr)
        return 64
    job = json.loads(sys.stdin.read())
    try:
        listen(job, sys.stdout)
    except Exception as exc:  # reported to the caller, which logs it
        with contextlib.suppress(Exception):
            print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
