"""The first sync's bulk copy, its decisions and parsing (`unison.bulk`): which way it goes,
what the server's listing may say, when a copy still holds, how rsync is run."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from roaming_homes.session.progress import ProgressParser
from roaming_homes.unison import bulk
from roaming_homes.unison.bulk import Copy, Direction, Entry, Kind
from roaming_homes.unison.ssh import Server
from tests.support.programs import faked
from tests.test_unchanged import BUSYBOX_FIND

FILE = Entry(Kind.FILE, 5, 1_700_000_000_123_456_789)
DIR = Entry(Kind.DIR)
LINK = Entry(Kind.LINK, target="a")


def record(kind: str, size: str, mtime: str, target: str, path: str) -> bytes:
    return b"".join(os.fsencode(field) + b"\0" for field in (kind, size, mtime, target, path))


def listing(*records: bytes, compressed: bool = False) -> bytes:
    """The server script's answer: its header, the records and the end mark (gzipped after the
    header when `compressed`)."""
    body = b"".join(records) + b"end"
    return b"root gzip\n" + packed(body) if compressed else b"root\n" + body


def packed(data: bytes) -> bytes:
    """`data` gzipped with no time in its header: the same bytes in every process (the cases
    below are parameters, and their ids must match across the test workers)."""
    return gzip.compress(data, mtime=0)


@pytest.mark.parametrize(("local", "server", "way"), [
    ({"D": DIR, "D/f": FILE}, {"D": DIR}, Direction.UP),
    ({"D": DIR}, {"D": DIR, "D/l": LINK}, Direction.DOWN),
    ({"D": DIR, "D/f": FILE}, {"D/g": FILE}, None),  # both hold files: unison's union
    ({"D": DIR}, {"E": DIR}, None),  # neither does
    ({}, {}, None),
])
def test_a_copy_goes_only_into_a_side_that_holds_no_file(local: bulk.Listing,
                                                         server: bulk.Listing,
                                                         way: Direction | None) -> None:
    assert bulk.direction(local, server) is way


@pytest.mark.parametrize("compressed", [False, True])
def test_the_servers_listing_is_read_by_unisons_rules(compressed: bool) -> None:
    data = listing(record("d", "4096", "1700000000.5", "", "./Documents"),
                   record("f", "5", "1700000000.1234567890", "", "./Documents/a b"),
                   record("l", "1", "1700000000", "../x", "./Documents/link"),
                   record("f", "1", "1700000000.0", "", "./Documents/cache/junk"),
                   record("f", "1", "1700000000.0", "", "./Documents/x.tmp"),
                   record("f", "1", "1700000000.0", "", "./Documents/line\nbreak"),
                   b"f\x001\x001700000000.0\x00\x00./Documents/latin\xe9\x00",
                   compressed=compressed)

    found = bulk.parse_server_listing(data, ["Documents/cache"], ["*.tmp"])

    assert found == {"Documents": DIR,
                     "Documents/a b": Entry(Kind.FILE, 5, 1_700_000_000_123_456_789),
                     "Documents/link": Entry(Kind.LINK, target="../x"),
                     os.fsdecode(b"Documents/latin\xe9"): Entry(Kind.FILE, 1,
                                                                1_700_000_000_000_000_000)}


WHOLE = record("f", "5", "1700000000.0", "", "./a")


@pytest.mark.parametrize("data", [
    b"",  # the root is missing: the script says nothing
    b"rooted\n",
    b"root\n" + WHOLE,  # no end mark: find failed (or the answer was cut short)
    b"root\n" + WHOLE[:-1] + b"end",  # a record cut short
    b"root gzip\n" + packed(WHOLE),  # no end mark inside the stream
    b"root gzip\n" + packed(WHOLE + b"end")[:-4],  # the stream cut short
    b"root gzip\n" + packed(WHOLE + b"end") + b"more",  # something after it
    b"root gzip\n" + WHOLE + b"end",  # not compressed, though it says it is
    listing(WHOLE) + b"\0",  # something after the end mark
    listing(record("p", "0", "1700000000.0", "", "./fifo")),  # find lists no such type
    listing(record("f", "-5", "1700000000.0", "", "./a")),
    listing(record("f", "5", "yesterday", "", "./a")),
    listing(record("f", "5", "1700000000.0", "", "a")),  # not as find prints it
    listing(record("f", "5", "1700000000.0", "", "./../etc/passwd")),
    listing(record("f", "5", "1700000000.0", "", "./")),
])
def test_anything_the_script_would_not_print_makes_the_listing_unusable(data: bytes) -> None:
    assert bulk.parse_server_listing(data, [], []) is None


@pytest.mark.parametrize("compressed", [False, True])
def test_an_empty_listing_of_a_root_that_is_there_is_empty(compressed: bool) -> None:
    assert bulk.parse_server_listing(listing(compressed=compressed), [], []) == {}


@pytest.mark.parametrize("compressed", [False, True])
def test_a_listing_bigger_than_the_limit_is_unusable(
        monkeypatch: pytest.MonkeyPatch, compressed: bool) -> None:
    """A server that answers more than LISTING_LIMIT (a stream that unpacks to gigabytes) is not
    read past it: no copy, unison's first sync does all."""
    records = [record("f", "5", "1700000000.0", "", f"./f{i}") for i in range(200)]
    data = listing(*records, compressed=compressed)
    assert bulk.parse_server_listing(data, [], []) is not None
    monkeypatch.setattr(bulk, "LISTING_LIMIT", len(b"".join(records)) // 2)
    assert bulk.parse_server_listing(data, [], []) is None


COPIED = {"D": DIR, "D/f": FILE, "D/l": LINK}


@pytest.mark.parametrize(("local", "server", "holds"), [
    (COPIED, COPIED, True),
    ({**COPIED, "D/new": DIR}, COPIED, True),  # a directory carries no content
    ({**COPIED, "D/g": FILE}, COPIED, False),  # a file nobody copied
    (COPIED, {**COPIED, "D/f": Entry(Kind.FILE, 5, FILE.mtime_ns + 1)}, False),  # rewritten
    (COPIED, {**COPIED, "D/f": Entry(Kind.FILE, 6, FILE.mtime_ns)}, False),
    ({**COPIED, "D/l": Entry(Kind.LINK, target="b")}, COPIED, False),
    ({**COPIED, "D/f": DIR}, COPIED, False),
    ({"D": DIR, "D/l": LINK}, COPIED, False),  # gone on one side
])
def test_a_copy_holds_only_while_both_sides_hold_exactly_what_was_copied(
        local: bulk.Listing, server: bulk.Listing, holds: bool) -> None:
    assert bulk.same_as_copied(COPIED, local, server) is holds


@pytest.mark.parametrize(("code", "stopped", "ended"), [
    (0, False, Copy.DONE), (23, False, Copy.PARTIAL), (24, False, Copy.PARTIAL),
    (12, False, Copy.FAILED), (255, False, Copy.FAILED), (127, False, Copy.FAILED),
    (0, True, Copy.STOPPED), (20, True, Copy.STOPPED),
])
def test_rsyncs_exit_is_read_as_a_typed_outcome(code: int, stopped: bool, ended: Copy) -> None:
    assert bulk.outcome_of(code, stopped) is ended


def server(**changes: object) -> Server:
    values: dict[str, object] = {
        "host": "files.example.org", "port": 22, "user": "ann", "home": "/home/ann",
        "local_root": "", "connect_timeout": 3.0, "connection_reuse": 60,
        "ssh_options": ("-i", "/home/ann/.ssh/id ed25519"), **changes}
    return Server(**values)  # type: ignore[arg-type]


def test_rsync_reaches_the_server_over_the_shared_connection_with_our_ssh_options() -> None:
    shell = bulk.rsh(server(), Path("/run/user/1000/roaming-homes/ssh-0a"))
    assert shell is not None
    assert shell.startswith("ssh -o BatchMode=yes -o ConnectTimeout=")
    assert '"/home/ann/.ssh/id ed25519"' in shell  # a space kept whole for rsync's split
    assert "-o ControlPath=/run/user/1000/roaming-homes/ssh-0a -o ControlMaster=no" in shell
    assert shell.endswith("-p 22 -l ann")


@pytest.mark.parametrize("option", ['say"x"', "tab\there", "it's", "back\\slash"])
def test_an_ssh_option_rsync_cannot_keep_whole_means_no_bulk_copy(option: str) -> None:
    assert bulk.rsh(server(ssh_options=("-o", f"SetEnv=X={option}")), None) is None


def test_rsync_never_copies_over_a_file_and_runs_in_the_server_root(tmp_path: Path) -> None:
    def argv(way: Direction, home: str = "/home/ann") -> list[str]:
        return bulk.rsync_argv(way, server(home=home), shell="ssh", files_from=tmp_path / "list",
                               local_root="/home/ann",
                               temps=(tmp_path / "tmp", ".roaming-homes/bulk-tmp/0a"),
                               partial=tmp_path / "partial", timeout=72)

    up = argv(Direction.UP, home="/home/a b")
    assert "--ignore-existing" in up and "--from0" in up
    assert "--temp-dir=.roaming-homes/bulk-tmp/0a" in up
    # the list of names is read on the server, where `list_script` left it
    assert "--files-from=:/home/a b/.roaming-homes/bulk-tmp/0a/names" in up
    # a partial file is kept where the receiver is, outside the synced tree (an absolute path:
    # rsync would make a relative one in every folder it copies into)
    assert "--partial-dir=/home/a b/.roaming-homes/bulk-tmp/0a/partial" in up
    # receiving, the server makes its temporary directory, and keeps a cut copy's partial file
    assert up[-3:] == ["--rsync-path=cd '/home/a b' && mkdir -p .roaming-homes/bulk-tmp/0a && "
                       "rsync", "/home/ann/", "files.example.org:./"]
    down = argv(Direction.DOWN)
    assert f"--temp-dir={tmp_path / 'tmp'}" in down
    assert f"--files-from={tmp_path / 'list'}" in down
    assert f"--partial-dir={tmp_path / 'partial'}" in down
    assert "--rsync-path=cd /home/ann && rsync" in down
    assert down[-2:] == ["files.example.org:./", "/home/ann/"]


OLDER = Entry(Kind.FILE, 5, 1_700_000_000_123_456_788)


@pytest.mark.parametrize(("local", "server", "resuming", "way"), [
    # a copy down cut off: here only what it copied (a file, a link), the folders it made
    ({"D": DIR, "D/f": FILE}, {"D": DIR, "D/f": FILE, "D/l": LINK}, Direction.DOWN,
     Direction.DOWN),
    ({"D": DIR, "D/l": LINK, "E": DIR}, {"D": DIR, "D/f": FILE, "D/l": LINK}, Direction.DOWN,
     Direction.DOWN),
    # a copy up cut off, on the server's side
    ({"D": DIR, "D/f": FILE, "D/g": FILE}, {"D/g": FILE}, Direction.UP, Direction.UP),
    # a file here the source does not have, or not as it is there: unison's union
    ({"D/f": FILE, "D/x": FILE}, {"D/f": FILE, "D/g": FILE}, Direction.DOWN, None),
    ({"D/f": OLDER}, {"D/f": FILE, "D/g": FILE}, Direction.DOWN, None),
    ({"D/l": Entry(Kind.LINK, target="b")}, {"D/l": LINK, "D/g": FILE}, Direction.DOWN, None),
    # no copy that way under way: both hold files, unison's union
    ({"D/f": FILE}, {"D/f": FILE, "D/g": FILE}, Direction.UP, None),
    ({"D/f": FILE}, {"D/f": FILE, "D/g": FILE}, None, None),
])
def test_a_copy_cut_off_is_taken_up_only_over_what_it_copied(
        local: bulk.Listing, server: bulk.Listing, resuming: Direction | None,
        way: Direction | None) -> None:
    assert bulk.direction(local, server, resuming) is way


def test_the_record_of_a_copy_under_way_is_for_its_roots_only(tmp_path: Path) -> None:
    assert bulk.resumed(tmp_path, "pair") is None
    bulk.remember(tmp_path, "pair", Direction.DOWN)
    assert bulk.resumed(tmp_path, "pair") is Direction.DOWN
    assert bulk.resumed(tmp_path, "other pair") is None
    bulk.forget(tmp_path)
    assert bulk.resumed(tmp_path, "pair") is None
    bulk.forget(tmp_path)  # nothing to forget: no error


@pytest.mark.parametrize("text", ['{"pair": "pair", "way": "SIDEWAYS"}', '{"pair": "pair"}',
                                  '["pair", "DOWN"]', "not json", ""])
def test_a_record_that_is_not_ours_takes_nothing_up(tmp_path: Path, text: str) -> None:
    (tmp_path / "bulk-copy.json").write_text(text)
    assert bulk.resumed(tmp_path, "pair") is None


def _only(tmp_path: Path, *programs: str) -> str:
    """A PATH on which only `programs` are found (as on a server without gzip)."""
    directory = tmp_path / "only"
    directory.mkdir()
    for name in programs:
        found = shutil.which(name)
        assert found is not None
        (directory / name).symlink_to(found)
    return str(directory)


@pytest.mark.parametrize("programs", ["system", "without gzip"])
def test_the_server_script_lists_a_real_tree_as_the_parser_reads_it(tmp_path: Path,
                                                                    programs: str) -> None:
    root = tmp_path / "root"
    (root / "Documents" / "sub").mkdir(parents=True)
    (root / "Documents" / "sub" / "-f").write_text("hello")
    (root / "Documents" / "link").symlink_to("sub/-f")
    os.mkfifo(root / "Documents" / "fifo")
    path = os.environ["PATH"] if programs == "system" else _only(tmp_path, "find", "cat")
    answer = subprocess.run(["/bin/sh", "-c", bulk.server_script(str(root),
                                                                 ["Documents", "Absent"])],
                            capture_output=True, check=True, timeout=30,
                            env={"PATH": path}).stdout
    assert answer.startswith(b"root gzip\n" if programs == "system" else b"root\nd\0")

    found = bulk.parse_server_listing(answer, [".roaming-homes"], [])
    here = bulk.local_listing(str(root), ["Documents", "Absent"], [".roaming-homes"], [])

    assert found == here and set(here) == {"Documents", "Documents/sub", "Documents/sub/-f",
                                           "Documents/link"}
    assert subprocess.run(["sh", "-c", bulk.server_script(str(tmp_path / "gone"), ["D"])],
                          capture_output=True, check=True, timeout=30).stdout == b""


def test_a_server_whose_find_cannot_list_gives_no_listing(tmp_path: Path) -> None:
    """busybox's find has no -printf: it prints nothing and fails. Into gzip, its failure would
    go unseen by the exit status, and an empty listing would make a full server look empty."""
    (tmp_path / "root" / "Documents").mkdir(parents=True)
    (tmp_path / "root" / "Documents" / "kept").write_text("on the server")
    path = faked(tmp_path / "bin", "find", BUSYBOX_FIND, os.environ["PATH"])
    answer = subprocess.run(["sh", "-c", bulk.server_script(str(tmp_path / "root"),
                                                            ["Documents"])],
                            capture_output=True, check=True, timeout=30,
                            env={"PATH": path}).stdout
    assert answer.startswith(b"root gzip\n")
    assert bulk.parse_server_listing(answer, [], []) is None


def _sh(script: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script], capture_output=True, check=True, timeout=30)


