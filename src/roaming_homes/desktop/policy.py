"""When to notify: pure decisions from the typed outcome of a pass, what was shown before and
the clock. This is where "never nag" lives: each kind of notification is shown once, and again
only when the state changes (new conflict paths, another kind of failure); transient failures
wait until they persist for `TRANSIENT_PASSES` passes; being offline shows nothing until the
last successful sync is older than `notify.stale_after`. `decide_first_sync` announces a big
first sync while it runs; `decide_unsynced` tells, as the session ends, of changes that are not
on the server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from roaming_homes.files import Shape, is_int, is_str, list_of, optional
from roaming_homes.outcome import COMPLETED, Reason, Result, SyncOutcome
from roaming_homes.session.progress import human_bytes, human_time

SETTLED_MEMORY = 200  # settled conflicts remembered as told: each path is told once
TRANSIENT_PASSES = 3  # a failure that is not obviously someone's job must persist this long
# A first sync is announced when it copies at least this much (both directions together): a few
# seconds on a fast LAN, minutes over Wi-Fi or a VPN. Below it the home is ready before a
# notification would have told anyone anything.
FIRST_SYNC_MIN_BYTES = 100_000_000
# Shown once, replacing what was there, and then nothing is on screen to replace or close.
_FINAL = frozenset({"recovered", "first-sync-done", "settled"})


@dataclass
class Shown:
    """The notification on screen (as far as we know): its kind, the server's id, our serial."""

    key: str
    id: int
    serial: int


# notify.json, as `NotifyState.to_dict` writes it. Any key may be missing: older versions wrote
# fewer (`first_sync` came later), and each has a default that means "nothing shown".
_NOTIFY = Shape({
    "active": optional(Shape.complete({"key": is_str, "id": is_int, "serial": is_int})),
    "conflicts_seen": list_of(is_str),
    "transient_failures": is_int,
    "ignored": list_of(is_str),
    "offline_since": optional(is_str),
    "serial": is_int,
    "first_sync": optional(is_str),
    "settled_seen": list_of(is_str),
})


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
    # The conflicts `sync.prefer` settled that were told (each once; the latest SETTLED_MEMORY).
    settled_seen: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any) -> NotifyState:
        """The state notify.json holds; ValueError when it is not of that shape."""
        data = _NOTIFY.checked(data)
        active = data.get("active")
        return cls(active=Shown(active["key"], active["id"], active["serial"]) if active else None,
                   conflicts_seen=list(data.get("conflicts_seen", [])),
                   transient_failures=data.get("transient_failures", 0),
                   ignored=list(data.get("ignored", [])),
                   offline_since=data.get("offline_since"),
                   serial=data.get("serial", 0),
                   first_sync=data.get("first_sync"),
                   settled_seen=list(data.get("settled_seen", [])))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def undelivered(self, previous: NotifyState) -> NotifyState:
        """This state, but with what was shown taken from `previous`: the notification did not
        reach the screen, so the next pass must try again; counters still move on."""
        return replace(self, active=previous.active, conflicts_seen=previous.conflicts_seen,
                       serial=previous.serial, first_sync=previous.first_sync,
                       settled_seen=previous.settled_seen)


@dataclass(frozen=True)
class Decision:
    """Show `kind` (replacing `replaces_id` when not 0), or only close `close_id`."""

    kind: str | None
    replaces_id: int = 0
    close_id: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()  # the files it is about (what its actions act on)


def failure_kind(outcome: SyncOutcome) -> str:
    """Which failure this is: one that needs someone at once, or "failing" (maybe transient).
    Decided by the outcome's result and reason, never by its wording."""
    if outcome.result == Result.CONFIG_ERROR:
        return "config"
    return _KIND_OF_REASON.get(outcome.reason,
                               "guard" if outcome.result == Result.REFUSED else "failing")


# Reasons that need someone at once, and the notification each gets.
_KIND_OF_REASON = {
    Reason.LOSSES: "losses",  # the two ways out: restore, confirm
    Reason.REPLICA: "guard",
    Reason.DISK_FULL: "disk-full",
    Reason.AUTH_REFUSED: "auth",
    Reason.NO_TICKET: "ticket",  # the user signs in again (kinit); nobody else can
    Reason.HOST_KEY: "identity",  # its own kind: an "Ignore" of a login failure never hides it
    Reason.HOST_KEY_CHANGED: "identity",
    Reason.VERSION_MISMATCH: "version",
}


