"""The session service, `roaming-homes daemon`: one long-running process per logged-in user.

Process control only. It decides *when* to run a pass (at start, i.e. login; every
`sync.interval`; when asked with SIGUSR1; when NetworkManager says the network is back; when a
Kerberos ticket is back after a pass found none (the ticket cache file changed); a last one at
SIGTERM, bounded by `sync.logout_timeout`), what to tell systemd (sd_notify) and what to
log; desktop notifications go through `notify.after_pass` as for `roaming-homes sync`. While
syncing is paused (`session.pause`) it runs no pass at all; the pause file is watched, and a
pause that ends asks for a pass at once. While any pass copies, `StatusPublisher` keeps
STATUS= saying what is left. A final pass that cannot sync (offline, paused) is followed by
what it leaves only here (`pending`): in the log, sync.log and a notification. What a
pass does is the `PassStrategy`'s business: `interval_pass` is `engine.run_pass`. The engine
knows nothing of this module.

Real-time mode (`sync.watch`): instead of interval passes a worker thread runs
`realtime.run_watch`; every cycle it records comes back here and is reported like a pass. When
real-time mode cannot run (`fallback`) the daemon syncs by interval and tries again after
`sync.rescan_interval`, on a changed configuration or when asked (SIGUSR1, network back).
SIGUSR1 while watching stops unison, leaves the sync lock free for `YIELD_WINDOW` seconds (so
that a `roaming-homes sync` waiting for it runs its own pass, see `session.make_way`), waits for
whoever took it, then watches again, starting with a full scan.

Threads: the main thread runs passes and sleeps between them. Signal handlers only set flags
and wake it through a pipe (`signal.set_wakeup_fd`), which is safe whatever the main thread is
doing; the watch worker wakes it the same way. At SIGTERM a timer thread sets the pass's
`abort` event when the logout's time is up, which stops unison cleanly (SIGINT, see
`unison.ABORT_GRACE`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from roaming_homes import config as config_mod
from roaming_homes.actions import pending
from roaming_homes.actions import sync as engine
from roaming_homes.actions import watch as realtime
from roaming_homes.actions.status import Overview, clock
from roaming_homes.actions.tray import Tray
from roaming_homes.config import Config
from roaming_homes.desktop import notify
from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.outcome import ATTENTION, Reason, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety.guards import is_excluded
from roaming_homes.session import pause, progress
from roaming_homes.session.lock import SyncLock, lock_holder
from roaming_homes.unison import frontends, kerberos
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.inotify import FileWatch

log = logging.getLogger(__name__)
# Runs one pass and returns the outcome to report; it must return soon after `abort` is set:
# the daemon sets it when the logout's time is up. The observer gets the pass's progress.
PassStrategy = Callable[[Config, Locations, threading.Event, progress.Observer | None],
                        SyncOutcome]

# Seconds between looks at the config files' modification times, when inotify cannot tell.
CONFIG_POLL = 5.0
# While a Kerberos ticket is awaited in a cache without a file (KCM:, KEYRING:), nothing can be
# watched: `klist -s` (local, cheap) is asked this often instead, so a kinit is followed at once.
TICKET_POLL = 5.0
# How much longer than the logout bound systemd should wait for us: unison's grace after
# SIGINT, and closing the shared ssh connection.
STOP_MARGIN = 15
# NetworkManager's NMState: 50 CONNECTED_LOCAL, 60 CONNECTED_SITE, 70 CONNECTED_GLOBAL. A home
# server is often on the local network, so any "connected" state counts.
NM_CONNECTED_LOCAL = 50
# Real-time mode: how long the daemon leaves the sync lock free when asked to (SIGUSR1) for
# someone else to take it; how soon it tries again when somebody else held the lock.
YIELD_WINDOW = 3.0
BUSY_RETRY = 5.0
# The login pass waits a random part of this many seconds: computers started together (a class
# room, a power cut's end) do not all knock on the server's sshd in the same second.
LOGIN_SPREAD = 3.0
# While a pass copies, STATUS= says what is left at most this often (seconds); a copy still
# going after LONG_COPY seconds also gets a line in the log (the journal), once.
STATUS_INTERVAL = 1.0
LONG_COPY = 2.0


def interval_pass(config: Config, locations: Locations, abort: threading.Event,
                  on_progress: progress.Observer | None = None) -> SyncOutcome:
    """The plain strategy: one engine pass, then back to the daemon's schedule. A big first
    sync is announced while it runs (the result of every pass is told by `_report`)."""
    return engine.run_pass(
        config, locations, abort=abort, unless_paused=True,
        on_progress=progress.observe_all(notify.FirstSyncAnnouncer(config, locations),
                                         on_progress))


# --- deciding (pure) --------------------------------------------------------------------------

def network_came_up(previous: int | None, state: int) -> bool:
    """Whether a NetworkManager StateChanged is worth a pass now: connected, and was not."""
    return state >= NM_CONNECTED_LOCAL and (previous is None or previous < NM_CONNECTED_LOCAL)


def watch_retry_delay(result: realtime.WatchResult, config: Config) -> float:
    """Seconds before real-time mode is tried again after it ended by itself.

    No usable monitor: not before the next full-rescan time (the log says so once). Another
    sync holds the lock: soon. Any other failure: one interval, as interval mode would wait;
    an offline server is the `Health`'s business (the daemon probes quietly, then watches again).
    """
    if result.fallback:
        return config["sync"]["rescan_interval"]
    if result.outcome is None or result.outcome.result == Result.OFFLINE:
        return 0.0
    if result.outcome.result == Result.BUSY and result.outcome.reason != Reason.SERVER_BUSY:
        return BUSY_RETRY  # a sync of the user's own: soon; a busy server: not before long
    return config["sync"]["interval"]


def ended_offline(result: realtime.WatchResult) -> bool:
    """Whether real-time mode ended on its own because the server could not be reached: a
    pass asked for meanwhile is then not a reason to make way (nobody waits for the lock) but
    a pass to try once the network is back."""
    return result.outcome is not None and result.outcome.result == Result.OFFLINE


def fallback_line(reason: str, config: Config) -> str:
    minutes = max(1, round(config["sync"]["rescan_interval"] / 60))
    return (f"falling back to a pass every {config['sync']['interval']} s (real-time mode is "
            f"tried again in {minutes} min, on a config change or SIGUSR1): {reason}")


@dataclass
class Health:
    """What the daemon has learnt from its passes: the status line, and which results to log.

    Repeated results are not logged: a laptop offline for a day writes one line when it goes
    offline and one when it is back, not one a minute.
    """

    last: SyncOutcome | None = None
    offline_since: str | None = None  # the `finished` time of the first failed contact
    note: str = ""  # a problem outside the passes, e.g. a config file that no longer loads
    paused: pause.Pause | None = None  # the pause in force (`roaming-homes pause`)
    running: str | None = None  # what a pass copying now has left (`progress.describe`)
    # A ticket was found after a pass had none: not looked for again until a pass says how
    # it went. A watch that starts slowly must not be stopped for the same ticket every few
    # seconds (it was, on a loaded machine, and never synced).
    ticket_found: bool = False

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    @property
    def waiting_for_ticket(self) -> bool:
        """The last pass found no Kerberos ticket, and none has been found since."""
        return (not self.ticket_found and self.last is not None
                and self.last.reason == Reason.NO_TICKET)

    def update(self, outcome: SyncOutcome) -> str | None:
        """Take in a finished pass; return the line to log, or None when nothing changed."""
        self.ticket_found = False
        if outcome.result in (Result.BUSY, Result.PAUSED):
            # a sync of the user's own held the lock, the server was busy, or syncing is
            # paused: nothing learnt about the home, not news
            return None
        previous, self.last = self.last, outcome
        if outcome.result == Result.OFFLINE:
            if self.offline:
                return None
            self.offline_since = outcome.finished
            return f"offline, will keep trying quietly: {outcome.message}"
        was_offline, self.offline_since = self.offline_since, None
        if was_offline:
            return f"back online (offline since {clock(was_offline)}): {outcome.message}"
        if (outcome.transferred or previous is None or previous.result != outcome.result
                or (outcome.result in ATTENTION and previous.message != outcome.message)):
            return outcome.message
        return None

    def status(self) -> str:
        """The one line for systemd's STATUS= (`systemctl --user status roaming-homes`)."""
        return Overview(self.last, self.offline_since, running=self.running, note=self.note,
                        paused=self.paused).line()


