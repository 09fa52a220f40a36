"""The command line itself: help, version, usage errors, status before any sync."""

from __future__ import annotations

import pytest

from tests.support.homes import Setup


@pytest.mark.parametrize("command", [[], ["sync"], ["status"], ["config"], ["config", "show"],
                                     ["config", "sample"], ["config", "import-legacy"],
                                     ["check"], ["conflicts"], ["resolve"]])
def test_every_command_has_help(local_user: Setup, command: list[str]) -> None:
    result = local_user.run(*command, "--help")
    assert result.returncode == 0
    assert "usage: roaming-homes" in result.stdout


def test_version(local_user: Setup) -> None:
    result = local_user.run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("roaming-homes 0.")


@pytest.mark.parametrize("args", [["bogus"], ["sync", "--nope"], []])
def test_usage_errors_exit_64(local_user: Setup, args: list[str]) -> None:
    result = local_user.run(*args)
    assert result.returncode == 64
    assert "error:" in result.stderr


def test_status_before_any_sync(local_user: Setup) -> None:
    status = local_user.status()
    assert status["result"] == "never-synced"
    assert status["running"] is False
    human = local_user.run("status")
    assert "no sync has run yet" in human.stdout


def test_config_show_names_sources(local_user: Setup) -> None:
    result = local_user.run("config", "show")
    assert result.returncode == 0
    assert f'root = "{local_user.server_home}"  # {local_user.config_path}' in result.stdout
    assert "interval = 60  # default" in result.stdout
