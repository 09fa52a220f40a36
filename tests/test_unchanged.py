"""The stat digests behind the pass that skips unison (`session.unchanged`): held to a model.

The model is what unison syncs of each entry (type, content, permissions, modification time, a
link's target). Whatever sequence of changes leaves any of it other than it was when a settled
digest was taken, the digest differs, this side's (Python) and the server's (the sh script, run
here as the server runs it) alike. A tree nobody touched keeps its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from roaming_homes.safety import guards
from roaming_homes.session import unchanged
from roaming_homes.session.unchanged import Digest, Record
from roaming_homes.unison.ignore import walk
from tests.support.programs import SYSTEM_PATH, faked

NAMES = ("a.txt", "b.txt", "sub/c.txt", "sub/d", "link")
PATHS = ("Documents", ".vimrc")
SETTLE_NS = 40_000_000  # the model waits this long before the digest it compares with


def server_digest(root: Path, settle: bool = False, path: str = SYSTEM_PATH) -> str:
    script = f"cd {root} && {unchanged.server_script(PATHS, settle)}; printf '%s' \"$dg\""
    return subprocess.run(["sh", "-c", script], env={"PATH": path}, capture_output=True,
                          text=True, timeout=30, check=True).stdout


def local(root: Path, ignore_names: tuple[str, ...] = ()) -> Digest:
    digest = unchanged.local_digest(root, PATHS, (), ignore_names, settle_ns=SETTLE_NS)
    assert digest is not None  # GNU find is there
    return digest


def listed(root: Path, paths: tuple[str, ...], ignore_paths: tuple[str, ...],
           ignore_names: tuple[str, ...]) -> set[str]:
    """The paths (relative to `root`) in this side's listing, as the digest hashes it."""
    run = subprocess.run(unchanged.find_argv(paths, ignore_paths, ignore_names, 0), cwd=root,
                         env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}, capture_output=True,
                         timeout=30, check=False)
    out = run.stdout
    assert run.returncode in (0, 1) and out.startswith(b"R\0")  # 1: a path is not there
    found, marks, files = set(), 0, 0
    for entry in out[2:].split(b"\0")[:-1]:
        if entry == b"!":
            marks += 1
            continue
        is_dir = entry.startswith(b"d ")
        files += not is_dir
        path = entry.split(b" ", 3 if is_dir else 6)[-1]
        assert path.startswith(b"./")
        found.add(os.fsdecode(path[2:]))
    assert marks == files  # changed since 0: every file and link is marked
    return found


def model(root: Path) -> dict[str, tuple[object, ...]]:
    """What unison syncs of every entry below the synced paths."""
    seen: dict[str, tuple[object, ...]] = {}
    for top in PATHS:
        start = root / top
        entries = [start] if os.path.lexists(start) else []
        while entries:
            path = entries.pop()
            st_ = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", st_.st_mode)
                entries += list(path.iterdir())
            else:
                seen[rel] = ("file", st_.st_mode, st_.st_mtime_ns,
                             hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


def make_tree(root: Path) -> None:
    docs = root / "Documents"
    (docs / "sub").mkdir(parents=True)
    for index, name in enumerate(("a.txt", "b.txt", "sub/c.txt")):
        (docs / name).write_text(f"content {index}")
        os.utime(docs / name, (1_700_000_000, 1_700_000_000))
    (docs / "link").symlink_to("a.txt")
    (root / ".vimrc").write_text("set nu")


def _write(path: Path, data: bytes, keep_time: bool, replace: bool) -> None:
    before = path.lstat() if path.exists() else None
    target = path.with_name(f".{path.name}.tmp") if replace else path
    target.write_bytes(data)
    if keep_time and before is not None:
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    if replace:
        target.replace(path)


def apply(root: Path, op: tuple[str, str, bytes, bool]) -> None:
    """One change; one that does not apply to the tree as it is does nothing."""
    kind, name, data, flag = op
    path = root / "Documents" / name
    try:
        if kind in ("write", "replace"):
            if not path.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
                _write(path, data, flag, kind == "replace")
        elif kind == "chmod":
            path.chmod(0o600 if flag else 0o644)
        elif kind == "delete":
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        elif kind == "mkdir":
            path.mkdir(parents=True)
        elif kind == "symlink":
            path.unlink(missing_ok=True)
            path.symlink_to(data.decode() or "b.txt")
        elif kind == "rename":
            path.rename(root / "Documents" / (data.decode() or "b.txt"))
        elif kind == "time":
            os.utime(path, (1_600_000_000, 1_600_000_000) if flag else None,
                     follow_symlinks=False)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            OSError):
        pass


