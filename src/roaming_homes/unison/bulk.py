"""The first sync's bulk copy: rsync copies a home into an empty side, unison then builds its
archives on two identical trees without reading every file again.

A first sync by unison alone costs up to twice `rsync -a` (its per-file exchanges, then reading
every file on both sides to fingerprint it). When one side holds no file at all under the
synced paths (a new laptop; a new server home) and the other does, a first pass instead:

1. lists both sides (`local_listing`; the server's in one exchange, `server_script`), by
   unison's own ignore rules;
2. copies what the full side holds with rsync over the pass's shared ssh connection
   (`rsync_argv`): never over anything (`--ignore-existing`), into a temporary directory
   outside the synced tree first, so a killed copy leaves no half file behind;
3. runs unison's first sync with `-fastercheckUNSAFE`: a file new to unison gets a stand-in
   fingerprint (its path and size) instead of being read. That is safe exactly when both
   sides hold the same contents, which this run's plan and step 4 prove: the plan must be
   empty (any item is a difference, and the run stops before it propagates anything:
   `actions.sync._Judge.copy_check`);
4. lists both sides again once that run has scanned them (`same_as_copied`; the listings are
   taken while unison reconciles, `actions.sync._Relisting`): every file must still have the
   size and modification time (to the nanosecond) the source had before the copy, on both
   sides, and there must be no other file. rsync gives the copy the source's time, so a file
   written on either side after it was listed (before the copy, during it, or before
   unison's scan) shows here. Then unison's first sync runs again the usual way, reading
   every file, and its archives replace the stand-ins: a conflict is found as ever. A file
   written after unison's scan differs from what its archives recorded: the next pass reads
   and syncs it as any change.

A copy that was cut off (the link went down, the computer was switched off) is taken up by the
next first pass where it stopped: the side it went into may then hold files, if each is one
the copy put there (`part_of`: the source's size and time to the nanosecond, which only a
finished copy gives a file) and this computer's record says such a copy was under way
(`remember`, `resumed`). rsync keeps the file it was copying (`--partial-dir`) and sends only
what it lacks. Anything else (rsync missing on either side, a failed copy, a side that holds
other files) leaves the pass to unison alone, which takes the union as on any first sync: the
copy only ever adds files to a side. So does a home too small for the copy to pay for its own
exchanges (`worth_copying`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import selectors
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.files import Shape, is_str, one_of, read_json
from roaming_homes.session.state import write_atomic
from roaming_homes.unison import runner
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.ignore import ignored_test, walk

FASTER = "-fastercheckUNSAFE"
# Where rsync keeps what it copies until a file is complete, below the server root: inside the
# server home's own directory, which is never synced (server.records.DIRECTORY), one for each
# computer (`server_temp`).
_SERVER_TEMP = ".roaming-homes/bulk-tmp"
_LIST = "names"  # the list of a copy up, in its temporary directory there (`list_script`)


# Below both, unison alone is faster: the copy costs two listings of the server and rsync's own
# session (about nine round trips and three server shells) and unison still builds its
# archives after it, while what it saves is unison's per-file work. Measured (docs/
# performance.md, row 3): 15 files of 7 MiB over `mobile` and 18 of 36 MiB over `broadband`
# were 0.3-0.7 s slower with the copy; 270 files of 256 MiB over `lan`, 5 000 small files over
# every link and 752 files of 1 GiB over loopback (where unison's transfer is CPU-bound) were
# faster with it.
MIN_FILES = 1000
MIN_BYTES = 64 << 20


def totals(listing: Listing) -> tuple[int, int]:
    """The files and links of `listing`, and their bytes."""
    files = [entry for entry in listing.values() if entry.kind is not Kind.DIR]
    return len(files), sum(entry.size for entry in files)


def worth_copying(listing: Listing) -> bool:
    """Whether a bulk copy of what `listing` holds beats unison's own first sync."""
    files, size = totals(listing)
    return files >= MIN_FILES or size >= MIN_BYTES


def server_temp(computer_id: str) -> str:
    return f"{_SERVER_TEMP}/{computer_id}"


def server_cleanup(root: str, computer_id: str) -> str:
    """sh for the server: remove this computer's temporary directory of a bulk copy (made by
    `rsync_argv`'s command, with a partial file of a copy that was cut off), and the directory
    of all of them once empty. Silent, and never fails; for `guards.guard_command`'s chores of
    a first sync's unison run, which comes after the copy in the same pass: a copy that lost
    its connection ends the pass before it, so the next copy still finds its partial file."""
    q = shlex.quote
    temp = q(server_temp(computer_id))
    return (f"(cd {q(root)} && if [ -d {temp} ]; then rm -rf {temp}; "
            f"rmdir {q(_SERVER_TEMP)}; fi; :) >/dev/null 2>&1; ")


