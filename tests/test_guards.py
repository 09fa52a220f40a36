"""The pure safety decisions: replica markers, missing roots, the server's report, the loss
guard on unison's plan (deletions, overwrites, the window), and the file counts behind it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from roaming_homes.safety import guards
from roaming_homes.safety.baseline import Baseline
from roaming_homes.safety.guards import Limits, Loss, Losses, Probe, Root
from roaming_homes.unison import ignore as counting
from roaming_homes.unison.output import PlanItem, parse_plan_line

NAMES = {"local": "/home/u", "server": "u@h:/home/u"}
IDS = {"local": "a" * 32, "server": "b" * 32}
NONCE = "0123456789abcdef" * 2
HERE = Probe(Root.PRESENT, "a" * 32)


def _both(local: Probe, server: Probe) -> dict[str, Probe]:
    return {"local": local, "server": server}


def test_markers_that_match_the_recorded_ids_pass() -> None:
    found = _both(HERE, Probe(Root.PRESENT, "b" * 32))
    assert guards.marker_refusal(IDS, found, NAMES) is None


def test_a_side_without_a_recorded_id_is_not_judged() -> None:
    found = _both(Probe(Root.PRESENT, None), Probe(Root.PRESENT, None))
    assert guards.marker_refusal({"local": "", "server": ""}, found, NAMES) is None


@pytest.mark.parametrize(("server", "words"), [
    (Probe(Root.PRESENT, None), "lacks its marker"),
    (Probe(Root.PRESENT, "c" * 32), "different replica"),
])
def test_a_lost_or_foreign_marker_refuses(server: Probe, words: str) -> None:
    refusal = guards.marker_refusal(IDS, _both(HERE, server), NAMES)
    assert refusal is not None
    assert words in refusal and "the server home u@h:/home/u" in refusal
    assert "\n" not in refusal and "--force" not in refusal


@pytest.mark.parametrize(("root", "words"), [(Root.MISSING, "is missing"),
                                             (Root.UNREADABLE, "cannot be read")])
def test_missing_is_not_deleted(root: Root, words: str) -> None:
    """A root that is not there is reported as such, never as lost files, never with
    --force as the advice, first pass or not."""
    refusal = guards.missing_refusal(_both(HERE, Probe(root, None)), NAMES)
    assert refusal is not None and words in refusal
    assert "lost" not in refusal and "--force" not in refusal and "\n" not in refusal
    assert guards.missing_refusal(_both(HERE, HERE), NAMES) is None


def test_a_path_absent_on_every_side_is_named_with_its_likely_meaning() -> None:
    found = _both(Probe(Root.PRESENT, None, (True, False)), Probe(Root.PRESENT, None,
                                                                 (False, False)))
    assert guards.absent_paths(("Documents", "Documetns"), found) == ["Documetns"]
    assert guards.likely_meant("Documetns", ["Documents", "Music"]) == "Documents"
    assert guards.likely_meant("xyz", ["Documents"]) is None
    # a side that did not report: nothing is known to be absent
    assert guards.absent_paths(("Documents", "X"), {"local": found["local"],
                                                    "server": Probe(Root.PRESENT, None)}) == []


@pytest.mark.parametrize(("text", "expected"), [
    (guards.marker_text("f" * 32), "f" * 32),
    ("roaming-homes replica nothex\n", None),
    ("", None),
    ("something else", None),
])
def test_parse_marker(text: str, expected: str | None) -> None:
    assert guards.parse_marker(text) == expected


# --- the server's report -----------------------------------------------------------------------

def _report(root: str = "present", paths: str = "10", marker: str = "",
            nonce: str = NONCE) -> str:
    return f"{guards.REPORT}{nonce} root={root} paths={paths} marker={marker}"


def test_the_report_is_read_strictly_and_only_with_this_passes_nonce() -> None:
    marker = guards.marker_text("d" * 32).strip()
    assert guards.parse_report([_report(marker=marker)], NONCE, 2) == Probe(
        Root.PRESENT, "d" * 32, (True, False))
    assert guards.parse_report([_report(root="missing")], NONCE, 2) == Probe(
        Root.MISSING, None, (True, False))
    assert guards.parse_report([_report(nonce="f" * 32)], NONCE, 2) is None  # another pass's
    assert guards.parse_report([_report(paths="1")], NONCE, 2) is None  # not these paths
    assert guards.parse_report([_report(root="gone")], NONCE, 2) is None
    assert guards.parse_report([], NONCE, 2) is None


def test_only_the_first_report_before_unison_looks_counts() -> None:
    """A file name cannot stand in for the report: not after unison started looking, not as a
    second report, not without the nonce."""
    good = _report(marker=guards.marker_text("d" * 32).strip())
    forged = _report(root="missing")
    assert guards.parse_report([good, forged], NONCE, 2) == guards.parse_report([good], NONCE, 2)
    assert guards.parse_report(["Looking for changes", good], NONCE, 2) is None
    assert guards.parse_report([_report(nonce="0" * 32), good], NONCE, 2) is None


def _tree(root: Path) -> None:
    files = ["Documents/a", "Documents/sub/b", "Documents/sub/c~", "Documents/.cache/x",
             "Documents/.cache/y", "Music/m", "Music/new\nline", "Other/o", "Documents/t;$(x)"]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "Documents" / "link").symlink_to("a")
    (root / "Documents" / "empty").mkdir()


PATHS = ("Documents", "Music", "Absent")
IGNORES = (("Documents/.cache",), ("*~",))


def _guarded(tmp_path: Path, root: Path, expect: str | None) -> subprocess.CompletedProcess[str]:
    """guard_command as the server's shell runs it (unison appends `-server …`), with a
    `unison` on the PATH that only prints its arguments and working directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "unison"
    fake.write_text('#!/bin/sh\necho "unison server $* in $PWD"\n')
    fake.chmod(0o755)
    command = guards.guard_command(str(root), PATHS, NONCE, expect)
    return subprocess.run(["sh", "-c", f"{command} -server __new-rpc-mode"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})


