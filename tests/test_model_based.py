"""A model-based test of the safety net (hypothesis, stateful): two computers and one server
home, random creates, edits, deletions, renames, moves and mass deletions or rewrites on every
side, with passes in between, run by the real engine and the real unison.

After every pass: no content that existed on any replica before it is lost (it is on a replica
or in a backup), and the loss guard refused exactly when the model of its rule says it must (for
passes without an edit on both sides of one path, whose outcome depends on `prefer`). A settle
step (forced passes on both computers) must leave all three replicas the same.

The server is a local directory (server.root): the model needs hundreds of passes; the same
guard over the real sshd is tested in tests/faults/test_safety_net_e2e.py. CI runs about 200
steps; `scripts/model-test` runs a longer search (ROAMING_HOMES_MODEL_EXAMPLES).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from roaming_homes import config as config_mod
from roaming_homes.actions import sync as engine
from roaming_homes.errors import ExitCode
from roaming_homes.paths import Locations, is_below
from roaming_homes.safety.guards import MIN_LOSSES
from tests.support.homes import to_toml

MAX_DELETE = MAX_CHANGE = 50
NAMES = [f"d{d}/f{f}" for d in range(3) for f in range(5)] + [f"top{f}" for f in range(5)]
SIDES = ["a", "b", "server"]
COMPUTERS = ["a", "b"]
EXAMPLES = int(os.environ.get("ROAMING_HOMES_MODEL_EXAMPLES", "5"))
STEPS = int(os.environ.get("ROAMING_HOMES_MODEL_STEPS", "40"))


def files(root: Path) -> dict[str, str]:
    """path below Documents -> content, of every file of a replica."""
    docs = root / "Documents"
    return {str(p.relative_to(docs)): p.read_text() for p in docs.rglob("*") if p.is_file()}


def is_copy(path: str) -> bool:
    """A conflict copy unison made (copyonconflict): `name (conflict_on_DATE)`, `(conflict #N…`."""
    return " (conflict" in path


UNISON_TEMP = ".unison."  # a temporary file unison left of a copy it failed to make


def has_copy(path: str, names: set[str]) -> bool:
    """Whether unison made a conflict copy of `path` or of a directory above it."""
    parts = path.split("/")
    prefixes = {"/".join(parts[:end]) + " (conflict" for end in range(1, len(parts) + 1)}
    return any(name.startswith(prefix) for name in names for prefix in prefixes)


def contents(root: Path) -> set[str]:
    return {p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


@dataclass
class Computer:
    """One computer's home, state and what the model knows of its last complete pass."""

    locations: Locations
    config: config_mod.Config
    archive: dict[str, str] | None = None  # the replicas as they agreed after its last pass
    total: int = 0  # files after its last complete pass (the guard's baseline)
    window: dict[tuple[str, str], int] = field(default_factory=dict)  # (side, kind) -> files


def expected_losses(computer: Computer, local: dict[str, str],
                    server: dict[str, str]) -> dict[tuple[str, str], int] | None:
    """What a pass of `computer` deletes and overwrites on each side, by unison's rules; None
    when a path changed on both sides (`prefer` decides those: not modelled)."""
    assert computer.archive is not None
    base = computer.archive
    losses: dict[tuple[str, str], int] = {}
    for path in set(base) | set(local) | set(server):
        here, there, before = local.get(path), server.get(path), base.get(path)
        changed_here, changed_there = here != before, there != before
        if changed_here and changed_there:
            if here != there:
                return None
            continue
        if not (changed_here or changed_there):
            continue
        side, new, old = ("server", here, there) if changed_here else ("local", there, here)
        if old is None:
            continue  # created: nothing lost
        kind = "delete" if new is None else "overwrite"
        losses[side, kind] = losses.get((side, kind), 0) + 1
    return losses