class Kind(enum.Enum):
    FILE = "f"
    DIR = "d"
    LINK = "l"


@dataclass(frozen=True)
class Entry:
    """What a listing knows of one synced entry: enough to tell a changed file."""

    kind: Kind
    size: int = 0
    mtime_ns: int = 0
    target: str = ""  # a link's

    def same_as(self, other: Entry) -> bool:
        """The same entry for a copy: a file of the same size and modification time, a link to
        the same target, a directory (unison syncs no directory times)."""
        if self.kind is not other.kind:
            return False
        if self.kind is Kind.FILE:
            return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)
        return self.kind is Kind.DIR or self.target == other.target


Listing = dict[str, Entry]


class Direction(enum.Enum):
    UP = "to the server"
    DOWN = "from the server"


def direction(local: Listing, server: Listing,
              resuming: Direction | None = None) -> Direction | None:
    """Which way a bulk copy goes: into the side that holds no file (or link), from the one that
    holds some; None when both hold files (unison takes the union) or neither does. When
    `resuming` a copy that way, the side it went into may hold what that copy put there."""
    here, there = holds_files(local), holds_files(server)
    if here and not there:
        return Direction.UP
    if there and not here:
        return Direction.DOWN
    if resuming is Direction.UP and here and part_of(server, local):
        return Direction.UP
    if resuming is Direction.DOWN and there and part_of(local, server):
        return Direction.DOWN
    return None


def part_of(target: Listing, source: Listing) -> bool:
    """Every file and link of `target` is the same as the source's at its path (`Entry.same_as`):
    what a copy from `source` that was cut off leaves."""
    return all(path in source and entry.same_as(source[path])
               for path, entry in target.items() if entry.kind is not Kind.DIR)


# This computer's record of a copy under way (in its state directory), for the next first pass
# to take it up: the pair of roots it was for, and the way it went.
_UNDER_WAY = "bulk-copy.json"
_RECORD = Shape.complete({"pair": is_str, "way": one_of(*(way.name for way in Direction))})


def remember(state_dir: Path, pair: str, way: Direction) -> None:
    """Note that a copy `way` between the roots of `pair` starts (kept until `forget`)."""
    write_atomic(state_dir / _UNDER_WAY, json.dumps({"pair": pair, "way": way.name}) + "\n")


def resumed(state_dir: Path, pair: str) -> Direction | None:
    """The way a copy of `pair` went that did not finish; None when none is on record (or the
    record is not ours, or is for other roots)."""
    record = read_json(state_dir / _UNDER_WAY, _RECORD.checked)
    if record is None or record["pair"] != pair:
        return None
    return Direction[record["way"]]


def forget(state_dir: Path) -> None:
    (state_dir / _UNDER_WAY).unlink(missing_ok=True)


def holds_files(listing: Listing) -> bool:
    return any(entry.kind is not Kind.DIR for entry in listing.values())


def local_listing(root: str, paths: Sequence[str], ignore_paths: Sequence[str],
                  ignore_names: Sequence[str]) -> Listing:
    """The entries under `paths` of `root` that unison syncs (`ignore.walk`): files, links and
    directories (anything else is not copied)."""
    found: Listing = {}
    for rel, st in walk(root, paths, ignore_paths, ignore_names):
        if stat.S_ISREG(st.st_mode):
            found[rel] = Entry(Kind.FILE, st.st_size, st.st_mtime_ns)
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = Entry(Kind.DIR)
        elif stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                found[rel] = Entry(Kind.LINK, target=os.readlink(f"{root}/{rel}"))
    return found


# The server's listing is compressed when the server has gzip: 100 000 entries are 5.6 MB as
# find prints them, 1.0 MB with `gzip -1` (70 ms there), seconds saved on a slow link. No
# answer may be more than LISTING_LIMIT once uncompressed (a few million entries).
LISTING_LIMIT = 512 << 20
_GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip stream
_END = b"end"


def server_script(root: str, paths: Sequence[str]) -> str:
    """sh for the server: in `root`, the entries under `paths` as `type NUL size NUL mtime NUL
    link target NUL ./path NUL` (GNU find), then `end` once find has succeeded, all after a
    line that says the root is there and whether the rest is compressed (`root gzip`) or not
    (`root`). Nothing when the root is missing: nothing may be copied into a home that is not
    mounted. The end mark, not the exit status, says the listing is whole: in a pipe into
    gzip find's failure (a find without -printf) would go unseen."""
    q = shlex.quote
    starts = " ".join(q(f"./{p}") for p in paths)
    return (f"cd {q(root)} 2>/dev/null || exit 0; "
            f"for p in {starts}; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then set -- \"$@\" \"$p\"; "
            "fi; done; "
            "if command -v gzip >/dev/null 2>&1; then z='gzip -1'; printf 'root gzip\\n'; "
            "else z=cat; printf 'root\\n'; fi; "
            "{ if [ $# -eq 0 ] || find \"$@\" \\( -type f -o -type d -o -type l \\) "
            f"-printf '%y\\0%s\\0%T@\\0%l\\0%p\\0'; then printf {_END.decode()}; fi; }} | $z")