@pytest.mark.parametrize(("expect", "runs"), [(None, True), ("d" * 32, True),
                                              ("e" * 32, False)])
def test_server_guard_runs_unison_only_when_its_replica_passes(
        tmp_path: Path, expect: str | None, runs: bool) -> None:
    root = tmp_path / "replica of u's $HOME"
    root.mkdir()
    _tree(root)
    guards.write_local_marker(root, "d" * 32)

    result = _guarded(tmp_path, root, expect)

    # the report goes to stderr: stdout is unison's protocol channel, untouched until exec
    report = guards.parse_report(result.stderr.splitlines(), NONCE, len(PATHS))
    assert report == Probe(Root.PRESENT, "d" * 32, (True, True, False))
    assert report == guards.probe_local(root, PATHS)
    if runs:
        # unison's server starts where the login shell left it, not in the probed root
        assert result.returncode == 0
        assert result.stdout == f"unison server -server __new-rpc-mode in {tmp_path}\n"
    else:
        assert result.returncode == 1 and result.stdout == ""


def test_server_guard_refuses_a_missing_root_even_on_a_first_pass(tmp_path: Path) -> None:
    result = _guarded(tmp_path, tmp_path / "gone", None)
    assert result.returncode == 1 and result.stdout == ""
    assert guards.parse_report(result.stderr.splitlines(), NONCE, 3) == Probe(
        Root.MISSING, None, (False, False, False))


def test_a_marker_cannot_add_fields_to_the_report(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / guards.MARKER).write_text("x root=missing paths=000 marker=\u001b]0;t\u0007\nmore")
    result = _guarded(tmp_path, root, None)
    report = guards.parse_report(result.stderr.splitlines(), NONCE, 3)
    assert report == Probe(Root.PRESENT, None, (False, False, False))
    assert "\x1b" not in result.stderr


