"""Our state files, unit by unit: each is checked as it is read (a file of the wrong shape is
moved aside and the reader starts afresh), and a full disk is an error that names the file."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from roaming_homes import files
from roaming_homes.actions import sync as engine
from roaming_homes.desktop import notify
from roaming_homes.desktop.policy import NotifyState, Shown, decide
from roaming_homes.errors import DiskFull, ExitCode
from roaming_homes.outcome import Reason, Result, SyncOutcome
from roaming_homes.paths import Locations
from roaming_homes.safety import refused
from roaming_homes.safety.baseline import BaselineStore
from roaming_homes.safety.guards import Loss, Refusal
from roaming_homes.session import progress
from roaming_homes.session.progress import Progress
from roaming_homes.session.state import LogWriter, StateStore, write_atomic
from roaming_homes.unison.ignore import DirCache

ASIDE = re.compile(r"\.broken-\d{8}-\d{6}(-\d+)?")


@pytest.fixture(autouse=True)
def warnings_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    """`logs.setup` (run by CLI tests in this process) stops propagation to the root logger."""
    monkeypatch.setattr(logging.getLogger("roaming_homes"), "propagate", True)


def aside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir()
                  if p.name.startswith(path.name) and ASIDE.fullmatch(p.name[len(path.name):]))


def write(path: Path, data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def assert_set_aside(path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    """Moved aside as it was, with one warning naming it and where it went."""
    assert not path.exists()
    [moved] = aside(path)
    assert moved.read_text() == text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "roaming_homes.files"
    message = warnings[0].getMessage()
    assert message.startswith(f"{path} is broken (") and f"moved aside to {moved.name}" in message
    assert "\n" not in message


# --- reading back -----------------------------------------------------------------------------

SHAPE = files.Shape({"n": files.is_int, "names": files.list_of(files.is_str)},
                    frozenset({"n"}))


def test_a_missing_file_is_none_and_a_good_one_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    assert files.read_json(path, SHAPE.checked) is None
    write(path, {"n": 1, "names": ["a"], "newer": True})  # unknown keys are a newer version's
    assert files.read_json(path, SHAPE.checked) == {"n": 1, "names": ["a"], "newer": True}
    assert aside(path) == []


@pytest.mark.parametrize(("text", "why"), [
    ("[1]", "a list where an object belongs"),
    ('{"names": []}', "'n' is missing"),
    ('{"n": "1"}', "'n' has the wrong type"),
    ('{"n": true}', "'n' has the wrong type"),
    ('{"n": 1, "names": [1]}', "'names' has the wrong type"),
    ('{"n": 1', "not JSON: "),
    ("", "not JSON: "),
])
def test_a_broken_file_is_moved_aside_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, why: str) -> None:
    path = tmp_path / "f.json"
    write(path, text)

    assert files.read_json(path, SHAPE.checked) is None

    assert_set_aside(path, text, caplog)
    assert f"is broken ({why}" in caplog.records[0].getMessage()


def test_text_that_is_not_utf8_is_moved_aside(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b'{"n": "\xff"}')
    assert files.read_json(path, SHAPE.checked) is None
    assert not path.exists() and aside(path)[0].read_bytes() == b'{"n": "\xff"}'
    assert "(not UTF-8 text)" in caplog.records[0].getMessage()


def test_broken_twice_in_one_second_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    for text in ("[1]", "[2]"):
        write(path, text)
        assert files.read_json(path, SHAPE.checked) is None
    assert sorted(p.read_text() for p in aside(path)) == ["[1]", "[2]"]


def test_a_file_replaced_since_it_was_read_is_not_moved(tmp_path: Path) -> None:
    """Another process moved the broken file first and wrote a good one: that one stays."""
    path = tmp_path / "f.json"
    write(path, "[1]")

    def parse(data: Any) -> Any:
        write(tmp_path / "new", {"n": 2})
        os.replace(tmp_path / "new", path)
        return SHAPE.checked(data)

    assert files.read_json(path, parse) is None
    assert json.loads(path.read_text()) == {"n": 2} and aside(path) == []


def test_a_file_that_cannot_be_read_is_not_ours_to_move(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.mkdir()
    with pytest.raises(OSError):
        files.read_json(path, SHAPE.checked)
    assert path.is_dir()


def test_shapes_compare_types_strictly() -> None:
    assert files.one_of("local")("local") and not files.one_of(1)(True)
    assert files.optional(files.is_int)(None) and not files.optional(files.is_int)("1")
    assert files.dict_of(files.is_int)({"a": 1}) and not files.dict_of(files.is_int)([1])
    assert files.is_number(1.5) and files.is_number(2) and not files.is_number(False)


# --- each file --------------------------------------------------------------------------------

def outcome_dict(**changes: Any) -> dict[str, Any]:
    good = SyncOutcome(Result.IN_SYNC, "in sync: nothing to do", "2026-01-01T00:00:00+00:00",
                       "2026-01-01T00:00:01+00:00", 1.0, "s").to_dict()
    return {**good, **changes}


@pytest.mark.parametrize("data", [
    [],
    "state",
    {"last": {"result": "in-sync"}},
    {"last": outcome_dict(duration="1.0")},
    {"last_success": 1700000000},
    {"synced_roots": "/home/u <-> /srv/u"},
    {"synced_roots": [["/home/u", "/srv/u"]]},
    {"replicas": []},
    {"replicas": {"k": {"local_id": 7}}},
])
def test_state_json_of_the_wrong_shape_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, data: Any) -> None:
    store = StateStore(tmp_path)
    text = write(store.state_file, data)

    assert store.load() == {}
    assert_set_aside(store.state_file, text, caplog)
    assert not store.is_synced("k") and store.replicas("k") == {} and store.last() is None


def test_a_good_state_json_reads_back_untouched(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record(SyncOutcome.from_dict(outcome_dict()) or pytest.fail("no outcome"))
    store.mark_synced("k")
    store.set_replicas("k", {"local_id": "a", "server_id": "b"})
    assert store.is_synced("k") and store.replicas("k") == {"local_id": "a", "server_id": "b"}
    assert store.last() is not None and aside(store.state_file) == []


@pytest.mark.parametrize("lines", [
    ["[1]"],
    ['"x"'],
    [json.dumps(outcome_dict()), "{"],
    [json.dumps(outcome_dict(duration="0.5"))],
    [json.dumps({k: v for k, v in outcome_dict().items() if k != "server"})],
    [json.dumps(outcome_dict(result="sideways"))],
    [json.dumps(outcome_dict(conflicts="a.txt"))],
])
def test_history_of_the_wrong_shape_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, lines: list[str]) -> None:
    store = StateStore(tmp_path)
    text = write(store.history_file, "\n".join(lines) + "\n")

    assert store.history() == []
    assert_set_aside(store.history_file, text, caplog)
    store.record(SyncOutcome.from_dict(outcome_dict()) or pytest.fail("no outcome"))
    assert len(store.history()) == 1  # rebuilt from the next pass on


@pytest.mark.parametrize("data", [
    [],
    {"serial": "7"},
    {"active": "auth"},
    {"active": {"key": "auth", "id": 1}},
    {"active": {"key": "auth", "id": "1", "serial": 2}},
    {"conflicts_seen": "a.txt"},
    {"transient_failures": 1.5},
    {"ignored": [None]},
    {"offline_since": 0},
    {"first_sync": 12},
])
def test_notify_json_of_the_wrong_shape_starts_afresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, data: Any) -> None:
    text = write(notify.state_file(tmp_path), data)

    assert notify.read_state(tmp_path, tmp_path / "run") == NotifyState()
    assert_set_aside(notify.state_file(tmp_path), text, caplog)


def test_notify_json_of_an_older_version_reads(tmp_path: Path) -> None:
    """Before first sync announcements there was no `first_sync`: a missing key is a default."""
    write(notify.state_file(tmp_path), {"active": {"key": "auth", "id": 4, "serial": 2},
                                        "serial": 2, "ignored": ["stale"]})
    assert notify.read_state(tmp_path, tmp_path / "run") == NotifyState(
        active=Shown("auth", 4, 2), serial=2, ignored=["stale"])


def baselines(tmp_path: Path) -> BaselineStore:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True, exist_ok=True)
    return BaselineStore(tmp_path / "state", (str(home), "/srv/u"), ("Documents",), (), ())


@pytest.mark.parametrize("change", [
    {"dirs": None},
    {"total": "3"},
    {"rules": "rules"},
    {"dirs": {"Documents": "3"}},
    {"recent": [[1.0, "local", "2", 0]]},
    {"recent": [[1.0, "local", 2]]},
])
def test_a_baseline_of_the_wrong_shape_is_made_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any]) -> None:
    store = baselines(tmp_path)
    good = {"rules": store.rules, "total": 3, "dirs": {"Documents": 3},
            "recent": [[1.0, "local", 2, 0]]}
    data = {k: v for k, v in {**good, **change}.items() if v is not None}
    text = write(store.path, data)

    assert store.load() is None
    assert_set_aside(store.path, text, caplog)
    assert store.current().total == 0  # measured afresh (and saved)
    assert store.load() is not None


def test_a_baseline_for_other_rules_is_not_broken(tmp_path: Path) -> None:
    store = baselines(tmp_path)
    write(store.path, {"rules": ["other"], "total": 3, "dirs": {}, "recent": []})
    assert store.load() is None and store.path.exists() and aside(store.path) == []


@pytest.mark.parametrize("data", [
    [],
    {"rules": ["r"]},
    {"rules": ["r"], "dirs": []},
    {"rules": ["r"], "dirs": {"Documents": [1, 2, 3]}},
    {"rules": ["r"], "dirs": {"Documents": [1, 2, 3, 4, 5, "sub"]}},
    {"rules": ["r"], "dirs": {"Documents": [1, 2, 3, 4, "5", []]}},
])
def test_a_count_cache_of_the_wrong_shape_is_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, data: Any) -> None:
    path = tmp_path / "counts-local.json"
    text = write(path, data)

    assert DirCache(path, ["r"]).seen == {}
    assert_set_aside(path, text, caplog)


def test_a_count_cache_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "counts-local.json"
    seen = {"Documents": [1, 2, 3, 4, 5, ["sub"]]}
    write(path, {"rules": ["r"], "dirs": seen})
    assert DirCache(path, ["r"]).seen == seen and DirCache(path, ["other"]).seen == {}


REFUSAL = {"key": "k", "side": "local", "loss": "delete", "paths": ["Documents/a"]}


@pytest.mark.parametrize("change", [
    {"paths": None},
    {"key": None},
    {"side": "left"},
    {"loss": "shred"},
    {"paths": "Documents/a"},
    {"paths": [1]},
])
def test_a_refusal_of_the_wrong_shape_is_forgotten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any]) -> None:
    data = {k: v for k, v in {**REFUSAL, **change}.items() if v is not None}
    text = write(tmp_path / refused.FILE, data)

    assert refused.load(tmp_path) is None
    assert_set_aside(tmp_path / refused.FILE, text, caplog)
    refused.save(tmp_path, "k", Refusal("local", Loss.DELETE, 30, 40, ("Documents/b",)))
    loaded = refused.load(tmp_path)
    assert loaded is not None and loaded.paths == ("Documents/b",)


def locations(tmp_path: Path) -> Locations:
    return Locations.from_env({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s"),
                               "XDG_RUNTIME_DIR": str(tmp_path / "r")})


@pytest.mark.parametrize("change", [
    {"pid": "12"},
    {"phase": "dancing"},
    {"first_run": 1},
    {"bytes_done": "100"},
    {"eta": "soon"},
    {"current": 5},
    {"rate": None},
])
def test_progress_of_the_wrong_shape_is_not_shown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any]) -> None:
    where = locations(tmp_path)
    data = {k: v for k, v in {**Progress(pid=os.getpid()).to_dict(), **change}.items()
            if k != "rate" or v is not None}
    text = write(progress.progress_file(where), data)

    with pytest.raises(ValueError):
        Progress.from_dict(data)
    assert progress.read(where) is None
    assert_set_aside(progress.progress_file(where), text, caplog)


def test_progress_reads_back() -> None:
    snapshot = Progress(pid=3, phase="propagating", eta=None, rate=2.5, bytes_done=7)
    assert Progress.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot


# --- writing ----------------------------------------------------------------------------------

def test_a_durable_write_syncs_the_file_and_then_its_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(tmp_path / "state.json", "x")
    write_atomic(tmp_path / "progress.json", "x", durable=False)
    assert synced == ["file", "dir"]




# --- a full disk ------------------------------------------------------------------------------

def failing(monkeypatch: pytest.MonkeyPatch, name: str, code: int = errno.ENOSPC,
            when: Callable[..., bool] = lambda *args: True) -> None:
    """`os.<name>` fails with `code` (for the calls `when` picks)."""
    real = getattr(os, name)

    def fail(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_names_the_file_and_leaves_it_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    path = tmp_path / "state.json"
    path.write_text("before")
    failing(monkeypatch, "fsync", code)

    with pytest.raises(DiskFull) as raised:
        write_atomic(path, "after")

    assert raised.value.message == f"disk full on this computer ({path})"
    assert raised.value.code == ExitCode.FAILED and raised.value.path == path
    assert path.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_directory_that_cannot_be_made_is_named(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    failing(monkeypatch, "mkdir")
    with pytest.raises(DiskFull) as raised:
        write_atomic(tmp_path / "state" / "state.json", "x")
    assert raised.value.path == tmp_path / "state"


def test_other_write_errors_stay_what_they_are(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    failing(monkeypatch, "fsync", errno.EIO)
    with pytest.raises(OSError) as raised:
        write_atomic(tmp_path / "state.json", "x")
    assert not isinstance(raised.value, DiskFull) and raised.value.errno == errno.EIO


def test_the_log_drops_what_does_not_fit_and_says_so_at_the_end(tmp_path: Path) -> None:
    class Full:
        def write(self, text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    log = StateStore(tmp_path).open_log()
    log._handle.close()
    log._handle = Full()  # type: ignore[assignment]
    with pytest.raises(DiskFull) as raised, log:
        log.write("one")
        log.write("two")  # not tried again
    assert raised.value.path == tmp_path / "sync.log"


def test_the_log_does_not_hide_an_error_already_on_its_way(tmp_path: Path) -> None:
    log = LogWriter(tmp_path / "sync.log")
    log.lost = DiskFull(log.path)
    with pytest.raises(KeyError), log:
        raise KeyError("the pass's own error")


def test_a_pass_whose_state_cannot_be_recorded_fails_saying_so(tmp_path: Path) -> None:
    class FullStore(StateStore):
        def record(self, outcome: SyncOutcome) -> None:
            raise DiskFull(self.state_file)

    done = SyncOutcome(Result.IN_SYNC, "in sync: 2 item(s) transferred", "a", "b", 1.0, "s",
                       transferred=2)

    told = engine.record(FullStore(tmp_path), done)

    assert (told.result, told.reason, told.exit_code) == (Result.FAILED, Reason.DISK_FULL,
                                                         ExitCode.FAILED)
    assert told.message == f"disk full on this computer ({tmp_path / 'state.json'})"
    assert told.transferred == 2


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    state_dir, runtime_dir = tmp_path / "state", tmp_path / "run"
    state_dir.mkdir()
    runtime_dir.mkdir()
    yield state_dir, runtime_dir


def test_what_was_shown_waits_in_the_runtime_dir_while_the_disk_is_full(
        dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir, runtime_dir = dirs
    shown = NotifyState(active=Shown("disk-full", 9, 1), serial=1)
    failing(monkeypatch, "fsync")  # notify.json is written durably, the spilled state is not

    notify.write_state(state_dir, runtime_dir, shown)

    assert not notify.state_file(state_dir).exists()
    assert notify.read_state(state_dir, runtime_dir) == shown
    monkeypatch.undo()
    notify.write_state(state_dir, runtime_dir, NotifyState(serial=2))
    assert not notify.spill_file(runtime_dir).exists()
    assert notify.read_state(state_dir, runtime_dir) == NotifyState(serial=2)


def test_without_a_runtime_dir_of_its_own_a_full_disk_is_raised(
        dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir, _ = dirs
    failing(monkeypatch, "fsync")
    with pytest.raises(DiskFull):
        notify.write_state(state_dir, state_dir, NotifyState())


def test_a_full_disk_is_shown_once_while_it_lasts() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    full = SyncOutcome(Result.FAILED, "disk full on this computer (/s/state.json)",
                       now.isoformat(), now.isoformat(), 0.1, "h", reason=Reason.DISK_FULL)
    shown = []
    current = NotifyState()
    for _ in range(3):
        decision, current = decide(current, full, last_success=None, now=now, stale_after=86400)
        shown.append(decision.kind if decision else None)
    assert shown == ["disk-full", None, None]


def test_the_sync_log_has_every_line_as_soon_as_it_is_written(tmp_path: Path) -> None:
    """`tail -f sync.log` follows a pass (a real-time session's too) as it runs."""
    with StateStore(tmp_path).open_log() as log:
        log.write("--- pass started ---")
        log.write("[BGN] Copying Documents/big.bin")

        assert (tmp_path / "sync.log").read_text().splitlines()[-1].endswith(
            " [BGN] Copying Documents/big.bin")
