"""`unison-fsmonitor`: tells `unison -repeat watch` which paths changed, from Linux inotify.

unison starts this program (on each end of a sync) with pipes on stdin/stdout and speaks the
line protocol of its `src/fswatch.ml` (docs/unison.md §3):

    monitor: VERSION 1                       (at start; unison's own VERSION/DEBUG need no reply)
    unison:  START <hash> <fspath> <path>    watch fspath/path                  -> OK
    unison:  DIR <rel> | LINK <rel>          watch fspath/path/rel (before unison reads it) -> OK
    unison:  DONE                            end of that scan                   (no reply)
    unison:  WAIT <hash>                     -> once, when something changed: CHANGES <hash>...
    unison:  CHANGES <hash>                  -> RECURSIVE <path relative to fspath>..., DONE
    unison:  RESET <hash>                    forget the replica                 (no reply)
    client:  TREE                            tree mode (our extension, below)   -> OK

Every argument is percent-encoded. Any command but WAIT cancels the pending waits. An unknown
command is answered with one ERROR line, and the monitor exits.

Watching follows unison's own scans: each directory unison announces with DIR is watched before
unison reads it, so nothing created after that is missed, and a change in a directory reports
the child that changed; unison rescans that child and announces every directory below it. A new
or moved-in directory tree is therefore watched as soon as unison has looked at it, and nothing
written into it before then is lost (the rescan sees it). Watches of directories that were
deleted, moved away or not announced again in a rescan are dropped.

TREE is not unison's: roaming-homes' own real-time loop sends it first when it runs this monitor
itself (locally, and on the server over ssh). That loop drives guarded unison passes itself, so
no unison scan announces directories. In tree mode each START watches every directory below
fspath/path at once (symlinks are not followed; unreadable directories are skipped), a directory
created or moved in below a watched one is watched with everything below it as soon as its event
arrives (and reported itself), and DONE drops no watch. A start path that does not exist yet is
looked out for from its deepest existing ancestor (the lookout moving down as the components
between appear) and, once it appears, reported and watched with everything below it at once.
WAIT and CHANGES answer as for unison.
A monitor without TREE answers ERROR, which is how the loop recognises an old one.

A change is reported once it has been quiet for SETTLE seconds (as the reference monitor does),
so a file being written is not synced half-way; a change whose last event ended it (a written
file closed, a name moved or deleted) once it has been quiet for CLOSED seconds, unless a path
above it still settles (a new folder is reported as a whole). A file created and deleted again
before unison saw it is not reported at all. When the kernel's event queue overflows, events
were lost: the whole replica is reported, which makes unison rescan everything it syncs. When
the inotify watch limit is reached the monitor sends ERROR naming `fs.inotify.max_user_watches`
and exits; unison stops with "Filesystem watcher error: ...", and roaming-homes falls back to
interval syncs.

The codec (`quote`, `unquote`, `split_on_space`) and the change bookkeeping (`ripe_changes`)
are pure functions; `Monitor` holds the watches; `main` is the select loop.
"""

from __future__ import annotations

import os
import select
import sys
import time

from roaming_homes.relative import collapse, folders_above, is_below
from roaming_homes.unison.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_EXCL_UNLINK,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
)

# Not `typing.TYPE_CHECKING`: importing typing alone costs the server's monitor 1 MiB and 17 ms,
# per user (mypy reads the name as true all the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

SETTLE = 0.5  # seconds a path must be quiet before it is reported (unison's watcher uses 0.5)
# Seconds for a path whose last event ended its change. Long enough for an editor's save (write a
# temporary file, close it, rename it over the old one: a temporary file gone again is never
# reported), short enough that a saved file is on its way at once.
CLOSED = 0.05
PROTOCOL_VERSION = "1"
LIMIT_HINT = "/proc/sys/fs/inotify/max_user_watches"

# Bytes that stay as they are in unison's percent encoding (fswatch.ml `disallowed_char`).
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                   b"-_.~!*'();:@&=+$,/?#[]")
_HEX = "0123456789ABCDEF"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_EXCL_UNLINK)
_GONE = IN_DELETE | IN_MOVED_FROM
_ENDED = IN_CLOSE_WRITE | IN_MOVED_TO | _GONE  # the events after which a path is complete
# unison writes every file it receives as `.unison.NAME.HASH.unison.tmp`, then renames it.
_TEMP_PREFIX, _TEMP_SUFFIX = ".unison.", ".unison.tmp"