def test_marker_script_keeps_an_existing_marker(tmp_path: Path) -> None:
    first = subprocess.run(["sh", "-c", guards.write_marker_script(str(tmp_path), "1" * 32)],
                           capture_output=True, text=True, check=True).stdout
    second = subprocess.run(["sh", "-c", guards.write_marker_script(str(tmp_path), "2" * 32)],
                            capture_output=True, text=True, check=True).stdout
    assert guards.parse_marker(first) == guards.parse_marker(second) == "1" * 32
    assert guards.probe_local(tmp_path, ()).marker == "1" * 32


# --- the loss guard ----------------------------------------------------------------------------

def _item(line: str) -> PlanItem:
    item = parse_plan_line(line)
    assert item is not None, line
    return item


@pytest.mark.parametrize(("line", "loss"), [
    ("deleted  ---->            Documents/a  ", ("server", Loss.DELETE)),
    ("         <---- deleted    Documents/a  ", ("local", Loss.DELETE)),
    ("changed  ---->            a  ", ("server", Loss.OVERWRITE)),
    ("         <---- changed    a  ", ("local", Loss.OVERWRITE)),
    ("changed  <---- changed    a  ", ("local", Loss.OVERWRITE)),  # a conflict `prefer` settled
    ("new file ----> new file   a  ", ("server", Loss.OVERWRITE)),
    ("new file ---->            a  ", None),
    ("new dir  ---->            d  ", None),
    ("props    ---->            a  ", None),
    ("changed  <-?-> changed    a  ", None),  # a conflict that stays: nothing is lost
    ("changed  ----> deleted    a  ", None),
    ("deleted  <---- changed    a  ", None),  # the file comes back
    ("new file <---- new file   a  ", ("local", Loss.OVERWRITE)),
    ("chgd lnk ---->            l  ", ("server", Loss.OVERWRITE)),
    # forced (-force): the side that did not change wins
    ("         ====> new file   a  ", ("server", Loss.DELETE)),  # absent here: deleted there
    ("         ====> new dir    d  ", ("server", Loss.DELETE)),
    ("         ====> changed    a  ", ("server", Loss.OVERWRITE)),  # the old one over it
    ("new file <====            a  ", ("local", Loss.DELETE)),
    ("         ====> props      a  ", None),
])
def test_what_an_item_costs_which_side(line: str, loss: tuple[str, Loss] | None) -> None:
    assert guards.item_loss(_item(line)) == loss


def test_plan_losses_weigh_deleted_directories_by_their_files() -> None:
    items = [_item("deleted  ---->            Documents  "),
             _item("deleted  ---->            Music/a  "),
             _item("changed  ---->            Music/b  "),
             _item("         <---- deleted    Pictures/p  ")]
    weights = {("server", "Documents"): 40, ("server", "Music/a"): 1}
    losses = guards.plan_losses(items, lambda side, path: weights.get((side, path), 1),
                                ("Documents", "Music", "Pictures"))
    assert (losses["server"].deleted, losses["server"].overwritten) == (41, 1)
    assert losses["server"].gone == ["Documents"]
    assert losses["server"].paths == ["Documents", "Music/a", "Music/b"]
    assert (losses["local"].deleted, losses["local"].gone) == (1, [])


LIMITS = Limits(max_delete=50, max_change=50, window=600)


def _losses(deleted: int = 0, overwritten: int = 0) -> dict[str, Losses]:
    files = {guards.path_key(f"Documents/{number}") for number in range(overwritten)}
    return {"local": Losses(),
            "server": Losses(deleted, overwritten, ["Documents/x"], overwrote=files)}


@pytest.mark.parametrize(("total", "deleted", "recent", "max_delete", "refused"), [
    (100, 51, 0, 50, True),    # 51 % > 50 %
    (100, 50, 0, 50, False),   # exactly 50 %: allowed
    (100, 100, 0, 100, False),  # 100 % switches the check off
    (1000, 101, 0, 10, True),  # 101 of 1000 > 10 %
    (20, 11, 0, 50, True),     # 11 > MIN_LOSSES and > 50 %
    (10, 10, 0, 50, False),    # all 10: not more than MIN_LOSSES
    (100, 20, 40, 50, True),   # the window: 40 deleted minutes ago + 20 now
    (100, 0, 60, 50, False),   # nothing to delete now: past deletions alone refuse nothing
])
def test_mass_deletion_rule(total: int, deleted: int, recent: int, max_delete: int,
                            refused: bool) -> None:
    limits = Limits(max_delete, 50, 600)
    window = {"server": Losses(recent, 0)}
    refusal = guards.loss_refusal(_losses(deleted), window, total, limits)
    assert (refusal is not None) == refused
    if refusal is not None:
        message = refusal.message(limits, "u@h:/home/u")
        assert f"{deleted + recent} of {total} files were deleted on this computer" in message
        assert "sync.max_delete = " in message and "\n" not in message
        assert "`roaming-homes sync --force`" in message  # confirm ...
        assert "`roaming-homes restore --refused`" in message  # ... or restore


