"""Checks that decide whether a pass may run at all, and what it may propagate: excluded users,
the replica markers and missing roots, the server's own report, and the loss guard on
unison's plan (mass deletion and mass change). The per-user lock is `session`'s.
"""

from __future__ import annotations

import enum
import os
import re
import shlex
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from roaming_homes.session import unchanged
from roaming_homes.text import escape
from roaming_homes.unison.output import Content, Direction, PlanItem


def is_excluded(user: str, excluded_users: list[str]) -> bool:
    return user in excluded_users


# --- Safety checks ----------------------------------------------------------------------------
#
# Deciding is pure (`marker_refusal`, `missing_refusal`, `plan_losses`, `loss_refusal`,
# `parse_report`); the engine measures (`probe_local`, or the server's own `guard_command`) and
# acts on the decision. The mass-deletion and mass-change guard reads unison's plan (what the pass
# *would* delete or overwrite on each side), never net file counts.

MARKER = ".roaming-homes-root"
MARKER_PREFIX = "roaming-homes replica "
# At most this many files lost in a pass (and its window) are never refused: deleting a handful
# of files out of a dozen is ordinary housekeeping, not a vanished replica.
MIN_LOSSES = 10
_SIDES = {"local": "the local home", "server": "the server home"}


def new_replica_id() -> str:
    import uuid

    return uuid.uuid4().hex


def marker_text(replica_id: str) -> str:
    return f"{MARKER_PREFIX}{replica_id}\n"


def parse_marker(text: str) -> str | None:
    """The replica id in a marker file's text, or None when it is not one of ours."""
    line = text.strip()
    if not line.startswith(MARKER_PREFIX):
        return None
    replica_id = line[len(MARKER_PREFIX):].strip()
    return replica_id if re.fullmatch(r"[0-9a-f]{32}", replica_id) else None


class Root(enum.Enum):
    PRESENT = "present"
    MISSING = "missing"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Probe:
    """What one replica looks like just before a pass: its root, marker and synced paths."""

    root: Root
    marker: str | None  # replica id from the root's marker, None when absent or unreadable
    paths: tuple[bool, ...] = ()  # which of the synced paths exist, in the plan's order
    digest: unchanged.Digest | None = None  # the server's, when the pass asked for it


def marker_refusal(recorded: dict[str, str], found: dict[str, Probe],
                   names: dict[str, str]) -> str | None:
    """Why this pass must not run, judging by the replica markers; None when they are fine.

    `recorded` holds the replica ids seen at the last good pass (side -> id); a side without a
    recorded id (first pass, or state from before markers existed) is not judged. A replica
    that lost its marker was emptied, replaced or is not mounted: syncing would propagate its
    emptiness as deletions. A different id means another replica sits at that place.
    """
    for side, probe in found.items():
        expected = recorded.get(side)
        if not expected or probe.root is not Root.PRESENT:
            continue
        where = f"{_SIDES[side]} {names[side]}"
        if probe.marker is None:
            return (f"{where} lacks its marker {MARKER}: it looks emptied, replaced or not "
                    "mounted, so nothing was synced. If it was wiped on purpose, "
                    "`roaming-homes sync --first-run` restores it from the other side")
        if probe.marker != expected:
            return (f"{where} is a different replica than at the last sync (marker "
                    f"{MARKER} says {probe.marker}, expected {expected}); nothing was synced. "
                    "If this is intended, run `roaming-homes sync --first-run` (union, "
                    "no deletions)")
    return None


def missing_refusal(found: dict[str, Probe], names: dict[str, str]) -> str | None:
    """Why a pass cannot run because a replica's root is not there: missing is not deleted."""
    for side, probe in found.items():
        where = f"{_SIDES[side]} {names[side]}"
        if probe.root is Root.MISSING:
            typo = ", or a typo in server.home or server.root?" if side == "server" else "?"
            return (f"{where} is missing (not mounted{typo}); nothing was synced. Once it is "
                    "there, sync again")
        if probe.root is Root.UNREADABLE:
            return f"{where} cannot be read (permissions?); nothing was synced"
    return None


