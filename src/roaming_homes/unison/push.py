"""Real-time mode's fast path: small files, new or edited, go to the server in one exchange.

unison's exchange for one changed path costs about sixteen round trips (its start, the
archives' lock, the scan, the copy, the commit): over a mobile link, more than a second between
saving a file and its arrival on the server. A file that is new here and small, at a name the
server has nothing at, can lose nothing by arriving there at once. A real-time cycle sends such
files in one exchange (`send_script`, `encode`); the server makes each only where nothing is at
its name (link(2), which never replaces), with the contents, permissions and modification time
it has here, and only in the replica the last pass synced (its marker), never through a link.

A small file edited here goes the same way when the server's file is still the version last
synced (`Outgoing.expect`: its `stat` line, which the session checked against the size and time
this computer's file had when it was synced, `synced_as`). The server replaces it only if its
`stat` line is still that one, right before it does (rename(2) of the new contents, written
beside it); the version it replaces goes to the server's backups first, as unison keeps one
(`keep`: the newest under the file's own name, older ones renumbered). Anything else (the
server's file changed, gone, a link) is left to unison's pass, which finds the conflict if
there is one. An edit overwrites: the session counts it in the loss guard's window before it
sends it (`actions.sending`).

unison's archives do not know such a file yet. The session keeps a ledger of what it sent
(`Placed`: the file's state here as read for sending, and the server's once made there), and a
pass over those paths soon after settles each as unison would had it carried the file itself,
by which side changed since it was sent (`settle`, with the states `check_script` reports):

- neither: unison finds the same file new on both sides and records it; nothing is carried;
- only this side (edited again, deleted): this side's version wins (unison's `-force`), and
  the server's, the one sent, goes to its backups as any version replaced there;
- only the server (another computer edited or deleted it): the server's version wins, and
  this side's goes to its backups;
- both: a conflict, which unison decides as any other.

Names travel as octal escapes that only `printf`'s format reads (`encode`), never as words of
a command; file contents as exactly counted bytes (`head -c`); the server's answers are
checked line by line against the nonce of the exchange and name no file (`parse_sent`,
`parse_checked`).
"""

from __future__ import annotations

import bisect
import enum
import os
import re
import shlex
import stat
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from roaming_homes.safety.guards import MARKER, marker_text

FILE_LIMIT = 256 << 10  # bytes: a bigger file goes through unison, whose transfer resumes
BATCH_FILES = 64  # files one exchange carries at most
BATCH_BYTES = 1 << 20  # bytes one exchange carries at most
_STATE = re.compile(r"[ -~]{1,200}")  # the server's `stat` line: printable ASCII, bounded
_HEADER = "roaming-homes push "

Here = tuple[int, int, int, int]  # a file's inode, size, mtime and ctime (ns) on this computer
Synced = tuple[int, int]  # a file's size and mtime (ns) on this computer when it was last synced


def sent_mode(st: os.stat_result) -> int:
    """The permissions a file sent gets on the server (unison syncs these, not set-id bits)."""
    return stat.S_IMODE(st.st_mode) & 0o777


def here_state(st: os.stat_result) -> Here:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Outgoing:
    """A new file here, read for sending: its contents and what the server's copy gets."""

    path: str  # relative to the home
    data: bytes
    mode: int  # permission bits (unison syncs these, not set-id bits)
    mtime_ns: int
    here: Here  # as it was while read: a change since shows against it
    expect: str | None = None  # an edit: the server's file as last synced (its `stat` line)


@dataclass(frozen=True)
class Placed:
    """A file sent and made on the server, which unison's archives do not know yet."""

    here: Here  # this computer's file as it was sent
    there: str  # the server's file once made (its `stat` line, compared as it is)