def test_a_second_run_in_a_pass_is_judged_with_what_the_first_planned() -> None:
    """A pass that runs unison again (a file changed while it was copied) judges the second
    plan with the first's losses as if they were in the window: 30 + 30 of 100 is refused."""
    first = {"server": Losses(30, 2, ["a"]), "local": Losses(0, 1, ["b"])}
    second = _losses(30)
    done = guards.joined({"server": Losses(5, 0)}, first)
    assert (done["server"].deleted, done["server"].overwritten, done["server"].paths) == (
        35, 2, ["a"])
    assert guards.loss_refusal(second, {}, 100, LIMITS) is None
    refusal = guards.loss_refusal(second, guards.joined(first), 100, LIMITS)
    assert refusal is not None and refusal.count == 60
    total = guards.joined(first, second)
    assert total["server"].deleted == 60 and total["local"].overwritten == 1


def test_mass_change_rule_has_its_own_limit() -> None:
    limits = Limits(max_delete=50, max_change=30, window=600)
    refusal = guards.loss_refusal(_losses(overwritten=31), {}, 100, limits)
    assert refusal is not None and refusal.loss is Loss.OVERWRITE
    message = refusal.message(limits, "srv")
    assert "31 of 100 files were changed on this computer" in message
    assert "sync.max_change = 30 %" in message
    assert guards.loss_refusal(_losses(overwritten=30), {}, 100, limits) is None


def _overwrite(path: str) -> dict[str, Losses]:
    return guards.plan_losses([_item(f"changed  ---->            {path}  ")], lambda *_: 1)


def test_a_file_saved_again_and_again_in_the_window_is_one_file_overwritten() -> None:
    """An editor's autosave every 30 s for ten minutes, in a home of 30 files: one file."""
    baseline = Baseline(["rules"], 30)
    for minute in range(20):
        now = 1000.0 + 30 * minute
        planned = _overwrite("Documents/draft.odt")
        assert guards.loss_refusal(planned, baseline.window(now, 600), 30, LIMITS) is None
        baseline.add_losses(planned, now, 600)
    assert baseline.window(1600.0, 600)["server"].overwritten == 20
    assert baseline.window(1600.0, 600)["server"].overwrote == {
        guards.path_key("Documents/draft.odt")}


def test_sixteen_files_overwritten_one_by_one_in_the_window_are_refused() -> None:
    baseline = Baseline(["rules"], 30)
    refusals = []
    for number in range(16):
        planned = _overwrite(f"Documents/{number}.txt")
        refusals.append(guards.loss_refusal(planned, baseline.window(1000.0, 600), 30, LIMITS))
        baseline.add_losses(planned, 1000.0, 600)
    assert all(refusal is None for refusal in refusals[:15])  # 15 of 30: not more than half
    assert refusals[15] is not None and refusals[15].count == 16


def test_overwrites_recorded_without_their_files_count_each() -> None:
    """A window an older version wrote ([time, side, deleted, overwritten]): each counts."""
    baseline = Baseline(["rules"], 30, recent=[[1000.0, "server", 0, 15]])
    window = baseline.window(1010.0, 600)
    assert window["server"].unkeyed == 15
    refusal = guards.loss_refusal(_overwrite("Documents/a"), window, 30, LIMITS)
    assert refusal is not None and refusal.count == 16