_TIME = re.compile(rb"(\d+)(?:\.(\d+))?")


def _listing_body(data: bytes) -> bytes | None:
    """What follows the header of `server_script`'s answer, uncompressed and without its end
    mark; None when the root is missing, the stream is not whole, or it is too big."""
    head, newline, body = data.partition(b"\n")
    if newline != b"\n" or head not in (b"root", b"root gzip"):
        return None
    if head == b"root gzip":
        unzip = zlib.decompressobj(_GZIP)
        try:
            body = unzip.decompress(body, LISTING_LIMIT)
        except zlib.error:
            return None
        if not unzip.eof or unzip.unconsumed_tail or unzip.unused_data:
            return None  # cut short, too big, or something after the stream
    elif len(body) > LISTING_LIMIT:
        return None
    return body[:-len(_END)] if body.endswith(_END) else None


def parse_server_listing(data: bytes, ignore_paths: Sequence[str],
                         ignore_names: Sequence[str]) -> Listing | None:
    """The listing in `server_script`'s answer, by unison's ignore rules; None when the root is
    missing or anything in the answer is not as the script prints it."""
    body = _listing_body(data)
    if body is None:
        return None
    fields = body.split(b"\0")
    if len(fields) % 5 != 1 or fields[-1]:
        return None
    ignored = ignored_test(ignore_paths, ignore_names)
    found: Listing = {}
    for at in range(0, len(fields) - 1, 5):
        kind, size, mtime, target, path = fields[at:at + 5]
        entry = _entry(kind, size, mtime, target)
        rel = os.fsdecode(path).removeprefix("./")
        if entry is None or not path.startswith(b"./") or not rel or ".." in rel.split("/"):
            return None
        if not ignored(rel):
            found[rel] = entry
    return found


def _entry(kind: bytes, size: bytes, mtime: bytes, target: bytes) -> Entry | None:
    match = _TIME.fullmatch(mtime)
    if match is None or not size.isdigit():
        return None
    fraction = (match.group(2) or b"")[:9].ljust(9, b"0")
    mtime_ns = int(match.group(1)) * 1_000_000_000 + int(fraction)
    if kind == b"f":
        return Entry(Kind.FILE, int(size), mtime_ns)
    if kind == b"d":
        return Entry(Kind.DIR)
    if kind == b"l":
        return Entry(Kind.LINK, target=os.fsdecode(target))
    return None


def same_as_copied(copied: Listing, local: Listing, server: Listing) -> bool:
    """Both sides hold exactly the files and links that were copied, each as it was listed at
    the source before the copy (`Entry.same_as`); directories may differ (unison makes what is
    missing)."""
    for side in (local, server):
        files = {path: entry for path, entry in side.items() if entry.kind is not Kind.DIR}
        if files.keys() != {p for p, e in copied.items() if e.kind is not Kind.DIR}:
            return False
        if not all(entry.same_as(copied[path]) for path, entry in files.items()):
            return False
    return all(path in local and path in server for path in copied)


class Copy(enum.Enum):
    """How rsync's copy ended."""

    DONE = "done"
    PARTIAL = "partial"  # some files were not copied (vanished, unreadable: rsync's 23, 24)
    STOPPED = "stopped"  # the pass was asked to stop
    FAILED = "failed"  # anything else: no rsync on the server, the link, a full disk


def outcome_of(returncode: int, stopped: bool) -> Copy:
    if stopped:
        return Copy.STOPPED
    if returncode == 0:
        return Copy.DONE
    return Copy.PARTIAL if returncode in (23, 24) else Copy.FAILED


def rsh(server: transport.Server, socket: Path | None) -> str | None:
    """rsync's `-e`: ssh with the pass's options over its shared connection, in the words rsync
    splits (on spaces; an argument with spaces in double quotes). None when an option holds
    what rsync cannot keep whole (a double quote, a tab or a line break)."""
    words = []
    for arg in ["ssh", *transport.ssh_options(server, socket), "-p", str(server.port),
                "-l", server.user]:
        if any(char in arg for char in "\"\t\n\r'\\"):
            return None
        words.append(f'"{arg}"' if " " in arg or not arg else arg)
    return " ".join(words)