def read_new(root: Path, path: str, expect: str | None = None) -> Outgoing | None:
    """`path` below `root` as a file to send (an edit of the server's version `expect`), or
    None: not a regular file (a link, a directory, gone), bigger than FILE_LIMIT, below a link,
    or changed while it was read."""
    full = root / path
    try:
        real = os.path.realpath(root)
        if os.path.realpath(full.parent) != os.path.normpath(
                os.path.join(real, os.path.dirname(path))):
            return None  # a link on the way: unison syncs the link, not what it leads to
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode) or before.st_size > FILE_LIMIT:
        os.close(fd)
        return None
    with open(fd, "rb") as handle:
        data = handle.read(FILE_LIMIT + 1)
        after = os.fstat(fd)
    try:
        named = os.lstat(full)
    except OSError:
        return None
    state = here_state(before)
    if len(data) != before.st_size or here_state(after) != state or here_state(named) != state:
        return None
    return Outgoing(path, data, sent_mode(before), before.st_mtime_ns, state, expect)


def batch(files: Iterable[Outgoing]) -> list[Outgoing]:
    """The files one exchange takes, in order: at most BATCH_FILES and BATCH_BYTES. `files` is
    read no further than that (and one more file at most, the one that does not fit)."""
    taken: list[Outgoing] = []
    size = 0
    for item in files:
        if len(taken) == BATCH_FILES or size + len(item.data) > BATCH_BYTES:
            break
        taken.append(item)
        size += len(item.data)
    return taken


def encode(path: str) -> str:
    """A name as `printf`'s format that prints exactly it: every byte an octal escape, so the
    text has only backslashes and digits, nothing a shell or printf could take for more."""
    return "".join(f"\\{byte:03o}" for byte in os.fsencode(path))


def _mtime(ns: int) -> str:
    return f"@{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def send_input(files: Sequence[Outgoing]) -> bytes:
    """`send_script`'s standard input: for each file a line (size, mode, time, name, and the
    server's `stat` line it replaces or `-` for a new file), then its contents."""
    return b"".join(
        f"{len(item.data)} {item.mode:o} {_mtime(item.mtime_ns)} {encode(item.path)} "
        f"{'-' if item.expect is None else encode(item.expect)}\n".encode()
        + item.data for item in files)


# A file's state on the server, as `Placed.there` keeps it: inode, size, permissions and
# modification time to the nanosecond (GNU and busybox `stat` alike). Not the change time,
# which making the link and removing the temporary name move: the state of a file made there is
# taken from its temporary name before it is linked into place, so that a write by anyone else
# in between still shows as a change. The permissions: unison changes them in place (a change
# of mode alone keeps the inode, size and time).
_STAT = "stat -c '%i %s %a %y' -- \"$1\" 2>/dev/null"
_DECODE = 'n=$(printf "$name"; printf /); n=${n%/}; '  # the `/` keeps trailing line breaks


def _start(root: str, nonce: str) -> str:
    q = shlex.quote
    return (f"cd {q(root)} 2>/dev/null || {{ printf '%s\\n' {q(_HEADER + nonce + ' missing')}; "
            "exit 0; }; ")


