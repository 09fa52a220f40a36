"""Host keys that come from the system rather than the user's known_hosts, as FreeIPA clients
get them (`GlobalKnownHostsFile` kept by sssd, or `KnownHostsCommand sss_ssh_knownhosts`): the
strict policy holds with both — the known key syncs, another key is refused and never learnt."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.homes import Setup


def _known_line(user: Setup, public_key: Path) -> str:
    assert user.sshd is not None
    kind, key = public_key.read_text().split()[:2]
    return f"[127.0.0.1]:{user.sshd.port} {kind} {key}\n"


def _from_the_system(user: Setup, how: str, known: Path) -> None:
    """ssh options with no user known_hosts, the server's key only in `known` (a global file,
    or the output of a command that prints it)."""
    assert user.sshd is not None
    options = [o for o in user.sshd.ssh_options() if "UserKnownHostsFile" not in o]
    options = options[:-1] if options[-1] == "-o" else options
    source = (f"GlobalKnownHostsFile={known}" if how == "global-file"
              else f"KnownHostsCommand=/bin/cat {known}")
    user.configure(server={**user.config["server"], "connection_reuse": 0,
                           "ssh_options": [*options, "-o", "UserKnownHostsFile=/dev/null",
                                           "-o", source]})


@pytest.mark.parametrize("how", ["global-file", "command"])
def test_a_key_known_to_the_system_only_syncs_and_another_one_is_refused(
        user: Setup, tmp_path: Path, how: str) -> None:
    assert user.sshd is not None
    known = tmp_path / "system_known_hosts"
    known.write_text(_known_line(user, user.sshd.host_key.with_suffix(".pub")))
    _from_the_system(user, how, known)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a.txt").write_text("known by the system")

    assert user.sync().returncode == 0
    assert (user.server_home / "Documents" / "a.txt").exists()

    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    known.write_text(_known_line(user, other.with_suffix(".pub")))
    (user.home / "Documents" / "b.txt").write_text("must not reach an impostor")

    code, outcome = user.sync_json()

    assert (code, outcome["reason"]) == (3, "host-key-changed"), outcome
    assert "contact support" in outcome["message"]
    assert not (user.server_home / "Documents" / "b.txt").exists()
    assert known.read_text() == _known_line(user, other.with_suffix(".pub"))  # nothing learnt
