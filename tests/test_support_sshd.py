"""The test suite's own sshd: its sessions do not depend on this machine's ~/.bashrc."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.support.sshd import SshServer, stock_shell


@pytest.mark.timeout(60)
def test_a_session_reads_the_stock_bashrc_not_this_machines(sshd: SshServer) -> None:
    """bash reads ~/.bashrc for every command ssh runs: a development machine's (pyenv's rehash
    takes a lock) made commands run side by side wait for each other, seconds each under a
    full test run."""
    if not stock_shell():
        pytest.skip("not root, or no ~/.bashrc or /etc/skel/.bashrc: sessions read the user's")
    seen = subprocess.run(["ssh", *sshd.ssh_options(), "-o", "BatchMode=yes", "-p",
                           str(sshd.port), f"{sshd.user}@127.0.0.1", "cat ~/.bashrc"],
                          stdin=subprocess.DEVNULL, capture_output=True, check=True,
                          timeout=30).stdout
    stock = Path("/etc/skel/.bashrc").read_bytes()
    assert hashlib.sha256(seen).hexdigest() == hashlib.sha256(stock).hexdigest()