def send_script(root: str, replica_id: str, nonce: str, backups: str = "",
                keep: int = 1) -> str:
    """sh for the server: make each file `send_input` describes, where nothing is at its name,
    or replace it where the server's file is still the version the input names (its backups
    under `backups`, relative to `root`, keep `keep` numbered versions beside the newest), in
    the replica `replica_id` (its marker) only. Prints a header line with `nonce` (`ready`,
    or why nothing was made: `missing`, `marker`), then one line for each file: its number and
    `made <stat line>`, or `exists`, `changed` (not the version named), `unkept` (the version
    it would replace could not be kept), `noparent`, `link` (a link on the way), `failed`, or
    `short` (its contents did not all arrive; nothing after it is read).

    Each file is written beside its name first, under a name of unison's temporary files
    (which unison, our monitors and `leftovers` know: never synced, never reported), so that
    it gets what its folder gives a new file (default ACLs, a security label) and its link
    stays on one file system.

    The version an edit replaces is kept as unison keeps one (`keep`, after unison's
    `Stasher`): none when the new contents are the same (a save that changed only the time), or
    when the newest kept version holds them already; else the run of versions from the newest
    on is renumbered up to the first free number (the oldest, at `keep`, dropped), and the
    newest kept under the file's own name, a hard link (a copy across file systems). Then the
    server's file is checked once more and replaced at once (rename(2)): a version another
    computer puts there before that check is not replaced (and is in the backups); one put
    there between the check and the rename, a window of one process start, would be."""
    q = shlex.quote
    return (
        f"{_start(root, nonce)}"
        f"m=$(head -c 200 {q(MARKER)} 2>/dev/null | head -n 1); "
        f"[ \"$m\" = {q(marker_text(replica_id).strip())} ] || {{ printf '%s\\n' "
        f"{q(_HEADER + nonce + ' marker')}; exit 0; }}; "
        f"umask 077; printf '%s\\n' {q(_HEADER + nonce + ' ready')}; "
        f"B={q(backups)}; K={int(keep)}; state() {{ {_STAT}; }}; "
        "there() { [ -e \"$1\" ] || [ -L \"$1\" ]; }; "
        "linked() { "  # a link among the folders of `$1`
        'p=.; r=$1/; while [ -n "$r" ]; do c=${r%%/*}; r=${r#*/}; p=$p/$c; '
        '[ -L "$p" ] && return 0; done; return 1; }; '
        "where() { "  # why `$n` cannot be made (or replaced: `$e`), or nothing
        'linked "$d" && { echo link; return; }; '
        '[ -d "$d" ] || { echo noparent; return; }; '
        'if [ -z "$e" ]; then there "$n" && echo exists; '
        'elif [ -L "$n" ] || [ ! -f "$n" ] || [ "$(state "$n")" != "$e" ]; then echo changed; '
        'fi; }; '
        "keep() { "  # the version at `$n` into the backups, as unison keeps one
        'case "$n" in */*) b=$B/${n%/*}; k=${n##*/};; *) b=$B; k=$n;; esac; '
        '[ -n "$B" ] && ! linked "$b" && mkdir -p "$b" || return 1; '
        'c=$b/$k; if there "$c"; then cmp -s -- "$n" "$c" && return 0; '
        'j=1; while [ "$j" -lt "$K" ] && there "$b/.bak.$j.$k"; do j=$((j+1)); done; '
        'rm -f "$b/.bak.$j.$k"; there "$b/.bak.$j.$k" && return 1; '
        'while [ "$j" -gt 1 ]; do h=$((j-1)); mv -f "$b/.bak.$h.$k" "$b/.bak.$j.$k" '
        '|| return 1; j=$h; done; mv -f "$c" "$b/.bak.1.$k" || return 1; fi; '
        'ln -- "$n" "$c" 2>/dev/null || cp -p -- "$n" "$c"; }; '
        "place() { "
        'chmod "$mode" "$f" && touch -d "$when" "$f" && s=$(state "$f") '
        '|| { echo failed; return; }; '
        'if [ -z "$e" ]; then if ln -- "$f" "$n" 2>/dev/null; then echo "made $s"; '
        'elif there "$n"; then echo exists; else echo failed; fi; return; fi; '
        'cmp -s -- "$f" "$n" || keep || { echo unkept; return; }; '
        'if [ -n "$(where)" ]; then echo changed; '
        'elif mv -f -- "$f" "$n"; then echo "made $s"; else echo failed; fi; }; '
        "i=0; while IFS=' ' read -r size mode when name expect; do i=$((i+1)); "
        f'{_DECODE}e=; [ "$expect" = - ] || e=$(printf "$expect"); '
        'case "$n" in */*) d=${n%/*};; *) d=.;; esac; w=$(where); '
        'f=/dev/null; [ -n "$w" ] || f="./$d/.unison.roaming-homes-$$-$i.unison.tmp"; '
        'head -c "$size" > "$f" 2>/dev/null; '
        'if [ -n "$w" ]; then echo "$i $w"; continue; fi; '
        '[ "$(($(wc -c < "$f")))" = "$size" ] || { rm -f "$f"; echo "$i short"; break; }; '
        'echo "$i $(place)"; rm -f "$f"; done')