def rsync_argv(way: Direction, server: transport.Server, *, shell: str, files_from: Path,
               local_root: str, temps: tuple[Path, str], partial: Path,
               timeout: float) -> list[str]:
    """rsync copying the entries named in the list of names (NUL-separated, relative to the
    roots) `way`, never over an existing file, through the temporary directory of the
    receiving side (`temps`: here, and on the server, below its root). The list is
    `files_from` here for a copy down; for a copy up, the one `list_script` left in the
    server's temporary directory: rsync reads a list on the sending side one byte a system
    call (about 5 s at 100 000 names, before anything is sent), and one that comes over the
    connection from the other side in buffers. A file it was copying when cut off is
    kept in a directory of its own on the receiving side (`partial` here; `partial` in the
    server's temporary directory there), where the next copy finds it and sends only what it
    lacks. On the server rsync runs in the root (`cd` first: a root that is gone fails the copy
    rather than being made), and when it receives, it makes its temporary directory there
    first (`server_cleanup` removes it once the first sync's unison run starts)."""
    q = shlex.quote
    remote = f"{server.host}:./"
    start = f"cd {q(server.home)} && "
    if way is Direction.UP:
        temp, kept = temps[1], f"{server.home}/{temps[1]}/partial"
        names = f":{server.home}/{temps[1]}/{_LIST}"
        source, target = f"{local_root}/", remote
        start += f"mkdir -p {q(temp)} && "
    else:
        temp, kept, names = str(temps[0]), str(partial), str(files_from)
        source, target = remote, f"{local_root}/"
    return ["rsync", "--links", "--perms", "--times", "--dirs", "--ignore-existing",
            "--from0", f"--files-from={names}", f"--temp-dir={temp}",
            f"--partial-dir={kept}", f"--timeout={round(timeout)}", "--info=progress2",
            "-e", shell, f"--rsync-path={start}rsync", source, target]


# rsync's --info=progress2: "  1,234,567  12%  10.00MB/s  0:00:05 (xfr#3, to-chk=10/20)"
_PROGRESS = re.compile(rb"\s*([\d,]+)\s+\d+%(?:.*?xfr#(\d+))?")


def parse_progress(record: bytes) -> tuple[int, int] | None:
    """Bytes and files copied so far, from one of rsync's --info=progress2 records."""
    match = _PROGRESS.match(record)
    if match is None:
        return None
    return int(match.group(1).replace(b",", b"")), int(match.group(2) or 0)


def run_rsync(argv: list[str], abort: threading.Event | None,
              on_bytes: Callable[[int, int], None]) -> tuple[Copy, str]:
    """Run rsync; `on_bytes` gets the bytes and the files copied so far as rsync reports them.
    Returns how it ended and the last of what it said on stderr (for the log)."""
    with tempfile.TemporaryFile() as err, runner.start(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err) as proc:
        assert proc.stdout is not None
        stopped = _follow(proc, abort, on_bytes)
        err.seek(0)
        said = err.read()[-2000:].decode(errors="replace")
    return outcome_of(proc.returncode, stopped), said


def _follow(proc: subprocess.Popen[bytes], abort: threading.Event | None,
            on_bytes: Callable[[int, int], None]) -> bool:
    """Read rsync's progress until it ends; True when `abort` stopped it."""
    assert proc.stdout is not None
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if abort is not None and abort.is_set():
                proc.terminate()  # on SIGTERM rsync keeps its partial file (--partial-dir)
                proc.wait()
                return True
            if not selector.select(timeout=0.2):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait()
                return False
            *records, buffered = re.split(rb"[\r\n]", buffered + chunk)
            for record in reversed(records):
                if (copied := parse_progress(record)) is not None:
                    on_bytes(*copied)
                    break


def list_of(entries: Sequence[str]) -> bytes:
    """rsync's `--files-from` list: NUL-separated, as the names are (not UTF-8 kept too)."""
    return b"".join(os.fsencode(entry) + b"\0" for entry in entries)


def write_list(path: Path, names: bytes) -> None:
    """The list of a copy down (`list_of`), here, for this side's rsync to send the server."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as handle:
        handle.write(names)


def list_script(root: str, temp: str) -> str:
    """sh for the server: keep its standard input, the list of a copy up (`list_of`), in the
    copy's temporary directory `temp` below `root`, where `rsync_argv`'s rsync reads it (only
    its owner may read it: it names the home's files). `server_cleanup` removes it with the
    directory."""
    q = shlex.quote
    return f"cd {q(root)} && umask 077 && mkdir -p {q(temp)} && cat > {q(f'{temp}/{_LIST}')}"


def fresh_temp(directory: Path) -> None:
    """An empty private directory for rsync's temporary files (a killed copy left some)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
