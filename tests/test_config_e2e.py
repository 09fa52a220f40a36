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
