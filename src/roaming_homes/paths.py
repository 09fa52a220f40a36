"""Every location the program reads or writes, derived from the environment.

`Locations.from_env()` only computes paths, so tests and trials redirect everything by setting
HOME, XDG_* and ROAMING_HOMES_CONFIG. `private_dir` makes (and checks) the directories of ours.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.errors import DiskFull, ExitCode, RoamingHomesError
from roaming_homes.relative import is_below as is_below  # where the callers have long found it

SYSTEM_CONFIG = Path("/etc/roaming-homes/roaming-homes.toml")
APP = "roaming-homes"
RUN_USER = Path("/run/user")  # where logind makes each user's runtime directory



def private_dir(path: Path) -> Path:
    """`path` as a directory of this user's alone: made 0700 when missing; refused (one-line
    error, exit 3) when it is a link, not a directory, or another user's. A directory of ours
    that others may enter is made 0700. Without this, another local user who made the
    directory first could swap the lock or the ssh socket inside it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            problem = "is not a directory (a link?)"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to another user (uid {info.st_uid})"
        else:
            if info.st_mode & 0o077:
                os.chmod(path, 0o700)
            return path
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from None
        problem = f"cannot be used: {exc.strerror}"
    raise RoamingHomesError(f"the directory {path} {problem}: refusing to use it",
                            ExitCode.FAILED)


def _runtime_dir(env: dict[str, str], state_dir: Path) -> Path:
    """$XDG_RUNTIME_DIR; without it (`su -`, `runuser`, cron) the one logind made for this user,
    so that every entry point finds the same lock; without that, the state directory."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return Path(runtime)
    mine = RUN_USER / str(os.getuid())
    try:
        info = mine.stat()
    except OSError:
        return state_dir
    return mine if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() else state_dir


def _user_entry() -> pwd.struct_passwd:
    return pwd.getpwuid(os.getuid())


def _xdg(env: dict[str, str], name: str, home: Path, default: str) -> Path:
    value = env.get(name, "")
    # The XDG spec says relative values are invalid and must be ignored.
    return Path(value) if value.startswith("/") else home / default


@dataclass(frozen=True)
class Locations:
    user: str
    home: Path
    system_config: Path
    user_config: Path
    xdg_config_home: Path
    xdg_config_dirs: tuple[Path, ...]
    state_dir: Path
    runtime_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Locations:
        env = dict(os.environ) if env is None else env
        entry = _user_entry()
        home = Path(env["HOME"]) if env.get("HOME", "").startswith("/") else Path(entry.pw_dir)
        config_env = env.get("ROAMING_HOMES_CONFIG", "")
        config_home = _xdg(env, "XDG_CONFIG_HOME", home, ".config")
        state_home = _xdg(env, "XDG_STATE_HOME", home, ".local/state")
        dirs = [Path(d) for d in env.get("XDG_CONFIG_DIRS", "").split(":") if d.startswith("/")]
        state_dir = state_home / APP
        return cls(
            user=entry.pw_name,
            home=home,
            system_config=Path(config_env) if config_env else SYSTEM_CONFIG,
            user_config=config_home / APP / "config.toml",
            xdg_config_home=config_home,
            xdg_config_dirs=tuple(dirs) or (Path("/etc/xdg"),),
            state_dir=state_dir,
            runtime_dir=_runtime_dir(env, state_dir),
        )

    @property
    def unison_dir(self) -> Path:
        """Unison's archives and our generated profile (the UNISON variable points here)."""
        return self.state_dir / "unison"

    @property
    def backup_dir(self) -> Path:
        """Old versions of local files a sync overwrote or deleted (unison's backups)."""
        return self.state_dir / "backup"

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / f"{APP}.lock"

    @property
    def daemon_lock_file(self) -> Path:
        """Held for the daemon's whole life: one daemon per user, and `sync` can see it."""
        return self.runtime_dir / f"{APP}-daemon.lock"

    @property
    def control_dir(self) -> Path:
        """Where the shared ssh connection's socket lives (private, short path)."""
        return self.runtime_dir / APP


# What xdg-user-dirs creates when neither its user file nor the system defaults say otherwise.
_XDG_USER_DIR_DEFAULTS = {
    "DESKTOP": "Desktop", "DOWNLOAD": "Downloads", "TEMPLATES": "Templates",
    "PUBLICSHARE": "Public", "DOCUMENTS": "Documents", "MUSIC": "Music",
    "PICTURES": "Pictures", "VIDEOS": "Videos",
}


def _read_user_dirs_defaults(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return entries
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()
    return entries


def _read_user_dirs(path: Path) -> dict[str, str]:
    """`XDG_DOCUMENTS_DIR="$HOME/Documents"` lines, as {"DOCUMENTS": "Documents"}."""
    entries: dict[str, str] = {}
    for key, value in _read_user_dirs_defaults(path).items():
        if not (key.startswith("XDG_") and key.endswith("_DIR")):
            continue
        value = value.strip('"')
        if value.startswith("$HOME/"):
            entries[key[4:-4]] = value[len("$HOME/"):].rstrip("/")
        elif value == "$HOME":
            entries[key[4:-4]] = ""  # the directory is disabled: it points at the home itself
    return entries


def xdg_user_dirs(locations: Locations) -> list[str]:
    """The user's XDG user directories, relative to the home, in a stable order.

    The user's `user-dirs.dirs` wins over the system `user-dirs.defaults`, which wins over the
    xdg-user-dirs built-in names. Absolute locations outside the home cannot roam and are left out.
    """
    dirs = dict(_XDG_USER_DIR_DEFAULTS)
    for config_dir in reversed(locations.xdg_config_dirs):
        dirs.update(_read_user_dirs_defaults(config_dir / "user-dirs.defaults"))
    dirs.update(_read_user_dirs(locations.xdg_config_home / "user-dirs.dirs"))
    return sorted({d for d in dirs.values() if d})
