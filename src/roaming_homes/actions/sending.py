"""A real-time session's new small files: sent to the server on their own (`unison.push`),
then settled by a unison pass over them (`Outbox.groups` says who wins each).

What the session sent and unison has not settled yet is in its ledger, in memory: the session
settles it within `SETTLE_AFTER` seconds without a change, before any full pass, and before it
ends. A session killed before that leaves unison to find each file new on both sides: the same
file is recorded as it is; one changed again here meanwhile is a conflict, which keeps both
versions (a conflict copy), as any.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roaming_homes.actions import sync as engine
from roaming_homes.errors import DiskFull
from roaming_homes.relative import is_below
from roaming_homes.safety import guards
from roaming_homes.session.computer import this_computer
from roaming_homes.text import escape
from roaming_homes.unison import frontends, profile, push
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import ignored_test, walk

log = logging.getLogger(__name__)

SETTLE_AFTER = 2.0  # seconds without a change before the files sent on their own are settled
SETTLE_LATEST = 30.0  # seconds the oldest of them waits at most (changes that never pause)
LEDGER_LIMIT = 256  # files sent and not settled: then they are settled before more are sent


def local_state(root: Path, path: str) -> push.Here | None:
    """A file's state here for `push.settle`; None when it is not a regular file now."""
    try:
        st = os.lstat(root / path)
    except OSError:
        return None
    return push.here_state(st) if stat.S_ISREG(st.st_mode) else None


@dataclass
class Outbox:
    """What a real-time session sent on its own, and what it knows of the home's names."""

    job: engine.Pass
    plan: profile.Plan
    paths: list[str]  # the synced paths
    known: push.Known | None = None  # None until `learn`
    ledger: dict[str, push.Placed] = field(default_factory=dict)
    sent_at: float = 0.0  # monotonic time of the last send
    first_sent_at: float = 0.0  # ... of the first send the ledger holds
    able: bool = True  # False once the server could not make files this way (said once)
    key: str = ""  # the pair of roots (`engine.pair_key`), whose server replica id is checked

    def learn(self) -> None:
        """Take the names the home holds now (after the session's first full pass)."""
        job, plan = self.job, self.plan
        self.known = push.Known(rel for rel, _ in walk(
            plan.local_root, self.paths, plan.ignore_paths, plan.ignore_names))
        computer = this_computer(job.locations, job.config["client"]["name"])
        self.key = engine.pair_key(computer, plan.local_root, job.server)

    def synced(self, names: Sequence[str]) -> None:
        """`names` are on both sides now (a pass over them ended): not new any more."""
        if self.known is not None:
            self.known.add(names)

    def due(self, now: float) -> bool:
        at = self.settle_at()
        return at is not None and now >= at

    def settle_at(self) -> float | None:
        """When the ledger is to be settled: SETTLE_AFTER seconds after the last send, or
        SETTLE_LATEST after the first; None when it is empty (or waits: `unsettled`)."""
        if not self.ledger:
            return None
        return min(self.sent_at + SETTLE_AFTER, self.first_sent_at + SETTLE_LATEST)

    def send(self, here: Sequence[str], there: Sequence[str]) -> list[str]:
        """Send what of `here` (this computer's monitor's report) is a new small file, none of
        it near what the server reported (`there`); returns the paths made on the server."""
        job = self.job
        if not self.able or self.known is None or job.server.is_local:
            return []
        replica = job.store.replicas(self.key).get("server_id")
        if not isinstance(replica, str) or not replica:
            return []
        files = push.batch(self._outgoing(here, there))
        if not files:
            return []
        nonce = guards.new_nonce()
        script = push.send_script(job.server.home, replica, nonce)
        try:
            text = self._exchange(script, push.send_input(files))
        except transport.ConnectError as exc:
            # the pass that follows meets the same failure and says it (once, as a pass does)
            log.debug("new files not sent on their own: %s", exc.message)
            return []
        answer = push.parse_sent(text, nonce, files)
        if isinstance(answer, push.Refused):
            # missing, marker: the pass that follows refuses, and says why
            if answer is push.Refused.ANSWER:
                self._unable("its answer was not as expected")
            return []
        if {push.Sent.FAILED, push.Sent.SHORT} & set(answer.unmade.values()):
            self._unable("it could not make them (no `head -c`, `touch -d` or `stat -c`, or "
                         "a full disk)")
        if answer.placed:
            self.sent_at = time.monotonic()
            if not self.ledger or self.first_sent_at == math.inf:
                self.first_sent_at = self.sent_at
        self.ledger.update(answer.placed)
        self._note(answer.placed)
        return list(answer.placed)

    def groups(self, paths: Sequence[str]) -> dict[push.Winner, list[str]]:
        """The ledger's `paths` by whose version wins each (`push.settle`); all left to unison
        when the server cannot say how they are there."""
        nonce = guards.new_nonce()
        try:
            states = push.parse_checked(self._exchange(
                push.check_script(self.job.server.home, nonce), push.check_input(paths)),
                nonce, paths)
        except transport.ConnectError:
            states = None
        if states is None:
            return {push.Winner.UNISON: list(paths)}
        found: dict[push.Winner, list[str]] = {}
        for path in paths:
            winner = push.settle(self.ledger[path], local_state(self.job.locations.home, path),
                                 states[path])
            found.setdefault(winner, []).append(path)
        return found

    def unsettled(self) -> None:
        """A settling pass did not complete (refused, failed): its files stay in the ledger,
        for the next send, change, full pass or the session's end, not for the timer again
        at once (the same refusal every two seconds)."""
        self.sent_at = self.first_sent_at = math.inf

    def settled(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.ledger.pop(path, None)
        self.synced(paths)

    def _outgoing(self, here: Sequence[str], there: Sequence[str]) -> Iterator[push.Outgoing]:
        """The new small files of `here`, read one at a time as `push.batch` takes them."""
        ignored = ignored_test(self.plan.ignore_paths, self.plan.ignore_names)
        root = self.job.locations.home
        wanted = 0
        for path in dict.fromkeys(here):
            if len(self.ledger) + wanted >= LEDGER_LIMIT:
                return
            if (path in self.ledger or (self.known is not None and path in self.known)
                    or path in self.paths or not is_below(path, self.paths)
                    or not profile.safe_value(path) or ignored(path)
                    or any(is_below(path, [t]) or is_below(t, [path]) for t in there)):
                continue
            item = push.read_new(root, path)
            if item is not None:
                wanted += 1
                yield item

    def _exchange(self, script: str, data: bytes) -> str:
        job = self.job
        server, socket = frontends.connect(job.server, job.locations.control_dir)
        return transport.run_remote_bytes(server, socket, script, job.abort,
                                          data).decode(errors="replace")

    def _unable(self, why: str) -> None:
        if self.able:
            log.warning("the server cannot take new files on their own (%s): unison carries "
                        "them, as every change", why)
        self.able = False

    def _note(self, placed: dict[str, push.Placed]) -> None:
        if not placed:
            return
        # A full disk here drops these lines; the next pass says so.
        with contextlib.suppress(DiskFull), self.job.store.open_log() as transcript:
            for path in placed:
                transcript.write(f"--- sent on its own: {escape(path)}")
