"""The user's computers as one: each pass publishes this computer's record on the server and
brings back the others' (for `status`); a confirmed mass deletion is recorded there, and
followed by the other computers instead of refused again.

Publishing costs a round trip to the server, so a pass does it only when its result differs
from the last one published or `REPUBLISH_AFTER` has passed: the record's "last successful
sync" is then at most that much older than the truth.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from roaming_homes import __version__
from roaming_homes.errors import RoamingHomesError
from roaming_homes.outcome import SUCCEEDED, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.server import records
from roaming_homes.server.records import ComputerRecord, Confirmation, ServerHome
from roaming_homes.session.computer import Computer
from roaming_homes.session.state import write_atomic

log = logging.getLogger(__name__)

CACHE_FILE = "computers.json"
REPUBLISH_AFTER = 300  # seconds


def _cache_path(locations: Locations) -> Path:
    return locations.state_dir / CACHE_FILE


def _read_cache(locations: Locations) -> dict[str, Any]:
    try:
        data = json.loads(_cache_path(locations).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known(locations: Locations) -> list[ComputerRecord]:
    """The user's computers as the last publishing pass brought them back (no network)."""
    found = _read_cache(locations).get("computers")
    if not isinstance(found, list):
        return []
    return [r for r in (ComputerRecord.from_dict(item) for item in found) if r is not None]


def publish(locations: Locations, home: ServerHome, computer: Computer, outcome: SyncOutcome,
            last_success: str | None) -> None:
    """Write this computer's record on the server (when due) and keep everyone's. Never raises:
    the pass's own outcome stands whatever happens here."""
    cache = _read_cache(locations)
    written = cache.get("written")
    due = (cache.get("result") != str(outcome.result) or cache.get("name") != computer.name
           or not isinstance(written, int | float) or time.time() - written >= REPUBLISH_AFTER)
    if not due:
        return
    record = ComputerRecord(computer.id, computer.name, __version__, outcome.finished,
                            str(outcome.result),
                            outcome.finished if outcome.result in SUCCEEDED else last_success,
                            outcome.transferred, len(outcome.conflicts))
    try:
        answer = home.exchange("computers", f"{computer.id}.json", record.to_line(),
                               records.RECORD_LIMIT * 1000)
    except (RoamingHomesError, OSError) as exc:
        log.debug("computer record not published: %s", exc)
        return
    found = records.parse_lines(answer, ComputerRecord)
    write_atomic(_cache_path(locations), json.dumps({
        "written": time.time(), "result": str(outcome.result), "name": computer.name,
        "computers": [json.loads(r.to_line()) for r in found]}) + "\n")


def confirm(home: ServerHome, computer: Computer, paths: Sequence[str],
            name: str | None = None) -> str:
    """Record that the user confirmed deleting `paths` on the server from this computer, as
    of now; `name` (what an earlier call returned) records it anew, with this time. Returns
    the record's name."""
    now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    confirmation = Confirmation(computer.id, computer.name, now, list(paths))
    name = name or f"{time.time_ns()}-{computer.id}.json"
    try:
        home.exchange("confirmed", name, confirmation.to_line(), records.CONFIRMED_LIMIT,
                      keep=records.KEEP_CONFIRMED)
    except (RoamingHomesError, OSError) as exc:
        log.warning("the confirmed deletion could not be recorded on the server (the other "
                    "computers will ask again): %s", exc)
    return name


def confirmed_elsewhere(home: ServerHome, computer: Computer, paths: Sequence[str],
                        since: str | None) -> Confirmation | None:
    """The newest confirmation made on another computer since `since` that covers every one of
    `paths`; None when there is none, or the server cannot tell.

    `since` is when this computer's last whole pass began (one over every synced path: a
    real-time cycle looks at some only), not when it ended: a pass that looked at the server
    before the deletions did not see them, however late it ended. Times are whole seconds: a
    confirmation in that same second still counts (a pass that began after the deletions and
    went through left nothing of them to follow)."""
    try:
        answer = home.read("confirmed", records.CONFIRMED_LIMIT)
    except (RoamingHomesError, OSError) as exc:
        log.debug("confirmed deletions not read: %s", exc)
        return None
    after = _time(since)
    for confirmation in sorted(records.parse_lines(answer, Confirmation),
                               key=lambda c: _time(c.time), reverse=True):
        if (confirmation.computer != computer.id and _time(confirmation.time) >= after
                and confirmation.covers(paths)):
            return confirmation
    return None


def _time(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0
