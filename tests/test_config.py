"""Configuration: defaults, sources, expansion, and one clear error per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from roaming_homes import config
from roaming_homes.errors import ConfigError
from roaming_homes.paths import Locations
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


def test_user_file_cannot_change_the_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.toml:1: \[server\] cannot be set"):
        _load(tmp_path, '[server]\nhost = "h"\n', '[server]\nhost = "evil"\n')


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
    ('server = "h"\n', r"server must be a table"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert "\n" not in info.value.message
    assert info.value.code == 78


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(_locations(tmp_path, tmp_path / "absent.toml"))


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
