"""The pure parts of the unison layer: profile, arguments, output parsing, ssh arguments."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from roaming_homes.paths import Locations, xdg_user_dirs
from roaming_homes.safety import guards
from roaming_homes.unison import dialogue, output, profile
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.output import Content, Direction

PLAN = profile.Plan(local_root="/home/u", server_root="ssh://u@h:22//home/u",
                   paths=("Documents", "My Music"), ignore_paths=(".cache",),
                   ignore_names=("*~",), prefer="newer", sshargs=("-i", "/k ey"))


def test_profile_lists_roots_paths_ignores_and_safety() -> None:
    text = profile.build_profile(PLAN)
    lines = text.splitlines()
    assert "root = /home/u" in lines and "root = ssh://u@h:22//home/u" in lines
    assert "path = My Music" in lines
    assert "ignore = Path .cache" in lines and "ignore = Name *~" in lines
    assert "confirmbigdel = false" in lines  # the loss guard judges every plan instead
    assert "prefer = newer" in lines and "copyonconflict = true" in lines
    assert "sshargs = -i /k\\ ey" in lines


@pytest.mark.parametrize(("prefer", "expected"), [
    ("local", "prefer = /home/u"), ("server", "prefer = ssh://u@h:22//home/u")])
def test_prefer_a_side_names_its_root(prefer: str, expected: str) -> None:
    from dataclasses import replace

    assert expected in profile.build_profile(replace(PLAN, prefer=prefer)).splitlines()


def test_profile_keeps_backups_of_everything_it_overwrites_or_deletes() -> None:
    from dataclasses import replace

    lines = profile.build_profile(replace(PLAN, backups=5)).splitlines()
    assert {"backup = Name *", "backuplocation = central", "maxbackups = 5"} <= set(lines)
    assert not any(line.startswith("backupdir") for line in lines)  # see profile.environment


def test_prefer_none_sets_no_preference() -> None:
    from dataclasses import replace

    text = profile.build_profile(replace(PLAN, prefer="none"))
    assert "prefer" not in text and "copyonconflict" not in text


@pytest.mark.parametrize("bad", ["a\nroot = /", "x\r", " lead", "tab\t"])
def test_profile_rejects_values_that_could_inject_a_preference(bad: str) -> None:
    from dataclasses import replace

    with pytest.raises(profile.ProfileValueError):
        profile.build_profile(replace(PLAN, paths=(bad,)))


def test_sshargs_escape_spaces_backslashes_and_quotes() -> None:
    assert profile.escape_sshargs(["-o", "A=b c", "x\\y", '"q"']) == \
        '-o A=b\\ c x\\\\y \\"q\\"'


def test_argv_asks_before_propagating_ignores_line_breaks_and_first_run_is_a_union() -> None:
    assert profile.build_argv("unison", False) == [
        "unison", "roaming-homes", "-ui", "text", "-color", "false", "-dumbtty",
        "-ignore", "Regex .*[\n\r].*"]
    assert "-batch" not in profile.build_argv("unison", False)
    assert profile.build_argv("/opt/u", True)[-1] == "-ignorearchives"
    assert "-ui" not in profile.build_argv("unison", False, guarded=False)  # resolve: the user's


def test_failed_paths_keep_their_parentheses() -> None:
    summary = output.parse_output([
        "Synchronization incomplete at 14:09:50  (1 item transferred, 1 skipped, 2 failed)",
        "  skipped: a (b) (contents changed on both sides)",
        "  failed: d/f (conflict_on_2026-11-29_was_deleted)",
        "  failed: plain"])
    assert summary.failed_paths == ["d/f (conflict_on_2026-11-29_was_deleted)", "plain"]
    assert summary.conflicts == ["a (b)"]


def test_an_item_skipped_for_an_error_is_not_a_conflict() -> None:
    """unison 2.52's output for a folder it cannot read, with nothing else to do: the error's
    reason spans two lines and holds parentheses; a conflict's name beside it still counts."""
    lines = [
        "         error            Documents/locked (1)  ",
        "Error in scanning directory:",
        "Permission denied [opendir(/home/u/Documents/locked (1))]",
        "changed  <-?-> changed    Documents/f  ",
        "No updates to propagate",
        "Synchronization complete at 09:24:51  (0 items transferred, 2 skipped, 0 failed)",
        "  skipped: Documents/locked (1) (Error in scanning directory:",
        "Permission denied [opendir(/home/u/Documents/locked (1))])",
        "  skipped: Documents/f (contents changed on both sides)",
        "  skipped: Documents/locked (1) (2) (contents changed on both sides)",
        "  skipped: Documents/pipe (path /home/u/Documents/pipe has unknown file type)",
        "         error            Documents/pipe  ",
    ]
    summary = output.parse_output(lines)
    assert summary.errors == ["Documents/locked (1)", "Documents/pipe"]
    # a conflict whose name starts like an error's is still a conflict
    assert summary.conflicts == ["Documents/f", "Documents/locked (1) (2)"]
    assert summary.skipped == 2
    propagated = output.parse_output(["[ERROR] Skipping pipe",
                                      "  path /h/pipe has unknown file type"])
    assert propagated.errors == ["pipe"] and propagated.conflicts == []


