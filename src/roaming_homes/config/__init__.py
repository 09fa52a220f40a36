"""Load and validate the TOML configuration.

`SCHEMA` is the one source of truth for every key: its type, default, description and checks.
Validation, `config show` and the README reference all come from it.

Sources, lowest priority first: built-in defaults, the system file (or `--config` /
`ROAMING_HOMES_CONFIG`), then the optional per-user file. Every error names the file, the key
and, where it can be found, the line.

The per-user file is the user's, the system file the administrator's: each key's `scope` says
what the user may do with it, so that no user can loosen a guard, run another program or point
the service elsewhere. What the per-user file may not set is ignored with a warning, never an
error: the administrator's values stay and syncing goes on.
"""

from __future__ import annotations

import contextlib
import enum
import grp
import json
import logging
import os
import pwd
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from roaming_homes.errors import ConfigError
from roaming_homes.paths import SYSTEM_CONFIG, Locations

log = logging.getLogger(__name__)

Check = Callable[[Any], "str | None"]  # returns a problem description, or None when fine


class Scope(enum.Enum):
    """What the per-user file may do with a key; the system file may set every key."""

    SYSTEM = "system-only"  # ignored in the per-user file (with a warning)
    USER = "user-settable"  # any valid value
    # Stricter-only: a value that is not at least as strict is ignored (with a warning).
    LOWER = "lower"  # at most the system's value (a bool: may only turn it off)
    HIGHER = "higher"  # at least the system's value
    MORE = "more"  # a list that keeps every entry of the system's list


@dataclass(frozen=True)
class Key:
    type: str  # "str", "int", "number", "bool", "list", "hosts" (a string or a list of them)
    default: Any
    help: str
    check: Check | None = None
    expand: bool = False  # %u / %h are expanded in this value
    scope: Scope = Scope.SYSTEM  # a new key is the administrator's until decided otherwise


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$|^\[[0-9A-Fa-f:.]+\]$")
# A computer's name as people read it in status and conflict copies: a host-name label.
_COMPUTER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\$?$")
# One plain address, handed to `xdg-email` as the mailto recipient: no `?` headers
# (`?attach=/etc/shadow`, `?cc=`), no second address, no `%` escapes a mail client would decode,
# no leading `-` (an option to xdg-email) or `mailto:`. Letters, digits and `._+-` only.
_EMAIL = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# Characters that no file name we sync needs and that only appear in values written to attack a
# shell or a profile parser (`$(...)`, backquotes, `;`, pipes, redirections).
_HOSTILE = re.compile(r"[`$;|<>]")