def absent_paths(paths: Sequence[str], found: dict[str, Probe]) -> list[str]:
    """The synced paths that exist on no side (a typo in sync.paths, most likely)."""
    known = [probe.paths for probe in found.values() if len(probe.paths) == len(paths)]
    if len(known) < len(found):
        return []  # a side did not say: nothing is known to be absent
    return [path for index, path in enumerate(paths) if not any(p[index] for p in known)]


def likely_meant(path: str, candidates: Iterable[str]) -> str | None:
    """The existing name `path` was most likely a typo of, if any is close."""
    import difflib  # only when a synced path exists nowhere: not on every pass

    found = difflib.get_close_matches(path, list(candidates), n=1, cutoff=0.75)
    return found[0] if found else None


def probe_local(root: Path, paths: Sequence[str]) -> Probe:
    if not root.is_dir():
        return Probe(Root.MISSING if not root.exists() else Root.UNREADABLE, None)
    try:
        marker = parse_marker((root / MARKER).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        marker = None
    return Probe(Root.PRESENT, marker, tuple(os.path.lexists(root / p) for p in paths))


def write_local_marker(root: Path, replica_id: str) -> None:
    """Write the marker atomically (a pass killed meanwhile leaves no half marker)."""
    tmp = root / f"{MARKER}.tmp"
    tmp.write_text(marker_text(replica_id), encoding="utf-8")
    tmp.replace(root / MARKER)


# --- the server's own check, in unison's ssh session ---------------------------------------------

REPORT = "roaming-homes guard "  # how the server's report line starts
_REPORT = re.compile(r"roaming-homes guard ([0-9a-f]{32}) root=(present|missing|unreadable) "
                     r"paths=([01]*)(?: digest=([0-9a-z]+))? marker=(.*)")


def new_nonce() -> str:
    return os.urandom(16).hex()  # not `secrets`: it loads hashlib (OpenSSL) on every pass


def report_script(root: str, paths: Sequence[str], nonce: str, digest: bool = False) -> str:
    """A POSIX sh script that prints the server replica's report in one line for
    `parse_report`: root present, missing or unreadable; which synced paths exist; with
    `digest`, the replica's stat digest (`unchanged.server_script`); the marker (printable
    characters of its first line only, and last, so it cannot add fields). Every value is
    quoted with shlex; the paths were validated by the config (relative, no `..`)."""
    q = shlex.quote
    each = " ".join(q(p) for p in paths)
    check = (f"for d in {each}; do if [ -e \"$d\" ] || [ -L \"$d\" ]; then p=${{p}}1; "
             "else p=${p}0; fi; done; " if paths else "")
    digests, field = ((f"{unchanged.server_script(paths, settle=True)}; ", " digest=$dg")
                      if digest and paths else ("", ""))
    return (f"if cd {q(root)} 2>/dev/null; then r=present; "
            f"m=$(head -c 200 {q(MARKER)} 2>/dev/null | head -n 1 | tr -cd '[:print:]'); "
            f"elif [ -e {q(root)} ]; then r=unreadable m=; else r=missing m=; fi; p=; "
            f"{check}{digests}printf '%s\\n' \"{REPORT}{nonce} root=$r paths=$p{field} "
            "marker=$m\"")


SERVER_NAME = "roaming-homes-server"  # the server's name in unison's archives
# Versions before the loss guard read unison's plan counted the server's files with a cache in
# unison's directory there (`roaming-homes-counts-<rules>.json`, and `….json.<pid>.tmp` of a
# count cut short); nothing reads them now. Each pass removes those of its user, with no program
# started when there are none (the shell's glob finds nothing): a few microseconds.
COUNT_CACHES = "roaming-homes-counts-*.json*"
_FORGET_COUNTS = (f'for f in "${{UNISON:-$HOME/.unison}}"/{COUNT_CACHES}; do '
                  '[ -f "$f" ] && rm -f -- "$f"; done; ')


def guard_command(root: str, paths: Sequence[str], nonce: str,
                  expect_marker: str | None = None, backup_dir: str | None = None,
                  digest: bool = False, chores: str = "") -> str:
    """unison's `servercmd`: the server reports its replica (`report_script`, with this pass's
    `nonce`), then runs unison's server, or refuses.

    It refuses (exit 1, before unison's server starts, so nothing syncs) when the root is not
    there, and, with `expect_marker`, when the root's marker is not that replica's. With
    `digest`, the report carries the replica's stat digest, taken before unison's server
    looks at anything (`session.unchanged`). With `backup_dir`, unison's backups go there
    (made if missing: unison makes only its last component), not into its own directory,
    where no administrator looks. unison appends `-server …` and ssh hands the line to the
    user's shell, which runs `sh`. The count caches older versions left in unison's directory
    are removed (`COUNT_CACHES`). `chores`, a silent sh fragment that never fails, runs once the
    replica is judged, before unison's server (what the last pass left to clean on the server:
    `leftovers.server_script`), saving an exchange of its own. The report goes to stderr,
    which reaches unison's output ahead of anything unison prints after connecting (stdout
    carries unison's protocol);
    `parse_report` takes only that first line, and only with the nonce, so no file name or
    content can stand in for it.
    """
    q = shlex.quote
    # The report runs in a subshell ($(…)): unison's server starts where the login shell was.
    tests = [f'case "$rep" in *{q(" root=present ")}*) ;; *) exit 1;; esac; ']
    if expect_marker is not None:
        tests.append(f'case "$rep" in *{q(" marker=" + marker_text(expect_marker).strip())}) '
                     ";; *) exit 1;; esac; ")
    # umask 077: what unison makes beside the synced files (its archives, its backups and their
    # directories) is the user's alone; synced files get the modes unison syncs, explicitly.
    # A fixed UNISONLOCALHOSTNAME: the server's archives do not depend on which of its names
    # (or front-ends) answered.
    # No backup directory, no pass: unison would otherwise keep its backups elsewhere.
    backups = (f"mkdir -p {q(backup_dir)} || exit 1; UNISONBACKUPDIR={q(backup_dir)}; "
               "export UNISONBACKUPDIR; " if backup_dir else "")
    script = (f"rep=$({report_script(root, paths, nonce, digest)}); printf '%s\\n' \"$rep\" >&2; "
              f"{''.join(tests)}{_FORGET_COUNTS}{chores}umask 077; {backups}"
              f"UNISONLOCALHOSTNAME={SERVER_NAME} exec unison \"$@\"")
    return f"sh -c {q(script)} roaming-homes-guard"


def parse_report(lines: Sequence[str], nonce: str, paths: int) -> Probe | None:
    """The server's report in unison's output: the first line that looks like one, and only if
    it carries `nonce`, parses strictly and comes before unison looked for changes."""
    for line in lines:
        if line.startswith("Looking for changes"):
            return None
        if not line.startswith(REPORT):
            continue
        match = _REPORT.fullmatch(line.rstrip("\n"))
        if match is None or match.group(1) != nonce or len(match.group(3)) != paths:
            return None
        digest = None if match.group(4) is None else unchanged.parse_reported(match.group(4))
        return Probe(Root(match.group(2)), parse_marker(match.group(5)),
                     tuple(bit == "1" for bit in match.group(3)), digest)
    return None


def write_marker_script(root: str, replica_id: str) -> str:
    """A sh script that writes the marker atomically unless the root already has one, then
    prints the marker that is there (another machine may have written it first)."""
    q = shlex.quote
    marker, tmp = q(f"{root}/{MARKER}"), q(f"{root}/{MARKER}.tmp")
    return (f"test -s {marker} || {{ printf '%s' {q(marker_text(replica_id))} > {tmp} && "
            f"mv -f {tmp} {marker}; }}; head -n 1 {marker}")


# --- mass deletion and mass change, from unison's plan -------------------------------------------

class Loss(enum.Enum):
    """How a side loses a file's content when an item propagates (unison keeps a backup)."""

    DELETE = "delete"
    OVERWRITE = "overwrite"


_CREATED = (Content.FILE, Content.LINK, Content.DIR)
_EDITED = (Content.CHANGED, Content.CHANGED_LINK)


def item_loss(item: PlanItem) -> tuple[str, Loss] | None:
    """The side that loses something when `item` propagates, and how; None when nothing is lost
    (new files, property changes, conflicts that stay, an emptied side receiving a file)."""
    if item.direction is Direction.TO_SERVER:
        side, sent, kept = "server", item.local, item.server
    elif item.direction is Direction.TO_LOCAL:
        side, sent, kept = "local", item.server, item.local
    else:
        return None
    if kept is Content.DELETED:
        return None
    if sent is Content.DELETED:
        return side, Loss.DELETE
    if sent is Content.UNCHANGED:
        # Only a forced direction (`-force`, "====>") sends a side that did not change over
        # one that did: a new entry there (unknown to the archives) is deleted, an edit there
        # replaced by the version synced before.
        return ((side, Loss.DELETE) if kept in _CREATED
                else (side, Loss.OVERWRITE) if kept in _EDITED else None)
    if sent in _EDITED or (sent in _CREATED and kept is not Content.UNCHANGED):
        return side, Loss.OVERWRITE
    return None


def deleted_paths(items: Iterable[PlanItem], side: str) -> list[str]:
    """The items of the plan that delete something on `side`."""
    return [item.path for item in items if item_loss(item) == (side, Loss.DELETE)]


def path_key(path: str) -> int:
    """A path as the window keeps an overwritten file: 64 bits of two checksums (no hashlib:
    it loads OpenSSL on every pass). Two paths that share one are counted once."""
    data = os.fsencode(path)
    return zlib.crc32(data) << 32 | zlib.adler32(data)


@dataclass
class Losses:
    """What a pass (or a window of passes) deletes and overwrites on one side."""

    deleted: int = 0
    overwritten: int = 0
    paths: list[str] = field(default_factory=list)  # the plan items that lose something
    gone: list[str] = field(default_factory=list)  # synced paths deleted as a whole
    # The overwritten files (`path_key`): a file saved again and again in the window is one
    # file overwritten, not one for each save. `unkeyed`: overwrites recorded without their
    # files (by a version before this), each counted.
    overwrote: set[int] = field(default_factory=set)
    unkeyed: int = 0

    def count(self, loss: Loss) -> int:
        return self.deleted if loss is Loss.DELETE else self.overwritten


def joined(*parts: dict[str, Losses]) -> dict[str, Losses]:
    """The losses of several plans (or a window and plans) together, per side."""
    sums: dict[str, Losses] = {}
    for part in parts:
        for side, lost in part.items():
            total = sums.setdefault(side, Losses())
            total.deleted += lost.deleted
            total.overwritten += lost.overwritten
            total.paths += lost.paths
            total.gone += lost.gone
            total.overwrote |= lost.overwrote
            total.unkeyed += lost.unkeyed
    return sums


def plan_losses(items: Iterable[PlanItem], weigh: Callable[[str, str], int],
                synced: Sequence[str] = ()) -> dict[str, Losses]:
    """Files each side would lose by the plan. A deleted item weighs the files at and below it
    on the side that loses it (`weigh(side, path)`: one for a file, none for an empty
    directory); an overwritten item weighs one. A deleted item that is one of the `synced` paths
    is noted as gone as a whole."""
    losses = {"local": Losses(), "server": Losses()}
    for item in items:
        if (lost := item_loss(item)) is None:
            continue
        side, loss = lost
        if loss is Loss.DELETE:
            losses[side].deleted += weigh(side, item.path)
            if item.path in synced:
                losses[side].gone.append(item.path)
        else:
            losses[side].overwritten += 1
            losses[side].overwrote.add(path_key(item.path))
        losses[side].paths.append(item.path)
    return losses


@dataclass(frozen=True)
class Limits:
    max_delete: int  # percent of the baseline's files
    max_change: int
    window: int  # seconds within which losses of earlier passes add up


def since_hint(window: int) -> str:
    """`restore --since`'s argument that covers the guard's window (whole minutes, at least
    one): the earlier passes whose losses counted already propagated theirs."""
    return f"{max(1, -(-window // 60))}m"


@dataclass(frozen=True)
class Refusal:
    """A pass the loss guard refused: which side would lose how many of its files, and how."""

    side: str
    loss: Loss
    count: int
    total: int
    paths: tuple[str, ...]
    gone: tuple[str, ...] = ()  # synced paths that vanished whole on the other side

    def message(self, limits: Limits, server: str) -> str:
        """One line: what would go, where, and both ways out."""
        setting, percent = (("sync.max_delete", limits.max_delete) if self.loss is Loss.DELETE
                            else ("sync.max_change", limits.max_change))
        shown = ", ".join(escape(p) for p in self.paths[:3])
        shown += " …" if len(self.paths) > 3 else ""
        origin, target = (("this computer", f"the server {server}") if self.side == "server"
                          else (f"the server {server}", "this computer"))
        undo = (f"brings them back from {target}" if self.loss is Loss.DELETE
                else f"puts back {target}'s versions")
        if self.gone:
            gone = ", ".join(escape(p) for p in self.gone)
            what = (f"would go: {gone} vanished on {origin} (not mounted?), and syncing would "
                    f"delete it on {target}")
        elif self.loss is Loss.DELETE:
            what = f"were deleted on {origin} ({shown}); syncing would delete them on {target}"
        else:
            what = (f"were changed on {origin} ({shown}); syncing would overwrite {target}'s "
                    "versions")
        rule = ("" if self.gone else f", more than {setting} = {percent} %")
        return (f"{self.count} of {self.total} files {what}{rule}, so nothing was synced. If "
                "that is intended: `roaming-homes sync --force`; if not: `roaming-homes "
                f"restore --refused` {undo}, and `roaming-homes restore --since "
                f"{since_hint(limits.window)}` what earlier passes already deleted")


def loss_refusal(planned: dict[str, Losses], recent: dict[str, Losses], total: int,
                 limits: Limits) -> Refusal | None:
    """The refusal of a pass whose plan, with the losses of the passes in the window, deletes
    more than max_delete % (or overwrites more than max_change %) of a side's `total` files
    (the baseline: the files of the last complete pass), and more than MIN_LOSSES; or that
    deletes a whole synced path (a folder that vanished is more likely unmounted than
    deleted), whatever its size."""
    for side in ("server", "local"):
        if planned[side].gone:
            lost = planned[side]
            return Refusal(side, Loss.DELETE, lost.deleted, max(total, lost.deleted),
                           tuple(lost.paths), tuple(lost.gone))
        before = recent.get(side, Losses())
        for loss, percent in ((Loss.DELETE, limits.max_delete),
                              (Loss.OVERWRITE, limits.max_change)):
            mine = planned[side].count(loss)
            if loss is Loss.DELETE:
                count = mine + before.count(loss)
            else:  # each file once, however often it was overwritten in the window
                count = len(planned[side].overwrote | before.overwrote) + before.unkeyed
            if mine and count > max(MIN_LOSSES, percent * total // 100):
                return Refusal(side, loss, count, max(total, count),
                               tuple(planned[side].paths))
    return None