def test_parse_summary_with_conflicts() -> None:
    lines = [
        "changed  <-?-> changed    docs/f  ",
        "[CONFLICT] Skipping docs/f",
        "  contents changed on both sides",
        "Synchronization complete at 14:09:50  (2 items transferred, 1 skipped, 0 failed)",
        "  skipped: docs/f (contents changed on both sides)",
        "  skipped: docs/odd (name) (properties changed on both sides)",
    ]
    summary = output.parse_output(lines)
    assert (summary.transferred, summary.skipped, summary.failed) == (2, 1, 0)
    assert summary.complete
    assert summary.conflicts == ["docs/f", "docs/odd (name)"]


def test_parse_partial_and_failures() -> None:
    lines = ["Synchronization incomplete at 01:02:03  (1 item transferred, "
             "2 partially transferred, 0 skipped, 3 failed)",
             "  failed: a/b", "  partially transferred: c"]
    summary = output.parse_output(lines)
    assert (summary.transferred, summary.partial, summary.failed) == (1, 2, 3)
    assert not summary.complete
    assert summary.failed_paths == ["a/b"]


def test_a_file_that_changed_while_unison_copied_it_is_told_from_other_failures() -> None:
    """unison 2.52.1's own output (a file appended to on one side, written on the other, while
    it copied them), and names made to look like those reasons."""
    lines = [
        "Failed: The source file /h/a/big",
        "has been modified during synchronization.  Transfer aborted.",
        "Failed [big]: The source file /h/a/big",
        "has been modified during synchronization.  Transfer aborted.",
        "Failed [there]: Destination updated during synchronization",
        "The file there has been created",
        "Failed [x]: The source file y]: Current source file /h/a/x]: The source file y",
        " not same as transferred file.  Transfer aborted.",
        "Failed [full]: Error in writing to /h/b/full: No space left on device",
        "Failed [odd]: The source file /h/a/odd",
        "has been modified during synchronization, it says in its name",
        "Synchronization incomplete at 12:16:03  (0 items transferred, 0 skipped, 5 failed)",
        "  failed: big", "  failed: there", "  failed: x]: The source file y",
        "  failed: full", "  failed: odd",
    ]
    summary = output.parse_output(lines)
    assert summary.changed == ["big", "there", "x]: The source file y"]
    assert summary.failed_paths == ["big", "there", "x]: The source file y", "full", "odd"]
    unnamed = output.parse_output(lines[:-5])  # no summary naming them: nothing is taken
    assert unnamed.changed == []


def test_parse_nothing_to_do_and_fatal() -> None:
    assert output.parse_output(
        ["Nothing to do: replicas have not changed since last sync."]).nothing_to_do
    fatal = output.parse_output(["Fatal error: Lost connection with the server"]).fatal
    assert fatal == "Lost connection with the server"
    split = output.parse_output(["Fatal error:", "Warning: the archives are locked."]).fatal
    assert split == "Warning: the archives are locked."


def _server(**kw: object) -> transport.Server:
    base = dict(host="h", port=2222, user="u", home="/home/u", local_root="",
                connect_timeout=3, ssh_options=("-i", "k"), connection_reuse=300)
    base.update(kw)
    return transport.Server(**base)  # type: ignore[arg-type]