class StatusPublisher:
    """An observer of every pass's progress, real-time cycles included: while one copies,
    STATUS= says what is left (`syncing now: uploading 3 files, 120 MB, ~10 s left`, at most
    every STATUS_INTERVAL seconds), a copy still going after LONG_COPY seconds says so once in
    the log, and when it is done STATUS= shows the last result again. Runs in the thread of
    the pass."""

    def __init__(self, health: Health) -> None:
        self.health = health
        self._sent = 0.0
        self._copying_since: float | None = None  # None: told in the log, or not copying
        self._told = False

    def __call__(self, p: progress.Progress) -> None:
        if progress.copying(p):
            text, now = progress.describe(p), time.monotonic()
            if self._copying_since is None and not self._told:
                self._copying_since = now
            elif self._copying_since is not None and now - self._copying_since >= LONG_COPY:
                self._copying_since, self._told = None, True
                log.info("%s", text)
            if text != self.health.running and now - self._sent >= STATUS_INTERVAL:
                self.health.running, self._sent = text, now
                sd_notify(f"STATUS={self.health.status()}")
        elif p.phase == "done":
            self._copying_since, self._told = None, False
            if self.health.running is not None:
                self.health.running, self._sent = None, 0.0
                sd_notify(f"STATUS={self.health.status()}")


