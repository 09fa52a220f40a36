"""A real-time session's small files, new or edited: sent to the server on their own
(`unison.push`), then settled by a unison pass over them (`Outbox.groups` says who wins each).

A new file goes when nothing is at its name on the server. An edited one (a name the session
knows, `push.Known`) goes when the server's file is still the version last synced: one
exchange asks the server how its files are (`push.synced_as`), a second sends them. An edit
overwrites the server's version (which goes to the server's backups), so the loss guard counts
it in its window (`sync.guard_window`) before it is sent, as it counts a pass's: edits that
would pass `sync.max_change` are not sent, and the pass that carries them instead is refused,
and says why, as any.

What the session sent and unison has not settled yet is in its ledger, in memory: the session
settles it within `SETTLE_AFTER` seconds without a change, before any full pass, and before it
ends. A session killed before that leaves unison to find each file changed on both sides: the
same file is recorded as it is; one changed again here meanwhile is a conflict, which keeps
both versions (a conflict copy), as any.
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
from roaming_homes.safety import backups, guards
from roaming_homes.safety.baseline import Baseline, BaselineStore
from roaming_homes.session.computer import this_computer
from roaming_homes.text import escape
from roaming_homes.unison import frontends, profile, push
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import ignored_test, walk

log = logging.getLogger(__name__)

SETTLE_AFTER = 2.0  # seconds without a change before the files sent on their own are settled
SETTLE_LATEST = 30.0  # seconds the oldest of them waits at most (changes that never pause)
LEDGER_LIMIT = 256  # files sent and not settled: then they are settled before more are sent
MADE_LIMIT = 1024  # files sent and settled whose server state the session keeps (`Outbox.made`)


def _synced(st: os.stat_result) -> push.Synced | None:
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def local_synced(path: Path) -> push.Synced | None:
    """The file at `path` as `push.Known` keeps it; None when it is not a regular file."""
    try:
        return _synced(os.lstat(path))
    except OSError:
        return None


def local_mode(path: Path) -> int | None:
    """The permissions of the file at `path` as a file sent gets them; None when it is gone."""
    try:
        return push.sent_mode(os.lstat(path))
    except OSError:
        return None


def _edited(path: Path, was: push.Synced) -> bool:
    """Whether the file at `path` is small enough to send and its contents changed since
    `was` (its size or time: a change of its mode alone is unison's)."""
    now = local_synced(path)
    return now is not None and now[0] <= push.FILE_LIMIT and now != was


def _overwrites(edits: Sequence[str]) -> dict[str, guards.Losses]:
    """What sending `edits` loses, as the loss guard counts a plan's."""
    return {"server": guards.Losses(overwritten=len(edits), paths=list(edits),
                                    overwrote={guards.path_key(path) for path in edits}),
            "local": guards.Losses()}


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
    # Files sent and settled with neither side changed since: the server's file as it was made
    # there (its `stat` line), which an edit can name without asking the server first. Until a
    # pass over the file, a full pass, or an answer that it changed; MADE_LIMIT at most.
    made: dict[str, str] = field(default_factory=dict)

    def learn(self) -> None:
        """Take the names the home holds now, and how its files are (after a full pass)."""
        job, plan = self.job, self.plan
        self.known = push.Known((rel, _synced(st)) for rel, st in walk(
            plan.local_root, self.paths, plan.ignore_paths, plan.ignore_names))
        self.made.clear()
        computer = this_computer(job.locations, job.config["client"]["name"])
        self.key = engine.pair_key(computer, plan.local_root, job.server)

    def synced(self, names: Sequence[str]) -> None:
        """`names` are on both sides now (a pass over them ended): not new any more, and each
        file as it is here now is the version synced."""
        if self.known is not None:
            root = self.job.locations.home
            self.known.add((name, local_synced(root / name)) for name in names)
        for name in names:
            self.made.pop(name, None)

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
        """Send what of `here` (this computer's monitor's report) is a small file, new or
        edited, none of it near what the server reported (`there`); returns the paths made or
        replaced on the server."""
        job = self.job
        if not self.able or self.known is None or job.server.is_local:
            return []
        replica = job.store.replicas(self.key).get("server_id")
        if not isinstance(replica, str) or not replica:
            return []
        new, edited, again = self._candidates(here, there)
        # the loss guard's baseline, read once for the check of the edits and their count
        store = engine.baseline_store(job, self.plan, tuple(self.paths))
        expected = self._expected(edited, again, store) if edited or again else {}
        files = push.batch(self._outgoing(new, expected))
        if not files:
            return []
        edits = [item.path for item in files if item.expect is not None]
        if edits and not self._counted(edits, store):
            # counted before they go (an answer lost on the way may hide what was replaced),
            # or not sent: unison's pass carries them, judged as any
            files = [item for item in files if item.expect is None]
            if not files:
                return []
        nonce = guards.new_nonce()
        script = push.send_script(job.server.home, replica, nonce, backups.IN_SERVER_HOME,
                                  job.config["sync"]["backups"])
        try:
            text = self._exchange(script, push.send_input(files))
        except transport.ConnectError as exc:
            # the pass that follows meets the same failure and says it (once, as a pass does)
            log.debug("files not sent on their own: %s", exc.message)
            return []
        answer = push.parse_sent(text, nonce, files)
        if isinstance(answer, push.Refused):
            # missing, marker: the pass that follows refuses, and says why
            if answer is push.Refused.ANSWER:
                self._unable("its answer was not as expected")
            return []
        self._take(answer)
        return list(answer.placed)

    def _take(self, answer: push.SendAnswer) -> None:
        """What the server made goes into the ledger; what it did not make, it says why."""
        for path, why in answer.unmade.items():
            if why is push.Sent.CHANGED:
                self.made.pop(path, None)
        if {push.Sent.FAILED, push.Sent.SHORT} & set(answer.unmade.values()):
            self._unable("it could not make them (no `head -c`, `touch -d`, `stat -c`, `ln` or "
                         "`mv`, or a full disk)")
        if answer.placed:
            self.sent_at = time.monotonic()
            if not self.ledger or self.first_sent_at == math.inf:
                self.first_sent_at = self.sent_at
        self.ledger.update(answer.placed)
        self._note(answer.placed)

    def groups(self, paths: Sequence[str]) -> dict[push.Winner, list[str]]:
        """The ledger's `paths` by whose version wins each (`push.settle`); all left to unison
        when the server cannot say how they are there."""
        states = self._server_states(paths)
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

    def settled(self, paths: Sequence[str], winner: push.Winner) -> None:
        """A pass with `winner`'s version winning settled `paths`. Those of this side's that
        are here still as sent were not touched there (unison found both sides the same): the
        server's file is as the session made it (`made`)."""
        root = self.job.locations.home
        placed = {path: self.ledger.pop(path) for path in paths if path in self.ledger}
        self.synced(paths)
        if winner is push.Winner.LOCAL:
            self.made.update((path, entry.there) for path, entry in placed.items()
                             if local_state(root, path) == entry.here)
        while len(self.made) > MADE_LIMIT:
            del self.made[next(iter(self.made))]

    def _candidates(self, here: Sequence[str], there: Sequence[str]) -> tuple[
            list[str], dict[str, push.Synced], dict[str, str]]:
        """What of `here` may go on its own: new files; edited ones, with their state when
        they were synced; and files sent and not settled yet that changed again here, with
        the server's file as it was made (its `stat` line). None near what the server reported
        (`there`), a synced path itself, or ignored."""
        assert self.known is not None
        ignored = ignored_test(self.plan.ignore_paths, self.plan.ignore_names)
        root = self.job.locations.home
        new: list[str] = []
        edited: dict[str, push.Synced] = {}
        again: dict[str, str] = {}
        for path in dict.fromkeys(here):
            if (path in self.paths or not is_below(path, self.paths)
                    or not profile.safe_value(path) or ignored(path)
                    or any(is_below(path, [t]) or is_below(t, [path]) for t in there)):
                continue
            if (placed := self.ledger.get(path)) is not None:
                if _edited(root / path, (placed.here[1], placed.here[2])):
                    again[path] = placed.there
            elif path not in self.known:
                new.append(path)
            elif (was := self.known.synced(path)) is not None and _edited(root / path, was):
                if path in self.made:
                    again[path] = self.made[path]
                else:
                    edited[path] = was
        return new, edited, again

    def _expected(self, edited: dict[str, push.Synced], again: dict[str, str],
                  store: BaselineStore) -> dict[str, str]:
        """The edits to send, each with the server's file it replaces (its `stat` line): the
        files sent before as they were made there (`again`), and those of `edited` whose file
        there is the version synced, asked in one exchange; none when the loss guard would
        refuse them."""
        expected = dict(again)
        if edited:
            paths = list(edited)
            states = self._server_states(paths) or {}
            root = self.job.locations.home
            expected.update((path, line) for path in paths if (line := states.get(path))
                            is not None and (mode := local_mode(root / path)) is not None
                            and push.synced_as(line, edited[path], mode))
        if expected and self._refused(list(expected), store.current()):
            log.info("%d edit(s) not sent on their own: with them the loss guard's window would "
                     "pass sync.max_change; the pass that carries them is judged", len(expected))
            return {}
        return expected

    def _refused(self, edits: Sequence[str], baseline: Baseline) -> bool:
        """Whether the loss guard refuses to overwrite `edits` on the server, with what the
        passes and edits of its window overwrote and deleted already."""
        limits = engine.guard_limits(self.job.config)
        return guards.loss_refusal(_overwrites(edits), baseline.window(time.time(), limits.window),
                                   baseline.total, limits) is not None

    def _counted(self, edits: Sequence[str], store: BaselineStore) -> bool:
        """`edits` overwrite the server's versions: in the loss guard's window from now.
        Whether that was recorded (not on a full disk)."""
        baseline = store.current()
        baseline.add_losses(_overwrites(edits), time.time(),
                            engine.guard_limits(self.job.config).window)
        return store.save(baseline)

    def _outgoing(self, new: Sequence[str],
                  expected: dict[str, str]) -> Iterator[push.Outgoing]:
        """The new and edited small files, read one at a time as `push.batch` takes them."""
        root = self.job.locations.home
        wanted = 0
        for path in [*new, *expected]:
            if len(self.ledger) + wanted >= LEDGER_LIMIT:
                return
            item = push.read_new(root, path, expected.get(path))
            if item is not None:
                wanted += 1
                yield item

    def _server_states(self, paths: Sequence[str]) -> dict[str, str | None] | None:
        """How `paths` are on the server now (`push.check_script`), in one exchange; None
        when it cannot say."""
        nonce = guards.new_nonce()
        try:
            return push.parse_checked(self._exchange(
                push.check_script(self.job.server.home, nonce), push.check_input(paths)),
                nonce, paths)
        except transport.ConnectError:
            return None

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
