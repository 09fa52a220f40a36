"""The tray icon of the session service: what it shows (pure, from the status model) and what
its menu does.

`tray_state` reduces an `Overview` (the model behind `status` and `status --json`) to one of
five looks; `view` turns it into the icon, tooltip and menu (`desktop.tray.View`). `Tray` runs
in the daemon: it follows the state files with inotify (a pass of the daemon's, a `roaming-homes
sync` or `conflicts resolve` of the user's, progress while a pass runs) and shows what
`status` would say, and it does what the menu asks, without a terminal:

- **Sync now**: the daemon runs a pass now (in real-time mode: a full scan); not while paused
  (Resume is next to it).
- **Pause for 1 h** / **Resume**: `roaming-homes pause 1h` / `resume` (`session.pause`); the
  daemon follows the pause file.
- **Conflicts…**: the conflict notification again, whose buttons settle them ("Keep both",
  "Keep this computer's", "Keep the other", "Show…"); when only conflicts `sync.prefer`
  settled are left, the file manager shows those files, their conflict copies beside them.
- **Restore…**: after a refused pass, the notification that restores what the loss guard held
  back (or syncs anyway); otherwise the file manager opens this computer's backups, where the
  versions the syncs replaced are kept under the files' own paths (`roaming-homes restore`
  also reaches the server's).
- **Open status** (also a click on the icon): a notification with what `status` says.
"""

from __future__ import annotations

import contextlib
import enum
import html
import logging
import os
import re
import select
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from roaming_homes.actions import status as status_mod
from roaming_homes.actions.status import Overview, State
from roaming_homes.config import Config
from roaming_homes.desktop import notify, opener
from roaming_homes.desktop.tray import MenuItem, StatusNotifierItem, View
from roaming_homes.outcome import Result
from roaming_homes.paths import Locations
from roaming_homes.safety import refused
from roaming_homes.session import pause, progress
from roaming_homes.session.state import StateStore
from roaming_homes.text import printable
from roaming_homes.unison.inotify import FileWatch

log = logging.getLogger(__name__)

TITLE = "Roaming Homes"
LABEL_LIMIT = 80  # characters of the status line at the top of the menu
PAUSE_FOR = timedelta(hours=1)  # "Pause for 1 h"
REFRESH_DELAY = 0.3  # seconds to gather a burst of state file changes into one refresh


class TrayState(enum.Enum):
    IDLE = "in sync"
    SYNCING = "syncing"
    OFFLINE = "offline"
    PAUSED = "paused"
    NEEDS_YOU = "needs you"


# Per look: the icon (freedesktop icon naming spec, in every common theme) and the item's
# Status (NeedsAttention makes a host show it even where it hides quiet icons).
_LOOKS = {
    TrayState.IDLE: ("folder-remote", "Active"),
    TrayState.SYNCING: ("view-refresh", "Active"),
    TrayState.OFFLINE: ("network-offline", "Active"),
    TrayState.PAUSED: ("media-playback-pause", "Active"),
    TrayState.NEEDS_YOU: ("dialog-warning", "NeedsAttention"),
}


def tray_state(overview: Overview) -> TrayState:
    """The tray's look for this state, in the status model's order: a pass running shows as
    syncing whatever the last one said; then anything that needs the user (conflicts, a
    refused or failed pass, a configuration that no longer loads) as needs you; then a pause
    (chosen, but not to be forgotten)."""
    match overview.state:
        case State.SYNCING:
            return TrayState.SYNCING
        case State.NEEDS_ATTENTION:
            return TrayState.NEEDS_YOU
        case State.PAUSED:
            return TrayState.PAUSED
        case State.OFFLINE:
            return TrayState.OFFLINE
    return TrayState.IDLE


def _label(text: str) -> str:
    """A menu label that shows `text` as it is: one line, `_` doubled (a single one marks the
    mnemonic), cut to LABEL_LIMIT characters."""
    text = printable(text)
    if len(text) > LABEL_LIMIT:
        text = text[:LABEL_LIMIT - 1] + "…"
    return text.replace("_", "__")


def view(overview: Overview) -> View:
    """The icon, tooltip and menu for this state. Names in it come from outside (file names in
    the headline): the tooltip body is escaped as markup, the menu's status line as a label."""
    state = tray_state(overview)
    icon, status = _LOOKS[state]
    body = overview.headline
    if overview.action and state is TrayState.NEEDS_YOU:
        body += f"\nrun: {overview.action}"
    last = overview.last
    conflicts = last is not None and bool(last.conflicts or last.settled)
    menu = (
        MenuItem("headline", _label(overview.headline), enabled=False),
        MenuItem("-"),
        MenuItem("sync", "Sync now", enabled=overview.paused is None),
        MenuItem("resume", "Resume") if overview.paused else MenuItem("pause", "Pause for 1 h"),
        MenuItem("-"),
        MenuItem("conflicts", "Conflicts…", enabled=conflicts),
        MenuItem("restore", "Restore…"),
        MenuItem("-"),
        MenuItem("status", "Open status"),
    )
    return View(status=status, icon=icon, title=TITLE,
                tooltip=(f"{TITLE}: {state.value}", html.escape(printable(body), quote=False)),
                menu=menu, activate="status")