class ProtocolError(Exception):
    """unison sent something this monitor cannot understand."""


class WatchLimitError(Exception):
    """The kernel refused another watch: fs.inotify.max_user_watches is exhausted."""


# --- codec --------------------------------------------------------------------------------------

def quote(text: str) -> str:
    """Percent-encode like unison: file names are bytes; uppercase hex; see _PLAIN."""
    return "".join(chr(b) if b in _PLAIN else f"%{_HEX[b >> 4]}{_HEX[b & 15]}"
                   for b in os.fsencode(text))


def unquote(text: str) -> str:
    """Undo `quote` (hex in either case); raises ProtocolError on a malformed escape."""
    if "%" not in text:
        return text
    raw, out, i = os.fsencode(text), bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            digits = raw[i + 1:i + 3]
            if len(digits) != 2 or not all(d in _HEX_DIGITS for d in digits):
                raise ProtocolError(f"bad percent escape in {text!r}")
            out.append(int(digits, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def split_on_space(line: str) -> tuple[str, str]:
    """First word and the rest, like fswatch.ml: `START h p ` -> ("START", "h p ")."""
    head, _, rest = line.partition(" ")
    return head, rest


def join(parent: str, name: str) -> str:
    """A path relative to a replica; "" is the replica itself."""
    return f"{parent}/{name}" if parent else name


class Change:
    """The last event seen for a path; `created` while it may be a short-lived new file;
    `settle`, the quiet it needs before it is reported (CLOSED once its last event ended it)."""

    __slots__ = ("created", "settle", "time")

    def __init__(self, time: float, created: bool = False, settle: float = SETTLE) -> None:
        self.time = time
        self.created = created
        self.settle = settle

    def ripe(self, now: float) -> bool:
        return now - self.time > self.settle


def _ripe(pending: dict[str, Change], now: float) -> Iterator[str]:
    """The pending paths that have been quiet long enough, and have no path above them that
    has not (each path's folders are looked up: the monitor asks this at every event)."""
    young = {path for path, change in pending.items() if not change.ripe(now)}
    if "" in young:  # the replica itself still settles: everything waits for it
        return
    for path in pending:
        if path not in young and not any(folder in young for folder in folders_above(path)):
            yield path


def ripe_changes(pending: dict[str, Change], now: float) -> list[str]:
    """The pending paths that have been quiet long enough, and have no path above them that
    has not, as RECURSIVE lines want them."""
    return collapse(_ripe(pending, now))


# --- the monitor --------------------------------------------------------------------------------

DIR, LOOKOUT = "dir", "lookout"


class Replica:
    """One root unison synchronises (identified by its archive hash)."""

    __slots__ = ("dirs", "everything", "fspath", "lookouts", "pending")

    def __init__(self, fspath: str) -> None:
        self.fspath = fspath
        self.pending: dict[str, Change] = {}
        self.everything = False  # events were lost: report the whole replica at once
        self.dirs: dict[str, int] = {}  # watched path -> watch descriptor
        # A start path that does not exist yet: its nearest existing ancestor is watched for
        # the one child name that leads to it (e.g. the server gains Documents in the first
        # sync): path -> (wd, ancestor).
        self.lookouts: dict[str, tuple[int, str]] = {}


class Scan:
    """A START ... DONE exchange in progress."""

    __slots__ = ("announced", "hash", "start")

    def __init__(self, hash_: str, start: str, announced: set[str]) -> None:
        self.hash = hash_
        self.start = start  # path relative to the replica's fspath
        self.announced = announced


Owner = tuple[str, str, str]  # (replica hash, path, DIR or LOOKOUT); a lookout's path is the
# start path it looks out for, not the ancestor it watches


class Monitor:
    """The protocol state machine over an inotify object (anything with add_watch/rm_watch)."""

    def __init__(self, inotify: Any, write: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 debug: Callable[[str], None] | None = None) -> None:
        self.inotify = inotify
        self.write = write
        self.clock = clock
        self.replicas: dict[str, Replica] = {}
        self.owners: dict[int, set[Owner]] = {}  # one inode may be watched for several paths
        self.waiting: set[str] = set()
        self.scan: Scan | None = None
        self.tree = False  # TREE: START watches whole trees, new directories are watched at once
        self._debug = debug

    def debug(self, text: str) -> None:
        if self._debug:
            self._debug(text)

    # -- commands --

    def command(self, line: str) -> None:
        """Handle one line from unison (without its newline)."""
        self.debug(f"<< {line}")
        cmd, args = split_on_space(line)
        if cmd != "WAIT":
            self.waiting.clear()
        if cmd in ("VERSION", "DEBUG"):
            return
        if cmd == "START":
            hash_, rest = split_on_space(args)
            fspath, path = split_on_space(rest)
            self.start(unquote(hash_), unquote(fspath), unquote(path))
        elif cmd in ("DIR", "LINK"):
            self.add_dir(unquote(args), follow=cmd == "LINK")
        elif cmd == "DONE":
            self.end_scan()
        elif cmd == "WAIT":
            self.waiting.add(unquote(args))
            self.check_waits()
        elif cmd == "CHANGES":
            self.report(unquote(args))
        elif cmd == "RESET":
            self.reset(unquote(args))
        elif cmd == "TREE":
            self.enter_tree_mode(args)
        else:
            raise ProtocolError(f"unknown command '{cmd}'")

    def start(self, hash_: str, fspath: str, path: str) -> None:
        replica = self.replicas.get(hash_)
        if replica is not None and replica.fspath != fspath:
            self.reset(hash_)
            replica = None
        if replica is None:
            replica = self.replicas[hash_] = Replica(fspath)
        self._unwatch(hash_, path, LOOKOUT)
        if path == "":
            replica.everything = False
        self.scan = Scan(hash_, path, {path})
        if self.tree:
            self._approach(hash_, path)
        elif not self._watch(hash_, path, follow=False):
            self._look_out(hash_, path)
        self.write("OK")

    def enter_tree_mode(self, args: str) -> None:
        if args:
            raise ProtocolError("TREE takes no argument")
        self.tree = True
        self.write("OK")

    def add_dir(self, rel: str, follow: bool) -> None:
        if self.scan is None:
            raise ProtocolError("DIR or LINK outside START ... DONE")
        path = join(self.scan.start, rel) if rel else self.scan.start
        replica = self.replicas[self.scan.hash]
        # unison reads this directory now: what changed in it so far is what it will find.
        for key in [k for k in replica.pending if _parent(k) == path]:
            del replica.pending[key]
        self._watch(self.scan.hash, path, follow=follow)
        self.scan.announced.add(path)
        self.write("OK")

    def end_scan(self) -> None:
        """Drop the watches below the scanned path that unison did not announce again (none in
        tree mode, where nothing is announced)."""
        if self.scan is None:
            raise ProtocolError("DONE outside START ... DONE")
        scan, self.scan = self.scan, None
        if self.tree:
            return
        replica = self.replicas[scan.hash]
        for path in [p for p in replica.dirs if is_below(p, [scan.start])
                     and p not in scan.announced]:
            self._unwatch(scan.hash, path, DIR)

    def reset(self, hash_: str) -> None:
        replica = self.replicas.get(hash_)
        if replica is None:
            return
        for path in list(replica.dirs):
            self._unwatch(hash_, path, DIR)
        for path in list(replica.lookouts):
            self._unwatch(hash_, path, LOOKOUT)
        del self.replicas[hash_]

    def report(self, hash_: str) -> None:
        replica = self.replicas.get(hash_)
        paths: list[str] = []
        if replica is not None:
            if replica.everything:
                paths = [""]
                replica.everything = False
            else:
                paths = ripe_changes(replica.pending, self.clock())
            for key in [k for k in replica.pending if is_below(k, paths)]:
                del replica.pending[key]
        for path in paths:
            self.write(f"RECURSIVE {quote(path)}")
        self.write("DONE")

    # -- waiting --

    def check_waits(self) -> None:
        """Answer the pending WAITs if a waited-for replica has something to report."""
        if not self.waiting:
            return
        now = self.clock()
        ready = sorted(h for h in self.waiting if self._has_ripe(h, now))
        if ready:
            self.waiting.clear()
            self.write("CHANGES " + " ".join(quote(h) for h in ready))

    def next_check(self) -> float | None:
        """Seconds until a young change ripens for a waiting replica (None: nothing to time)."""
        times = [c.time + c.settle for h in self.waiting if h in self.replicas
                 for c in self.replicas[h].pending.values()]
        if not times:
            return None
        return max(0.0, min(times) - self.clock()) + 0.01

    def _has_ripe(self, hash_: str, now: float) -> bool:
        replica = self.replicas.get(hash_)
        return replica is not None and (replica.everything or next(
            _ripe(replica.pending, now), None) is not None)

    # -- events --

    def events(self, events: Iterable[Any]) -> None:
        """Record inotify events (objects with wd, mask, name), then answer waits."""
        now = self.clock()
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                self.debug("event queue overflow: reporting every replica")
                for replica in self.replicas.values():
                    replica.everything = True
                continue
            for owner in list(self.owners.get(event.wd, ())):
                self._event(owner, event, now)
            if event.mask & IN_IGNORED:
                # The kernel dropped the watch (directory deleted, file system unmounted).
                for owner in list(self.owners.get(event.wd, ())):
                    self._forget(owner, event.wd)
        self.check_waits()

    def _event(self, owner: Owner, event: Any, now: float) -> None:
        hash_, path, kind = owner
        replica = self.replicas[hash_]
        mask, name = event.mask, event.name
        if kind == LOOKOUT:
            self._lookout_event(hash_, path, mask, name, now)
        elif name:
            if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
                return  # unison's own temporary file: it never syncs one (os.ml, isTempFile)
            child = join(path, name)
            if mask & IN_MOVED_FROM and mask & IN_ISDIR:
                # The watches below follow the directory wherever it went: not ours any more.
                for sub in [p for p in replica.dirs if is_below(p, [child])]:
                    self._unwatch(hash_, sub, DIR)
            self._record(replica, child, now, mask)
            if self.tree and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(hash_, child)
        elif mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_MODIFY | IN_ATTRIB):
            # The watched directory itself changed; its parent (if watched) reports it too.
            self._record(replica, path, now, mask)
            if mask & IN_MOVE_SELF:
                self._unwatch(hash_, path, DIR)

    def _lookout_event(self, hash_: str, target: str, mask: int, name: str, now: float) -> None:
        """An event in the directory that looks out for the missing start path `target`. In
        tree mode the lookout follows the components of `target` as they appear, or goes back
        up when its directory goes, and `target` is watched as a tree once it is there."""
        replica = self.replicas[hash_]
        lookout = replica.lookouts.get(target)
        if lookout is None:  # moved or dropped by an earlier event of this batch
            return
        step = join(lookout[1], name)
        if not name:
            if self.tree and mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                self._approach(hash_, target)
        elif not is_below(target, [step]):
            return  # another child of the ancestor
        elif self.tree:
            # Something on the way appeared: watch `target`, or look out from further down.
            watched = bool(mask & (IN_CREATE | IN_MOVED_TO)) and self._approach(hash_, target)
            if step == target or watched:  # a component above `target` is not reported
                self._record(replica, target, now, mask)
        else:
            self._record(replica, step, now, mask)

    def _record(self, replica: Replica, path: str, now: float, mask: int) -> None:
        old = replica.pending.get(path)
        if old is not None and old.created and mask & _GONE:
            del replica.pending[path]  # created and gone before unison looked: nothing to do
            return
        created = old.created if old else bool(mask & IN_CREATE and self.scan is None)
        replica.pending[path] = Change(now, created, CLOSED if mask & _ENDED else SETTLE)

    # -- watches --

    def _add_watch(self, full: str, mask: int) -> int | None:
        try:
            wd: int = self.inotify.add_watch(full, mask)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise WatchLimitError(limit_message(full)) from None
            # ENOENT: gone again (its parent reported that); EACCES, ENOTDIR, ELOOP: unison
            # reports those itself when it scans.
            self.debug(f"cannot watch {full}: {exc.strerror}")
            return None
        return wd

    def _full(self, hash_: str, path: str) -> str:
        fspath = self.replicas[hash_].fspath
        return join(fspath, path) if path else fspath

    def _watch(self, hash_: str, path: str, follow: bool) -> bool:
        mask = WATCH_MASK if follow else WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW
        replica = self.replicas[hash_]
        wd = self._add_watch(self._full(hash_, path), mask)
        if replica.dirs.get(path) not in (None, wd):
            self._unwatch(hash_, path, DIR)
        if wd is None:
            return False
        replica.dirs[path] = wd
        self.owners.setdefault(wd, set()).add((hash_, path, DIR))
        return True

    def _watch_tree(self, hash_: str, top: str) -> bool:
        """Watch `top` and every directory below it, not following symlinks; False when `top`
        itself cannot be watched. Each directory is watched before it is listed, so one made
        meanwhile is either listed or reported by the watch (and watched then)."""
        if not self._watch(hash_, top, follow=False):
            return False
        below = [top]
        while below:
            path = below.pop()
            full = self._full(hash_, path)
            try:
                with os.scandir(full) as entries:
                    subdirs = [join(path, e.name) for e in entries
                               if e.is_dir(follow_symlinks=False)]
            except OSError as exc:  # EACCES; ENOENT: gone again (its parent reported that)
                self.debug(f"cannot list {full}: {exc.strerror}")
                continue
            below.extend(sub for sub in subdirs if self._watch(hash_, sub, follow=False))
        return True

    def _look_out(self, hash_: str, path: str) -> str | None:
        """Watch the nearest existing ancestor of a missing start path for its creation, moving
        the lookout there if it watched another one; that ancestor (None: none can be watched)."""
        replica = self.replicas[hash_]
        parts = path.split("/") if path else []
        while parts:
            parts.pop()
            ancestor = "/".join(parts)
            wd = self._add_watch(self._full(hash_, ancestor), WATCH_MASK | IN_ONLYDIR)
            if wd is None:
                continue
            old = replica.lookouts.get(path)
            if old is not None and old[0] != wd:
                self._unwatch(hash_, path, LOOKOUT)
            replica.lookouts[path] = (wd, ancestor)
            self.owners.setdefault(wd, set()).add((hash_, path, LOOKOUT))
            return ancestor
        return None

    def _approach(self, hash_: str, path: str) -> bool:
        """Tree mode: watch the tree at the start path `path` if it is a directory now (its
        lookout dropped), else look out from its deepest existing ancestor; True when watched.
        A component made before its parent was watched is found by the next round."""
        previous: str | None = None
        for _ in range(path.count("/") + 2):  # each round but the last gets one level closer
            if self._watch_tree(hash_, path):
                self._unwatch(hash_, path, LOOKOUT)
                return True
            ancestor = self._look_out(hash_, path)
            if ancestor is None or ancestor == previous:
                break
            previous = ancestor
        return False

    def _unwatch(self, hash_: str, path: str, kind: str) -> None:
        replica = self.replicas[hash_]
        wd = replica.dirs.get(path) if kind == DIR else replica.lookouts.get(path, (None,))[0]
        if wd is None:
            return
        self._forget((hash_, path, kind), wd)
        if wd not in self.owners:
            try:  # noqa: SIM105 (contextlib: more memory for every user's monitor)
                self.inotify.rm_watch(wd)
            except OSError:  # EINVAL: the kernel dropped it already
                pass

    def _forget(self, owner: Owner, wd: int) -> None:
        hash_, path, kind = owner
        replica = self.replicas.get(hash_)
        if replica is not None:
            if kind == DIR and replica.dirs.get(path) == wd:
                del replica.dirs[path]
            elif kind == LOOKOUT and replica.lookouts.get(path, (None,))[0] == wd:
                del replica.lookouts[path]
        owners = self.owners.get(wd)
        if owners is not None:
            owners.discard(owner)
            if not owners:
                del self.owners[wd]


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def limit_message(path: str) -> str:
    """The ERROR text when the kernel refuses another watch."""
    try:
        with open(LIMIT_HINT) as handle:
            limit = handle.read().strip()
    except OSError:
        limit = "?"
    return (f"cannot watch {path}: the inotify watch limit is reached "
            f"(fs.inotify.max_user_watches = {limit}); raise it, e.g. "
            "`sysctl fs.inotify.max_user_watches=524288` (persist it in /etc/sysctl.d/), "
            "or sync fewer directories")


# --- the program --------------------------------------------------------------------------------

def _writer(fd: int) -> Callable[[str], None]:
    def write(line: str) -> None:
        data = (line + "\n").encode("ascii")
        while data:
            data = data[os.write(fd, data):]

    return write


def idle_timeout(argv: list[str]) -> float | None:
    """`--idle-timeout SECONDS` from the command line (roaming-homes' real-time mode passes it to
    the server's monitor); None without it, or when it is not a positive number. Anything else
    on the command line is ignored, as it always was (unison passes nothing)."""
    for index, arg in enumerate(argv[:-1]):
        if arg == "--idle-timeout":
            try:
                seconds = float(argv[index + 1])
            except ValueError:
                return None
            return seconds if seconds > 0 else None
    return None


_SSHD = ("sshd", "sshd-session")  # the per-connection process (sshd-session since OpenSSH 9.8)


def own_sshd(pid: int, proc: str = "/proc") -> int | None:
    """The nearest ancestor of `pid` that is an sshd process of this user: the unprivileged half
    of the ssh connection this monitor was started over (None: not started over ssh)."""
    uid = os.getuid()
    for _ in range(16):
        try:
            with open(f"{proc}/{pid}/stat", "rb") as handle:
                stat = handle.read()
            owner = os.stat(f"{proc}/{pid}").st_uid
        except OSError:
            return None
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        if comm in _SSHD and owner == uid:
            return pid
        pid = int(stat[stat.rindex(b")") + 2:].split()[1])
        if pid <= 1:
            return None
    return None


def end_connection() -> int | None:
    """End the ssh connection this monitor runs over (SIGTERM to its sshd process, this user's):
    its client stopped talking, so everything on that connection (a `unison -server` of a pass
    cut off mid-way too) is talking to nobody. Returns the PID signalled."""
    import signal

    sshd = own_sshd(os.getppid())
    if sshd is not None:
        try:
            os.kill(sshd, signal.SIGTERM)
        except OSError:
            return None
    return sshd


def main() -> int:
    """Serve unison on stdin/stdout until it closes stdin. Exit 1 after sending ERROR.

    With `--idle-timeout SECONDS` (roaming-homes' real-time mode, on the server): when nothing
    at all came on stdin for that long, the computer is gone without closing the connection (lid
    closed, network down; sshd notices only with ClientAliveInterval, or after TCP's keep-alive
    of two hours): the monitor ends that ssh connection and exits, so neither it nor a unison
    server of the connection stays behind. The computer sends a keep-alive every fifth of it.
    """
    import signal

    # Die quietly with unison (Ctrl-C in a terminal reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    write = _writer(sys.stdout.fileno())
    try:
        if serve(write, idle_timeout(sys.argv[1:])):
            end_connection()
    except BrokenPipeError:
        return 0  # unison is gone
    except (ProtocolError, WatchLimitError) as exc:
        message = str(exc)
    except OSError as exc:
        message = f"inotify failed: {exc} (the number of inotify instances is limited by " \
                  "fs.inotify.max_user_instances)"
    except Exception as exc:  # a bug here must reach unison's user, not vanish in a traceback
        message = f"internal error: {exc!r}"
    else:
        return 0
    try:  # noqa: SIM105 (contextlib: more memory for every user's monitor)
        write(f"ERROR {quote(message)}")
    except BrokenPipeError:
        pass
    return 1


def serve(write: Callable[[str], None], idle: float | None = None) -> bool:
    """The select loop: unison's commands on stdin, inotify events; returns at end of input
    (False), or True when nothing came on stdin for `idle` seconds."""
    from roaming_homes.unison.inotify import INotify

    debug_enabled = False

    def debug(text: str) -> None:
        if debug_enabled:
            print(f"unison-fsmonitor: {text}", file=sys.stderr, flush=True)

    with INotify() as inotify:
        monitor = Monitor(inotify, write, debug=debug)
        stdin, buffer = sys.stdin.fileno(), b""
        write(f"VERSION {PROTOCOL_VERSION}")
        heard = time.monotonic()
        while True:
            timeout = monitor.next_check()
            if idle is not None:
                left = heard + idle - time.monotonic()
                if left <= 0:
                    return True
                timeout = left if timeout is None else min(timeout, left)
            ready, _, _ = select.select([stdin, inotify], [], [], timeout)
            if inotify in ready:
                monitor.events(inotify.read())
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    return False
                heard = time.monotonic()
                *lines, buffer = (buffer + data).split(b"\n")
                for raw in lines:
                    line = os.fsdecode(raw)
                    debug_enabled = debug_enabled or line == "DEBUG"
                    if split_on_space(line)[0] in ("WAIT", "CHANGES"):
                        monitor.events(inotify.read())  # include what just happened
                    monitor.command(line)
            monitor.check_waits()


if __name__ == "__main__":
    sys.exit(main())
