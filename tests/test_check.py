"""`roaming-homes check`: every check passes against a working server; each fault is one ✗ line."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from roaming_homes.actions import check
from roaming_homes.actions.check import UnisonVersion, parse_unison_version, versions_compatible
from roaming_homes.outcome import Result, SyncOutcome
from roaming_homes.session import pause
from tests.support.homes import Setup
from tests.support.sshd import SshServer, free_port


def _check(setup: Setup) -> tuple[int, dict[str, dict[str, str]]]:
    result = setup.run("check", "--json")
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    checks = {item["name"]: item for item in report["checks"]}
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, checks


def _failed(setup: Setup) -> list[str]:
    """The ✗ lines of the human output, after asserting the run failed."""
    result = setup.run("check")
    assert result.returncode != 0, result.stdout
    return [line for line in result.stdout.splitlines() if line.startswith("✗")]


def test_working_setup_passes_every_check(user: Setup) -> None:
    (user.home / "Documents").mkdir()
    assert user.sync().returncode == 0
    code, checks = _check(user)
    assert code == 0, checks
    for name in ("config", "server reachable", "host key", "ssh login", "server home",
                 "unison", "replica markers", "last sync", "pause"):
        assert checks[name]["status"] == "ok", checks[name]
    version = subprocess.run(["unison", "-version"], capture_output=True, text=True).stdout
    local = str(parse_unison_version(version))
    assert checks["unison"]["detail"] == f"local {local}, server {local}"
    # Without unison-fsmonitor real-time mode is only a warning; without a user manager the
    # service check is skipped with a note.
    assert checks["fsmonitor"]["status"] in ("ok", "warn")
    assert checks["user service"]["status"] in ("ok", "skip")
    human = user.run("check").stdout.splitlines()
    assert human[0].startswith("✓ config: valid")
    assert len(human) == len(checks)


def test_wrong_port_fails_server_reachable(user: Setup) -> None:
    user.configure(server={"port": free_port()})
    failed = _failed(user)
    assert len(failed) == 1 and failed[0].startswith("✗ server reachable:")
    code, checks = _check(user)
    assert code == 1
    assert checks["server reachable"]["status"] == "fail"
    assert "check server.host / server.port" in checks["server reachable"]["fix"]
    assert checks["ssh login"]["status"] == "skip"


def test_key_not_authorized_fails_ssh_login(user: Setup) -> None:
    user.configure(server={"ssh_options": user.unknown_key_options()})
    failed = _failed(user)
    assert len(failed) == 1 and failed[0].startswith("✗ ssh login:")
    assert "refused without a password" in failed[0] and "ssh-copy-id" in failed[0]


def test_unknown_host_key_fails_host_key(user: Setup, tmp_path: Path) -> None:
    assert user.sshd is not None
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    options = [o.replace(str(user.sshd.known_hosts), str(empty))
               for o in user.sshd.ssh_options()]
    user.configure(server={"ssh_options": options})
    failed = _failed(user)
    assert len(failed) == 1 and failed[0].startswith("✗ host key:")
    assert "contact support" in failed[0] and "compare the fingerprints" in failed[0]


def test_missing_server_home_fails_server_home(user: Setup) -> None:
    missing = user.base / "no-such-home"
    user.configure(server={"home": str(missing)})
    failed = _failed(user)
    assert failed == [f"✗ server home: {missing} does not exist on the server → create it "
                      f"there, owned by the user (install -d -m 700 -o {user.sshd.user} "
                      f"{missing}), or fix server.home"]


@pytest.fixture
def old_unison_server(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd whose sessions find a unison that says it is 2.51.5 (built with OCaml 4.14.1)."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    program = fake / "unison"
    program.write_text('#!/bin/sh\necho "unison version 2.51.5 (ocaml 4.14.1)"\n')
    program.chmod(0o755)
    with SshServer(tmp_path / "sshd", env={"PATH": f"{fake}:/usr/bin:/bin"}) as server:
        yield server


def test_incompatible_server_unison_fails_unison(tmp_path: Path,
                                                 old_unison_server: SshServer) -> None:
    setup = Setup(tmp_path / "user", old_unison_server)
    try:
        failed = _failed(setup)
    finally:
        setup.close()
    assert len(failed) == 1
    assert failed[0].startswith("✗ unison: local 2.5")
    assert "server 2.51.5 (ocaml 4.14.1): incompatible" in failed[0]


def test_marker_on_one_side_only_fails_replica_markers(user: Setup) -> None:
    (user.home / check.MARKER).touch()
    failed = _failed(user)
    assert len(failed) == 1
    assert failed[0].startswith(f"✗ replica markers: {check.MARKER} is missing in the server")


def test_old_last_success_fails_last_sync(user: Setup) -> None:
    state = user.state_home / "roaming-homes" / "state.json"
    state.parent.mkdir(parents=True)
    old = (datetime.now().astimezone() - timedelta(days=3)).isoformat(timespec="seconds")
    state.write_text(json.dumps({"last_success": old}))
    failed = _failed(user)
    assert failed == [f"✗ last sync: last successful sync 3 d ago ({old}) → run "
                      "`roaming-homes sync -v` and read its output"]


def test_invalid_config_fails_config_with_exit_78(local_user: Setup) -> None:
    local_user.config_path.write_text('[server]\nhost = "h"\nport = "ssh"\n')
    result = local_user.run("check")
    assert result.returncode == 78
    assert result.stdout.startswith(f"✗ config: {local_user.config_path}:3: server.port must "
                                    "be an integer")
    code, checks = _check(local_user)
    assert code == 78 and list(checks) == ["config"]


def test_missing_config_says_how_to_create_it(local_user: Setup) -> None:
    local_user.config_path.unlink()
    result = local_user.run("check")
    assert result.returncode == 78
    assert result.stdout == (f"✗ config: {local_user.config_path}: configuration file not found "
                             f"→ create it with `roaming-homes config sample > "
                             f"{local_user.config_path}`, then set server.host\n")


def test_unmounted_local_root_fails_server_reachable(local_user: Setup) -> None:
    local_user.server_home.rmdir()
    failed = _failed(local_user)
    assert failed[0].startswith(f"✗ server reachable: server root {local_user.server_home} is "
                                "not available")


# --- the deciding parts ------------------------------------------------------------------------

def _v(text: str) -> UnisonVersion:
    version = parse_unison_version(text)
    assert version is not None
    return version


@pytest.mark.parametrize(("a", "b", "compatible"), [
    ("unison version 2.52.1 (ocaml 4.13.1)", "unison version 2.53.7 (ocaml 5.2.0)", True),
    ("unison version 2.52.1 (ocaml 4.13.1)", "unison version 2.51.5 (ocaml 4.13.1)", False),
    ("unison version 2.51.5 (ocaml 4.13.1)", "unison version 2.51.2 (ocaml 4.13.1)", True),
    ("unison version 2.51.5 (ocaml 4.13.1)", "unison version 2.51.5 (ocaml 4.14.1)", False),
    ("unison version 2.48.4", "unison version 2.48.4", False),  # OCaml unknown: cannot tell
])
def test_version_compatibility(a: str, b: str, compatible: bool) -> None:
    assert versions_compatible(_v(a), _v(b)) is compatible
    assert versions_compatible(_v(b), _v(a)) is compatible


def test_version_parsing() -> None:
    assert _v("unison version 2.52.1 (ocaml 4.13.1)\n") == UnisonVersion(2, 52, 1, "4.13.1")
    assert parse_unison_version("bash: unison: command not found") is None


def _proc(stdout: str, stderr: str = "", rc: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], rc, stdout, stderr)


@pytest.mark.parametrize(("enabled", "active", "status"), [
    (_proc("enabled\n"), _proc("active\n"), "ok"),
    (_proc("disabled\n", rc=1), _proc("inactive\n", rc=3), "fail"),
    (_proc("enabled\n"), _proc("failed\n", rc=3), "fail"),
    (_proc("", "Failed to get unit file state for roaming-homes.service: No such file", 1),
     _proc("inactive\n", rc=3), "fail"),
    (_proc("enabled\n"), _proc("", "Failed to connect to bus: No medium found", 1), "skip"),
])
def test_service_state(enabled: subprocess.CompletedProcess[str],
                       active: subprocess.CompletedProcess[str], status: str) -> None:
    result = check.service_result(enabled, active)
    assert result.status == status
    if status == "fail":
        assert "systemctl" in result.fix or "install" in result.fix


def test_sync_age() -> None:
    now = datetime.now().astimezone()
    recent = (now - timedelta(minutes=5)).isoformat()
    assert check.sync_age_result(None, recent, now, 60, 86400).status == "ok"
    stale = (now - timedelta(days=2)).isoformat()
    offline = SyncOutcome(Result.OFFLINE, "server h unreachable", stale, stale, 1.0, "h")
    result = check.sync_age_result(offline, stale, now, 60, 86400)
    assert result.status == "fail" and "last pass: server h unreachable" in result.detail
    assert check.sync_age_result(None, None, now, 60, 86400).status == "warn"
    # notify.stale_after
    assert check.sync_age_result(offline, stale, now, 60, 3 * 86400).status == "ok"


def test_a_pause_is_a_warning_that_says_until_and_since_when() -> None:
    since = datetime(2026, 11, 29, 9, 5).astimezone()

    assert check.pause_result(None).status == "ok"
    held = check.pause_result(pause.Pause(since, None))
    assert (held.status, held.line()) == (
        "warn", "! pause: syncing paused until resumed (since 2026-11-29 09:05) → "
        "roaming-homes resume")


def test_kerberos_line() -> None:
    now = datetime(2026, 11, 29, 12, 0)
    ticket = check.kerberos.Ticket("alice@EXAMPLE.ORG", now + timedelta(hours=8))
    assert check.kerberos_result(False, False, None, now).status == "ok"
    missing = check.kerberos_result(True, False, None, now)
    assert (missing.status, missing.fix) == ("fail", "sign in again: kinit")
    fine = check.kerberos_result(True, True, ticket, now)
    assert fine.status == "ok" and "alice@EXAMPLE.ORG" in fine.detail
    assert "2026-11-29 20:00 (in 8 h)" in fine.detail
    soon = check.kerberos.Ticket(ticket.principal, now + timedelta(minutes=40))
    result = check.kerberos_result(True, True, soon, now)
    assert result.status == "warn" and "in 40 min" in result.detail and "kinit" in result.fix
    assert check.kerberos_result(True, True, None, now).status == "ok"  # listing not understood


def test_kdc_line() -> None:
    kdc = check.kerberos.Kdc
    assert check.kdc_result("homes", kdc.TICKET, "", 6).status == "ok"
    refused = check.kdc_result("homes", kdc.REFUSED, "Server host/homes@X not found\x1b[2J", 6)
    assert refused.status == "fail" and "host/homes" in refused.detail
    assert "\x1b" not in refused.detail  # kvno's words are shown, escaped
    assert "server.host" in refused.fix
    silent = check.kdc_result("homes", kdc.NO_ANSWER, "", 6)
    assert silent.status == "fail" and "within 6 s" in silent.detail
    assert check.kdc_result("homes", kdc.UNAVAILABLE, "", 6).status == "skip"
