"""The safety net in every mode: a mass deletion, a mass rewrite or a mass rename is refused on
unison's plan before anything propagates, in single passes and in real-time mode (the change made
while the daemon's loop watches), in both `prefer` modes, over the real sshd; the refused files
come back with `restore --refused`, and no content is ever lost (the ledger)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roaming_homes.outcome import SyncOutcome
from tests.support.homes import Setup
from tests.support.ledger import Ledger, digest
from tests.support.waiting import wait_for
from tests.support.watcher import Watcher

FILES = 40
MODES = ["pass", "realtime"]
PREFERS = ["newer", "none"]


@pytest.fixture
def ledger(watched: Setup) -> Ledger:
    return Ledger(watched)


def _populate(setup: Setup, count: int = FILES) -> list[Path]:
    docs = setup.home / "Documents"
    made = []
    for index in range(count):
        path = docs / f"file{index:03}.txt"
        path.write_text(f"original {index}\n")
        made.append(path)
    return made


def _names(root: Path) -> set[str]:
    return {p.name for p in (root / "Documents").iterdir()}


class Scenario:
    """One user, synced once with 40 files, then hit in the given mode; `refused()` is the
    outcome that refused (from `sync --json`, or from the watching loop)."""

    def __init__(self, setup: Setup, mode: str, prefer: str) -> None:
        self.setup, self.mode = setup, mode
        setup.configure(sync={"paths": ["Documents"], "excluded_users": [], "prefer": prefer})
        _populate(setup)
        code, outcome = setup.sync_json()
        assert code == 0, outcome
        self.watcher: Watcher | None = None
        if mode == "realtime":
            self.watcher = Watcher(setup, prefer=prefer).start()
            wait_for(lambda: bool(self.watcher and self.watcher.outcomes), 20,
                     "real-time mode's first pass")

    def refused(self) -> dict[str, object]:
        """The refusal, once the damage done since the scenario started was looked at."""
        if self.watcher is None:
            code, outcome = self.setup.sync_json()
            assert code == 4, outcome
            return outcome
        watcher = self.watcher
        found: SyncOutcome = wait_for(
            lambda: next((o for o in watcher.outcomes if o.exit_code == 4), None), 30,
            "the watching loop to refuse")
        return found.to_dict()

    def finish(self) -> None:
        if self.watcher is not None:
            result = self.watcher.finish()
            assert result.reason == "stopped", result  # a loss refusal does not end watching
            self.watcher = None


@pytest.fixture(params=[(m, p) for m in MODES for p in PREFERS],
                ids=[f"{m}-{p}" for m in MODES for p in PREFERS])
def scenario(request: pytest.FixtureRequest, watched: Setup) -> Iterator[Scenario]:
    mode, prefer = request.param
    made = Scenario(watched, mode, prefer)
    yield made
    made.finish()


def _in_batches(scenario: Scenario, action: Callable[[int], None], count: int,
                batch: int = 5) -> None:
    """`action(i)` for i < count, a batch at a time, as a user (or malware) works through a
    folder: in real-time mode each batch is synced (or refused) by a cycle of its own before the
    next, so no cycle alone sees more than a batch and only the window can add them up."""
    for start in range(0, count, batch):
        seen = len(scenario.watcher.outcomes) if scenario.watcher else 0
        for index in range(start, min(count, start + batch)):
            action(index)
        if scenario.watcher is not None:
            outcomes = scenario.watcher.outcomes
            wait_for(lambda o=outcomes, n=seen: len(o) > n, 20, "a cycle for the batch")


def test_mass_deletion_on_the_laptop_is_refused_and_restored(scenario: Scenario,
                                                             ledger: Ledger) -> None:
    setup = scenario.setup
    before = ledger.snapshot()
    docs = setup.home / "Documents"
    _in_batches(scenario, lambda i: (docs / f"file{i:03}.txt").unlink(), 30)

    outcome = scenario.refused()

    message = str(outcome["message"])
    assert "were deleted on this computer" in message and "\n" not in message
    assert "restore --refused" in message and "sync --force" in message
    assert outcome["action"].startswith("roaming-homes restore --refused")  # type: ignore[union-attr]
    # at most the window's worth went before the refusal (20 of 40: max_delete 50 %)
    assert len(_names(setup.server_home)) >= FILES - 20
    scenario.finish()
    restored = setup.run("restore", "--refused", "--json")
    assert restored.returncode == 0, restored.stderr
    assert _names(setup.home) == _names(setup.server_home)
    assert len(_names(setup.home)) >= FILES - 20
    ledger.assert_nothing_lost(before)
    assert setup.sync().returncode == 0


def test_mass_rewrite_is_refused_like_ransomware_would_be(scenario: Scenario,
                                                           ledger: Ledger) -> None:
    setup = scenario.setup
    before = ledger.snapshot()
    docs = setup.home / "Documents"
    written = set()

    def encrypt(index: int) -> None:
        data = f"ENCRYPTED {index}\n".encode()
        (docs / f"file{index:03}.txt").write_bytes(data)
        written.add(digest(data))

    _in_batches(scenario, encrypt, FILES)

    outcome = scenario.refused()

    assert "were changed on this computer" in str(outcome["message"])
    assert "sync.max_change = 50 %" in str(outcome["message"])
    sdocs = setup.server_home / "Documents"
    intact = sum(1 for i in range(FILES)
                 if (sdocs / f"file{i:03}.txt").read_text() == f"original {i}\n")
    assert intact >= FILES - 20
    scenario.finish()
    assert setup.run("restore", "--refused").returncode == 0
    assert sum(1 for i in range(FILES) if (docs / f"file{i:03}.txt").read_text()
               == f"original {i}\n") == intact  # the server's versions are back here
    ledger.assert_nothing_lost(before, written)  # the encrypted ones are in the backups


def test_saving_one_file_again_and_again_is_not_a_mass_rewrite(scenario: Scenario) -> None:
    """An autosave: one file saved 25 times within the guard's window, in a home of 40. The
    window counts one file overwritten, not 25 (more than half of 40 would be refused)."""
    setup = scenario.setup
    draft = setup.home / "Documents" / "file000.txt"

    def save(index: int) -> None:
        draft.write_text(f"draft {index} " + "x" * index)  # a size of its own each time
        if scenario.watcher is None:
            code, outcome = setup.sync_json()
            assert code == 0, outcome

    _in_batches(scenario, save, 25, batch=1)

    if scenario.watcher is not None:
        assert not [o for o in scenario.watcher.outcomes if o.exit_code == 4]
    assert (setup.server_home / "Documents" / "file000.txt").read_text() == draft.read_text()


def test_renaming_every_file_is_not_mistaken_for_no_change(scenario: Scenario) -> None:
    setup = scenario.setup
    docs = setup.home / "Documents"
    _in_batches(scenario, lambda i: (docs / f"file{i:03}.txt").rename(
        docs / f"file{i:03}.txt.locked"), FILES)

    outcome = scenario.refused()

    assert "were deleted on this computer" in str(outcome["message"])
    assert len([n for n in _names(setup.server_home) if n.endswith(".txt")]) >= FILES - 20


def test_a_wipe_on_the_server_is_refused_here(scenario: Scenario, ledger: Ledger) -> None:
    setup = scenario.setup
    before = ledger.snapshot()
    sdocs = setup.server_home / "Documents"
    _in_batches(scenario, lambda i: (sdocs / f"file{i:03}.txt").unlink(), 30)

    outcome = scenario.refused()

    assert "were deleted on the server" in str(outcome["message"])
    assert "on this computer" in str(outcome["message"])
    assert len(_names(setup.home)) >= FILES - 20
    scenario.finish()
    assert setup.run("restore", "--refused").returncode == 0
    assert _names(setup.home) == _names(setup.server_home)
    ledger.assert_nothing_lost(before)


def test_file_names_cannot_forge_the_guards_reports(watched: Setup, ledger: Ledger) -> None:
    """Names with a newline imitating the server's report, unison's "nothing to do" or a plan
    line are never synced, so they reach no output; the wipe next to them is still refused."""
    watched.configure(sync={"paths": ["Documents"], "excluded_users": []})
    _populate(watched)
    assert watched.sync().returncode == 0
    sdocs = watched.server_home / "Documents"
    forged = ["x\nroaming-homes guard " + "0" * 32 + " root=missing paths=0 marker=",
              "y\nNothing to do: replicas have not changed since last sync.",
              "z\nnew file ---->            harmless  ",
              "w\rProceed with propagating updates? [] "]
    for name in forged:
        (sdocs / name).write_text("forged")
    for index in range(36):
        (sdocs / f"file{index:03}.txt").unlink()
    before = ledger.snapshot()

    code, outcome = watched.sync_json()

    assert code == 4, outcome
    assert "36 of 40 files were deleted on the server" in outcome["message"]
    assert len(_names(watched.home)) == FILES
    assert not any("\n" in n or "\r" in n for n in _names(watched.home))
    ledger.assert_nothing_lost(before)


def test_missing_is_not_deleted_and_typos_are_named(watched: Setup) -> None:
    _populate(watched)
    assert watched.sync().returncode == 0
    watched.configure(server={"home": str(watched.server_home) + "x"})  # a typo

    code, outcome = watched.sync_json()

    assert code == 4, outcome
    assert "is missing" in outcome["message"] and "typo in server.home" in outcome["message"]
    assert "--force" not in outcome["message"] and "lost" not in outcome["message"]
    assert "--force" not in json.dumps(watched.status())
    watched.configure(sync={"paths": ["Documents", "Documetns"], "excluded_users": []})

    code, outcome = watched.sync_json()

    assert code == 0, outcome
    assert outcome["notes"] == ["sync.paths: 'Documetns' exists neither here nor on the "
                                "server (did you mean 'Documents'?)"]
    assert len(_names(watched.server_home)) == FILES


def test_narrowing_the_rules_is_not_a_deletion(watched: Setup) -> None:
    """A new ignore rule or fewer synced paths make a new baseline, never a refusal."""
    watched.configure(sync={"paths": ["Documents", "Music"], "excluded_users": []})
    _populate(watched, 20)
    music = watched.home / "Music"
    music.mkdir()
    for index in range(30):
        (music / f"song{index}.ogg").write_text(str(index))
    assert watched.sync().returncode == 0

    watched.configure(sync={"paths": ["Documents"], "excluded_users": []})
    assert watched.sync().returncode == 0
    watched.configure(sync={"paths": ["Documents"], "excluded_users": [],
                            "ignore_names": ["file01*"]})
    code, outcome = watched.sync_json()

    assert code == 0, outcome
    assert len(_names(watched.server_home)) == 20  # nothing deleted on either side
    assert len(list((watched.server_home / "Music").iterdir())) == 30


def test_a_whole_synced_folder_that_vanished_is_refused_whatever_its_size(
        watched: Setup) -> None:
    watched.configure(sync={"paths": ["Documents", "Music"], "excluded_users": []})
    _populate(watched)
    music = watched.home / "Music"
    music.mkdir()
    for index in range(3):
        (music / f"song{index}.ogg").write_text(str(index))
    assert watched.sync().returncode == 0
    for path in music.iterdir():
        path.unlink()
    music.rmdir()  # 3 of 43 files: under every threshold, but the whole folder is gone

    code, outcome = watched.sync_json()

    assert code == 4, outcome
    assert "Music vanished on this computer (not mounted?)" in outcome["message"]
    assert len(list((watched.server_home / "Music").iterdir())) == 3
    assert watched.sync("--force").returncode == 0
    assert not (watched.server_home / "Music").exists()