def test_a_whole_synced_path_deleted_is_refused_whatever_its_size() -> None:
    planned = {"local": Losses(3, 0, ["Music"], ["Music"]), "server": Losses()}
    refusal = guards.loss_refusal(planned, {}, 1000, LIMITS)
    assert refusal is not None and refusal.side == "local" and refusal.gone == ("Music",)
    message = refusal.message(LIMITS, "srv")
    assert "Music vanished on the server srv (not mounted?)" in message
    assert "max_delete" not in message


def test_names_in_messages_are_escaped() -> None:
    planned = {"local": Losses(), "server": Losses(20, 0, ["a\x1b]0;owned\x07", "b\\n"])}
    refusal = guards.loss_refusal(planned, {}, 20, LIMITS)
    assert refusal is not None
    message = refusal.message(LIMITS, "srv")
    assert "\x1b" not in message and "\x07" not in message
    assert "a\\x1b]0;owned\\x07" in message and "b\\\\n" in message


def test_baseline_weighs_directories_and_keeps_a_sliding_window() -> None:
    baseline = Baseline(["rules"], 6, {"Documents": 2, "Documents/sub": 3, "Documents2": 1})
    assert baseline.below("Documents") == 5
    assert baseline.below("Documents/sub") == 3
    assert baseline.below("Documents/a.txt") == 1  # a file
    assert Baseline(["r"], 0, {"Empty": 0}).below("Empty") == 0
    baseline.add_losses({"server": Losses(4, 1)}, now=1000.0, seconds=600)
    baseline.add_losses({"local": Losses(2, 0)}, now=1500.0, seconds=600)
    window = baseline.window(1590.0, 600)
    assert (window["server"].deleted, window["server"].overwritten) == (4, 1)
    assert baseline.window(1700.0, 600)["local"].deleted == 2
    assert "server" not in baseline.window(1700.0, 600)
    baseline.add_losses({}, now=2200.0, seconds=600)
    assert baseline.recent == []


# --- counting, by the same rules as unison ------------------------------------------------------

def test_count_skips_ignored_paths_names_and_control_characters_and_counts_links(
        tmp_path: Path) -> None:
    _tree(tmp_path)
    # a, sub/b, link, t;$(x), Music/m; not c~, .cache/*, Other/o, Music/new\nline
    tally: dict[str, int] = {}
    assert counting.count_files(tmp_path, PATHS, *IGNORES, tally=tally) == 5
    assert tally == {"Documents": 3, "Documents/sub": 1, "Documents/empty": 0, "Music": 1}


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("*~", ["x~"], [".x~", "d/x~"]),           # * never matches a leading dot nor a /
    ("p/*", ["p/q", "p/s"], ["p/.h", "p/q/r"]),
    ("*.tmp", ["x.tmp"], ["d/x.tmp"]),
    ("d/.*", ["d/.hid"], ["d/vis"]),
    ("?y", ["ay"], [".y"]),
    ("{a,b}.txt", ["a.txt", "b.txt"], ["c.txt"]),
    ("[!x]z", ["az"], ["xz"]),
])
def test_globs_follow_unisons_rules(pattern: str, matches: list[str], misses: list[str]) -> None:
    match = counting._matcher([pattern])
    assert all(match(m) for m in matches) and not any(match(m) for m in misses)


def test_is_ignored_looks_at_every_directory_above() -> None:
    assert counting.is_ignored("Documents/.cache/x/y", IGNORES[0], IGNORES[1])
    assert counting.is_ignored("Documents/sub/c~", IGNORES[0], IGNORES[1])
    assert counting.is_ignored("Music/new\nline", (), ())
    assert not counting.is_ignored("Documents/sub/b", IGNORES[0], IGNORES[1])