def refused_by_model(computer: Computer, losses: dict[tuple[str, str], int]) -> bool:
    for (side, kind), count in losses.items():
        percent = MAX_DELETE if kind == "delete" else MAX_CHANGE
        total = count + computer.window.get((side, kind), 0)
        if total > max(MIN_LOSSES, percent * computer.total // 100):
            return True
    return False


class SafetyNet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="rh-model-"))
        self.server = self.base / "server"
        (self.server / "Documents").mkdir(parents=True)
        # Every write gets a later mtime: "newer" is never a tie. Writes are 7 s apart: unison
        # 2.52's quick check takes a file of the same size and inode whose time moved by an
        # hour (3599-3601 s) or by up to a second for unchanged (docs/unison.md, fastcheck);
        # 10 s steps made 360 writes an hour. No multiple of 7 is 3599, 3600 or 3601.
        self.clock = 1_700_000_000
        self.written = 0
        self.computers = {name: self._computer(name) for name in COMPUTERS}

    def _computer(self, name: str) -> Computer:
        root = self.base / name
        (root / "home" / "Documents").mkdir(parents=True)
        config_path = root / "roaming-homes.toml"
        config_path.write_text(to_toml({
            "server": {"root": str(self.server)},
            "sync": {"paths": ["Documents"], "excluded_users": [], "prefer": "newer",
                     "max_delete": MAX_DELETE, "max_change": MAX_CHANGE, "backups": 100,
                     "guard_window": 7 * 86400},
            "notify": {"enabled": False}}))
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        locations = Locations.from_env({
            "HOME": str(root / "home"), "XDG_STATE_HOME": str(root / "state"),
            "XDG_CONFIG_HOME": str(root / "config"), "XDG_RUNTIME_DIR": str(runtime),
            "ROAMING_HOMES_CONFIG": str(config_path)})
        return Computer(locations, config_mod.load(locations, config_path))

    def root(self, side: str) -> Path:
        return self.server if side == "server" else self.computers[side].locations.home

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @initialize(count=st.integers(min_value=0, max_value=len(NAMES)))
    def a_home_in_use(self, count: int) -> None:
        """Both computers start in sync over a home of up to 20 files (0: an empty one)."""
        for name in NAMES[:count]:
            self._write(self.root("a") / "Documents" / name)
        for name in COMPUTERS:
            self._pass(name)

    # --- what people (and malware) do -------------------------------------------------------

    def _write(self, path: Path) -> None:
        self.written += 1
        self.clock += 7
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content {self.written}\n")
        os.utime(path, (self.clock, self.clock))

    @rule(side=st.sampled_from(SIDES), name=st.sampled_from(NAMES),
          action=st.sampled_from(["write", "write", "delete", "rename"]),
          to=st.sampled_from(NAMES))
    def edit(self, side: str, name: str, action: str, to: str) -> None:
        """What a person does to one file: create or modify it, delete it, rename or move it."""
        path, target = (self.root(side) / "Documents" / n for n in (name, to))
        if action == "write":
            self._write(path)
        elif action == "delete":
            path.unlink(missing_ok=True)
        elif path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)

    @rule(side=st.sampled_from(SIDES), directory=st.sampled_from(["d0", "d1", "d2"]),
          to=st.sampled_from(["d0", "d1", "d2", "moved"]))
    def move_folder(self, side: str, directory: str, to: str) -> None:
        docs = self.root(side) / "Documents"
        if (docs / directory).is_dir() and not (docs / to).exists():
            (docs / directory).rename(docs / to)

    @rule(side=st.sampled_from(SIDES))
    def mass_delete(self, side: str) -> None:
        for path in (self.root(side) / "Documents").rglob("*"):
            if path.is_file():
                path.unlink()

    @rule(side=st.sampled_from(SIDES))
    def mass_rewrite(self, side: str) -> None:
        for path in sorted((self.root(side) / "Documents").rglob("*")):
            if path.is_file():
                self._write(path)

    # --- passes -------------------------------------------------------------------------------

    def _backups(self) -> set[str]:
        return set().union(*(contents(c.locations.backup_dir) for c in self.computers.values()))

    def _pass(self, name: str, force: bool = False) -> engine.SyncOutcome:
        computer = self.computers[name]
        local, server = files(self.root(name)), files(self.server)
        before = set(local.values()) | set(server.values()) | set(
            files(self.root("b" if name == "a" else "a")).values())
        losses = expected_losses(computer, local, server) if computer.archive is not None \
            else {}
        outcome = engine.run_pass(computer.config, computer.locations, force=force)

        lost = before - (contents(self.base) | self._backups())
        assert not lost, f"content lost by a pass of {name}: {sorted(lost)[:5]}"
        refused = outcome.exit_code == ExitCode.REFUSED
        if losses is not None and computer.archive is not None and not force:
            assert refused == refused_by_model(computer, losses), (outcome.message, losses,
                                                                   computer.window)
            event("guard judged against the model: " + ("refused" if refused else "passed"))
        if outcome.exit_code == ExitCode.PARTIAL:
            # unison names a second conflict copy like the first and fails to create it
            # (known: copies need names of their own); nothing else may fail here.
            assert all(is_copy(path) for path in outcome.failed_paths), outcome
            computer.archive = None  # its window and archive are unmodelled until a settle
            return outcome
        assert outcome.exit_code in (ExitCode.IN_SYNC, ExitCode.NEEDS_USER,
                                     ExitCode.REFUSED), outcome
        if not refused:
            skipped = {path.removeprefix("Documents/") for path in outcome.conflicts}
            self._passed(computer, force, losses, skipped, outcome)
        return outcome

    def _passed(self, computer: Computer, force: bool,
                losses: dict[tuple[str, str], int] | None, skipped: set[str],
                outcome: engine.SyncOutcome) -> None:
        """The model after a pass that went through: the replicas agree (but for the conflicts
        it skipped, and the conflict copies it made on the losing side, which the next pass
        brings over), the window grows. unison's archive keeps what it had for a skipped path.
        """
        home, server = files(computer.locations.home), files(self.server)
        agreed = {p: c for p, c in home.items() if server.get(p) == c}
        # unison's copyonconflict: a deletion that lost to an edit leaves the edit on the
        # deleting side as `name (conflict_on_DATE_was_deleted)` only (or its directory as
        # `dir (conflict…)`); its archive holds the edit under the name, so the next pass
        # deletes that on the other side (the content stays in the copy).
        names = {*home, *server}
        copied = {p for p in names if not is_copy(p) and has_copy(p, names)}
        differ = {p for p in {*home, *server} if p not in agreed and not is_copy(p)
                  and not is_below(p, skipped) and p not in copied}
        assert not differ, f"a pass left the replicas different: {differ} ({outcome})"
        old = computer.archive or {}
        home = {**agreed, **{p: c for p, c in old.items() if is_below(p, skipped)},
                **{p: server.get(p, home.get(p, "")) for p in copied}}
        if force or losses is None:
            # A forced pass confirms what it propagated: the window starts afresh. One that
            # found nothing to do confirmed nothing, and the window stays as it was.
            moved = outcome.transferred or outcome.conflicts
            computer.window = {} if force and moved else computer.window
        else:
            for key, count in losses.items():
                computer.window[key] = computer.window.get(key, 0) + count
        computer.archive, computer.total = home, len(home)
        if losses is None and not force:
            computer.archive = None  # prefer decided something unmodelled: first-pass rules

    @rule(name=st.sampled_from(COMPUTERS))
    def sync(self, name: str) -> None:
        self._pass(name)

    @rule(name=st.sampled_from(COMPUTERS))
    def sync_later(self, name: str) -> None:
        """A second rule for passes: they are a third of the steps, as edits come in bursts."""
        self._pass(name)

    @rule()
    def settle(self) -> None:
        """Forced passes until nothing is left to do: all three replicas are the same."""
        for _ in range(4):  # a conflict copy made by a pass travels with the next ones
            if not sum(self._pass(name, force=True).transferred for name in COMPUTERS):
                break
        same = [{p: c for p, c in files(self.root(side)).items()
                 if not is_copy(p) and UNISON_TEMP not in p} for side in SIDES]
        assert same[0] == same[1] == same[2]


# Shrinking a failure takes minutes of passes: only where asked (scripts/model-test does).
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("ROAMING_HOMES_MODEL_SHRINK") else [])
SafetyNet.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestSafetyNet = SafetyNet.TestCase
