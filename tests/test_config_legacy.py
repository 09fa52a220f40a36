"""`config import-legacy`: the original bash config becomes TOML, read but never executed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from roaming_homes import config
from roaming_homes.config import legacy
from roaming_homes.paths import Locations
from tests.support.homes import Setup

# The original sample (radiorabe/roaming-homes SOURCES/roaming-homes.conf), filled in the way
# an administrator did: arrays across lines, both quote styles, $USER, trailing comments.
ORIGINAL = """\
# Configuration file for roaming profiles

# List of paths to include in roaming profile synchronization
# Defaults to folders in user-dirs.conf
INCLUDE_PATH_LIST=("Desktop" "Documents"
                   'Music' # tunes
                   Pictures "Dev Projects")

# Lists of paths and names to ignore
IGNORE_PATH_LIST=(".cache" ".local/share/Trash")
IGNORE_NAME_LIST=(".*~" "*~" "*.swp")

# List of users without roaming profile
USER_EXC_LIST=("root" "localadmin")

# Paths to roaming-profile files
RP_LIB_DIR="/usr/lib/roaming-profiles"

# Path to unison binary
UNISON_EXEC="/usr/bin/unison"

# Path to ssh binary
# SSH_EXEC="$(which ssh)"

# FQDN or IP of the ssh server to synchronize with
SSH_SERVER="homes.example.org" # must be set
SSH_PORT="2222"
SSH_SERVER_USER_HOME_DIR="/srv/homes/${USER}"

# Path to mail program binary
MAIL_EXEC="$(which xdg-email)"