def test_ssh_options_batchmode_first_then_admin_then_tunables(tmp_path) -> None:
    options = transport.ssh_options(_server(), tmp_path / "s")
    assert options[:4] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
    assert options.index("-i") < options.index("ServerAliveInterval=3")
    assert f"ControlPath={tmp_path / 's'}" in options


def test_unison_root_and_label() -> None:
    assert _server().unison_root == "ssh://u@h:2222//home/u"
    assert _server().label == "u@h:2222:/home/u"
    assert _server(local_root="/mnt/x").unison_root == "/mnt/x"


def test_control_path_off_when_reuse_zero_or_path_too_long(tmp_path) -> None:
    assert transport.control_path(_server(connection_reuse=0), tmp_path) is None
    assert transport.control_path(_server(), tmp_path / ("x" * 80)) is None
    assert transport.control_path(_server(), Path("/run/user/1000/roaming-homes")) is not None


def test_xdg_user_dirs_user_file_over_system_defaults_over_builtin(tmp_path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "user-dirs.defaults").write_text("# c\nMUSIC=Tunes\nVIDEOS=Films\n")
    (tmp_path / "cfg" / "user-dirs.dirs").write_text(
        'XDG_VIDEOS_DIR="$HOME/Movies/"\nXDG_DESKTOP_DIR="$HOME"\nXDG_X_DIR="/abs/out"\n')
    locations = Locations.from_env({"HOME": str(tmp_path), "XDG_CONFIG_HOME":
                                    str(tmp_path / "cfg"), "XDG_CONFIG_DIRS":
                                    str(tmp_path / "etc")})
    assert xdg_user_dirs(locations) == ["Documents", "Downloads", "Movies", "Pictures",
                                        "Public", "Templates", "Tunes"]


# --- the plan -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "item"), [
    ("deleted  ---->            Documents/a b  ",
     (Content.DELETED, Direction.TO_SERVER, Content.UNCHANGED, "Documents/a b")),
    ("         <==== changed    x  ", (Content.UNCHANGED, Direction.TO_LOCAL, Content.CHANGED,
                                        "x")),
    ("changed  <=?=> changed    x  ", (Content.CHANGED, Direction.CONFLICT, Content.CHANGED,
                                        "x")),
    ("new dir  --?->            d  ", (Content.DIR, Direction.TO_SERVER, Content.UNCHANGED,
                                        "d")),
    ("file     ---->            f  ", (Content.FILE, Direction.TO_SERVER, Content.UNCHANGED,
                                        "f")),
    ("chgd lnk <-M-> props      l  ", (Content.CHANGED_LINK, Direction.MERGE, Content.PROPS,
                                        "l")),
    # a name is an opaque field: spaces, arrows and brackets in it change nothing
    ("new file ---->              deleted  ---->  x []  ",
     (Content.FILE, Direction.TO_SERVER, Content.UNCHANGED, "  deleted  ---->  x []")),
])
def test_plan_lines_are_parsed_into_typed_items(line: str, item: tuple[object, ...]) -> None:
    assert output.parse_plan_line(line) == output.PlanItem(*item)  # type: ignore[arg-type]


@pytest.mark.parametrize("line", [
    "local          vm                 ", "local        : deleted", "Looking for changes",
    "deleted  ---->            x", "gone     ---->            x  ", "deleted  ~~~~>            x  ",
    "",
])
def test_other_lines_are_not_plan_items(line: str) -> None:
    assert output.parse_plan_line(line) is None


@pytest.mark.parametrize(("prompt", "question"), [
    ("changed  ---->            x  [f] ", output.Question.ITEM),
    ("changed  <-?-> changed    x  [] ", output.Question.ITEM),
    # a name with an opening bracket (an escape sequence's CSI) before the answer's brackets
    ("changed  <-?-> changed    a \x1b[31mred [x  [] ", output.Question.ITEM),
    ("new file ---->            [] brackets    [f] ", output.Question.ITEM),
    ("Proceed with propagating updates? [] ", output.Question.PROCEED),
    ("Do you really want to proceed? [] ", output.Question.OTHER),
    ("Press return to continue.[<spc>] ", output.Question.CONTINUE),
    ("", output.Question.OTHER),
])
def test_questions_are_classified(prompt: str, question: output.Question) -> None:
    assert output.classify_question(prompt) is question


