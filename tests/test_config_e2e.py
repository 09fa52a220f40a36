"""The configuration rules through the real CLI: hostile values exit 78 with one line naming
the file and key, and the per-user file cannot weaken what the administrator set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.homes import Setup


def _one_line_config_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command that exited 78 (no traceback)."""
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_support_email_with_mailto_headers_exits_78_and_runs_nothing(local_user: Setup) -> None:
    local_user.configure(notify={"enabled": True,
                                 "support_email": "help@example.org?attach=/etc/shadow"})
    (local_user.home / "Documents").mkdir()
    (local_user.home / "Documents" / "a").write_text("a")

    for command in (["sync"], ["config", "show"], ["daemon"]):
        line = _one_line_config_error(local_user.run(*command, timeout=30))
        assert line.startswith(f"roaming-homes: error: {local_user.config_path}:")
        assert "notify.support_email" in line and "is not one plain e-mail address" in line
    assert not (local_user.server_home / "Documents").exists()
    assert not (local_user.state_home / "roaming-homes").exists()


@pytest.mark.parametrize("field", ["{message:>1500000000}", "{paths.__class__}", "{count[0]}",
                                   "{message!r}"])
def test_a_hostile_message_format_exits_78_and_runs_nothing(local_user: Setup, tmp_path: Path,
                                                            field: str) -> None:
    messages = tmp_path / "messages.toml"
    messages.write_text(f'[failing]\nbody = "Failed: {field}"\n')
    local_user.configure(notify={"enabled": True, "messages": str(messages)})
    (local_user.home / "Documents").mkdir()
    (local_user.home / "Documents" / "a").write_text("a")

    for command in (["sync"], ["daemon"]):
        line = _one_line_config_error(local_user.run(*command, timeout=30))
        assert line.startswith(f"roaming-homes: error: {messages}: message failing.body: "
                               f"placeholder {field} is not allowed")
    assert not (local_user.server_home / "Documents").exists()


# --- the per-user file cannot weaken the administrator's settings ---

def populate(user: Setup, count: int = 30) -> Path:
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    for index in range(count):
        (docs / f"file{index:03}.txt").write_text(f"file {index}\n")
    return docs


def test_a_user_file_raising_max_delete_does_not_let_a_mass_deletion_through(
        user: Setup) -> None:
    docs = populate(user)
    assert user.sync().returncode == 0
    user_config = user.configure_user("[sync]\nmax_delete = 100\n")
    for path in sorted(docs.iterdir())[:20]:  # 20 of 30 = 67 % > the system's 50 %
        path.unlink()

    result = user.sync()

    assert result.returncode == 4, result.stderr
    warning = (f"roaming-homes: {user_config}:2: sync.max_delete = 100 is less strict than "
               "the system's 50 (the per-user file may only lower it); ignored, the system "
               "value stays")
    assert result.stderr.splitlines()[0] == warning
    assert "20 of 30 files were deleted on this computer" in result.stderr
    assert len(list((user.server_home / "Documents").iterdir())) == 30
    shown = user.run("config", "show")
    assert "max_delete = 50  # default" in shown.stdout
    assert shown.stderr.strip() == warning


def test_a_user_file_emptying_excluded_users_does_not_include_an_excluded_user(
        user: Setup) -> None:
    assert user.sshd is not None
    user.configure(sync={"excluded_users": ["root", user.sshd.user]})
    user_config = user.configure_user("[sync]\nexcluded_users = []\n")
    populate(user, 3)

    result = user.sync()

    assert result.returncode == 0, result.stderr
    assert "excluded" in result.stdout
    assert f"{user_config}:2: sync.excluded_users = [] is less strict" in result.stderr
    assert "the system value stays" in result.stderr
    assert not (user.server_home / "Documents").exists()
    assert not (user.state_home / "roaming-homes" / "state.json").exists()


def test_a_user_file_cannot_set_the_unison_program(user: Setup, tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    trojan = tmp_path / "not-unison"
    trojan.write_text(f"#!/bin/sh\ntouch {planted}\nexec unison \"$@\"\n")
    trojan.chmod(0o755)
    user_config = user.configure_user(f'[sync]\nunison = "{trojan}"\n')
    populate(user, 3)

    result = user.sync()

    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"roaming-homes: {user_config}:2: sync.unison is system-only, the "
                             "per-user file cannot set it; ignored, the system value stays\n")
    assert not planted.exists()
    assert len(list((user.server_home / "Documents").iterdir())) == 3


def test_a_stricter_user_file_applies(user: Setup) -> None:
    docs = populate(user)
    assert user.sync().returncode == 0
    user.configure_user("[sync]\nmax_delete = 10\n")
    for path in sorted(docs.iterdir())[:12]:  # 40 %: under the system's 50 %, over the user's 10
        path.unlink()

    result = user.sync()

    assert result.returncode == 4, result.stderr
    assert "12 of 30 files were deleted" in result.stderr
    assert "less strict" not in result.stderr