def check_relative_path(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value.startswith("/"):
        return f"{value!r} must be relative to the home directory"
    if ".." in PurePosixPath(value).parts:
        return f"{value!r} must not contain '..'"
    if _HOSTILE.search(value) or "=" in value:
        return f"{value!r} contains a character that is not allowed in a path (` $ ; | < > =)"
    return None


def _absolute_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"{value!r} must be an absolute path"
    if ".." in PurePosixPath(value).parts:
        return f"{value!r} must not contain '..'"
    if _HOSTILE.search(value):
        return f"{value!r} contains a character that is not allowed in a path (` $ ; | < >)"
    return None


def _optional_absolute_path(value: str) -> str | None:
    return _absolute_path(value) if value else None


def _each(check: Check) -> Check:
    def check_all(values: list[str]) -> str | None:
        for value in values:
            if problem := check(value):
                return problem
        return None

    return check_all


def _pattern(regex: re.Pattern[str], what: str, optional: bool = False) -> Check:
    def check(value: str) -> str | None:
        if optional and not value:
            return None
        return None if regex.match(value) else f"{value!r} is not a valid {what}"

    return check


@dataclass(frozen=True)
class Range:
    """A number's check: `low` to `high`, both included; the sample and the man page show it."""

    low: float
    high: float

    def __call__(self, value: float) -> str | None:
        if self.low <= value <= self.high:
            return None
        return f"{value} must be between {_number(self.low)} and {_number(self.high)}"

    def __str__(self) -> str:
        return f"{_number(self.low)} to {_number(self.high)}"


def _number(value: float) -> str:
    """A bound as people write it: 31536000, not 3.1536e+07; 0.1 stays 0.1."""
    return str(int(value)) if value == int(value) else str(value)



def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"{value!r} must be one of: {', '.join(choices)}"

    return check


def _email(value: str) -> str | None:
    if not value or _EMAIL.fullmatch(value):
        return None
    if "?" in value or "&" in value:
        why = "'?' and '&' add mail headers (attachments, copies)"
    elif "," in value or ";" in value or value.count("@") > 1:
        why = "name one address only"
    elif value.startswith("-"):
        why = "it must not start with '-'"
    else:
        why = "write it as name@example.org, without display name, `<>` or `mailto:`"
    return f"{value!r} is not one plain e-mail address: {why}"


def _name_pattern(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if "/" in value:
        return f"{value!r} is a name pattern and cannot contain '/' (use ignore_paths)"
    return None


def _program(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if _HOSTILE.search(value) or " " in value:
        return f"{value!r} must be a program name or path, without arguments"
    return None


def _command(value: list[str]) -> str | None:
    if not value:
        return "must name a program"
    return _program(value[0])


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "host": Key("hosts", "", "Server to sync with over ssh (required unless `root` is "
                    "set): a host name, or a list of front-ends that serve the same homes "
                    "(shared storage), tried in order: the first that answers within "
                    "connect_timeout serves the pass, and one that did not answer is tried "
                    "last for the next few minutes. The first entry names the server in this "
                    "computer's records (docs/server.md).", _each(_pattern(_HOST, "host name")),
                    expand=True),
        "host_order": Key("str", "listed", "The order in which a user's computers try the "
                          "front-ends of server.host: listed, or per-user (the list rotated "
                          "by a hash of the login name: users spread over the front-ends, and "
                          "all computers of one user reach the same one, where its file "
                          "monitor sees their changes).", _one_of("listed", "per-user")),
        "host_map": Key("str", "", "Optional TOML file that gives users (table `[users]`) or "
                        "groups (table `[groups]`) their own server.host, a name or a list, "
                        "for homes spread over several servers; a user's entry wins over "
                        "their groups', the first matching group in the file over later ones; "
                        "users it does not name use server.host.", _optional_absolute_path),
        "root": Key("str", "", "Instead of `host`: a local directory that is the server side of "
                    "this home (a mounted share such as /mnt/homes/%u, or the demo). It must "
                    "exist: a share that is not mounted counts as offline.",
                    _optional_absolute_path, expand=True),
        "port": Key("int", 22, "ssh port of the server.", Range(1, 65535)),
        "user": Key("str", "%u", "Login name on the server.", _pattern(_USER, "user name"),
                    expand=True),
        "home": Key("str", "/home/%u", "The user's home on the server (with `host`).",
                    _absolute_path, expand=True),
        "connect_timeout": Key("number", 3, "Seconds to wait for the server before giving up "
                               "(also sets how fast a dead connection is noticed).",
                               Range(0.1, 300)),
        "ssh_options": Key("list", [], "Extra arguments for ssh, passed as given "
                           "(e.g. [\"-i\", \"KEY\"]).", expand=True),
        "compression": Key("str", "auto", "Whether the shared ssh connection compresses what "
                           "it carries: it multiplies what fits through a slow link and slows "
                           "a fast one. auto: when an exchange over it takes 50 ms or more "
                           "(measured as it opens); yes: always; no: never. -C in ssh_options "
                           "(or Compression yes in ssh's configuration) turns it on whatever "
                           "auto says.", _one_of("auto", "yes", "no")),
        "connection_reuse": Key("int", 300, "Seconds an idle shared ssh connection is kept open "
                                "between passes (0: a new connection every pass).",
                                Range(0, 86400)),
        "watch_idle_timeout": Key("int", 300, "Seconds the server's unison-fsmonitor of a "
                                  "real-time session waits without a word from this computer "
                                  "before it ends that session's ssh connection on the server "
                                  "(a computer gone without closing it: lid closed, network "
                                  "down); real-time mode sends it a keep-alive every fifth of "
                                  "this.", Range(5, 86400)),
        "kerberos": Key("str", "auto", "Whether the ssh login uses a Kerberos ticket, checked "
                        "(klist -s) before every pass: a missing or expired one ends the pass "
                        "at once (reason no-ticket, exit 3) and says to run kinit. auto: when "
                        "ssh (with ssh_options) enables GSSAPIAuthentication and has no key to "
                        "offer; yes: always; no: never.", _one_of("auto", "yes", "no")),
    },
    "sync": {
        "interval": Key("int", 60, "Seconds between periodic syncs.", Range(1, 86400),
                         scope=Scope.HIGHER),
        "logout_timeout": Key("int", 30, "Seconds the daemon's final pass at logout or "
                              "shutdown may take before it is stopped cleanly.", Range(1, 600),
                              scope=Scope.LOWER),
        "paths": Key("list", [], "Paths relative to the home to sync; empty: the user's XDG user "
                     "directories (Documents, Pictures, … as user-dirs.dirs names them), "
                     "wherever they exist, here or on the server, plus .gitconfig and .vimrc. "
                     "Not the whole home: keys (~/.ssh), caches and machine-specific settings "
                     "would travel too. List more (\".config/app\", \".local/share/app\") to "
                     "sync them.", _each(check_relative_path), scope=Scope.USER),
        "first_paths": Key("list", [], "On a first sync (a new machine), these paths (below the "
                           "synced paths) are synced in a pass of their own before the rest, so "
                           "what the user needs first arrives first.", _each(check_relative_path),
                           scope=Scope.USER),
        "ignore_paths": Key("list", [".cache"], "Paths relative to the home never synced.",
                            _each(check_relative_path), scope=Scope.MORE),
        "ignore_names": Key("list", ["*~", ".*~"], "File name patterns never synced.",
                            _each(_name_pattern), scope=Scope.MORE),
        "excluded_users": Key("list", ["root"], "Users for whom nothing is ever synced.",
                              _each(_pattern(_USER, "user name")), scope=Scope.MORE),
        "prefer": Key("str", "newer", "Conflict policy: newer | local | server | none (keep both "
                      "and ask). The losing version is kept as a conflict copy.",
                      _one_of("newer", "local", "server", "none"), scope=Scope.USER),
        "watch": Key("bool", True, "Real-time mode when available: file monitors on both ends "
                     "(unison-fsmonitor on the server's PATH) and one guarded pass per change "
                     "(see README, Real-time mode).", scope=Scope.LOWER),
        "skip_unchanged": Key("str", "auto", "Whether a pass in which neither side changed may "
                              "skip unison (one exchange with the server instead of unison's "
                              "round trips): auto (when the check costs clearly less than "
                              "unison's pass, measured on this computer) | always | never.",
                              _one_of("auto", "always", "never"), scope=Scope.SYSTEM),
        "bulk_first_sync": Key("bool", True, "On a first sync into a side that holds no file "
                               "yet (a new laptop, a new server home), copy with rsync (needed "
                               "on both sides; else unison copies), then let unison build its "
                               "archives on the copy (see README, First sync).",
                               scope=Scope.SYSTEM),
        "rescan_interval": Key("int", 3600, "Seconds between full rescans in real-time mode "
                               "(a safety net for changes no monitor saw).", Range(60, 604800),
                               scope=Scope.HIGHER),
        "unison": Key("str", "unison", "The unison program to run.", _program),
        "max_delete": Key("int", 50, "Refuse a pass (exit 4) that would delete more than this "
                          "percentage of a side's files (and more than 10 files), counting "
                          "the deletions of the passes within guard_window; `sync --force` "
                          "confirms once. 100: never refuse.", Range(0, 100),
                          scope=Scope.LOWER),
        "max_change": Key("int", 50, "Refuse a pass (exit 4) that would overwrite more than "
                          "this percentage of a side's files (and more than 10 files), e.g. "
                          "ransomware rewriting every file; `sync --force` confirms once.",
                          Range(0, 100), scope=Scope.LOWER),
        "guard_window": Key("int", 600, "Seconds within which the deletions and overwrites of "
                            "successive passes (real-time cycles) add up for max_delete and "
                            "max_change.", Range(0, 7 * 86400), scope=Scope.HIGHER),
        "backups": Key("int", 3, "Old versions kept of every file a sync overwrites or deletes, "
                       "outside the synced tree on the side that lost it.", Range(1, 100),
                       scope=Scope.HIGHER),
        "backup_days": Key("int", 30, "Days an old version stays in the backups (on both "
                           "sides) after it was replaced; pruned after a pass, at most daily.",
                           Range(1, 3650), scope=Scope.HIGHER),
        "backup_max_bytes": Key("int", 5 * 1024**3, "Bytes the backups of each side may take "
                                "(default 5 GiB); beyond it the oldest versions are pruned "
                                "first. The administrator's: the server's disk.",
                                Range(1, 2**50)),
    },
    "client": {
        "name": Key("str", "", "This computer's name as the user's other computers show it "
                    "(status, conflict copies); empty: the short host name. Renaming the "
                    "computer changes only this name: unison's archives are keyed by a stable "
                    "id of the computer.", _pattern(_COMPUTER, "computer name", optional=True),
                    scope=Scope.USER),
        "forget_after": Key("int", 90, "Days after which a computer that has not synced is "
                            "listed as stale by status (never removed automatically).",
                            Range(1, 3650)),
    },
    "notify": {
        "enabled": Key("bool", True, "Desktop notifications."),
        "tray": Key("bool", True, "The daemon's tray icon (a StatusNotifierItem: status at a "
                    "glance, Sync now, Conflicts…, Restore…), shown while the desktop has a "
                    "tray that takes one.", scope=Scope.USER),
        "support_email": Key("str", "", "Address for the \"Email support\" action; empty hides "
                             "it. One plain address (name@example.org): no `mailto:`, no "
                             "`?` headers, no second address.", _email),
        "messages": Key("str", "", "Optional TOML file overriding notification texts "
                        "(tables `[conflicts]`, `[stale]` … with `summary` and `body`; "
                        "plain placeholders {host}, {paths}, {count}, {since}, {message}, …: no "
                        "conversion, format spec, attribute or index).",
                        _optional_absolute_path),
        "stale_after": Key("int", 86400, "Seconds without a successful sync, while the server "
                           "is unreachable, before a notification says so.",
                           Range(60, 365 * 86400)),
        "resolve_command": Key("list", ["roaming-homes", "resolve"], "The command a "
                               "conflict notification names when the notification server "
                               "shows no buttons (program and arguments); its buttons settle "
                               "conflicts with `conflicts resolve --keep`.",
                               _command),
    },
}


def _may_only(spec: Key) -> str:
    """What the per-user file may do with a stricter-only key: "lower it", "add entries" …"""
    if spec.scope is Scope.MORE:
        return "add entries"
    if spec.type == "bool":
        return "turn it off"
    return "lower it" if spec.scope is Scope.LOWER else "raise it"


def value_rule(spec: Key) -> str:
    """The values a key accepts when the schema bounds them, in a sentence ("" otherwise)."""
    if isinstance(spec.check, Range):
        return f"Range: {spec.check}."
    return ""


def per_user_rule(spec: Key) -> str:
    """What the per-user file may do with a key, in a sentence (the sample configuration)."""
    if spec.scope is Scope.SYSTEM:
        return "System-only: ignored in the per-user file."
    if spec.scope is Scope.USER:
        return "User-settable: the per-user file may set it."
    keeps = " (keeping every entry of this list)" if spec.scope is Scope.MORE else ""
    return (f"Stricter-only: the per-user file may only {_may_only(spec)}{keeps}; anything "
            "else is ignored.")


def _weakens(spec: Key, current: Any, value: Any) -> bool:
    """Whether the per-user `value` would be less strict than the system's `current`."""
    if spec.scope is Scope.LOWER:
        return bool(value > current)
    if spec.scope is Scope.HIGHER:
        return bool(value < current)
    if spec.scope is Scope.MORE:
        return not set(current) <= set(value)
    return False


@dataclass
class Config:
    """The effective configuration: values by section and key, and where each came from."""

    values: dict[str, dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)  # "section.key" -> file or "default"
    files: tuple[Path, ...] = ()

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


def _line_of(text: str, section: str, key: str) -> int | None:
    """Best-effort line number of `key` in `section` (tomllib reports none for semantic errors)."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if match := re.match(r"^\[\s*([^\]]+?)\s*\]", stripped):
            current = match.group(1)
            if not section and current == key:
                return number
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def _where(path: Path, text: str, section: str, key: str) -> str:
    line = _line_of(text, section, key)
    return f"{path}:{line}" if line else str(path)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "hosts":
        return _type_ok("str", value) or _type_ok("list", value)
    return isinstance(value, str)


_TYPE_NAMES = {"str": "a string", "int": "an integer", "number": "a number",
               "bool": "true or false", "list": "a list of strings",
               "hosts": "a host name or a list of host names"}


def expand(value: str, user: str, home: Path) -> str:
    """Expand %u (user name), %h (local home) and %% in a configuration value."""

    def repl(match: re.Match[str]) -> str:
        return {"%u": user, "%h": str(home), "%%": "%"}[match.group(0)]

    return re.sub(r"%[uh%]", repl, value)


def _groups(user: str) -> list[str]:
    """The names of `user`'s groups, the primary one first; none when the user is unknown."""
    try:
        entry = pwd.getpwnam(user)
        ids = os.getgrouplist(user, entry.pw_gid)
    except (KeyError, OSError):
        return []
    names = []
    for gid in ids:
        with contextlib.suppress(KeyError):
            names.append(grp.getgrgid(gid).gr_name)
    return names


def mapped_hosts(path: Path, locations: Locations, hosts: list[str]) -> list[str]:
    """The host list `server.host_map` gives this user: their own entry in `[users]`, else
    the first entry of `[groups]` (in the file's order) that names one of their groups, else
    `hosts` (server.host). Errors name the file and the entry."""
    data, text = read_toml(path)
    for table in data:
        if table not in ("users", "groups"):
            raise ConfigError(f"{_where(path, text, '', table)}: unknown table [{table}] "
                              "(a host map has [users] and [groups])")
    users, groups = data.get("users", {}), data.get("groups", {})
    for name, table in (("users", users), ("groups", groups)):
        if not isinstance(table, dict):
            raise ConfigError(f"{_where(path, text, '', name)}: {name} must be a table")
    mine = set(_groups(locations.user))
    found = ("users", locations.user) if locations.user in users else next(
        (("groups", group) for group in groups if group in mine), None)
    if found is None:
        return hosts
    value, problem = check_value("server", "host", data[found[0]][found[1]], locations)
    if problem or not value:
        why = problem.removeprefix("server.host").lstrip(": ") if problem else "names no host"
        raise ConfigError(f"{_where(path, text, found[0], found[1])}: "
                          f"{found[0]}.{found[1]}: {why}")
    return list(value)


class MissingConfigError(ConfigError):
    """The system file (or the one `--config` / ROAMING_HOMES_CONFIG names) does not exist;
    `create` is the command that writes it from the sample."""

    def __init__(self, path: Path) -> None:
        if path == SYSTEM_CONFIG:
            create = (f"sudo mkdir -p {path.parent} && roaming-homes config sample | "
                      f"sudo tee {path}")
        else:
            create = f"roaming-homes config sample > {path}"
        super().__init__(f"{path}: configuration file not found; create it with "
                         f"`{create}`, then set server.host")
        self.path, self.create = path, create


def read_text(path: Path) -> str:
    """A configuration file's text; errors become one-line ConfigErrors naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Read a TOML file; errors become one-line ConfigErrors naming the file."""
    text = read_text(path)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _merge(values: dict[str, dict[str, Any]], sources: dict[str, str], path: Path,
           locations: Locations, *, per_user: bool = False) -> None:
    """Let the file at `path` set values; the per-user file only as each key's scope allows."""
    data, text = read_toml(path)
    for section, table in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{_where(path, text, '', section)}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{_where(path, text, '', section)}: {section} must be a table")
        for key, value in table.items():
            where = _where(path, text, section, key)
            if key not in SCHEMA[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key}")
            if per_user and not _allowed(where, section, key):
                continue
            value, problem = check_value(section, key, value, locations)
            if problem:
                raise ConfigError(f"{where}: {problem}")
            spec, current = SCHEMA[section][key], values[section][key]
            if per_user and _weakens(spec, current, value):
                log.warning("%s: %s.%s = %s is less strict than the system's %s (the per-user "
                            "file may only %s); ignored, the system value stays", where, section,
                            key, _shown(value), _shown(current), _may_only(spec))
                continue
            values[section][key] = value
            sources[f"{section}.{key}"] = str(path)


def _allowed(where: str, section: str, key: str) -> bool:
    """Whether the per-user file may set this key at all; warns when it may not."""
    if SCHEMA[section][key].scope is not Scope.SYSTEM:
        return True
    log.warning("%s: %s.%s is system-only, the per-user file cannot set it; ignored, the "
                "system value stays", where, section, key)
    return False


def _shown(value: Any) -> str:
    """A value in a warning: as TOML writes it, on one line (control characters escaped)."""
    return json.dumps(value)


def check_value(section: str, key: str, value: Any,
                locations: Locations) -> tuple[Any, str | None]:
    """A known key's value as the program uses it (expanded), and its problem, if any.

    The problem names the key (`section.key ...`) but not the file: callers add where it is.
    """
    spec = SCHEMA[section][key]
    if not _type_ok(spec.type, value):
        return value, f"{section}.{key} must be {_TYPE_NAMES[spec.type]}"
    strings = value if isinstance(value, list) else [value]
    if any(isinstance(item, str) and _CONTROL.search(item) for item in strings):
        return value, f"{section}.{key} contains a newline or control character"
    if spec.type == "hosts":
        value = strings if value != "" else []  # one name is a list of one; "" is none
    if spec.expand:
        value = ([expand(v, locations.user, locations.home) for v in value]
                 if isinstance(value, list) else expand(value, locations.user, locations.home))
    if spec.check and (problem := spec.check(value)):
        return value, f"{section}.{key}: {problem}"
    return value, None


def load(locations: Locations, path: Path | None = None) -> Config:
    """The effective configuration for this user, validated."""
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, spec in keys.items():
            # As a file's value would be: expanded, and one host name a list of one.
            values[section][key] = check_value(section, key, spec.default, locations)[0]
            sources[f"{section}.{key}"] = "default"
    system = path or locations.system_config
    files = [system]
    if not system.exists():
        raise MissingConfigError(system)
    _merge(values, sources, system, locations)
    if locations.user_config.is_file():
        _merge(values, sources, locations.user_config, locations, per_user=True)
        files.append(locations.user_config)
    server = values["server"]
    if server["host_map"]:
        server["host"] = mapped_hosts(Path(server["host_map"]), locations, server["host"])
    if not server["host"] and not server["root"]:
        raise ConfigError(f"{system}: server.host is required (or server.root for a local "
                          "directory)")
    if server["host"] and server["root"]:
        raise ConfigError(f"{_where(system, system.read_text(), 'server', 'root')}: "
                          "server.host and server.root exclude each other; set one")
    return Config(values, sources, tuple(files))
