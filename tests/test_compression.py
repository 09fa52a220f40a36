"""Whether the shared connection compresses (`unison.compression`): the measurement, what is
remembered of it, and what `check` says."""

from __future__ import annotations

from pathlib import Path

import pytest

from roaming_homes.actions.check import OK, SKIP, compression_result
from roaming_homes.outcome import Reason
from roaming_homes.unison import compression
from roaming_homes.unison import ssh as transport
from roaming_homes.unison.compression import NOT_MEASURED, SLOW, Measured, Setting


def exchanges(*seconds: float) -> tuple[list[float], object]:
    """A clock that moves by `seconds[i]` during exchange i, and the list of those run."""
    ran: list[float] = []
    now = [0.0]

    def clock() -> float:
        return now[0]

    def run() -> None:
        now[0] += seconds[len(ran)]
        ran.append(seconds[len(ran)])

    return ran, (clock, run)


@pytest.mark.parametrize(("taken", "compress", "asked"), [
    ((0.01, 0.5, 0.5, 0.5, 0.5), False, 1),  # a fast exchange says it at once
    ((0.2, SLOW / 2, 0.5, 0.5, 0.5), False, 2),  # the first was a busy moment
    ((0.2, 0.3, 0.01, 0.01, 0.01), True, 2),  # two clearly slow: a slow link, no more asked
    ((0.2, 0.06, 0.3, 0.01, 0.01), True, 3),  # the fastest of them counts
    ((0.07, 0.09, 0.06, 0.08, 0.07), True, 5),  # slow, not clearly: every one is asked
    ((SLOW * 1.01,) * 5, True, 5),  # just past the bound
])
def test_the_fastest_of_the_exchanges_decides(monkeypatch: pytest.MonkeyPatch,
                                              taken: tuple[float, ...], compress: bool,
                                              asked: int) -> None:
    ran, (clock, run) = exchanges(*taken)
    monkeypatch.setattr(compression.time, "monotonic", clock)
    measured = compression.measure(run)
    assert measured.compress is compress
    assert measured.seconds == pytest.approx(min(taken[:asked]))
    assert len(ran) == asked


@pytest.mark.parametrize("measured", [Measured(True, 0.0853), Measured(False, 0.012)])
def test_a_measurement_is_remembered_beside_the_socket(tmp_path: Path,
                                                      measured: Measured) -> None:
    socket = tmp_path / "ssh-0123"
    compression.Remembered(socket).save(measured)
    assert compression.Remembered(socket).load() == Measured(measured.compress,
                                                             round(measured.seconds or 0, 6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compression-ssh-0123"]


@pytest.mark.parametrize("text", [b"", b"yes\n", b"yes 0.1\n", b"maybe 0.100000\n",
                                  b"yes 0.100000", b"yes 0.100000\nno 0.100000\n",
                                  b"\xff\xfe", b"yes 0.100000\n" + b"x" * 100])
def test_anything_else_in_that_file_is_not_a_measurement(tmp_path: Path, text: bytes) -> None:
    """Not measured: the master starts compressed and the link is measured again."""
    socket = tmp_path / "ssh-0123"
    (tmp_path / "compression-ssh-0123").write_bytes(text)
    assert compression.Remembered(socket).load() == NOT_MEASURED


def test_nothing_remembered_is_not_measured(tmp_path: Path) -> None:
    assert compression.Remembered(tmp_path / "ssh-0123").load() == NOT_MEASURED


@pytest.mark.parametrize(("last", "compressed"), [(NOT_MEASURED, True),
                                                  (Measured(False, 0.012), False),
                                                  (Measured(True, 0.0853), True)])
def test_a_master_starts_as_last_measured_and_compressed_with_nothing_measured(
        last: Measured, compressed: bool) -> None:
    assert compression.starts_compressed(last) is compressed


@pytest.mark.parametrize(("compress", "value"), [(True, "yes"), (False, "no")])
def test_the_option_given_to_the_master(compress: bool, value: str) -> None:
    assert compression.option(compress) == ["-o", f"Compression={value}"]


@pytest.mark.parametrize(("args", "status", "text"), [
    ((Setting.YES, False, True, NOT_MEASURED), OK, "on (server.compression = yes)"),
    ((Setting.NO, True, True, Measured(True, 0.2)), OK, "off (server.compression = no)"),
    ((Setting.AUTO, True, True, NOT_MEASURED), OK,
     "on (ssh's own settings: -C or Compression yes)"),
    ((Setting.AUTO, False, False, NOT_MEASURED), SKIP,
     "no shared connection (server.connection_reuse = 0): ssh's own settings decide"),
    ((Setting.AUTO, False, True, NOT_MEASURED), OK,
     "on (auto: the link was not measured; a connection starts compressed until it is)"),
    ((Setting.AUTO, False, True, Measured(True, 0.0853)), OK,
     "on (auto: an exchange took 85 ms; a slow link from 50 ms)"),
    ((Setting.AUTO, False, True, Measured(False, 0.012)), OK,
     "off (auto: an exchange took 12 ms; a slow link from 50 ms)"),
])
def test_check_says_whether_it_compresses_and_why(
        args: tuple[Setting, bool, bool, Measured], status: str, text: str) -> None:
    result = compression_result(*args)
    assert (result.name, result.status, result.detail) == ("compression", status, text)


def _server() -> transport.Server:
    return transport.Server(host="h", port=2222, user="u", home="/home/u", local_root="",
                            connect_timeout=1, ssh_options=(), connection_reuse=300)


def test_a_link_that_cannot_be_measured_keeps_its_master_as_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange fails (the link went down as the master opened): the master stays as it
    started, nothing is remembered, and the pass's own exchanges say what is wrong."""
    started: list[list[str]] = []

    def lost(*_args: object) -> str:
        raise transport.ConnectError("connection to h lost", Reason.CONNECTION_LOST)

    monkeypatch.setattr(transport, "compresses_anyway", lambda _server: False)
    monkeypatch.setattr(transport, "run_remote", lost)
    socket = tmp_path / "ssh-0123"
    transport._start_master(_server(), socket, lambda _server, argv: started.append(argv))
    assert len(started) == 1 and "Compression=yes" in started[0]  # nothing remembered
    assert compression.Remembered(socket).load() == NOT_MEASURED