OPS = st.tuples(st.sampled_from(("write", "replace", "chmod", "delete", "mkdir", "symlink",
                                 "rename", "time")),
                st.sampled_from(NAMES),
                st.sampled_from((b"content 0", b"content 1", b"CONTENT 0", b"", b"a.txt",
                                 b"sub/e.txt")),
                st.booleans())


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=5))
# Only the change time tells these from the tree before (size, time and inode as they were),
# and the link's target differs but its length does not:
@example(ops=[("write", "a.txt", b"CONTENT 0", True)])
@example(ops=[("replace", "b.txt", b"content 0", True)])
@example(ops=[("symlink", "link", b"b.txt", False)])
def test_any_change_unison_would_sync_changes_both_digests(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, bytes, bool]]) -> None:
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    time.sleep(SETTLE_NS / 1e9 * 1.5)
    before, here, there = model(root), local(root), server_digest(root)
    assert here.settled and len(there) == 64

    for op in ops:
        apply(root, op)

    if model(root) != before:
        assert local(root).value != here.value, ops
        assert server_digest(root) != there, ops


def test_an_untouched_tree_keeps_both_digests(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert local(tmp_path).value == local(tmp_path).value
    assert server_digest(tmp_path) == server_digest(tmp_path)
    (tmp_path / "Documents" / "a.txt").read_text()  # reading is not a change
    assert local(tmp_path).value == local(tmp_path).value


def test_a_tree_just_changed_is_not_settled_on_either_side(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert not unchanged.local_digest(tmp_path, PATHS, (), ()).settled
    assert server_digest(tmp_path, settle=True) == unchanged.UNSETTLED
    time.sleep(SETTLE_NS / 1e9 * 1.5)
    assert local(tmp_path).settled


def test_what_unison_ignores_is_left_out_of_this_sides_digest(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = local(tmp_path, ignore_names=("*.tmp",)).value
    (tmp_path / "Documents" / "scratch.tmp").write_text("ignored")
    assert local(tmp_path, ignore_names=("*.tmp",)).value == before
    assert local(tmp_path).value != before


BUSYBOX_FIND = "#!/bin/sh\necho 'find: unrecognized: -printf' >&2\nexit 1\n"


def test_a_server_without_gnu_find_has_no_digest(tmp_path: Path) -> None:
    """A find without -printf (busybox) would print nothing: a digest that never changes. The
    script says `none` instead, and `none` never matches."""
    make_tree(tmp_path)
    path = faked(tmp_path / "bin", "find", BUSYBOX_FIND)
    assert server_digest(tmp_path, path=path) == unchanged.NONE
    assert unchanged.parse_reported(unchanged.NONE) is None
    assert unchanged.parse_check(f"{unchanged.CHECK}{'0' * 32} none\n", "0" * 32) is None


def test_the_servers_settle_marks_leave_no_file_and_need_mktemp(tmp_path: Path) -> None:
    """With the settle rule the server's one walk marks recent changes in a temporary file:
    it is removed after; without mktemp there is no digest (`none`: unison runs)."""
    root, temp = tmp_path / "root", tmp_path / "tmp"
    root.mkdir()
    temp.mkdir()
    make_tree(root)
    script = f"cd {root} && {unchanged.server_script(PATHS, True)}; printf '%s' \"$dg\""

    def run(path: str) -> str:
        return subprocess.run(["sh", "-c", script], env={"PATH": path, "TMPDIR": str(temp)},
                              capture_output=True, text=True, timeout=30, check=True).stdout

    assert run(SYSTEM_PATH) == unchanged.UNSETTLED  # just made
    time.sleep(unchanged.SETTLE_NS / 1e9 + 1.2)  # the server counts whole seconds
    assert len(run(SYSTEM_PATH)) == 64 and run(SYSTEM_PATH) == server_digest(root)
    assert not list(temp.iterdir())
    assert run(faked(tmp_path / "bin", "mktemp", "#!/bin/sh\nexit 1\n")) == unchanged.NONE


def check(root: Path, nonce: str) -> str:
    return subprocess.run(["sh", "-c", unchanged.check_script(str(root), PATHS, nonce)],
                          cwd=root, env={"PATH": SYSTEM_PATH}, capture_output=True, text=True,
                          timeout=30, check=True).stdout


def test_a_server_without_sha256sum_has_no_digest_and_its_report_still_parses(
        tmp_path: Path) -> None:
    make_tree(tmp_path)
    path = faked(tmp_path / "bin", "sha256sum", "#!/bin/sh\nexit 127\n")
    assert server_digest(tmp_path, path=path) == unchanged.NONE
    nonce = "3" * 32
    script = guards.report_script(str(tmp_path), PATHS, nonce, digest=True)
    report = subprocess.run(["sh", "-c", script], env={"PATH": path}, capture_output=True,
                            text=True, timeout=30, check=True).stdout
    probe = guards.parse_report(report.splitlines(), nonce, len(PATHS))
    assert probe is not None and probe.digest is None and probe.paths == (True, True)


def test_the_check_script_answers_with_its_nonce_only(tmp_path: Path) -> None:
    make_tree(tmp_path)
    nonce = "1" * 32
    answer = check(tmp_path, nonce)
    # just made: too recent to match or make a record
    assert unchanged.parse_check(answer, nonce) == Digest("", settled=False)
    assert unchanged.parse_check(answer, "2" * 32) is None
    assert unchanged.parse_check(answer + answer, nonce) is None  # one line, no more
    assert unchanged.parse_check(answer.replace(nonce, nonce + " x"), nonce) is None
    told = f"{unchanged.CHECK}{nonce} {'a' * 64}\n"
    assert unchanged.parse_check(told, nonce) == Digest("a" * 64, settled=True)
    assert unchanged.parse_check(told.replace("a" * 64, "A" * 64), nonce) is None


@pytest.mark.parametrize("name", ["a\nroaming-homes digest " + "1" * 32 + " " + "f" * 64,
                                  "-rf", "$(touch pwned)", "a b"])
def test_a_hostile_name_is_only_hashed(tmp_path: Path, name: str) -> None:
    """File names reach neither the shell nor the answer: the check's answer is one line
    with the digest, whatever the tree holds."""
    make_tree(tmp_path)
    before = server_digest(tmp_path)
    (tmp_path / "Documents" / name).write_text("x")
    nonce = "1" * 32
    assert unchanged.parse_check(check(tmp_path, nonce), nonce) is not None
    assert server_digest(tmp_path) != before
    assert not (tmp_path / "pwned").exists()


def test_a_record_fits_only_its_rules_and_age(tmp_path: Path) -> None:
    now = time.time()
    record = Record("rules", "l" * 64, "s" * 64, now - 10)
    assert record.fits("rules", now, 3600)
    assert not record.fits("other rules", now, 3600)
    assert not record.fits("rules", now, 5)  # older than the longest a skip may run on
    assert not record.fits("rules", now - 20, 3600)  # made "in the future": the clock moved
    unchanged.save(tmp_path, record)
    assert unchanged.load(tmp_path) == record
    unchanged.drop(tmp_path)
    assert unchanged.load(tmp_path) is None
    unchanged.drop(tmp_path)  # nothing to drop: fine


def test_a_broken_record_is_no_record(tmp_path: Path) -> None:
    (tmp_path / "unchanged.json").write_text('{"rules": 1}')
    assert unchanged.load(tmp_path) is None


def test_rules_differ_when_paths_or_ignores_do() -> None:
    base = unchanged.rules_of("key", ("Documents",), (".cache",), ("*~",))
    assert base == unchanged.rules_of("key", ("Documents",), (".cache",), ("*~",))
    assert base != unchanged.rules_of("key", ("Documents", "Music"), (".cache",), ("*~",))
    assert base != unchanged.rules_of("key", ("Documents",), (), ("*~",))
    assert base != unchanged.rules_of("key", ("Documents",), (".cache",), ())
    assert base != unchanged.rules_of("other", ("Documents",), (".cache",), ("*~",))


def test_digests_are_taken_while_skipping_pays_and_tried_again_later(tmp_path: Path) -> None:
    now = 10_000.0
    assert unchanged.load_costs(tmp_path) == unchanged.Costs()  # nothing measured: try
    assert unchanged.Costs().pays(now, 3600)
    assert unchanged.Costs(check=0.1, unison=None, checked=now).pays(now, 3600)
    assert unchanged.Costs(check=0.1, unison=1.0, checked=now).pays(now, 3600)
    slower = unchanged.Costs(check=0.9, unison=1.0, checked=now - 60)
    assert not slower.pays(now, 3600)  # not clearly cheaper than unison: unison runs
    assert slower.pays(now + 3600, 3600)  # an hour on: measured again
    assert slower.pays(now - 120, 3600)  # the clock went back: measured again
    unchanged.save_costs(tmp_path, slower)
    assert unchanged.load_costs(tmp_path) == slower


LETTERS = "ab.*~é \n-"
PART = st.text(LETTERS, min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.lists(st.lists(PART, min_size=1, max_size=3), min_size=1, max_size=12),
       names=st.lists(st.text(LETTERS + "?[]{},", min_size=1, max_size=4), max_size=3),
       path_rules=st.lists(st.integers(0, 11), max_size=2), glob_path=st.booleans())
@example(tree=[["a"], [".a"], ["b~"], [".b~"], ["*a"], ["é", ".éa"]], names=["*a", "*~"],
         path_rules=[], glob_path=False)
def test_this_sides_listing_leaves_out_only_what_unison_ignores(
        tmp_path_factory: pytest.TempPathFactory, tree: list[list[str]], names: list[str],
        path_rules: list[int], glob_path: bool) -> None:
    """Whatever the names and rules, the listing holds every entry unison syncs (by
    `ignore.walk`'s rules, held to unison's in test_ignore_rules.py), and no more when the
    rules are ones find can say (names without a line break)."""
    root = tmp_path_factory.mktemp("tree")
    made = []
    for parts in tree:
        path = root / "Documents" / "/".join(parts)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
            made.append("Documents/" + "/".join(parts))
    ignore_paths = tuple(made[i] for i in path_rules if i < len(made))
    ignore_paths += ("Documents/*",) if glob_path else ()
    ignore_names = tuple(n for n in names if "\n" not in n and "/" not in n)

    found = listed(root, PATHS, ignore_paths, ignore_names)
    synced = {rel for rel, _ in walk(root, PATHS, ignore_paths, ignore_names)}

    assert synced <= found
    exact = (not any(set(n) & set("?[]{}\\") for n in ignore_names)
             and not any(set(p) & set("*?[]{}\\") for p in ignore_paths))
    if exact:
        assert {p for p in found if "\n" not in p} == synced


def test_without_gnu_find_this_side_has_no_digest(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """busybox's find knows no -printf: it would list nothing, a digest that never changes."""
    make_tree(tmp_path)
    monkeypatch.setenv("PATH", faked(tmp_path / "bin", "find", BUSYBOX_FIND))
    assert unchanged.local_digest(tmp_path, PATHS, (), ()) is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert unchanged.local_digest(tmp_path, PATHS, (), ()) is None
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    assert local(tmp_path).value


@pytest.mark.parametrize("rule", ["-delete", "(", "!", ")", "-exec", "-fprint", "x y"])
def test_an_ignore_rule_is_only_a_pattern_to_find(tmp_path: Path, rule: str) -> None:
    """A rule reaches find as the argument of -name or -path, never as an action."""
    make_tree(tmp_path)
    (tmp_path / "Documents" / rule).write_text("ignored")
    with_it = local(tmp_path).value
    without = unchanged.local_digest(tmp_path, PATHS, (f"Documents/{rule}",), (rule,))
    assert without is not None and without.value != with_it
    assert model(tmp_path)["Documents/a.txt"][0] == "file"
    assert f"Documents/{rule}" not in listed(tmp_path, PATHS, (), (rule,))
    assert f"Documents/{rule}" not in listed(tmp_path, PATHS, (f"Documents/{rule}",), ())