def check_input(paths: Sequence[str]) -> bytes:
    return b"".join(f"{encode(path)}\n".encode() for path in paths)


def check_script(root: str, nonce: str) -> str:
    """sh for the server: for each name `check_input` lists, its number and `file <stat
    line>` (`_STAT`), or `gone` when it is not a regular file there now."""
    return (f"{_start(root, nonce)}"
            f"printf '%s\\n' {shlex.quote(_HEADER + nonce + ' ready')}; state() {{ {_STAT}; }}; "
            f"i=0; while IFS= read -r name; do i=$((i+1)); {_DECODE}"
            f'if [ -f "$n" ] && [ ! -L "$n" ] && s=$(state "$n"); then echo "$i file $s"; '
            'else echo "$i gone"; fi; done')


class Sent(enum.Enum):
    """What became of one file sent."""

    MADE = "made"
    EXISTS = "exists"  # the server has something at its name: unison's pass decides
    CHANGED = "changed"  # an edit, and the server's file is not the version named: unison's
    UNKEPT = "unkept"  # an edit whose server version could not go to the backups: unison's
    NOPARENT = "noparent"  # its directory is not there yet: unison's pass makes it
    LINK = "link"  # a link on the server on its way: unison's pass decides
    FAILED = "failed"  # the server could not make it (no `touch -d`, `stat -c`, a full disk)
    SHORT = "short"


class Refused(enum.Enum):
    """Why the server made none of the files."""

    MISSING = "missing"  # the home is not there
    MARKER = "marker"  # not the replica of the last pass (unmounted, replaced)
    ANSWER = "answer"  # no answer as the script gives one


_SENT = {item.value: item for item in Sent}
_LINE = re.compile(r"(\d+) ([a-z]+)(?: (.*))?")


def _answers(text: str, nonce: str, count: int) -> dict[int, tuple[str, str]] | Refused:
    """The numbered lines after the header (number -> word, rest), or why there are none."""
    head, _, rest = text.partition("\n")
    if head in (_HEADER + nonce + " missing", _HEADER + nonce + " marker"):
        return Refused(head.rpartition(" ")[2])
    if head != _HEADER + nonce + " ready":
        return Refused.ANSWER
    found: dict[int, tuple[str, str]] = {}
    for line in rest.splitlines():
        match = _LINE.fullmatch(line)
        if match is None or not 1 <= int(match.group(1)) <= count:
            return Refused.ANSWER
        found[int(match.group(1))] = (match.group(2), match.group(3) or "")
    return found


@dataclass(frozen=True)
class SendAnswer:
    placed: dict[str, Placed]  # the files made on the server
    unmade: dict[str, Sent]  # the others the server said something of, and what


def parse_sent(text: str, nonce: str, files: Sequence[Outgoing]) -> SendAnswer | Refused:
    """What `send_script` made, and what it said of the rest, or why it made none; a file it
    says nothing of (after a `short` one) was not made either."""
    found = _answers(text, nonce, len(files))
    if isinstance(found, Refused):
        return found
    answer = SendAnswer({}, {})
    for number, (word, rest) in found.items():
        if word not in _SENT:
            return Refused.ANSWER
        item = files[number - 1]
        if _SENT[word] is not Sent.MADE:
            answer.unmade[item.path] = _SENT[word]
        elif _STATE.fullmatch(rest):
            answer.placed[item.path] = Placed(item.here, rest)
        else:
            return Refused.ANSWER
    return answer