def status_text(report: dict[str, object]) -> tuple[str, str]:
    """`status` as a notification: the headline as summary, the other lines as body (their
    names are escaped as in the terminal)."""
    lines = status_mod.render(report).splitlines()
    summary = lines[0].removeprefix("roaming-homes: ")
    return summary, "\n".join(re.sub(r":\s+", ": ", line.strip(), count=1) for line in lines[1:])


class Tray:
    """The daemon's tray icon: shown while a tray host runs, following the state files.

    `sync_now` asks the daemon for a pass; `note` is the daemon's problem outside the passes
    (a configuration that no longer loads), shown like `status` would if it knew it.
    """

    def __init__(self, config: Callable[[], Config], locations: Locations,
                 sync_now: Callable[[], None], note: Callable[[], str]) -> None:
        self._config, self.locations = config, locations
        self._sync_now, self._note = sync_now, note
        self.item = StatusNotifierItem(view(self.overview()), self._click)
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._follower: threading.Thread | None = None
        self._refreshing = threading.Lock()

    def overview(self) -> Overview:
        overview = status_mod.overview(self.locations)
        overview.note = self._note()
        return overview

    def start(self) -> None:
        """Serve the icon and follow the state (never raises: no bus, no tray icon)."""
        if not self.item.start():
            return
        try:
            watch = FileWatch(self._watched())
        except OSError as exc:  # no inotify: the daemon's own refreshes still come
            log.debug("the tray icon follows the daemon's passes only: %s", exc)
            return
        self._follower = threading.Thread(target=self._follow, args=(watch,),
                                          name="tray-follow", daemon=True)
        self._follower.start()

    def refresh(self) -> None:
        """Show the state as it is now (any thread)."""
        try:
            with self._refreshing:  # what is read last is shown last
                self.item.show(view(self.overview()))
        except Exception as exc:  # the tray must never break the daemon
            log.debug("tray icon not updated: %s", exc)

    def close(self) -> None:
        os.write(self._stop_w, b"s")
        if self._follower is not None:
            self._follower.join(timeout=5)
        self.item.close()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)

    def _watched(self) -> tuple[Path, ...]:
        state_dir = self.locations.state_dir
        return (state_dir / "state.json", progress.progress_file(self.locations),
                pause.pause_file(self.locations), self.locations.lock_file)

    def _follow(self, watch: FileWatch) -> None:
        with contextlib.closing(watch):
            while self._stop_r not in select.select([watch.fileno(), self._stop_r], [], [])[0]:
                if watch.touched():
                    # a burst (a pass writes several files) becomes one refresh
                    if select.select([self._stop_r], [], [], REFRESH_DELAY)[0]:
                        return
                    watch.touched()
                    self.refresh()

    # --- the menu -------------------------------------------------------------------------

    def _click(self, key: str) -> None:
        log.debug("tray icon: %s", key)
        if key == "sync":
            self._sync_now()
        elif key == "pause":
            pause.pause(self.locations, datetime.now().astimezone() + PAUSE_FOR)
        elif key == "resume":
            pause.resume(self.locations)
        elif key == "conflicts":
            self._conflicts()
        elif key == "restore":
            self._restore()
        elif key == "status":
            report = status_mod.report(self.locations)
            notify.tell(*status_text(report), icon=_LOOKS[tray_state(self.overview())][0])

    def _conflicts(self) -> None:
        last = StateStore(self.locations.state_dir).last()
        if last is not None and last.conflicts:
            notify.show_again(self._config(), self.locations, "conflicts", last,
                              tuple(last.conflicts), paths=", ".join(last.conflicts),
                              count=str(len(last.conflicts)))
        elif last is not None and last.settled:
            home = self.locations.home
            opener.show([home / path for path in last.settled if (home / path).exists()])
        else:
            notify.tell("No conflicts", "Every file is the same here and on the server.")

    def _restore(self) -> None:
        # What the loss guard held back stays pending until a pass goes through (a pass that
        # found the server offline since then says nothing about it): its refusal says what.
        refusals = [entry for entry in StateStore(self.locations.state_dir).history()
                    if entry.result == Result.REFUSED]
        if refused.load(self.locations.state_dir) is not None and refusals:
            notify.show_again(self._config(), self.locations, "losses", refusals[-1],
                              message=refusals[-1].message)
            return
        backups = self.locations.backup_dir
        if not backups.is_dir() or not opener.show([backups]):
            notify.tell("No old versions here", f"This computer keeps the versions the syncs "
                        f"replace in {backups}; none are kept yet. The server's: roaming-homes "
                        "restore --since TIME")