# --- doing ------------------------------------------------------------------------------------

def sd_notify(message: str, address: str | None = None) -> bool:
    """Send `message` (e.g. "READY=1\\nSTATUS=…") to systemd's notification socket, if any.

    The protocol is one datagram to $NOTIFY_SOCKET ('@' means the abstract namespace); without
    the variable (not run by systemd) there is nobody to tell and this does nothing.
    """
    address = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watch_network(on_up: Callable[[], None]) -> None:
    """Call `on_up` whenever NetworkManager reports the network connected again (blocks).

    Runs in a daemon thread. Without a system bus or NetworkManager there is nothing to watch:
    the interval alone then brings a laptop back in sync.
    """
    from jeepney import MatchRule
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import DBusErrorResponse

    rule = MatchRule(type="signal", interface="org.freedesktop.NetworkManager",
                     member="StateChanged", path="/org/freedesktop/NetworkManager")
    try:
        conn = open_dbus_connection(bus="SYSTEM")
    except (OSError, ValueError, RuntimeError):
        return  # no system bus (containers, minimal systems): not worth a line
    previous: int | None = None
    try:
        with conn, conn.filter(rule) as queue:
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
            log.info("watching NetworkManager: a pass runs as soon as the network is back")
            while True:
                state = conn.recv_until_filtered(queue).body[0]
                if network_came_up(previous, state):
                    on_up()
                previous = state
    except (OSError, ValueError, RuntimeError, DBusErrorResponse) as exc:
        log.info("stopped watching the network (%s); passes follow sync.interval", exc)


def _mtimes(paths: tuple[Path, ...]) -> tuple[int | None, ...]:
    found: list[int | None] = []
    for path in paths:
        try:
            found.append(path.stat().st_mtime_ns)
        except OSError:
            found.append(None)
    return tuple(found)


