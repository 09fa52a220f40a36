"""Small files sent on their own, new or edited (`unison.push`): the server's scripts under a
real POSIX sh (dash), with hostile names, and the parsing and the settling decisions on top."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from roaming_homes.actions import sending
from roaming_homes.safety.guards import MARKER, marker_text
from roaming_homes.unison import profile, push

pytestmark = pytest.mark.timeout(60)

HOSTILE = ["Documents/plain.txt", "Documents/back\\slash %s %n \\101", "Documents/$(touch pwned)",
           "Documents/'quoted' \"twice\" `ticks`", "Documents/-dash", "Documents/ spaced ",
           os.fsdecode(b"Documents/not utf-8 \xff\xfe"), "Documents/ünïcödé ✓", "Documents/*"]


def sh(script: str, data: bytes, cwd: Path) -> str:
    return subprocess.run(["sh", "-c", script], input=data, capture_output=True, check=True,
                          cwd=cwd, timeout=30).stdout.decode()


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path]:
    here, there = tmp_path / "here", tmp_path / "there"
    for side in (here, there):
        (side / "Documents").mkdir(parents=True)
    (there / MARKER).write_text(marker_text("r1"))
    return here, there


def write(root: Path, path: str, data: bytes, mode: int = 0o640) -> None:
    (root / path).write_bytes(data)
    os.chmod(root / path, mode)


def send(here: Path, there: Path, wanted: dict[str, str | None], replica: str = "r1",
         nonce: str = "n1") -> tuple[list[push.Outgoing], push.SendAnswer | push.Refused]:
    """`wanted`'s files from `here` to `there` by `send_script`: each a new file (None) or an
    edit of the server's version named (its `stat` line); backups as the session keeps them."""
    files = [item for path, line in wanted.items()
             if (item := push.read_new(here, path, line)) is not None]
    text = sh(push.send_script(str(there), replica, nonce, ".roaming-homes/backup", 3),
              push.send_input(files), there.parent)
    return files, push.parse_sent(text, nonce, files)


def test_every_byte_of_a_name_goes_through_printf_as_it_is(tmp_path: Path) -> None:
    name = os.fsdecode(bytes(b for b in range(1, 256) if b != ord("/")))
    out = subprocess.run(["sh", "-c", 'printf "$1"', "sh", push.encode(name)],
                         capture_output=True, check=True).stdout
    assert out == os.fsencode(name)
    assert set(push.encode(name)) <= set("\\01234567")


