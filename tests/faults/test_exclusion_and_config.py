"""Exactly one sync at a time, none while the user resolves by hand (fault scenario 8), and
hostile configuration values that stop everything before anything runs (scenario 9)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from roaming_homes.actions.conflicts import resolver_argv
from tests.support.homes import CLI, Setup, to_toml
from tests.support.waiting import wait_for


def _recording_unison(tmp_path: Path, hold_interactive: bool = False) -> Path:
    """A unison that logs each call, holds the user's interactive (resolve) call until
    `release` exists, and otherwise runs the real unison after a pause (as its child: a
    wrapper that does not exec)."""
    script = tmp_path / "unison-wrapper"
    calls, release = tmp_path / "calls", tmp_path / "release"
    hold = (f'case " $* " in *" -ui text "*) ;; *) touch {tmp_path}/resolving; '
            f'while [ ! -e {release} ]; do sleep 0.05; done; exit 0;; esac\n'
            if hold_interactive else "")
    # One line a call: the line breaks within arguments (the ignore rule has some) as spaces.
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" | tr "\\n\\r" "  " >> {calls}\n'
                      f'echo >> {calls}\n{hold}sleep 1\nunison "$@"\n')
    script.chmod(0o755)
    return script


def _start(user: Setup, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], env=user.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_two_syncs_started_together_exactly_one_runs(user: Setup, tmp_path: Path) -> None:
    wrapper = _recording_unison(tmp_path)
    user.configure(sync={"paths": ["Documents"], "excluded_users": [],
                         "unison": str(wrapper)})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f").write_text("x")

    both = [_start(user, "sync"), _start(user, "sync")]
    codes = sorted(p.wait(timeout=60) for p in both)

    assert codes == [0, 75]
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
    assert (user.server_home / "Documents" / "f").read_text() == "x"


def test_sync_during_resolve_skips_with_75_and_resolve_ends_with_a_pass(
        user: Setup, tmp_path: Path) -> None:
    wrapper = _recording_unison(tmp_path, hold_interactive=True)
    user.configure(sync={"paths": ["Documents"], "excluded_users": [],
                         "unison": str(wrapper)})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "f").write_text("x")
    resolve = _start(user, "resolve")
    wait_for((tmp_path / "resolving").exists, 30, "resolve to start")

    during = user.sync()

    assert during.returncode == 75
    assert "another resolve of this user is running" in during.stderr
    assert user.status()["running"] is True
    (tmp_path / "release").touch()
    _out, err = resolve.communicate(timeout=60)
    assert resolve.returncode == 0, err
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].split()[0] == "roaming-homes" and "-ui" not in calls[0].split()
    assert "-ui" in calls[1].split()  # the guarded pass that records the outcome
    assert (user.server_home / "Documents" / "f").read_text() == "x"


def test_resolver_is_the_gui_with_a_display_else_the_text_ui() -> None:
    def which(name: str) -> str | None:
        return f"/usr/bin/{name}"

    assert resolver_argv("unison", {"DISPLAY": ":0"}, which) == [
        "/usr/bin/unison-gtk", "roaming-homes"]
    assert resolver_argv("unison", {"WAYLAND_DISPLAY": "wayland-0"}, which)[0].endswith("gtk")
    text = resolver_argv("/opt/unison", {}, which)
    assert text[:2] == ["/opt/unison", "roaming-homes"] and "-batch" not in text
    assert resolver_argv("unison", {"DISPLAY": ":0"}, lambda _name: None)[0] == "unison"


HOSTILE = [
    ("sync", "paths", ["../../etc"]),
    ("sync", "paths", ["Documents\nroot = /"]),
    ("sync", "paths", ["a=b"]),
    ("sync", "paths", ["$(touch /tmp/pwned)"]),
    ("sync", "paths", ["`id`"]),
    ("sync", "paths", ["a;b"]),
    ("sync", "paths", ["a|b"]),
    ("sync", "ignore_paths", ["x>y"]),
    ("sync", "ignore_paths", ["x<y"]),
    ("sync", "unison", "unison; rm -rf ~"),
    ("server", "home", "/home/$(id)"),
    ("server", "home", "/srv/../etc"),
    ("server", "host", "-oProxyCommand=touch /tmp/pwned"),
    ("server", "user", "root\nx"),
]


@pytest.mark.parametrize(("section", "key", "value"), HOSTILE)
def test_hostile_config_value_exits_78_and_runs_nothing(user: Setup, tmp_path: Path,
                                                        section: str, key: str,
                                                        value: object) -> None:
    spies = tmp_path / "bin"
    spies.mkdir()
    for program in ("ssh", "unison", "sh"):
        (spies / program).write_text(f"#!/bin/bash\ntouch {tmp_path}/ran-{program}\n")
        (spies / program).chmod(0o755)
    config = dict(user.config)
    config[section] = {**config[section], key: value}
    user.config_path.write_text(to_toml(config))

    result = user.sync(env={"PATH": f"{spies}:{user.env['PATH']}"})

    assert result.returncode == 78, result.stderr
    assert f"{section}.{key}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (user.state_home / "roaming-homes").exists()
    assert not list(tmp_path.glob("ran-*"))