def _replicas(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
    env = {**os.environ, "UNISON": str(tmp_path / "u")}
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / f"{profile.PROFILE}.prf").write_text(
        f"root = {a}\nroot = {b}\nconfirmbigdel = false\n")
    return a, b, env


def test_the_real_unison_asks_before_propagating_and_quits_on_a_no(tmp_path: Path) -> None:
    a, b, env = _replicas(tmp_path)
    for index in range(3):
        (a / f"f{index}").write_text(str(index))
    (a / "odd\nname").write_text("x")  # never synced: its name could forge a plan line
    yes = dialogue.run(profile.build_argv("unison", True), env, lambda line: None,
                     lambda items: True)
    assert yes.returncode == 0 and sorted(p.name for p in b.iterdir()) == ["f0", "f1", "f2"]
    for index in range(3):
        (a / f"f{index}").unlink()
    (b / "f0").write_text("changed on b")
    seen: list[output.PlanItem] = []

    no = dialogue.run(profile.build_argv("unison", False), env, lambda line: None,
                    lambda items: bool(seen.extend(items)))

    assert no.returncode == 3 and no.declined is output.Question.ITEM
    assert sorted(p.name for p in b.iterdir()) == ["f0", "f1", "f2"]  # nothing propagated
    assert sorted((i.path, i.direction, i.local, i.server) for i in seen) == [
        ("f0", Direction.CONFLICT, Content.DELETED, Content.CHANGED),
        ("f1", Direction.TO_SERVER, Content.DELETED, Content.UNCHANGED),
        ("f2", Direction.TO_SERVER, Content.DELETED, Content.UNCHANGED)]
    assert no.plan == seen


def test_unison_hands_the_server_guard_to_ssh_word_for_word(tmp_path: Path) -> None:
    """unison splits `servercmd` into words (backslash escapes, as `sshargs`) before ssh joins
    them again: escaped, the guard's script reaches the server's shell unchanged."""
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv))\n"
                        "sys.exit(1)\n")
    fake_ssh.chmod(0o755)
    (tmp_path / "local").mkdir()
    command = guards.guard_command("/srv/home of u", ("Documents", "it's"), "0" * 32,
                                   expect_marker="d" * 32)

    subprocess.run(["unison", str(tmp_path / "local"), "ssh://host//srv", "-batch",
                    "-sshcmd", str(fake_ssh), "-servercmd", profile.escape_sshargs([command])],
                   env={**os.environ, "UNISON": str(tmp_path / "unison")},
                   capture_output=True, timeout=60, check=False)

    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[-3:] == [command, "-server", "__new-rpc-mode"]


@pytest.mark.parametrize(("lines", "trouble"), [
    (["Fatal error: Lost connection with the server"], output.Trouble.CONNECTION_LOST),
    (["Fatal error: Received unexpected header from the server:",
      ' expected "Unison 2.48\\n" but received "Unison 2.40\\n",'],
     output.Trouble.VERSION_MISMATCH),
    (["Fatal error during unmarshaling (input_value: ill-formed message), possibly because"],
     output.Trouble.VERSION_MISMATCH),
    (["Fatal error: Warning: inconsistent state.  The archive file is missing on some hosts"],
     output.Trouble.ARCHIVES_DISAGREE),
    (["Fatal error: Warning: the archives are locked.  If no other instance of unison"],
     output.Trouble.ARCHIVES_LOCKED),
    (["Fatal error: Path /h/.roaming-homes-root is designated as a mountpoint, but points to "
      "nothing on host vm"], output.Trouble.MARKER_VANISHED),
    (["Failed [big.iso]: Error in writing to /s/.unison.big.iso.tmp: No space left on device"],
     output.Trouble.DISK_FULL),
])
def test_troubles_are_read_from_unisons_own_wording(lines: list[str],
                                                     trouble: output.Trouble) -> None:
    assert output.parse_output(lines).troubles == {trouble}


def test_a_name_that_reads_like_a_trouble_is_none() -> None:
    lines = ["Failed [No space left on device]: Permission denied",
             "Failed [Lost connection with the server]: Permission denied",
             "  failed: Lost connection with the server"]
    assert output.parse_output(lines).troubles == set()