def _settle_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the cache remember directories changed just now (it skips the last 3 s, which a
    test cannot wait for); a change must then come at least one clock tick later."""
    monkeypatch.setattr(counting, "_SETTLED_NS", -10_000_000_000)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = os.scandir

    def scandir(path: str) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(counting.os, "scandir", scandir)
    return reads


def test_cached_count_reads_only_changed_directories_and_agrees_with_a_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home"
    _tree(root)
    (root / "Documents" / "deep" / "er").mkdir(parents=True)
    (root / "Documents" / "deep" / "er" / "f").write_text("f")
    _settle_everything(monkeypatch)
    cache = counting.DirCache(tmp_path / "counts.json", ["rules"])
    assert counting.count_files(root, PATHS, *IGNORES, cache) == 6
    time.sleep(0.05)  # past the clock tick of the tree's creation
    reads = _count_reads(monkeypatch)

    again = counting.DirCache(tmp_path / "counts.json", ["rules"])  # as the next pass loads it
    assert counting.count_files(root, PATHS, *IGNORES, again) == 6
    assert reads == []  # nothing changed: nothing read, every directory only looked at
    (root / "Documents" / "deep" / "er" / "g").write_text("new")  # added deep down
    (root / "Music" / "m").unlink()  # removed
    (root / "Documents" / "sub").rename(root / "Documents" / "moved")  # renamed, with b and c~
    (root / "Documents" / "deep" / "er" / "f").write_text("rewritten")  # no entry changed

    counted = counting.count_files(root, PATHS, *IGNORES,
                                 counting.DirCache(tmp_path / "counts.json", ["rules"]))

    assert sorted(Path(r).relative_to(root).as_posix() for r in reads) == [
        "Documents", "Documents/deep/er", "Documents/moved", "Music"]
    assert counted == counting.count_files(root, PATHS, *IGNORES) == 6


def test_cache_forgets_what_it_cannot_trust(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "home"
    _tree(root)
    path = tmp_path / "counts.json"
    counting.count_files(root, PATHS, *IGNORES, counting.DirCache(path, ["rules"]))
    assert not path.exists()  # all changed in the last seconds: nothing kept
    _settle_everything(monkeypatch)
    counting.count_files(root, PATHS, *IGNORES, counting.DirCache(path, ["rules"]))
    assert "Documents/sub" in json.loads(path.read_text())["dirs"]
    reads = _count_reads(monkeypatch)

    # other rules (paths, ignores): walked afresh; a broken file: walked afresh
    assert counting.count_files(root, PATHS, (), (),
                              counting.DirCache(path, ["other rules"])) == 8
    assert len(reads) == 5
    path.write_text("{not json")
    assert counting.count_files(root, PATHS, *IGNORES, counting.DirCache(path, ["rules"])) == 5


def test_a_synced_path_that_is_a_link_counts_as_one_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a").write_text("a")
    (tmp_path / "Documents").symlink_to("real")
    assert counting.count_files(tmp_path, ("Documents",), (), ()) == 1


@pytest.mark.parametrize("where", ["UNISON", "HOME"])
def test_server_guard_removes_the_count_caches_older_versions_left(
        tmp_path: Path, where: str) -> None:
    """Older versions kept a count cache in unison's directory on the server ($UNISON, else
    ~/.unison); each pass removes them (and their temporary files), nothing else."""
    root = tmp_path / "replica"
    root.mkdir()
    unison_dir = tmp_path / "unison-dir" if where == "UNISON" else tmp_path / "home" / ".unison"
    unison_dir.mkdir(parents=True)
    leftovers = ["roaming-homes-counts-0a1b2c3d.json", "roaming-homes-counts-0a1b2c3d.json.42.tmp"]
    kept = ["ar0123456789abcdef", "fp0123456789abcdef", "roaming-homes-counts.txt", "default.prf"]
    for name in [*leftovers, *kept]:
        (unison_dir / name).write_text(name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unison").write_text('#!/bin/sh\necho "unison server $*"\n')
    (bin_dir / "unison").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           **({"UNISON": str(unison_dir)} if where == "UNISON" else {})}
    command = guards.guard_command(str(root), PATHS, NONCE)
    result = subprocess.run(["sh", "-c", f"{command} -server"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in unison_dir.iterdir()) == sorted(kept)
    # again, with nothing left to remove: no error, unison runs
    again = subprocess.run(["sh", "-c", f"{command} -server"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, check=False)
    assert again.returncode == 0 and again.stdout == "unison server -server\n"
