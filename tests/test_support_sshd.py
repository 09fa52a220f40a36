"""The test suite's own sshd: its sessions do not depend on the account's ~/.bashrc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.sshd import SshServer


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("shlvl", "read"), [(None, False), ("0", True)])
def test_a_session_does_not_read_the_accounts_bashrc(tmp_path: Path, shlvl: str | None,
                                                      read: bool) -> None:
    """Debian's bash reads ~/.bashrc for every command ssh runs: a development machine's
    (pyenv's rehash takes a lock) made commands run side by side wait for each other, seconds
    each under a full test run. The account's home is moved to one of the test's whose
    ~/.bashrc leaves a mark; without the server's SHLVL (the second case) bash reads it."""
    home = tmp_path / "home"
    home.mkdir()
    mark = tmp_path / "read"
    (home / ".bashrc").write_text(f"touch '{mark}'\n")
    (home / ".profile").write_text(f"touch '{mark}'\n")
    env = {"HOME": str(home), **({"SHLVL": shlvl} if shlvl is not None else {})}
    server = SshServer(tmp_path / "sshd", env=env).start()
    try:
        subprocess.run(["ssh", *server.ssh_options(), "-o", "BatchMode=yes", "-p",
                        str(server.port), f"{server.user}@127.0.0.1", "true"],
                       stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30)
    finally:
        server.stop()
    assert mark.exists() is read