def parse_checked(text: str, nonce: str, paths: Sequence[str]) -> dict[str, str | None] | None:
    """`check_script`'s answer: path -> its stat line on the server, None when it is gone
    there; None for an answer not as the script gives it."""
    found = _answers(text, nonce, len(paths))
    if isinstance(found, Refused) or len(found) != len(paths):
        return None
    states: dict[str, str | None] = {}
    for number, (word, rest) in found.items():
        if word == "file" and _STATE.fullmatch(rest):
            states[paths[number - 1]] = rest
        elif word == "gone" and not rest:
            states[paths[number - 1]] = None
        else:
            return None
    return states


class Winner(enum.Enum):
    """Whose version of a file sent stands once it is settled (see the module's docstring)."""

    LOCAL = "local"
    SERVER = "server"
    UNISON = "unison"  # both changed: a conflict, decided as any


def settle(placed: Placed, here: Here | None, there: str | None) -> Winner:
    """Whose version stands: this side's unless the server's changed since it was made there
    (then the server's, unless this side's changed too)."""
    if there == placed.there:
        return Winner.LOCAL
    return Winner.SERVER if here == placed.here else Winner.UNISON


def synced_as(line: str, synced: Synced, mode: int) -> bool:
    """Whether the server's file (its `stat` line, `_STAT`) is the version synced: the size and
    modification time this computer's file had when it was last synced, and the permissions
    it has now (`mode`). As far as unison's own quick check can tell, which allows a second
    either way: a copy unison makes gets the time to the microsecond (at times one below, from
    its floating-point seconds), one of ours to the nanosecond."""
    match = _SERVER_STATE.fullmatch(line)
    if match is None:
        return False
    size, permissions, when, fraction, zone = match.groups()
    try:
        seconds = int(datetime.strptime(f"{when} {zone}", "%Y-%m-%d %H:%M:%S %z").timestamp())
    except ValueError:
        return False
    nanoseconds = seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
    return (int(size) == synced[0] and int(permissions, 8) & 0o777 == mode
            and abs(nanoseconds // 1000 - synced[1] // 1000) <= 1)


_SERVER_STATE = re.compile(
    r"\d+ (\d+) ([0-7]{1,6}) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? "
    r"([+-]\d{4})")


class Known:
    """The names this computer's home held at the session's first pass, and those synced
    since, with each file's size and time then (`Synced`): a changed file at such a name is
    not new (the server has it, or had it); a small one is sent as an edit when the server's
    file is still that version (`synced_as`). Kept as sorted hashes (8 bytes a name, 16 more
    for its state): a collision only ever takes a new file for a known one, which unison then
    carries, or gives an edit a state the server's file does not have."""

    def __init__(self, entries: Iterable[tuple[str, Synced | None]]) -> None:
        keys, sizes, times = array("q"), array("q"), array("q")
        for name, state in entries:
            keys.append(hash(name))
            sizes.append(-1 if state is None else state[0])
            times.append(0 if state is None else state[1])
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self._sorted = array("q", (keys[at] for at in order))
        self._sizes = array("q", (sizes[at] for at in order))
        self._times = array("q", (times[at] for at in order))
        self._added: dict[int, Synced | None] = {}

    def __contains__(self, name: str) -> bool:
        key = hash(name)
        return key in self._added or self._at(key) is not None

    def synced(self, name: str) -> Synced | None:
        """The file's size and time here when it was last synced; None when it was not a
        regular file then, or the name is not known."""
        key = hash(name)
        if key in self._added:
            return self._added[key]
        at = self._at(key)
        if at is None or self._sizes[at] < 0:
            return None
        return self._sizes[at], self._times[at]

    def add(self, entries: Iterable[tuple[str, Synced | None]]) -> None:
        self._added.update((hash(name), state) for name, state in entries)

    def _at(self, key: int) -> int | None:
        at = bisect.bisect_left(self._sorted, key)
        return at if at < len(self._sorted) and self._sorted[at] == key else None