def test_the_cleanup_removes_this_computers_temporary_directory_and_then_the_empty_parent(
        tmp_path: Path) -> None:
    root = tmp_path / "home of ann"
    for computer in ("0a", "0b"):
        (root / ".roaming-homes" / "bulk-tmp" / computer).mkdir(parents=True)
        (root / ".roaming-homes" / "bulk-tmp" / computer / ".big.bin.Xy12").write_text("part")

    # another computer's copy may be under way: its directory stays, and so does the parent
    assert _sh(bulk.server_cleanup(str(root), "0a")).stdout == b""
    assert [p.name for p in (root / ".roaming-homes" / "bulk-tmp").iterdir()] == ["0b"]
    assert _sh(bulk.server_cleanup(str(root), "0b")).stdout == b""
    assert list((root / ".roaming-homes").iterdir()) == []
    # nothing to clean, or no root: silent, and it never fails
    assert _sh(bulk.server_cleanup(str(root), "0b")).stdout == b""
    assert _sh(bulk.server_cleanup(str(tmp_path / "gone"), "0b") + "echo ok").stdout == b"ok\n"


def test_the_list_of_a_copy_up_is_kept_on_the_server_as_sent_and_private(
        tmp_path: Path) -> None:
    root = tmp_path / "home of ann"
    root.mkdir()
    names = ["Documents", "Documents/$(touch pwned)", "Documents/line\nbreak",
             "Documents/'quote\"", os.fsdecode(b"Documents/latin1-\xe9")]
    listed = bulk.list_of(names)
    assert listed.count(b"\0") == len(names)
    temp = bulk.server_temp("0a")
    done = subprocess.run(["sh", "-c", bulk.list_script(str(root), temp)], input=listed,
                          capture_output=True, check=False, timeout=30)
    assert (done.returncode, done.stderr) == (0, b"")
    kept = root / temp / "names"
    assert kept.read_bytes() == listed
    assert kept.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "pwned").exists() and not (root / "pwned").exists()


