"""Fixtures for the fault suite: a user whose server (own_sshd) the test may break."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.homes import Setup
from tests.support.ledger import Ledger
from tests.support.sshd import SshServer


@pytest.fixture
def victim(tmp_path: Path, own_sshd: SshServer) -> Iterator[Setup]:
    """A user synced over an sshd of this test alone, noticing a dead server within ~1 s."""
    setup = Setup(tmp_path / "user", own_sshd)
    setup.configure(server={"connect_timeout": 1})
    yield setup
    setup.close()


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """The ledger of whichever user the test uses (`victim`, else `user`)."""
    name = "victim" if "victim" in request.fixturenames else "user"
    return Ledger(request.getfixturevalue(name))