def test_hostile_names_are_made_byte_exact_with_mode_and_time_and_nothing_runs(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    for number, path in enumerate(HOSTILE):
        write(here, path, f"contents {number}\n".encode() * number, 0o600 + number % 2 * 0o44)
    files, answer = send(here, there, dict.fromkeys(HOSTILE))

    assert isinstance(answer, push.SendAnswer) and not answer.unmade
    assert sorted(answer.placed) == sorted(HOSTILE)
    for item in files:
        made = there / item.path
        st = os.lstat(made)
        assert made.read_bytes() == item.data
        assert (st.st_mtime_ns, st.st_mode & 0o7777) == (item.mtime_ns, item.mode)
    assert not list(there.parent.rglob("pwned")) and not Path("pwned").exists()
    assert sorted(p.name for p in (there / "Documents").iterdir()) == sorted(
        p.rpartition("/")[2] for p in HOSTILE)  # no temporary file left

    checked = sh(push.check_script(str(there), "n2"), push.check_input(HOSTILE), there.parent)
    states = push.parse_checked(checked, "n2", HOSTILE)
    assert states == {path: placed.there for path, placed in answer.placed.items()}


def test_nothing_is_made_over_a_name_the_server_has_nor_through_a_link(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    (there / "Documents" / "theirs.txt").write_text("theirs")
    (there / "Documents" / "dangling").symlink_to("nowhere")
    (there / "elsewhere").mkdir()
    (there / "Documents" / "linked").symlink_to("../elsewhere")
    for path in ("Documents/linked", "Documents/missing"):
        (here / path).mkdir()
    names = ["Documents/theirs.txt", "Documents/dangling", "Documents/linked/x",
             "Documents/missing/y", "Documents/fine"]
    for name in names:
        write(here, name, b"ours")

    _, answer = send(here, there, dict.fromkeys(names))

    assert isinstance(answer, push.SendAnswer)
    assert list(answer.placed) == ["Documents/fine"]
    assert answer.unmade == {"Documents/theirs.txt": push.Sent.EXISTS,
                             "Documents/dangling": push.Sent.EXISTS,
                             "Documents/linked/x": push.Sent.LINK,
                             "Documents/missing/y": push.Sent.NOPARENT}
    assert (there / "Documents" / "theirs.txt").read_text() == "theirs"
    assert not list((there / "elsewhere").iterdir())
    assert os.readlink(there / "Documents" / "dangling") == "nowhere"


@pytest.mark.parametrize("case", ["marker", "other replica", "missing"])
def test_a_home_that_is_not_the_replica_gets_nothing(sides: tuple[Path, Path],
                                                     case: str) -> None:
    here, there = sides
    write(here, "Documents/a", b"a")
    replica = "r2" if case == "other replica" else "r1"
    if case == "marker":
        (there / MARKER).unlink()
    if case == "missing":
        there.rename(there.parent / "gone")
        there = there.parent / "there"
    _, answer = send(here, there, {"Documents/a": None}, replica=replica)
    assert answer is (push.Refused.MISSING if case == "missing" else push.Refused.MARKER)
    assert not (there / "Documents" / "a").exists()


def test_contents_cut_short_make_nothing_and_stop_there(sides: tuple[Path, Path]) -> None:
    here, there = sides
    write(here, "Documents/a", b"aaaa")
    write(here, "Documents/b", b"bbbb")
    files = [push.read_new(here, p) for p in ("Documents/a", "Documents/b")]
    data = push.send_input([f for f in files if f])[:-2]
    answer = push.parse_sent(sh(push.send_script(str(there), "r1", "n"), data,
                                there.parent), "n", [f for f in files if f])
    assert isinstance(answer, push.SendAnswer)
    assert list(answer.placed) == ["Documents/a"]
    assert answer.unmade == {"Documents/b": push.Sent.SHORT}
    assert [p.name for p in (there / "Documents").iterdir()] == ["a"]  # no temporary file


def test_only_small_regular_files_not_below_a_link_are_read(tmp_path: Path) -> None:
    (tmp_path / "Documents" / "real").mkdir(parents=True)
    (tmp_path / "Documents" / "via").symlink_to("real")
    (tmp_path / "Documents" / "real" / "f").write_text("x")
    (tmp_path / "Documents" / "big").write_bytes(b"x" * (push.FILE_LIMIT + 1))
    (tmp_path / "Documents" / "link").symlink_to("big")
    os.mkfifo(tmp_path / "Documents" / "fifo")
    assert push.read_new(tmp_path, "Documents/real/f") is not None
    for path in ("Documents/via/f", "Documents/big", "Documents/link", "Documents/fifo",
                 "Documents/real", "Documents/none"):
        assert push.read_new(tmp_path, path) is None, path


@pytest.mark.parametrize("answer", [
    "", "roaming-homes push other ready\n1 made 1 2 3 4\n",
    "roaming-homes push n ready\n2 made 1 2 3 4\n",
    "roaming-homes push n ready\n1 made\n",
    "roaming-homes push n ready\n1 made 1\t2\n",
    "roaming-homes push n ready\n1 done 1 2\n",
    "roaming-homes push n ready\n1 made 1 2\nroaming-homes push n ready\n",
    "roaming-homes push n whatever\n"])
def test_an_answer_not_as_the_script_gives_it_is_refused(answer: str) -> None:
    item = push.Outgoing("Documents/a", b"a", 0o644, 1, (1, 1, 1, 1))
    assert push.parse_sent(answer, "n", [item]) is push.Refused.ANSWER


@pytest.mark.parametrize("answer", [
    "roaming-homes push n ready\n1 file 1 2\n",  # one line for two paths
    "roaming-homes push n ready\n1 file 1 2\n2 here\n",
    "roaming-homes push n ready\n1 gone x\n2 gone\n",
    "roaming-homes push m ready\n1 gone\n2 gone\n"])
def test_a_check_answer_not_as_the_script_gives_it_is_none(answer: str) -> None:
    assert push.parse_checked(answer, "n", ["a", "b"]) is None


def test_settling_takes_the_side_that_changed_and_unison_when_both_did() -> None:
    placed = push.Placed((1, 2, 3, 4), "9 2 t c")
    assert push.settle(placed, (1, 2, 3, 4), "9 2 t c") is push.Winner.LOCAL
    assert push.settle(placed, (5, 2, 3, 4), "9 2 t c") is push.Winner.LOCAL
    assert push.settle(placed, None, "9 2 t c") is push.Winner.LOCAL
    assert push.settle(placed, (1, 2, 3, 4), "9 3 t c") is push.Winner.SERVER
    assert push.settle(placed, (1, 2, 3, 4), None) is push.Winner.SERVER
    assert push.settle(placed, (1, 2, 3, 5), "9 3 t c") is push.Winner.UNISON
    assert push.settle(placed, None, None) is push.Winner.UNISON


def test_a_batch_stops_at_its_bounds() -> None:
    def item(size: int) -> push.Outgoing:
        return push.Outgoing("p", b"x" * size, 0o644, 0, (0, size, 0, 0))

    assert len(push.batch([item(1)] * 100)) == push.BATCH_FILES
    assert len(push.batch([item(push.FILE_LIMIT)] * 10)) == push.BATCH_BYTES // push.FILE_LIMIT
    drawn = []

    def read() -> Iterator[push.Outgoing]:  # as the session reads the files, one at a time
        for _ in range(100):
            drawn.append(1)
            yield item(push.FILE_LIMIT)

    assert len(push.batch(read())) == push.BATCH_BYTES // push.FILE_LIMIT
    assert len(drawn) == push.BATCH_BYTES // push.FILE_LIMIT + 1  # one more, that did not fit


def test_known_names_are_found_with_their_state_and_others_not() -> None:
    known = push.Known((f"Documents/{n}", None if n % 2 else (n, n * 10)) for n in range(1000))
    assert "Documents/5" in known and "Documents/999" in known
    assert "Documents/1000" not in known
    assert known.synced("Documents/4") == (4, 40) and known.synced("Documents/5") is None
    assert known.synced("Documents/1000") is None
    known.add([("Documents/1000", (1, 2)), ("Documents/4", (5, 6))])
    assert "Documents/1000" in known
    assert known.synced("Documents/1000") == (1, 2) and known.synced("Documents/4") == (5, 6)


# --- edits ---------------------------------------------------------------------------------

def server_line(there: Path, path: str) -> str:
    states = push.parse_checked(sh(push.check_script(str(there), "c"), push.check_input([path]),
                                   there.parent), "c", [path])
    assert states is not None and states[path] is not None
    return states[path]


def backup_of(there: Path, path: str) -> dict[str, bytes]:
    folder, _, name = path.rpartition("/")
    root = there / ".roaming-homes" / "backup" / folder
    return {p.name: p.read_bytes() for p in root.iterdir()
            if p.name == name or p.name.endswith(f".{name}")} if root.exists() else {}


def test_an_edit_replaces_the_version_named_and_keeps_it_as_unison_keeps_backups(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    path = "Documents/report.txt"
    write(there, path, b"version 0")
    for number in range(1, 6):
        before = there / path
        old = os.stat(before)
        write(here, path, f"version {number}".encode() * number, 0o600)
        files, answer = send(here, there, {path: server_line(there, path)})

        assert isinstance(answer, push.SendAnswer) and not answer.unmade
        assert (there / path).read_bytes() == files[0].data
        st = os.stat(there / path)
        assert (st.st_mtime_ns, st.st_mode & 0o777) == (files[0].mtime_ns, 0o600)
        assert answer.placed[path].there == server_line(there, path)
        kept = backup_of(there, path)
        # unison's layout (docs/unison.md, backups): the newest old version under the file's
        # own name, older ones numbered, `keep` of them; each keeps its time
        assert kept["report.txt"] == (b"version 0" if number == 1
                                      else f"version {number - 1}".encode() * (number - 1))
        assert os.stat(there / ".roaming-homes/backup/Documents/report.txt").st_mtime_ns \
            == old.st_mtime_ns
        assert sorted(kept) == sorted(["report.txt"] + [f".bak.{k}.report.txt"
                                                        for k in range(1, min(number, 4))])
        if number >= 2:
            assert kept[".bak.1.report.txt"] == (b"version 0" if number == 2 else
                                                 f"version {number - 2}".encode() * (number - 2))
    assert sorted(p.name for p in (there / "Documents").iterdir()) == ["report.txt"]


def test_an_edit_replaces_nothing_the_server_changed_since_nor_through_a_link(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    (there / "elsewhere").mkdir()
    (there / "Documents" / "linked").symlink_to("../elsewhere")
    (here / "Documents" / "linked").mkdir()
    names = ["Documents/changed.txt", "Documents/gone.txt", "Documents/now-a-link",
             "Documents/linked/x", "Documents/fine.txt"]
    for name in names:
        write(here, name, b"ours, edited")
        if name != "Documents/linked/x":
            write(there, name, b"as synced")
    write(there, "elsewhere/x", b"outside")
    expected: dict[str, str | None] = {name: server_line(there, name) for name in names}
    write(there, "Documents/changed.txt", b"another computer's")
    (there / "Documents" / "gone.txt").unlink()
    (there / "Documents" / "now-a-link").unlink()
    (there / "Documents" / "now-a-link").symlink_to("fine.txt")

    _, answer = send(here, there, expected)

    assert isinstance(answer, push.SendAnswer)
    assert list(answer.placed) == ["Documents/fine.txt"]
    assert answer.unmade == {"Documents/changed.txt": push.Sent.CHANGED,
                             "Documents/gone.txt": push.Sent.CHANGED,
                             "Documents/now-a-link": push.Sent.CHANGED,
                             "Documents/linked/x": push.Sent.LINK}
    assert (there / "Documents" / "changed.txt").read_bytes() == b"another computer's"
    assert (there / "elsewhere" / "x").read_bytes() == b"outside"
    assert os.readlink(there / "Documents" / "now-a-link") == "fine.txt"
    assert backup_of(there, "Documents/changed.txt") == {}


def assert_left_to_unison_unkept(here: Path, there: Path) -> None:
    """An edit of `Documents/a.txt` whose server version cannot be kept: not sent over it."""
    write(there, "Documents/a.txt", b"as synced")
    write(here, "Documents/a.txt", b"edited")

    _, answer = send(here, there, {"Documents/a.txt": server_line(there, "Documents/a.txt")})

    assert isinstance(answer, push.SendAnswer)
    assert answer.unmade == {"Documents/a.txt": push.Sent.UNKEPT}
    assert (there / "Documents" / "a.txt").read_bytes() == b"as synced"


@pytest.mark.parametrize("linked", [".roaming-homes/backup/Documents", ".roaming-homes/backup"])
def test_an_edit_keeps_no_backup_through_a_link_in_the_backups(
        sides: tuple[Path, Path], linked: str) -> None:
    """The backups' folders are unison's, below the server home: a link there (a link that
    unison kept as a version) is never followed; the edit goes to unison instead."""
    here, there = sides
    (there / "outside").mkdir()
    (there / linked).parent.mkdir(parents=True)
    (there / linked).symlink_to(os.path.relpath(there / "outside", (there / linked).parent))
    assert_left_to_unison_unkept(here, there)
    assert not list((there / "outside").iterdir())
    assert sorted(p.name for p in (there / "Documents").iterdir()) == ["a.txt"]


def unison_backups(root: Path, versions: list[bytes], seeded: dict[str, bytes]) -> dict[str, bytes]:
    """What unison 2.52 keeps of `f` in its backups (central, maxbackups 3) when the versions
    reach it one by one, its backups of `f` holding `seeded` first."""
    source, target, kept, home = (root / name for name in ("a", "b", "bk", "home"))
    for folder in (source, target, kept, home):
        folder.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "UNISON": str(home), "UNISONBACKUPDIR": str(kept)}

    def run() -> None:
        subprocess.run(["unison", str(source), str(target), "-batch", "-times", "-auto",
                        "-silent", "-backup", "Name *", "-backuplocation", "central",
                        "-maxbackups", "3"], env=env, check=True, capture_output=True,
                       timeout=30)
    for number, data in enumerate(versions):
        (source / "f").write_bytes(data)
        os.utime(source / "f", (1_700_000_000 + 10 * number,) * 2)
        run()
        if number == 0:
            for name, seed in seeded.items():
                (kept / name).write_bytes(seed)
    return {p.name: p.read_bytes() for p in kept.iterdir()}


def our_backups(root: Path, versions: list[bytes], seeded: dict[str, bytes]) -> dict[str, bytes]:
    """The same, each version after the first sent as an edit (`send_script`)."""
    here, there = root / "here", root / "there"
    for side in (here, there):
        (side / "Documents").mkdir(parents=True)
    (there / MARKER).write_text(marker_text("r1"))
    kept = there / ".roaming-homes" / "backup" / "Documents"
    for number, data in enumerate(versions):
        side = there if number == 0 else here
        (side / "Documents" / "f").write_bytes(data)
        os.utime(side / "Documents" / "f", (1_700_000_000 + 10 * number,) * 2)
        if number == 0:
            kept.mkdir(parents=True)
            for name, seed in seeded.items():
                (kept / name).write_bytes(seed)
            continue
        _, answer = send(here, there, {"Documents/f": server_line(there, "Documents/f")})
        assert isinstance(answer, push.SendAnswer) and list(answer.placed) == ["Documents/f"]
    return {p.name: p.read_bytes() for p in kept.iterdir()}


@pytest.mark.parametrize(("versions", "seeded"), [
    ([b"v0", b"v1 ", b"v2  ", b"v3   ", b"v4    ", b"v5     "], {}),
    # a save that changed only the time keeps nothing; the newest kept version is not kept twice
    ([b"v0", b"v1 ", b"v1 ", b"v2  ", b"v3   ", b"v3   ", b"v4    "], {}),
    ([b"v0", b"v1 ", b"v2  ", b"v2  "], {}),
    # a gap in the numbers: only the run from the newest on is renumbered
    ([b"v0", b"v1 "], {"f": b"newest old", ".bak.3.f": b"oldest"}),
    ([b"v0", b"v1 ", b"v2  "], {"f": b"v0"}),
])
def test_an_edit_keeps_the_version_it_replaces_as_unison_keeps_it(
        tmp_path: Path, versions: list[bytes], seeded: dict[str, bytes]) -> None:
    assert our_backups(tmp_path / "ours", versions, seeded) == unison_backups(
        tmp_path / "unison", versions, seeded)


def test_an_edit_keeps_no_backup_over_a_folder_kept_as_the_oldest_version(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    kept = there / ".roaming-homes" / "backup" / "Documents"
    for name in ("a.txt", ".bak.1.a.txt", ".bak.2.a.txt"):
        (kept / name).parent.mkdir(parents=True, exist_ok=True)
        (kept / name).write_bytes(name.encode())
    (kept / ".bak.3.a.txt").mkdir()
    (kept / ".bak.3.a.txt" / "inside").write_bytes(b"a folder deleted once")
    assert_left_to_unison_unkept(here, there)
    assert sorted(p.name for p in kept.iterdir()) == [
        ".bak.1.a.txt", ".bak.2.a.txt", ".bak.3.a.txt", "a.txt"]
    assert [p.name for p in (kept / ".bak.3.a.txt").iterdir()] == ["inside"]


def test_a_folder_named_like_an_option_takes_new_files_and_edits(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    for side in (here, there):
        (side / "-x").mkdir()
    write(there, "-x/old.txt", b"as synced")
    write(here, "-x/old.txt", b"edited")
    write(here, "-x/new.txt", b"new")
    _, answer = send(here, there, {"-x/new.txt": None,
                                   "-x/old.txt": server_line(there, "-x/old.txt")})

    assert isinstance(answer, push.SendAnswer) and not answer.unmade
    assert (there / "-x" / "new.txt").read_bytes() == b"new"
    assert (there / "-x" / "old.txt").read_bytes() == b"edited"
    assert sorted(p.name for p in (there / "-x").iterdir()) == ["new.txt", "old.txt"]


def test_an_edit_replaces_nothing_whose_mode_changed_there(sides: tuple[Path, Path]) -> None:
    """unison changes a mode in place (inode, size and time stay): another computer's chmod
    still shows."""
    here, there = sides
    write(there, "Documents/a.sh", b"as synced", 0o644)
    write(here, "Documents/a.sh", b"edited", 0o644)
    line = server_line(there, "Documents/a.sh")
    os.chmod(there / "Documents" / "a.sh", 0o755)

    _, answer = send(here, there, {"Documents/a.sh": line})

    assert isinstance(answer, push.SendAnswer)
    assert answer.unmade == {"Documents/a.sh": push.Sent.CHANGED}
    assert (there / "Documents" / "a.sh").read_bytes() == b"as synced"


def test_hostile_names_are_edited_byte_exact_and_nothing_runs(
        sides: tuple[Path, Path]) -> None:
    here, there = sides
    for path in HOSTILE:
        write(there, path, b"as synced")
        write(here, path, os.fsencode(path) + b" edited")
    _, answer = send(here, there, {path: server_line(there, path) for path in HOSTILE})

    assert isinstance(answer, push.SendAnswer) and not answer.unmade
    for path in HOSTILE:
        assert (there / path).read_bytes() == os.fsencode(path) + b" edited"
        assert backup_of(there, path)[path.rpartition("/")[2]] == b"as synced"
    assert not list(there.parent.rglob("pwned")) and not Path("pwned").exists()


@pytest.mark.parametrize(("line", "synced", "same"), [
    ("12 3 644 2026-12-01 06:09:14.624048082 +0000", (3, 1796105354_624048999), True),
    ("12 3 644 2026-12-01 01:09:14.624048 -0500", (3, 1796105354_624048000), True),
    ("12 3 644 2026-12-01 06:09:14 +0000", (3, 1796105354_000000000), True),
    # unison's copy of a time that is a whole microsecond may land one below
    ("12 3 644 2026-12-01 06:09:14.624047000 +0000", (3, 1796105354_624048000), True),
    ("12 3 644 2026-12-01 06:09:14.624050082 +0000", (3, 1796105354_624048999), False),
    ("12 4 644 2026-12-01 06:09:14.624048082 +0000", (3, 1796105354_624048082), False),
    ("12 3 644 2026-12-01 06:09:15.624048082 +0000", (3, 1796105354_624048082), False),
    ("12 3 600 2026-12-01 06:09:14.624048082 +0000", (3, 1796105354_624048082), False),
    ("12 3 644 1969-12-31 23:59:59.500000000 +0000", (3, -500_000_000), True),
    ("12 3 644 2026-13-01 06:09:14 +0000", (3, 0), False),
    ("12 3 644 yesterday", (3, 0), False),
    ("12 3 2026-12-01 06:09:14.624048082 +0000", (3, 1796105354_624048082), False),
])
def test_the_server_file_is_the_version_synced_to_the_microsecond_with_this_mode(
        line: str, synced: push.Synced, same: bool) -> None:
    assert push.synced_as(line, synced, 0o644) is same


def test_what_a_report_sends_new_edited_again_and_what_it_leaves_to_unison(
        tmp_path: Path) -> None:
    docs = tmp_path / "Documents"
    docs.mkdir()
    for name in ("edited", "mode", "big", "near", "ignored.tmp", "sent", "sent-same", "made"):
        (docs / name).write_bytes(b"synced")
    outbox = sending.Outbox(
        cast(Any, SimpleNamespace(locations=SimpleNamespace(home=tmp_path))),
        profile.Plan(str(tmp_path), "/srv", ("Documents",), (), ("*.tmp",), "newer"),
        ["Documents"])
    outbox.known = push.Known(
        (f"Documents/{p.name}", sending.local_synced(p)) for p in docs.iterdir())
    for name in ("sent", "sent-same"):
        state = sending.local_state(tmp_path, f"Documents/{name}")
        assert state is not None
        outbox.ledger[f"Documents/{name}"] = push.Placed(state, f"1 6 made {name}")
    outbox.made["Documents/made"] = "1 6 644 made before"  # sent and settled as sent
    for name in ("new", "edited", "near", "ignored.tmp", "sent", "made"):
        (docs / name).write_bytes(b"changed here")
    os.chmod(docs / "mode", 0o600)
    (docs / "big").write_bytes(b"b" * (push.FILE_LIMIT + 1))
    report = [f"Documents/{name}" for name in (
        "new", "edited", "mode", "big", "near", "ignored.tmp", "sent", "sent-same", "made")]

    new, edited, again = outbox._candidates([*report, "Documents"], ["Documents/near"])

    assert new == ["Documents/new"]
    assert edited == {"Documents/edited": outbox.known.synced("Documents/edited")}
    assert again == {"Documents/sent": "1 6 made sent", "Documents/made": "1 6 644 made before"}


def test_a_file_settled_as_sent_is_edited_next_over_the_version_made_there(
        tmp_path: Path) -> None:
    (tmp_path / "Documents").mkdir()
    outbox = sending.Outbox(
        cast(Any, SimpleNamespace(locations=SimpleNamespace(home=tmp_path))),
        cast(Any, None), ["Documents"], known=push.Known([]))
    for name in ("as-sent", "changed-here", "changed-there"):
        (tmp_path / "Documents" / name).write_text("sent")
        state = sending.local_state(tmp_path, f"Documents/{name}")
        assert state is not None
        outbox.ledger[f"Documents/{name}"] = push.Placed(state, f"made {name}")
    (tmp_path / "Documents" / "changed-here").write_text("changed again")
    cast(Any, outbox)._server_states = lambda paths: {
        path: "another computer's" if path.endswith("there") else f"made {path[10:]}"
        for path in paths}

    groups = outbox.groups(list(outbox.ledger))
    for winner, group in groups.items():
        outbox.settled(group, winner)

    assert groups == {push.Winner.LOCAL: ["Documents/as-sent", "Documents/changed-here"],
                      push.Winner.SERVER: ["Documents/changed-there"]}
    assert outbox.made == {"Documents/as-sent": "made as-sent"}
    outbox.synced(["Documents/as-sent"])  # a unison pass over it: the server's may be others
    assert outbox.made == {}