def _listing(files: int, size: int) -> bulk.Listing:
    listing: bulk.Listing = {"Documents": Entry(Kind.DIR), "Documents/link": Entry(
        Kind.LINK, target="x")}
    each = [size // files] * files if files else []
    if each:
        each[0] += size - sum(each)
    listing.update({f"Documents/{n}": Entry(Kind.FILE, bytes_, 1) for n, bytes_ in enumerate(each)})
    return listing


@pytest.mark.parametrize(("files", "size", "worth"), [
    (bulk.MIN_FILES - 2, 0, False),  # the link counts as a file: one short
    (bulk.MIN_FILES - 1, 0, True),
    (10, bulk.MIN_BYTES - 10, False),
    (10, bulk.MIN_BYTES, True),
    (0, 0, False),
])
def test_a_copy_is_made_only_where_it_pays(files: int, size: int, worth: bool) -> None:
    assert bulk.worth_copying(_listing(files, size)) is worth
    assert bulk.totals(_listing(files, size)) == (files + 1, size)


def test_the_copy_shows_as_a_first_sync_propagating_its_bytes() -> None:
    parser = ProgressParser(now=0)
    parser.bulk(3, 1000, sending=False, now=1)
    parser.copied(250, 0, now=1)
    parser.copied(600, 2, now=2)
    p = parser.progress
    assert (p.phase, p.first_run, p.items_to_fetch, p.bytes_to_fetch) == ("propagating", True,
                                                                          3, 1000)
    assert (p.items_to_send, p.bytes_to_send, p.items_total, p.bytes_total) == (0, 0, 3, 1000)
    assert (p.items_done, p.bytes_done, p.percent, p.rate) == (2, 600, 60, 350.0)
    parser.copied(1000, 3, now=3)
    parser.feed("Looking for changes", now=4)  # unison's run after the copy starts anew
    assert (parser.progress.phase, parser.progress.first_run) == ("scanning", True)
    assert parser.progress.items_total == 0
    done = parser.finish(now=5)  # it moved nothing: the copy is what the pass did
    assert (done.phase, done.items_done, done.items_total, done.bytes_done, done.percent) == (
        "done", 3, 3, 1000, 100)


def test_a_copy_to_the_server_shows_as_sending() -> None:
    parser = ProgressParser(now=0)
    parser.bulk(2, 500, sending=True, now=1)
    p = parser.progress
    assert (p.items_to_send, p.bytes_to_send, p.items_to_fetch, p.bytes_to_fetch) == (2, 500, 0,
                                                                                      0)
    assert (p.items_total, p.bytes_total) == (2, 500)


def test_a_unison_run_that_moves_something_after_the_copy_is_what_finish_shows() -> None:
    parser = ProgressParser(now=0)
    parser.bulk(3, 1000, sending=False, now=1)
    parser.feed("Looking for changes", now=2)
    parser.feed("Propagating updates", now=3)
    parser.progress.items_total = 1  # as an item line would
    assert parser.finish(now=4).items_total == 1


@pytest.mark.parametrize(("record", "copied"), [
    (b"      1,234,567  12%   10.00MB/s    0:00:05 (xfr#3, to-chk=10/20)", (1234567, 3)),
    (b"              0   0%    0.00kB/s    0:00:00", (0, 0)),
    (b"sending incremental file list", None),
    (b"Documents/12% of it", None),  # a name is no progress record
])
def test_rsyncs_progress_records_give_bytes_and_files(record: bytes,
                                                      copied: tuple[int, int] | None) -> None:
    assert bulk.parse_progress(record) == copied


def test_a_copy_is_checked_on_listings_taken_once_unison_has_scanned_both_sides(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from roaming_homes.actions import sync as engine

    taken: list[str] = []

    def listing(side: str) -> bulk.Listing:
        taken.append(side)
        return {}

    monkeypatch.setattr(engine, "_local_listing", lambda _prepared: listing("here"))
    monkeypatch.setattr(engine, "_server_listing", lambda _job, _prepared: listing("there"))
    relisting = engine._Relisting(None, None)  # type: ignore[arg-type]
    for line in ("Looking for changes", "| Reconciling changes", "  Waiting for changes "
                 "from server", "new file ---->  Reconciling changes  "):
        relisting(line)
    assert taken == []  # a path that reads as a status line is not one
    relisting("Reconciling changes")
    relisting("Reconciling changes")
    assert relisting.result() == ({}, {})
    assert sorted(taken) == ["here", "there"]  # once, before the result was asked for


def test_a_copy_unison_never_reconciled_is_listed_when_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from roaming_homes.actions import sync as engine

    monkeypatch.setattr(engine, "_local_listing", lambda _prepared: {"a": DIR})
    monkeypatch.setattr(engine, "_server_listing", lambda _job, _prepared: None)
    assert engine._Relisting(None, None).result() == ({"a": DIR}, None)  # type: ignore[arg-type]
