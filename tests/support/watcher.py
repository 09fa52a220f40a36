"""Real-time mode in a test: realtime.run_watch in a thread, as the daemon runs it."""

from __future__ import annotations

import threading

from roaming_homes import config as config_mod
from roaming_homes.actions import watch as realtime
from roaming_homes.outcome import SyncOutcome
from roaming_homes.paths import Locations
from tests.support.homes import Setup


class Watcher:
    """run_watch in a thread, as the daemon runs it."""

    def __init__(self, setup: Setup, **sync: object) -> None:
        setup.configure(sync={"paths": ["Documents"], "excluded_users": [], **sync})
        self.locations = Locations.from_env(setup.env)
        self.config = config_mod.load(self.locations, setup.config_path)
        self.stop = threading.Event()
        self.outcomes: list[SyncOutcome] = []
        self.result: realtime.WatchResult | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = realtime.run_watch(self.config, self.locations, self.stop,
                                         on_outcome=self.outcomes.append)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def finish(self, timeout: float = 30) -> realtime.WatchResult:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run_watch did not stop"
        assert self.result is not None
        return self.result