def test_a_question_printed_just_after_a_quiet_spell_is_read_before_it_is_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """unison can print its question after our select found nothing and before we look at
    whether it waits for input (seen over a slow link): the question must be read, not the
    stale output before it answered (with "q")."""
    go, answered = tmp_path / "go", tmp_path / "answered"
    fake = tmp_path / "unison"
    fake.write_text(
        "#!/usr/bin/env python3\nimport os, sys, time\n"
        "print('Reconciling changes', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.01)\n"
        "sys.stdout.write('changed  ---->            x  [f] '); sys.stdout.flush()\n"
        f"open({str(answered)!r}, 'w').write(sys.stdin.readline())\n")
    fake.chmod(0o755)
    real = dialogue.waits_for_input

    def prompt_arrives_now(pid: int) -> bool | None:
        go.touch()  # unison prints its question right now, after our select timed out
        while not real(pid):
            time.sleep(0.01)
        return True

    monkeypatch.setattr(dialogue, "waits_for_input", prompt_arrives_now)
    run = dialogue.run([str(fake)], dict(os.environ), lambda line: None, lambda items: True)
    assert run.returncode == 0 and run.declined is None
    assert answered.read_text() == "l\n"  # the item question, answered as one: list the plan


def test_output_that_ends_like_a_question_is_not_answered_until_unison_reads(
        tmp_path: Path) -> None:
    """Output that ends like a question is looked at within milliseconds (`dialogue.ASKING`):
    while unison goes on working instead of reading, nothing may be sent to it."""
    early, answered = tmp_path / "early", tmp_path / "answered"
    fake = tmp_path / "unison"
    fake.write_text(
        "#!/usr/bin/env python3\nimport select, sys, time\n"
        "sys.stdout.write('new file ---->            looks like a question  [f] ')\n"
        "sys.stdout.flush(); time.sleep(0.5)  # busy, not reading\n"
        f"if select.select([sys.stdin], [], [], 0)[0]: open({str(early)!r}, 'w').write('x')\n"
        "sys.stdout.write('\\nchanged  ---->            x  [f] '); sys.stdout.flush()\n"
        f"open({str(answered)!r}, 'w').write(sys.stdin.readline())\n")
    fake.chmod(0o755)
    run = dialogue.run([str(fake)], dict(os.environ), lambda line: None, lambda items: True)
    assert run.returncode == 0 and run.declined is None
    assert not early.exists()
    assert answered.read_text() == "l\n"


@pytest.mark.parametrize(("warning", "answer"), [
    # a pass cut off while it saved its archives: unison found the new ones on every host
    (["Warning: unison may have terminated abnormally last time.", output.NEW_ARCHIVES], "\n"),
    # ... or on some hosts only: it removes them and goes on with the old ones everywhere
    (["Warning: unison may have terminated abnormally last time.",
      output.NEW_ARCHIVES_IGNORED], "\n"),
    # any other warning that asks is declined: nothing propagates
    (["Warning: something else entirely."], "q\n"),
    ([output.NEW_ARCHIVES, "and then another line"], "q\n"),
])
def test_only_the_new_archives_warning_is_answered_with_return(
        tmp_path: Path, warning: list[str], answer: str) -> None:
    """After a pass cut off as it saved its archives (a front-end that went away), unison says
    it uses the new archives it found on every host and asks for return: going on is what it
    decided. Declining it ("q") left the daemon failed until its next interval (an hour)."""
    answered = tmp_path / "answered"
    fake = tmp_path / "unison"
    fake.write_text(
        "#!/usr/bin/env python3\nimport sys\n"
        + "".join(f"print({line!r}, flush=True)\n" for line in warning)
        + "sys.stdout.write('Press return to continue.[<spc>] '); sys.stdout.flush()\n"
        f"got = sys.stdin.readline()\nopen({str(answered)!r}, 'w').write(got)\n"
        "sys.exit(0 if got == '\\n' else 3)\n")
    fake.chmod(0o755)
    run = dialogue.run([str(fake)], dict(os.environ), lambda line: None, lambda items: True)
    assert answered.read_text() == answer
    assert (run.returncode, run.declined) == ((0, None) if answer == "\n"
                                              else (3, output.Question.CONTINUE))