class Daemon:
    def __init__(self, locations: Locations, config_path: Path | None,
                 strategy: PassStrategy = interval_pass) -> None:
        self.locations = locations
        self.config_path = config_path
        self.strategy = strategy
        self.config = self._load()
        self._watched = (config_path or locations.system_config, locations.user_config)
        self._seen = _mtimes(self._watched)
        self._config_watch: FileWatch | None = None  # None: poll the mtimes instead
        # The Kerberos ticket cache, when it is a file, watched only while a pass found no
        # ticket (its directory is often /tmp: watched always, it would wake us for every file
        # made there): a new ticket (kinit) ends the wait at once; otherwise the next
        # interval's pass finds it.
        self._ticket_watch: FileWatch | None = None
        # The pause file: `pause` and `resume` (or the tray) take effect at once.
        self._pause_watch: FileWatch | None = None
        self._config_touched = False
        self.health = Health()
        self._publisher = StatusPublisher(self.health)
        self.abort = threading.Event()
        self._stopping = False
        self._reload_requested = False
        self._pass_requested = False
        self._rescan_requested = False  # the tray's "Sync now": in real-time mode, a full scan
        self._tray: Tray | None = None
        self._last_pass_end = time.monotonic()
        self._watch_retry_at = 0.0  # monotonic time before which real-time mode is not tried
        self._fallback_reason = ""  # the last reason logged for not watching
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._term_r, self._term_w = os.pipe2(os.O_CLOEXEC)

    def _load(self) -> Config:
        return config_mod.load(self.locations, self.config_path)

    # Signal handlers: flags only; the wakeup fd interrupts the main thread's sleep.
    def _on_term(self, _signo: int, _frame: object) -> None:
        if not self._stopping:
            self._stopping = True
            os.write(self._term_w, b"t")

    def _on_hup(self, _signo: int, _frame: object) -> None:
        self._reload_requested = True

    def _on_usr1(self, _signo: int, _frame: object) -> None:
        self._pass_requested = True

    def request_pass(self) -> None:
        """Run a pass as soon as the current sleep or pass ends (any thread)."""
        self._pass_requested = True
        self._wake(b"p")

    def sync_now(self) -> None:
        """A pass now (any thread): in real-time mode the watch starts over with its full
        scan at once, without leaving the lock to anybody (unlike SIGUSR1)."""
        self._rescan_requested = True
        self._wake(b"n")

    def _refresh_tray(self) -> None:
        if self._tray is not None:
            self._tray.refresh()

    def _wake(self, why: bytes) -> None:
        """Interrupt the main thread's sleep (any thread); set what it is for first."""
        with contextlib.suppress(BlockingIOError):  # full of wakeups already: as good
            os.write(self._wake_w, why)

    def _bound_stop(self) -> None:
        """After SIGTERM: tell systemd how long we need, then abort the pass when time is up."""
        os.read(self._term_r, 1)
        bound = self.config["sync"]["logout_timeout"]
        sd_notify(f"STOPPING=1\nEXTEND_TIMEOUT_USEC={(bound + STOP_MARGIN) * 1_000_000}\n"
                  f"STATUS=final pass before logout (at most {bound} s)")
        time.sleep(bound)
        self.abort.set()

    def _report(self, outcome: SyncOutcome) -> None:
        line = self.health.update(outcome)
        self._follow_ticket_cache()  # before the line: a kinit after it is not missed
        if line:
            log.info(line)
        sd_notify(f"STATUS={self.health.status()}")
        self._refresh_tray()
        notify.after_pass(self.config, self.locations, outcome)

    def _reload_due(self) -> bool:
        if (self._reload_requested or self._config_touched
                or _mtimes(self._watched) != self._seen):
            self._reload_requested = self._config_touched = False
            return True
        return False

    def _reload(self) -> bool:
        """Re-read the configuration; True when it changed (real-time mode then starts over)."""
        self._seen = _mtimes(self._watched)
        previous = self.config.values
        try:
            self.config = self._load()
        except RoamingHomesError as exc:
            note = f"configuration not reloaded, the previous one stays in use: {exc.message}"
            if note != self.health.note:
                log.info(note)
            self.health.note = note
        else:
            if self.health.note:
                log.info("configuration reloaded")
            self.health.note = ""
        sd_notify(f"STATUS={self.health.status()}")
        self._refresh_tray()
        changed = self.config.values != previous
        if changed:
            self._watch_retry_at = 0.0
        return changed

    def _server_answers(self) -> bool:
        """The cheap probe while offline: one ssh handshake (or a directory check), no state."""
        server = transport.Server.from_config(self.config["server"])
        try:
            frontends.connect(server, self.locations.control_dir)
        except RoamingHomesError as exc:
            return exc.code != ExitCode.TRY_LATER
        return True

    def _cycle(self) -> None:
        if not self.health.offline or self._server_answers():
            self._report(self.strategy(self.config, self.locations, self.abort,
                                       self._publisher))
        self._last_pass_end = time.monotonic()

    def _watch_wanted(self) -> bool:
        return (self.config["sync"]["watch"] and not self.health.offline
                and time.monotonic() >= self._watch_retry_at)

    def _watch(self) -> None:
        """Real-time mode until it ends, is stopped or is asked to make way; then decide."""
        stop = threading.Event()
        outcomes: queue.SimpleQueue[SyncOutcome] = queue.SimpleQueue()
        ended: list[realtime.WatchResult] = []
        config = self.config

        def on_outcome(outcome: SyncOutcome) -> None:
            outcomes.put(outcome)
            self._wake(b"o")

        def work() -> None:
            try:
                ended.append(realtime.run_watch(
                    config, self.locations, stop, on_outcome=on_outcome,
                    on_progress=progress.observe_all(
                        notify.FirstSyncAnnouncer(config, self.locations), self._publisher)))
            except Exception as exc:  # e.g. unison vanished: interval passes say it properly
                ended.append(realtime.WatchResult(f"real-time mode failed: {exc}", fallback=True))
            finally:
                self._wake(b"w")

        worker = threading.Thread(target=work, name="watch", daemon=True)
        # the watch starts with a full scan: that is the pass
        self._pass_requested = self._rescan_requested = False
        worker.start()
        reported, making_way = self._while_watching(stop, outcomes, ended)
        worker.join()
        stop.set()  # the watch is over: its waker thread ends now
        reported |= self._report_queued(outcomes)
        self._last_pass_end = time.monotonic()
        if self._stopping:
            return
        if making_way:
            if not ended_offline(ended[0]):
                self._make_way()
                return
            # Asked for while the watch was ending offline (NetworkManager's "network is
            # back", or SIGUSR1): the request stands, for the next cycle's probe and pass.
            self._pass_requested = True
        self._after_watch(ended[0], config, reported=reported)

    def _while_watching(self, stop: threading.Event,
                        outcomes: queue.SimpleQueue[SyncOutcome],
                        ended: list[realtime.WatchResult]) -> tuple[bool, bool]:
        """Report the watch's outcomes as they come until it has ended; stop it when the daemon
        stops, a pass is asked for (real-time mode makes way) or the configuration changed.

        Returns whether anything was reported, and whether to make way.
        """
        reported = making_way = False
        while not ended:  # not the worker's `is_alive()`: its last wakeup may come before it ends
            self._sleep(None)  # until an outcome, a signal or a config change
            reported |= self._report_queued(outcomes)
            if stop.is_set():
                continue
            if (self._stopping or self._follow_pause() is not None
                    or self._rescan_requested):
                # stopping; paused: not another pass until it ends; or "Sync now": watched
                # again at once, starting with a full scan
                stop.set()
            elif self._pass_requested:
                self._pass_requested, making_way = False, True
                stop.set()
            elif self._reload_due() and self._reload():
                stop.set()  # watch again with the new configuration
        return reported, making_way

    def _report_queued(self, outcomes: queue.SimpleQueue[SyncOutcome]) -> bool:
        """Report the outcomes the watch has sent so far; True when there were any."""
        reported = False
        while not outcomes.empty():
            self._report(outcomes.get())
            reported = True
        return reported

    def _after_watch(self, result: realtime.WatchResult, config: Config, *,
                     reported: bool) -> None:
        """Schedule what follows a watch that ended by itself or for a new configuration: when
        real-time mode is tried again, and whether an interval pass is due at once."""
        self._watch_retry_at = time.monotonic() + watch_retry_delay(result, config)
        if result.fallback:
            if result.reason != self._fallback_reason:
                log.info(fallback_line(result.reason, config))
                self._fallback_reason = result.reason
            if not reported:  # an interval pass now: the status must not wait an interval
                self._last_pass_end -= config["sync"]["interval"]
        elif result.outcome is not None and result.outcome.result == Result.BUSY:
            self._last_pass_end = self._watch_retry_at  # no interval pass in between either
        elif (result.outcome is not None and result.outcome.result == Result.OFFLINE
              and len(config["server"]["host"]) > 1):
            # Its front-end went away: another may serve at once (unison.frontends), and the
            # offline probe of the next cycle finds out, rather than an interval from now.
            self._pass_requested = True

    def _make_way(self) -> None:
        """Leave the sync lock free for a moment; wait for whoever takes it to be done."""
        deadline = time.monotonic() + YIELD_WINDOW
        sd_notify("STATUS=real-time mode paused for a sync of the user's own")
        while not self._stopping and time.monotonic() < deadline:
            if lock_holder(self.locations.lock_file) is not None:
                break
            self._sleep(0.1)
        # Free twice a second apart: `resolve` lets go between its unison and its pass.
        while not self._stopping:
            if lock_holder(self.locations.lock_file) is None:
                self._sleep(1.0)
                if lock_holder(self.locations.lock_file) is None:
                    break
            self._sleep(0.5)
        sd_notify(f"STATUS={self.health.status()}")

    def _follow_ticket_cache(self) -> None:
        """Watch the ticket cache file while waiting for a ticket, and only then."""
        waiting = self.health.waiting_for_ticket
        if waiting and self._ticket_watch is None:
            if (cache := kerberos.cache_file()) is not None:
                with contextlib.suppress(OSError):  # no inotify: the interval finds a ticket
                    self._ticket_watch = FileWatch((cache,))
        elif not waiting and self._ticket_watch is not None:
            self._ticket_watch.close()
            self._ticket_watch = None

    def _follow_pause(self) -> pause.Pause | None:
        """The pause in force now; a pause that begins or ends is logged and shown in
        STATUS=, and one that ends asks for a pass at once (real-time mode: watching again,
        which starts with a full pass)."""
        held = pause.paused(self.locations)
        if held == self.health.paused:
            return held
        was, self.health.paused = self.health.paused, held
        if held is not None:
            log.info("syncing %s (%s)", held.line(), pause.RESUME_COMMAND)
        elif was is not None:
            log.info("pause over: syncing now")
            self._pass_requested, self._watch_retry_at = True, 0.0
        sd_notify(f"STATUS={self.health.status()}")
        return held

    def _sleep_paused(self, held: pause.Pause) -> None:
        """Sleep while paused: until it ends, or until woken (`resume`, a new pause, stop)."""
        if held.until is None:
            self._sleep(None)
        else:
            left = (held.until - datetime.now().astimezone()).total_seconds()
            self._sleep(max(left, 0.0) + 0.01)

    def _sleep(self, seconds: float | None) -> None:
        """Sleep until woken (signal, thread, config change, the pause file, a new Kerberos
        ticket while one is awaited) or `seconds` (None: no limit)."""
        watch, tickets, paused = self._config_watch, self._ticket_watch, self._pause_watch
        if watch is None or paused is None:  # files that must be looked at now and then
            seconds = CONFIG_POLL if seconds is None else min(seconds, CONFIG_POLL)
        asking = tickets is None and self.health.waiting_for_ticket
        if asking:
            seconds = TICKET_POLL if seconds is None else min(seconds, TICKET_POLL)
        fds = [self._wake_r, *(w.fileno() for w in (watch, tickets, paused) if w is not None)]
        readable, _, _ = select.select(fds, [], [],
                                       None if seconds is None else max(0.0, seconds))
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)  # the wakeups; the flags say what they were for
        if watch is not None and watch.fileno() in readable and watch.touched():
            self._config_touched = True
        if paused is not None and paused.fileno() in readable:
            paused.touched()  # read and re-armed; the loop looks at the pause itself
        if tickets is not None and tickets.fileno() in readable and tickets.touched():
            log.info("the Kerberos ticket cache changed: syncing now")
            self._ticket_found()
        elif asking and kerberos.has_ticket():
            log.info("a Kerberos ticket is there again: syncing now")
            self._ticket_found()

    def _ticket_found(self) -> None:
        """A pass now; real-time mode starts again at once if it runs (it has nobody to make
        way for, unlike a pass asked for)."""
        self.health.ticket_found = self._rescan_requested = True

    def _close_watches(self) -> None:
        """Stop following the files and showing the tray icon."""
        for watch in (self._config_watch, self._ticket_watch, self._pause_watch, self._tray):
            if watch is not None:
                watch.close()

    def _final_pass(self) -> None:
        """The pass at logout (none while paused); when it cannot sync, what it leaves only
        here is told (`pending.tell`)."""
        log.info("stopping: final pass" if self.health.paused is None else
                 "stopping: syncing is paused, no final pass")
        # Not `_cycle`: offline or not, the final pass tries; it fails fast if it must.
        final = self.strategy(self.config, self.locations, self.abort, self._publisher)
        self._report(final)
        if line := pending.tell(self.config, self.locations, final):
            log.warning("%s", line)

    def run(self) -> int:
        daemon_lock = SyncLock(self.locations.daemon_lock_file,
                               busy="the roaming-homes daemon of this user already runs")
        daemon_lock.acquire("daemon")
        for signo, handler in ((signal.SIGTERM, self._on_term), (signal.SIGINT, self._on_term),
                               (signal.SIGHUP, self._on_hup), (signal.SIGUSR1, self._on_usr1)):
            signal.signal(signo, handler)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        with contextlib.suppress(OSError):  # no inotify (limits, old kernel): poll the mtimes
            self._config_watch = FileWatch(self._watched)
        with contextlib.suppress(OSError):  # no inotify: looked at every CONFIG_POLL seconds
            self._pause_watch = FileWatch((pause.pause_file(self.locations),))
        threading.Thread(target=self._bound_stop, name="logout-bound", daemon=True).start()
        threading.Thread(target=watch_network, args=(self.request_pass,),
                         name="network", daemon=True).start()
        if self.config["notify"]["tray"]:
            self._tray = Tray(lambda: self.config, self.locations, self.sync_now,
                              lambda: self.health.note)
            self._tray.start()
        sd_notify(f"READY=1\nSTATUS={self.health.status()}")
        interval = self.config["sync"]["interval"]
        log.info(f"started: real-time mode (sync.watch), else a pass every {interval} s"
                 if self.config["sync"]["watch"] else
                 f"started: a pass now, then every {interval} s")
        self._pass_requested = True  # the login pass, spread out (a signal cuts the wait short)
        self._sleep(random.uniform(0, LOGIN_SPREAD))
        try:
            while not self._stopping:
                if self._reload_due():
                    self._reload()
                if (held := self._follow_pause()) is not None:
                    self._sleep_paused(held)
                    continue
                if self._watch_wanted():
                    self._watch()
                    continue
                due = self._last_pass_end + self.config["sync"]["interval"]
                asked = self._pass_requested or self._rescan_requested
                if asked or time.monotonic() >= due:
                    if asked:
                        self._watch_retry_at = 0.0  # asked for: real-time mode may work now
                    self._pass_requested = self._rescan_requested = False
                    self._cycle()
                    continue
                wake_at = due
                if self.config["sync"]["watch"] and not self.health.offline:
                    wake_at = min(due, self._watch_retry_at)  # real-time mode is tried again
                self._sleep(wake_at - time.monotonic())
            if not self.abort.is_set():
                self._final_pass()
        finally:
            frontends.disconnect(transport.Server.from_config(self.config["server"]),
                                 self.locations.control_dir)
            self._close_watches()
            daemon_lock.release()
        log.info("stopped")
        return 0


def main(locations: Locations, config_path: Path | None) -> int:
    """`roaming-homes daemon`: returns the exit code (0 also for an excluded user)."""
    daemon = Daemon(locations, config_path)
    if daemon.config["notify"]["enabled"]:
        notify.check_config(daemon.config)  # a bad messages file: exit 78 before any pass
    if is_excluded(locations.user, daemon.config["sync"]["excluded_users"]):
        log.info("user %s is excluded (sync.excluded_users): no daemon", locations.user)
        sd_notify(f"READY=1\nSTATUS=user {locations.user} is excluded: not syncing")
        return 0
    return daemon.run()
