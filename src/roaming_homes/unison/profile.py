"""unison's profile and command line for a pass: pure, unit-tested. Facts relied on are in
docs/unison.md (sshargs' backslash escapes, the profile syntax)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roaming_homes.paths import Locations


PROFILE = "roaming-homes"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProfileValueError(ValueError):
    """A value that cannot be written safely into a unison profile."""


@dataclass(frozen=True)
class Plan:
    """Everything one pass tells unison; written as our profile."""

    local_root: str
    server_root: str
    paths: tuple[str, ...]
    ignore_paths: tuple[str, ...]
    ignore_names: tuple[str, ...]
    prefer: str  # newer | local | server | none
    sshargs: tuple[str, ...] = ()
    label: str = ""
    backups: int = 3  # old versions kept of each overwritten or deleted file


def safe_value(value: str) -> bool:
    """Whether `value` can be written into a profile line as it is."""
    return not _CONTROL.search(value) and value == value.strip()


def nameable(path: str, paths: Sequence[str]) -> str:
    """`path`, or the nearest directory above it that a profile can name (a name with a tab or
    an escape character is synced, but cannot be written into the profile's `path` lines): a
    run then covers the change with its neighbours. The synced paths themselves are nameable
    (the configuration checked them)."""
    while path not in paths and not safe_value(path) and "/" in path:
        path = path.rpartition("/")[0]
    return path


def _safe(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ProfileValueError(f"{what} {value!r} contains a newline or control character")
    if value != value.strip():
        raise ProfileValueError(f"{what} {value!r} starts or ends with white space")
    return value


def escape_sshargs(args: Sequence[str]) -> str:
    """Join ssh arguments into unison's `sshargs`: words split on spaces, backslash escapes."""
    return " ".join(re.sub(r"([\\ \t\"'])", r"\\\1", arg) for arg in args)


def build_profile(plan: Plan) -> str:
    """The text of our unison profile. Raises ProfileValueError for an unsafe value."""
    lines = [
        "# Written by roaming-homes before every pass; changes here are overwritten.",
        f"label = {_safe(plan.label or 'roaming-homes', 'label')}",
        f"root = {_safe(plan.local_root, 'local root')}",
        f"root = {_safe(plan.server_root, 'server root')}",
    ]
    lines += [f"path = {_safe(p, 'path')}" for p in plan.paths]
    lines += [f"ignore = Path {_safe(p, 'ignored path')}" for p in plan.ignore_paths]
    lines += [f"ignore = Name {_safe(n, 'ignored name')}" for n in plan.ignore_names]
    if plan.sshargs:
        lines.append(f"sshargs = {_safe(escape_sshargs(plan.sshargs), 'ssh options')}")
    prefer = {"local": plan.local_root, "server": plan.server_root}.get(plan.prefer, plan.prefer)
    if plan.prefer != "none":
        # The losing side of a resolved conflict is kept as "name (conflict_on_DATE)".
        lines += [f"prefer = {prefer}", "copyonconflict = true"]
    lines += [
        "times = true",  # keep modification times
        # The loss guard judges every plan, an emptied root included (docs/unison.md §8); unison's
        # own question about it would come before the plan.
        "confirmbigdel = false",
        # Every overwritten or deleted file is kept, outside the synced tree, on the side that
        # lost it: locally in UNISONBACKUPDIR (see `environment`), on the server in the server
        # home's `.roaming-homes/backup` (UNISONBACKUPDIR is not passed over ssh: the server's
        # command sets it, `guards.guard_command`).
        "backup = Name *",
        "backuplocation = central",
        f"maxbackups = {int(plan.backups)}",
        "log = false",  # roaming-homes keeps its own rotating log of unison's output
        "contactquietly = true",
    ]
    return "\n".join(lines) + "\n"


def build_argv(unison: str, first_run: bool, extra: Sequence[str] = (),
               guarded: bool = True) -> list[str]:
    """Arguments for one pass over our profile: `guarded`, unison lists its plan and asks
    before propagating (see `run`); otherwise its interactive UI is the user's (resolve)."""
    ui = [*INTERACTIVE_ARGS] if guarded else []
    argv = [unison, PROFILE, *ui, "-color", "false", "-dumbtty", "-ignore", IGNORE_LINE_BREAKS]
    if first_run:
        # No archive for this pair of roots: take the union of both sides, never deletions.
        argv.append("-ignorearchives")
    return [*argv, *extra]


# Paths with a line break anywhere are ignored: a newline or carriage return in a name would
# let that name forge lines of unison's output, which is read line by line. Every other byte is
# synced; whatever prints a name escapes it (`text.escape`).
IGNORE_LINE_BREAKS = "Regex .*[\n\r].*"


INTERACTIVE_ARGS = ("-ui", "text")


def environment(locations: Locations, computer_id: str) -> dict[str, str]:
    """unison's environment: our archive directory, where this side's backups go
    (UNISONBACKUPDIR is not passed over ssh: the server's command sets its own), and the name
    unison keys its archives by: this computer's stable id, not its host name (see
    `session.computer`)."""
    return dict(os.environ, UNISON=str(locations.unison_dir),
                UNISONBACKUPDIR=str(locations.backup_dir), NO_COLOR="1",
                UNISONLOCALHOSTNAME=f"roaming-homes-{computer_id}")