def _age(since: str | None, now: datetime) -> float:
    if not since:
        return 0.0
    try:
        return (now - datetime.fromisoformat(since)).total_seconds()
    except (ValueError, TypeError):
        return 0.0


def decide(state: NotifyState, outcome: SyncOutcome, *,
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
        decision = Decision(None, close_id=active.id)
    return _add_settled(state, outcome, decision, new)


def _add_settled(state: NotifyState, outcome: SyncOutcome, decision: Decision | None,
                 new: NotifyState) -> tuple[Decision | None, NotifyState]:
    """The conflicts `sync.prefer` settled, told once per path ("kept both versions of …", low
    urgency): in place of "Back in sync", or on its own when nothing else is shown; never over
    a notification that needs the user."""
    fresh = [p for p in outcome.settled if p not in state.settled_seen]
    if not fresh or outcome.result not in COMPLETED or (decision is not None
                                                         and decision.kind != "recovered"):
        return decision, new
    new.settled_seen = [*state.settled_seen, *fresh][-SETTLED_MEMORY:]
    fields = {"paths": ", ".join(fresh), "count": str(len(fresh))}
    if decision is not None:  # replaces what "Back in sync" would have replaced
        return replace(decision, kind="settled", fields=fields), new
    new.serial += 1
    return Decision("settled", fields=fields), new


def _decide(state: NotifyState, outcome: SyncOutcome, *,
            last_success: str | None, now: datetime,
            stale_after: float) -> tuple[Decision | None, NotifyState]:
    """`decide` but for closing the first-sync announcement: what this kind of result calls for."""
    result = outcome.result
    new = replace(state, conflicts_seen=list(state.conflicts_seen), ignored=list(state.ignored))
    if result in (Result.BUSY, Result.EXCLUDED, Result.INTERRUPTED, Result.PAUSED):
        return None, state
    if result == Result.OFFLINE:
        return _decide_offline(state, new, outcome, last_success=last_success, now=now,
                               stale_after=stale_after)
    new.offline_since = None
    new.ignored = [k for k in state.ignored if k != "stale"]
    if result in COMPLETED:
        new.first_sync = None
    if result == Result.IN_SYNC:
        return _decide_in_sync(state, new)
    if result == Result.CONFLICTS:
        return _decide_conflicts(state, new, outcome)
    return _decide_failure(state, new, outcome)


def _decide_offline(state: NotifyState, new: NotifyState, outcome: SyncOutcome, *,
                    last_success: str | None, now: datetime,
                    stale_after: float) -> tuple[Decision | None, NotifyState]:
    """Offline: "stale" once the last success is `stale_after` seconds old, unless ignored or
    already on screen."""
    new.offline_since = state.offline_since or outcome.finished
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
                      outcome: SyncOutcome) -> tuple[Decision | None, NotifyState]:
    new.transient_failures = 0
    paths = list(outcome.conflicts)
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
    decision, new = _show(new, "conflicts", active, paths=", ".join(shown), count=str(len(shown)))
    return replace(decision, paths=tuple(shown)), new


def _decide_failure(state: NotifyState, new: NotifyState,
                    outcome: SyncOutcome) -> tuple[Decision | None, NotifyState]:
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
    return _show(new, kind, active, message=outcome.message,
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


def decide_again(state: NotifyState, kind: str, files: tuple[str, ...] = (),
                 **fields: str) -> tuple[Decision, NotifyState]:
    """Show `kind` now, whatever was shown or ignored before: asked for by the user (the tray
    icon's menu), or news that is always told. In place of what is on screen; its actions work
    as the first time, on `files`."""
    new = replace(state, conflicts_seen=list(state.conflicts_seen), ignored=list(state.ignored))
    decision, new = _show(new, kind, state.active, **fields)
    return replace(decision, paths=files), new


def decide_unsynced(state: NotifyState, *, count: str, paths: str,
                    why: str) -> tuple[Decision, NotifyState]:
    """The session ends with files changed here that are not on the server (it is out of
    reach, or syncing is paused): always told, in place of what is on screen. The pass that
    next ends in sync replaces it with "Back in sync"."""
    return decide_again(state, "unsynced", count=count, paths=paths, message=why)


def _show(new: NotifyState, kind: str, active: Shown | None,
          **fields: str) -> tuple[Decision, NotifyState]:
    new.serial += 1
    if kind in _FINAL:
        new.active = None  # nothing left to replace; a later problem is a fresh one
    else:
        new.active = Shown(kind, 0, new.serial)  # the id is filled in once the server answers
    return Decision(kind, replaces_id=active.id if active else 0, fields=fields), new
