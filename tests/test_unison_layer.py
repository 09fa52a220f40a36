"""The pure parts of the unison layer: profile, arguments, output parsing, ssh arguments."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from roaming_homes import guards, transport, unison
from roaming_homes.paths import Locations, xdg_user_dirs

PLAN = unison.Plan(local_root="/home/u", server_root="ssh://u@h:22//home/u",
                   paths=("Documents", "My Music"), ignore_paths=(".cache",),
                   ignore_names=("*~",), prefer="newer", sshargs=("-i", "/k ey"))


def test_profile_lists_roots_paths_ignores_and_safety() -> None:
    text = unison.build_profile(PLAN)
    lines = text.splitlines()
    assert "root = /home/u" in lines and "root = ssh://u@h:22//home/u" in lines
    assert "path = My Music" in lines
    assert "ignore = Path .cache" in lines and "ignore = Name *~" in lines
    assert "confirmbigdel = true" in lines
    assert "prefer = newer" in lines and "copyonconflict = true" in lines
    assert "sshargs = -i /k\\ ey" in lines


@pytest.mark.parametrize(("prefer", "expected"), [
    ("local", "prefer = /home/u"), ("server", "prefer = ssh://u@h:22//home/u")])
def test_prefer_a_side_names_its_root(prefer: str, expected: str) -> None:
    from dataclasses import replace

    assert expected in unison.build_profile(replace(PLAN, prefer=prefer)).splitlines()


def test_profile_keeps_backups_of_everything_it_overwrites_or_deletes() -> None:
    from dataclasses import replace

    lines = unison.build_profile(replace(PLAN, backups=5)).splitlines()
    assert {"backup = Name *", "backuplocation = central", "maxbackups = 5"} <= set(lines)
    assert not any(line.startswith("backupdir") for line in lines)  # see unison.environment


def test_prefer_none_sets_no_preference() -> None:
    from dataclasses import replace

    text = unison.build_profile(replace(PLAN, prefer="none"))
    assert "prefer" not in text and "copyonconflict" not in text


@pytest.mark.parametrize("bad", ["a\nroot = /", "x\r", " lead", "tab\t"])
def test_profile_rejects_values_that_could_inject_a_preference(bad: str) -> None:
    from dataclasses import replace

    with pytest.raises(unison.ProfileValueError):
        unison.build_profile(replace(PLAN, paths=(bad,)))


def test_sshargs_escape_spaces_backslashes_and_quotes() -> None:
    assert unison.escape_sshargs(["-o", "A=b c", "x\\y", '"q"']) == \
        '-o A=b\\ c x\\\\y \\"q\\"'


def test_argv_is_batch_and_adds_ignorearchives_on_first_run() -> None:
    assert unison.build_argv("unison", False) == [
        "unison", "roaming-homes", "-batch", "-color", "false", "-dumbtty"]
    assert unison.build_argv("/opt/u", True)[-1] == "-ignorearchives"


def test_parse_summary_with_conflicts() -> None:
    lines = [
        "changed  <-?-> changed    docs/f  ",
        "[CONFLICT] Skipping docs/f",
        "  contents changed on both sides",
        "Synchronization complete at 14:09:50  (2 items transferred, 1 skipped, 0 failed)",
        "  skipped: docs/f (contents changed on both sides)",
        "  skipped: docs/odd (name) (properties changed on both sides)",
    ]
    summary = unison.parse_output(lines)
    assert (summary.transferred, summary.skipped, summary.failed) == (2, 1, 0)
    assert summary.complete
    assert summary.conflicts == ["docs/f", "docs/odd (name)"]


def test_parse_partial_and_failures() -> None:
    lines = ["Synchronization incomplete at 01:02:03  (1 item transferred, "
             "2 partially transferred, 0 skipped, 3 failed)",
             "  failed: a/b", "  partially transferred: c"]
    summary = unison.parse_output(lines)
    assert (summary.transferred, summary.partial, summary.failed) == (1, 2, 3)
    assert not summary.complete
    assert summary.failed_paths == ["a/b"]


def test_parse_nothing_to_do_and_fatal() -> None:
    assert unison.parse_output(
        ["Nothing to do: replicas have not changed since last sync."]).nothing_to_do
    fatal = unison.parse_output(["Fatal error: Lost connection with the server"]).fatal
    assert fatal == "Lost connection with the server"
    split = unison.parse_output(["Fatal error:", "Warning: the archives are locked."]).fatal
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


# --- watch mode -------------------------------------------------------------------------------

def test_fsmonitor_is_found_beside_the_real_unison_before_path(tmp_path: Path) -> None:
    real, linked, on_path = tmp_path / "real", tmp_path / "bin", tmp_path / "path"
    for d in (real, linked, on_path):
        d.mkdir()
    (real / "unison-2.52").write_text("")
    (real / "unison-2.52").chmod(0o755)
    (linked / "unison").symlink_to(real / "unison-2.52")
    for d in (real, on_path):
        (d / "unison-fsmonitor").write_text("")
        (d / "unison-fsmonitor").chmod(0o755)
    found = unison.find_fsmonitor("unison", f"{linked}:{on_path}")
    assert found == str(real / "unison-fsmonitor")
    (real / "unison-fsmonitor").unlink()
    assert unison.find_fsmonitor("unison", f"{linked}:{on_path}") == str(
        on_path / "unison-fsmonitor")
    (on_path / "unison-fsmonitor").chmod(0o644)  # not executable: unison could not run it
    assert unison.find_fsmonitor("unison", f"{linked}:{on_path}") is None


def test_watch_cycle_exit_code_follows_unison() -> None:
    complete = "Synchronization complete at 10:00:00  (2 items transferred, 0 skipped, 0 failed)"
    skipped = "Synchronization complete at 10:00:00  (1 item transferred, 1 skipped, 0 failed)"
    failed = "Synchronization incomplete at 10:00:00  (0 items transferred, 1 skipped, 1 failed)"
    codes = [unison.cycle_returncode(unison.parse_output([line]))
             for line in (complete, skipped, failed)]
    assert codes == [0, 1, 2]
    assert unison.ends_cycle(complete)
    assert unison.ends_cycle("Nothing to do: replicas have not changed since last sync.")
    assert not unison.ends_cycle("Looking for changes")


@pytest.mark.parametrize(("fatal", "about_monitor"), [
    ("Fatal error: No file monitoring helper program found", True),
    ("Fatal error: Filesystem watcher error: cannot watch /h/d: the inotify watch limit", True),
    ("Fatal error: Filesystem watcher died unexpectively", True),
    ("Fatal error: Lost connection with the server", False),
])
def test_monitor_problems_are_told_apart_from_sync_failures(fatal: str,
                                                            about_monitor: bool) -> None:
    summary = unison.parse_output(["Looking for changes", fatal])
    assert (unison.monitor_problem(summary) is not None) is about_monitor


def test_unison_hands_the_server_guard_to_ssh_word_for_word(tmp_path: Path) -> None:
    """unison splits `servercmd` into words (backslash escapes, as `sshargs`) before ssh joins
    them again: escaped, the guard's script reaches the server's shell unchanged."""
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv))\n"
                        "sys.exit(1)\n")
    fake_ssh.chmod(0o755)
    (tmp_path / "local").mkdir()
    probe = guards.probe_script("/srv/home of u", ("Documents", "it's"), ("a b/c",), ("*~",),
                                expect_marker="d" * 32, min_files=3)
    command = guards.guard_command(probe)

    subprocess.run(["unison", str(tmp_path / "local"), "ssh://host//srv", "-batch",
                    "-sshcmd", str(fake_ssh), "-servercmd", unison.escape_sshargs([command])],
                   env={**os.environ, "UNISON": str(tmp_path / "unison")},
                   capture_output=True, timeout=60, check=False)

    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[-3:] == [command, "-server", "__new-rpc-mode"]
