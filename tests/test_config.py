"""Configuration: defaults, sources, expansion, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from roaming_homes import config
from roaming_homes.config.sample import toml_value
from roaming_homes.errors import ConfigError
from roaming_homes.paths import SYSTEM_CONFIG, Locations
from tests.support.homes import Setup


def _locations(tmp_path: Path, system: Path) -> Locations:
    return Locations.from_env({"HOME": str(tmp_path / "home"),
                               "ROAMING_HOMES_CONFIG": str(system),
                               "XDG_CONFIG_HOME": str(tmp_path / "cfg")})


def _load(tmp_path: Path, text: str, user_text: str | None = None) -> config.Config:
    system = tmp_path / "system.toml"
    system.write_text(text)
    locations = _locations(tmp_path, system)
    if user_text is not None:
        locations.user_config.parent.mkdir(parents=True)
        locations.user_config.write_text(user_text)
    return config.load(locations)


def test_defaults_and_expansion(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[server]\nhost = "homes.example.org"\n')
    user = Locations.from_env({"HOME": "/x"}).user
    assert cfg["server"]["home"] == f"/home/{user}"
    assert cfg["server"]["user"] == user
    assert cfg["sync"]["interval"] == 60
    assert cfg["sync"]["excluded_users"] == ["root"]
    assert cfg.sources["server.host"] == str(tmp_path / "system.toml")
    assert cfg.sources["sync.interval"] == "default"


def test_percent_h_is_the_local_home(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[server]\nroot = "/srv/%u/x%%"\n[sync]\nunison = "%h/bin/unison"\n')
    assert cfg["server"]["root"].startswith("/srv/") and cfg["server"]["root"].endswith("/x%")


def test_user_file_narrows_sync_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[server]\nhost = "h"\n', '[sync]\npaths = ["Documents"]\n')
    assert cfg["sync"]["paths"] == ["Documents"]
    assert cfg.sources["sync.paths"].endswith("config.toml")


# --- the per-user file: user-settable, system-only and stricter-only keys ---

SYSTEM = '[server]\nhost = "h"\n'


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "roaming_homes.config" and r.levelno == logging.WARNING]


def test_the_decision_for_every_key() -> None:
    """The table the README and the sample explain; a new key is system-only by default."""
    scopes = {f"{section}.{key}": spec.scope.name for section, keys in config.SCHEMA.items()
              for key, spec in keys.items()}
    assert {k: v for k, v in scopes.items() if v != "SYSTEM"} == {
        "sync.interval": "HIGHER", "sync.logout_timeout": "LOWER",
        "sync.paths": "USER", "sync.first_paths": "USER", "sync.prefer": "USER",
        "sync.ignore_paths": "MORE", "sync.ignore_names": "MORE",
        "sync.excluded_users": "MORE", "sync.watch": "LOWER",
        "sync.rescan_interval": "HIGHER", "sync.max_delete": "LOWER",
        "sync.max_change": "LOWER", "sync.guard_window": "HIGHER", "sync.backups": "HIGHER",
        "sync.backup_days": "HIGHER",
        "client.name": "USER", "notify.tray": "USER"}
    assert all(scopes[f"{section}.{key}"] == "SYSTEM"
               for section in ("server", "notify") for key in config.SCHEMA[section]
               if f"{section}.{key}" != "notify.tray")
    assert scopes["sync.unison"] == "SYSTEM"
    assert config.Key("str", "", "new").scope is config.Scope.SYSTEM


@pytest.mark.parametrize(("section", "key", "value"), [
    ("server", "host", '"evil.example.org"'),
    ("server", "root", '"/tmp/elsewhere"'),
    ("server", "home", '"/"'),
    ("server", "ssh_options", '["-o", "ProxyCommand=sh -c x"]'),
    ("sync", "unison", '"/tmp/not-unison"'),
    ("sync", "unison", '"unison -debug all"'),  # invalid as well: ignored all the same
    ("notify", "enabled", "false"),
    ("notify", "support_email", '"me@example.org"'),
    ("notify", "messages", '"/tmp/mine.toml"'),
    ("notify", "resolve_command", '["sh", "-c", "x"]'),
])
def test_a_system_only_key_in_the_user_file_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, section: str, key: str,
        value: str) -> None:
    system_only = _load(tmp_path, SYSTEM)
    caplog.clear()
    cfg = _load(tmp_path, SYSTEM, f'# mine\n[{section}]\n{key} = {value}\n')
    assert cfg[section][key] == system_only[section][key]
    assert cfg.sources[f"{section}.{key}"] == system_only.sources[f"{section}.{key}"]
    assert _warnings(caplog) == [
        f"{tmp_path / 'cfg/roaming-homes/config.toml'}:3: {section}.{key} is system-only, the "
        "per-user file cannot set it; ignored, the system value stays"]


@pytest.mark.parametrize(("key", "system", "user", "may"), [
    ("max_delete", 50, 100, "lower it"),
    ("max_delete", 20, 30, "lower it"),  # compared with the system file's value, not the default
    ("max_change", 50, 100, "lower it"),
    ("logout_timeout", 30, 600, "lower it"),
    ("interval", 60, 1, "raise it"),
    ("rescan_interval", 3600, 60, "raise it"),
    ("guard_window", 600, 0, "raise it"),
    ("backups", 3, 1, "raise it"),
    ("watch", False, True, "turn it off"),
    ("excluded_users", ["root", "alice"], [], "add entries"),
    ("excluded_users", ["root", "alice"], ["root", "bob"], "add entries"),
    ("ignore_paths", [".cache", "Videos"], [".cache"], "add entries"),
    ("ignore_names", ["*~", ".*~"], ["*.iso"], "add entries"),
])
def test_a_weaker_value_in_the_user_file_is_ignored_and_the_system_value_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, system: Any, user: Any,
        may: str) -> None:
    cfg = _load(tmp_path, f"{SYSTEM}[sync]\n{key} = {toml_value(system)}\n",
                f"[sync]\n{key} = {toml_value(user)}\n")
    assert cfg["sync"][key] == system
    assert cfg.sources[f"sync.{key}"] == str(tmp_path / "system.toml")
    assert _warnings(caplog) == [
        f"{tmp_path / 'cfg/roaming-homes/config.toml'}:2: sync.{key} = "
        f"{json.dumps(user)} is less strict than the system's {json.dumps(system)} (the "
        f"per-user file may only {may}); ignored, the system value stays"]


@pytest.mark.parametrize(("key", "system", "user"), [
    ("max_delete", 50, 10),
    ("max_delete", 50, 50),  # as strict is strict enough
    ("max_change", 50, 0),
    ("logout_timeout", 30, 5),
    ("interval", 60, 600),
    ("rescan_interval", 3600, 86400),
    ("guard_window", 600, 3600),
    ("backups", 3, 10),
    ("watch", True, False),
    ("excluded_users", ["root"], ["root", "guest"]),
    ("ignore_paths", [".cache"], ["Videos", ".cache"]),
    ("ignore_names", ["*~", ".*~"], [".*~", "*~"]),
    ("paths", [], ["Documents"]),
    ("first_paths", ["Documents"], []),
    ("prefer", "newer", "none"),
])
def test_a_stricter_or_user_settable_value_in_the_user_file_applies(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, system: Any,
        user: Any) -> None:
    cfg = _load(tmp_path, f"{SYSTEM}[sync]\n{key} = {toml_value(system)}\n",
                f"[sync]\n{key} = {toml_value(user)}\n")
    assert cfg["sync"][key] == user
    assert cfg.sources[f"sync.{key}"].endswith("config.toml")
    assert _warnings(caplog) == []


def test_without_a_system_value_the_default_is_what_the_user_file_may_not_weaken(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _load(tmp_path, SYSTEM, "[sync]\nmax_delete = 100\nmax_change = 20\n")
    assert (cfg["sync"]["max_delete"], cfg["sync"]["max_change"]) == (50, 20)
    assert cfg.sources["sync.max_delete"] == "default"
    assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize(("user_text", "message"), [
    ("[sync]\nmax_delete = 500\n", r"config.toml:2: sync.max_delete: 500 must be between"),
    ('[sync]\nexcluded_users = ["a b"]\n', r"config.toml:2: sync.excluded_users: 'a b'"),
    ("[sync]\nnope = 1\n", r"config.toml:2: unknown key sync.nope"),
    ("[elsewhere]\nx = 1\n", r"config.toml:1: unknown section \[elsewhere\]"),
])
def test_an_invalid_user_file_is_still_an_error(tmp_path: Path, user_text: str,
                                                message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, SYSTEM, user_text)


BAD = [
    ('[server]\nhost = "h"\nbogus = 1\n', r"system.toml:3: unknown key server.bogus"),
    ('[server]\nhost = "h"\n[extra]\n', r"unknown section \[extra\]"),
    ('[server]\nhost = "h"\nport = "22"\n', r"system.toml:3: server.port must be an integer"),
    ('[server]\nhost = "h"\nport = 70000\n', r"server.port: 70000 must be between"),
    ('[server]\nhost = "h"\n[sync]\nwatch = "yes"\n', r"sync.watch must be true or false"),
    ('[server]\nhost = "h"\n[sync]\nrescan_interval = 5\n', r"rescan_interval: 5 must be between"),
    ("[server]\nport = 22\n", r"server.host is required"),
    ('[server]\nhost = "h"\nroot = "/srv"\n', r"exclude each other"),
    ('[server]\nhost = "h"\n[sync]\npaths = ["../etc"]\n', r"sync.paths: '../etc' must not"),
    ('[server]\nhost = "h"\n[sync]\npaths = ["/etc"]\n', r"sync.paths: '/etc' must be relative"),
    ('[server]\nhost = "h"\n[sync]\npaths = ["a\\nb"]\n', r"sync.paths contains a newline"),
    ('[server]\nhost = "h"\n[sync]\npaths = ["a=b"]\n', r"sync.paths: 'a=b' contains"),
    ('[server]\nhost = "h"\n[sync]\npaths = ["$(rm -rf ~)"]\n', r"sync.paths: .* contains"),
    ('[server]\nhost = "h"\n[sync]\nignore_paths = [""]\n', r"sync.ignore_paths: must not"),
    ('[server]\nhost = "h"\n[sync]\nignore_names = ["a/b"]\n', r"sync.ignore_names: .*'/'"),
    ('[server]\nhost = "h"\n[sync]\nprefer = "mine"\n', r"sync.prefer: 'mine' must be one of"),
    ('[server]\nhost = "h"\n[sync]\nunison = "unison -debug all"\n', r"sync.unison: .*program"),
    ('[server]\nhost = "-oProxyCommand=x"\n', r"server.host: .* not a valid host"),
    ('[server]\nhost = "h"\nhome = "relative"\n', r"server.home: 'relative' must be an absolute"),
    ('[server]\nhost = "h"\nhome = "/home/x\\u0000"\n', r"server.home contains a newline"),
    ('[server]\nhost = "h"\nuser = "a b"\n', r"server.user: 'a b' is not a valid user"),
    ('[server]\nhost = "h"\nssh_options = "-C"\n', r"ssh_options must be a list of strings"),
    ('[server]\nhost = "h"\nssh_options = ["-o", "X=\\n"]\n', r"ssh_options contains a newl"),
    ('[server]\nhost = "h"\nconnect_timeout = 0\n', r"server.connect_timeout: 0 must be"),
    ('[notify]\nsupport_email = "nobody"\n[server]\nhost = "h"\n', r"notify.support_email"),
    ("[server\nhost = 1\n", r"system.toml: invalid TOML: .*line 1"),
    ('[server]\nhost = ["a", ""]\n', r"system.toml:2: server.host: '' is not a valid host"),
    ('[server]\nhost = ["a", 2]\n', r"server.host must be a host name or a list of host names"),
    ('[server]\nhost = "h"\nhost_map = "map.toml"\n', r"server.host_map: .* absolute path"),
    ('server = "h"\n', r"server must be a table"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert "\n" not in info.value.message
    assert info.value.code == 78


def test_missing_file_is_a_config_error_saying_how_to_create_it(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="configuration file not found") as info:
        config.load(_locations(tmp_path, absent))
    assert info.value.message == (f"{absent}: configuration file not found; create it with "
                                  f"`roaming-homes config sample > {absent}`, then set "
                                  "server.host")


def test_missing_system_file_names_the_commands_that_create_it(tmp_path: Path) -> None:
    error = config.MissingConfigError(SYSTEM_CONFIG)
    assert error.code == 78 and "\n" not in error.message
    assert error.message.startswith(f"{SYSTEM_CONFIG}: configuration file not found; ")
    assert error.create == ("sudo mkdir -p /etc/roaming-homes && roaming-homes config sample | "
                            "sudo tee /etc/roaming-homes/roaming-homes.toml")


def test_missing_file_from_the_cli_is_one_line_exit_78(local_user: Setup) -> None:
    local_user.config_path.unlink()
    result = local_user.run("status")
    assert result.returncode == 0  # status shows what it can without a configuration
    for command in (["sync"], ["config", "show"]):
        result = local_user.run(*command)
        assert result.returncode == 78, command
        assert result.stderr == (f"roaming-homes: error: {local_user.config_path}: configuration "
                                 "file not found; create it with `roaming-homes config sample > "
                                 f"{local_user.config_path}`, then set server.host\n")


def test_range_bounds_are_written_as_people_write_them() -> None:
    assert str(config.Range(60, 365 * 86400)) == "60 to 31536000"
    assert str(config.Range(0.1, 300)) == "0.1 to 300"
    assert config.Range(1, 65535)(70000) == "70000 must be between 1 and 65535"
    assert config.Range(1, 65535)(22) is None


@pytest.mark.parametrize(("text", "key"), [
    ('[server]\nhost = "h"\n[sync]\npaths = ["../x"]\n', "sync.paths"),
    ('[server]\nhost = "h"\nport = "x"\n', "server.port"),
    ('[server]\nhost = "h"\n[sync]\nnope = 1\n', "sync.nope"),
    ('[server]\nhost = "h"\n[sync]\nignore_names = ["x\\ny"]\n', "sync.ignore_names"),
    ("not toml at all", "invalid TOML"),
])
def test_cli_exits_78_naming_the_key_and_runs_nothing(local_user: Setup, text: str,
                                                        key: str) -> None:
    local_user.config_path.write_text(text)
    for command in (["sync"], ["config", "show"]):
        result = local_user.run(*command)
        assert result.returncode == 78
        assert key in result.stderr
        assert str(local_user.config_path) in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (local_user.state_home / "roaming-homes").exists()


# --- notify.support_email: one plain address, handed to xdg-email as the recipient ---

@pytest.mark.parametrize(("address", "why"), [
    ("help@example.org?attach=/etc/shadow", "'?' and '&' add mail headers"),
    ("help@example.org?cc=boss@example.org", "'?' and '&' add mail headers"),
    ("help@example.org?body=hi", "'?' and '&' add mail headers"),
    ("help@example.org&attach=/etc/shadow", "'?' and '&' add mail headers"),
    ("help@example.org,boss@example.org", "name one address only"),
    ("help@example.org; boss@example.org", "name one address only"),
    ("help@example.org boss@example.org", "name one address only"),
    ("-attach@example.org", "must not start with '-'"),
    ("--attach", "must not start with '-'"),
    ("mailto:help@example.org", "plain"),
    ("Help Desk <help@example.org>", "plain"),
    ("help%3Fattach=x@example.org", "plain"),
    ("help@-example.org", "plain"),
    ("nobody", "plain"),
])
def test_support_email_must_be_one_plain_address(tmp_path: Path, address: str,
                                                 why: str) -> None:
    text = f'[server]\nhost = "h"\n[notify]\nsupport_email = "{address}"\n'
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.message.startswith(f"{tmp_path / 'system.toml'}:4: notify.support_email: ")
    assert "is not one plain e-mail address" in info.value.message
    assert why in info.value.message
    assert "\n" not in info.value.message and info.value.code == 78


@pytest.mark.parametrize("address", ["", "help@example.org", "it-help+homes@mail.example.org",
                                     "root@localhost"])
def test_plain_support_addresses_load(tmp_path: Path, address: str) -> None:
    cfg = _load(tmp_path, f'[server]\nhost = "h"\n[notify]\nsupport_email = "{address}"\n')
    assert cfg["notify"]["support_email"] == address


def test_server_host_is_one_name_or_a_list_with_user_and_home_expanded(tmp_path: Path) -> None:
    one = _load(tmp_path, '[server]\nhost = "homes.example.org"\n')
    assert one["server"]["host"] == ["homes.example.org"]
    several = _load(tmp_path, '[server]\nhost = ["fe1", "%u.homes", "fe3"]\n')
    assert several["server"]["host"] == ["fe1", f"{_user()}.homes", "fe3"]
    assert _load(tmp_path, '[server]\nroot = "/srv/x"\n')["server"]["host"] == []


def _user() -> str:
    return Locations.from_env({"HOME": "/nonexistent"}).user


def _mapped(tmp_path: Path, host_map: str) -> list[str]:
    path = tmp_path / "hosts.toml"
    path.write_text(host_map)
    return list(_load(tmp_path, f'[server]\nhost = ["fe1", "fe2"]\nhost_map = "{path}"\n')
                ["server"]["host"])


def test_host_map_gives_a_user_or_their_group_their_own_servers(tmp_path: Path) -> None:
    import grp
    import os

    user = _user()
    group = grp.getgrgid(os.getgid()).gr_name
    assert _mapped(tmp_path, f'[users]\n{user} = ["s1", "s2"]\n[groups]\n{group} = "g"\n') \
        == ["s1", "s2"]
    assert _mapped(tmp_path, f'[users]\nsomeone-else = "x"\n[groups]\nnot-a-group-here = "n"'
                             f'\n{group} = "g%u"\n') == [f"g{user}"]
    assert _mapped(tmp_path, '[users]\nsomeone-else = "x"\n') == ["fe1", "fe2"]


@pytest.mark.parametrize(("host_map", "message"), [
    ('[users]\n{user} = "-oProxyCommand=x"\n', r"hosts.toml:2: users.{user}: .* not a valid "),
    ("[users]\n{user} = []\n", r"hosts.toml:2: users.{user}: names no host"),
    ("[users]\n{user} = 1\n", r"hosts.toml:2: users.{user}: must be a host name or a list"),
    ('[hosts]\n{user} = "a"\n', r"hosts.toml:1: unknown table \[hosts\]"),
    ('users = "a"\n', r"hosts.toml:1: users must be a table"),
    ("[users\n", r"hosts.toml: invalid TOML"),
])
def test_a_bad_host_map_is_one_line_naming_the_file_and_entry(tmp_path: Path, host_map: str,
                                                              message: str) -> None:
    user = _user()
    with pytest.raises(ConfigError, match=message.format(user=user)):
        _mapped(tmp_path, host_map.format(user=user))
    with pytest.raises(ConfigError, match=r"hosts\.toml: configuration file not found"):
        _load(tmp_path, f'[server]\nhost = "h"\nhost_map = "{tmp_path}/none/hosts.toml"\n')


def test_cli_exits_78_in_one_line_naming_a_bad_host_map_entry(local_user: Setup) -> None:
    host_map = local_user.base / "hosts.toml"
    host_map.write_text(f'[users]\n{_user()} = ["ok.example.org", "bad host"]\n')
    local_user.config_path.write_text(f'[server]\nhost = "h"\nhost_map = "{host_map}"\n')
    result = local_user.run("sync")
    assert result.returncode == 78
    assert result.stderr == (f"roaming-homes: error: {host_map}:2: users.{_user()}: 'bad host' "
                             "is not a valid host name\n")
    assert not (local_user.state_home / "roaming-homes").exists()