MESSAGES_PATH=/etc/roaming-homes/messages
"""


def _import(tmp_path: Path, text: str) -> legacy.Imported:
    path = tmp_path / "roaming-homes.conf"
    path.write_text(text)
    return legacy.import_file(path, Locations.from_env({"HOME": str(tmp_path / "home")}))


def _loads_as_config(tmp_path: Path, toml: str, host: str = "") -> config.Config:
    path = tmp_path / "imported.toml"
    path.write_text(toml + (f'\n[server]\nhost = "{host}"\n' if host else ""))
    return config.load(Locations.from_env({"HOME": str(tmp_path / "home"),
                                           "ROAMING_HOMES_CONFIG": str(path),
                                           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}))


def test_original_sample_maps_onto_the_new_keys(tmp_path: Path) -> None:
    imported = _import(tmp_path, ORIGINAL)
    assert tomllib.loads(imported.toml) == {
        "server": {"host": "homes.example.org", "port": 2222, "home": "/srv/homes/%u"},
        "sync": {"paths": ["Desktop", "Documents", "Music", "Pictures", "Dev Projects"],
                 "ignore_paths": [".cache", ".local/share/Trash"],
                 "ignore_names": [".*~", "*~", "*.swp"],
                 "excluded_users": ["root", "localadmin"],
                 "unison": "/usr/bin/unison"},
        "notify": {"messages": "/etc/roaming-homes/messages"},
    }
    cfg = _loads_as_config(tmp_path, imported.toml)
    user = Locations.from_env({"HOME": "/x"}).user
    assert cfg["server"]["home"] == f"/srv/homes/{user}"


def test_what_cannot_be_mapped_is_named_in_warnings(tmp_path: Path) -> None:
    warnings = "\n".join(_import(tmp_path, ORIGINAL).warnings)
    conf = tmp_path / "roaming-homes.conf"
    assert f"{conf}:17: RP_LIB_DIR is not used any more" in warnings
    assert f"{conf}:31: MAIL_EXEC is not used any more" in warnings
    assert f"{conf}:33: MESSAGES_PATH: notification texts are a TOML file now" in warnings
    assert "SSH_EXEC" not in warnings  # a commented-out line is not a setting


def test_cli_prints_toml_and_warns_on_stderr(local_user: Setup, tmp_path: Path) -> None:
    conf = tmp_path / "old.conf"
    conf.write_text(ORIGINAL)
    result = local_user.run("config", "import-legacy", str(conf))
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["server"]["host"] == "homes.example.org"
    assert "roaming-homes: warning:" in result.stderr and "MAIL_EXEC" in result.stderr
    assert "MAIL_EXEC" not in result.stdout.split("[server]")[1]


def test_unset_server_home_keeps_the_old_default_the_local_home_path(tmp_path: Path) -> None:
    imported = _import(tmp_path, 'SSH_SERVER=files\nSSH_SERVER_USER_HOME_DIR=""\n'
                       'SSH_SERVER_USER_HOME_DIR="$HOME"\n')
    assert imported.values["server"]["home"] == "%h"
    only_host = _import(tmp_path, "SSH_SERVER=files\n")
    assert only_host.values["server"] == {"host": "files", "home": "%h"}
    assert "not set: the old default" in only_host.toml


@pytest.mark.parametrize(("line", "key", "expected"), [
    ("SSH_SERVER=alice@files.example.org", "server", {"host": "files.example.org",
                                                      "user": "alice", "home": "%h"}),
    ("HOST=files\nSSH_SERVER=$HOST\nSSH_SERVER_USER_HOME_DIR=${HOME_DIR%/}/x",
     "server", {"host": "files", "home": "%h/x"}),
    ("SSH_SERVER_USER_HOME_DIR='/srv/100%/'\"$USER\"", "server", {"home": "/srv/100%%/%u"}),
    # Single quotes keep `$USER` literal, which no server home may contain: default kept.
    ("SSH_SERVER_USER_HOME_DIR='/srv/$USER'", "server", {"home": "%h"}),
    ("INCLUDE_PATH_LIST=(a)\nINCLUDE_PATH_LIST+=( b\\ c )", "sync", {"paths": ["a", "b c"]}),
    ("export USER_EXC_LIST=root", "sync", {"excluded_users": ["root"]}),
])
def test_shell_forms(tmp_path: Path, line: str, key: str, expected: dict[str, object]) -> None:
    values = _import(tmp_path, line + "\n").values
    for name, value in expected.items():
        assert values[key][name] == value


HOSTILE = """\
SSH_SERVER="$(touch {marker}-1)"
SSH_PORT=`touch {marker}-2`
UNISON_EXEC="/usr/bin/unison"; touch {marker}-3
INCLUDE_PATH_LIST=( "Documents" "$(touch {marker}-4)" )
IGNORE_NAME_LIST=( '$(touch {marker}-5)' )
SSH_SERVER_USER_HOME_DIR="${{HOME:-$(touch {marker}-6)}}"
MESSAGES_PATH=$(touch {marker}-7)
$(touch {marker}-8)
eval "touch {marker}-9"
USER_EXC_LIST=( "root" ); touch {marker}-10 # trailing command
"""


def test_hostile_input_is_never_executed(local_user: Setup, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    conf = tmp_path / "hostile.conf"
    conf.write_text(HOSTILE.format(marker=marker))
    result = local_user.run("config", "import-legacy", str(conf))
    assert not list(tmp_path.glob("pwned*"))
    assert result.returncode == 0, result.stderr
    values = tomllib.loads(result.stdout)
    # Only the plain values survive; everything needing a shell is named and skipped.
    assert values["sync"] == {"unison": "/usr/bin/unison", "excluded_users": ["root"]}
    assert values["server"] == {"home": "%h"}
    for name in ("SSH_SERVER", "SSH_PORT", "INCLUDE_PATH_LIST", "IGNORE_NAME_LIST",
                 "SSH_SERVER_USER_HOME_DIR", "MESSAGES_PATH"):
        assert f"{name} not imported" in result.stderr
    assert "never executed" in result.stderr
    assert "not an assignment, ignored: touch" in result.stderr
    assert "not an assignment, ignored: eval" in result.stderr


@pytest.mark.parametrize(("text", "error"), [
    ('SSH_SERVER="unterminated\n', "hostile.conf:1: unterminated quote"),
    ('INCLUDE_PATH_LIST=( "a"\n"b"\n', "hostile.conf:1: INCLUDE_PATH_LIST: unterminated array"),
])
def test_broken_files_are_one_line_errors(local_user: Setup, tmp_path: Path, text: str,
                                          error: str) -> None:
    conf = tmp_path / "hostile.conf"
    conf.write_text(text)
    result = local_user.run("config", "import-legacy", str(conf))
    assert result.returncode == 78
    assert error in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_config_error(local_user: Setup, tmp_path: Path) -> None:
    result = local_user.run("config", "import-legacy", str(tmp_path / "nope.conf"))
    assert result.returncode == 78
    assert f"{tmp_path / 'nope.conf'}: configuration file not found" in result.stderr
