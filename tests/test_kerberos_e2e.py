"""End to end against a real MIT Kerberos realm: the CLI and the daemon logging in over GSSAPI
(no key, no password) to an sshd on loopback, with a real KDC, tickets, expiry and outages.

The realm is made once for the session (a KDC on a free port, its own krb5.conf through
KRB5_CONFIG); every test has its own ticket cache (KRB5CCNAME) and its own user.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SYSTEM_PATH as CONFTEST_PATH
from tests.conftest import without_monitor
from tests.support.daemon import DaemonProcess, appears
from tests.support.fsmonitor import monitors_of
from tests.support.homes import Setup
from tests.support.kerberos import SYSTEM_PATH, GssapiSshServer, Realm, available
from tests.support.notifications import RecordingServer
from tests.support.usermanager import UNIT, UserManager, install_unit
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not available(), reason="MIT Kerberos is not installed "
                                "(scripts/setup installs krb5-kdc krb5-admin-server krb5-user)")


@pytest.fixture(scope="session")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    made = Realm(tmp_path_factory.mktemp("realm")).create()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def gss_sshd(tmp_path_factory: pytest.TempPathFactory,
             realm: Realm) -> Iterator[GssapiSshServer]:
    path = without_monitor(tmp_path_factory.mktemp("no-monitor"))
    with GssapiSshServer(tmp_path_factory.mktemp("gss-sshd"), realm,
                         env={"PATH": path}) as server:
        yield server


class KrbUser(Setup):
    """A user who logs in to the server with a Kerberos ticket in their own cache."""

    def __init__(self, base: Path, sshd: GssapiSshServer, realm: Realm,
                 ccache: Path | str | None = None) -> None:
        self.realm = realm
        self.ccache = base / "ccache" if ccache is None else ccache
        super().__init__(base, sshd)
        self.env.update(realm.client_env(self.ccache))

    def configure(self, **sections: dict[str, Any]) -> None:
        # The host principal is host/localhost: ssh must be told that name, not 127.0.0.1.
        super().configure(**{**sections, "server": {"host": "localhost",
                                                    **sections.get("server", {})}})

    def kinit(self, lifetime: str = "") -> None:
        self.realm.kinit(self.ccache, lifetime)

    def kdestroy(self) -> None:
        subprocess.run(["kdestroy"], env={"PATH": SYSTEM_PATH, **self.env}, check=True,
                       capture_output=True, timeout=10)

    def has_ticket(self) -> bool:
        return subprocess.run(["klist", "-s"], env={"PATH": SYSTEM_PATH, **self.env},
                              check=False, timeout=10).returncode == 0


@pytest.fixture
def krb_user(tmp_path: Path, gss_sshd: GssapiSshServer, realm: Realm) -> Iterator[KrbUser]:
    setup = KrbUser(tmp_path / "user", gss_sshd, realm)
    (setup.home / "Documents").mkdir()
    yield setup
    setup.close()


def _timed_sync(user: Setup) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    code, outcome = user.sync_json()
    return code, outcome, time.monotonic() - started


def _assert_needs_ticket(code: int, outcome: dict[str, Any], seconds: float) -> None:
    assert (code, outcome["result"], outcome["reason"]) == (3, "failed", "no-ticket"), outcome
    assert outcome["action"] == "kinit"
    assert seconds < 2, f"took {seconds:.1f} s"


def test_a_valid_ticket_logs_in_over_gssapi_and_syncs(krb_user: KrbUser,
                                                      gss_sshd: GssapiSshServer) -> None:
    krb_user.kinit()
    (krb_user.home / "Documents" / "a.txt").write_text("kerberised")

    code, outcome = krb_user.sync_json()

    assert code == 0, outcome
    assert (krb_user.server_home / "Documents" / "a.txt").read_text() == "kerberised"
    assert "Accepted gssapi-with-mic" in gss_sshd.log_file.read_text()


def test_gssapi_enabled_in_ssh_config_needs_no_setting_of_ours(
        krb_user: KrbUser, gss_sshd: GssapiSshServer) -> None:
    """As on a FreeIPA client: ssh_config turns GSSAPI on, server.ssh_options only names the
    file; `server.kerberos = auto` finds the Kerberos login there."""
    ssh_config = krb_user.base / "ssh_config"
    ssh_config.write_text(f"Host localhost\n  GSSAPIAuthentication yes\n"
                          f"  PubkeyAuthentication no\n"
                          f"  UserKnownHostsFile {gss_sshd.known_hosts}\n")
    krb_user.configure(server={"ssh_options": ["-F", str(ssh_config)]})
    krb_user.kinit()
    assert krb_user.sync().returncode == 0
    krb_user.close_connection()
    krb_user.kdestroy()

    _assert_needs_ticket(*_timed_sync(krb_user))


def test_without_a_ticket_the_pass_ends_at_once_asking_for_kinit(krb_user: KrbUser) -> None:
    krb_user.kinit()
    assert krb_user.sync().returncode == 0  # the shared connection is open now
    krb_user.kdestroy()
    (krb_user.home / "Documents" / "b.txt").write_text("waits for a ticket")

    code, outcome, seconds = _timed_sync(krb_user)

    _assert_needs_ticket(code, outcome, seconds)
    assert not (krb_user.server_home / "Documents" / "b.txt").exists()
    assert krb_user.status()["action"] == "kinit"
    krb_user.kinit()
    assert krb_user.sync().returncode == 0
    assert (krb_user.server_home / "Documents" / "b.txt").exists()


def test_check_shows_the_ticket_and_says_when_to_kinit(krb_user: KrbUser) -> None:
    krb_user.kinit()
    checks = {item["name"]: item for item in
              json.loads(krb_user.run("check", "--json").stdout)["checks"]}
    assert checks["kerberos"]["status"] == "ok", checks["kerberos"]
    assert krb_user.realm.principal in checks["kerberos"]["detail"]
    assert checks["kerberos kdc"]["status"] == "ok", checks["kerberos kdc"]
    assert "host/localhost" in checks["kerberos kdc"]["detail"]
    assert checks["ssh login"]["status"] == "ok", checks["ssh login"]

    krb_user.kinit(lifetime="30m")
    soon = krb_user.run("check").stdout
    assert "! kerberos: ticket for" in soon and "kinit" in soon

    krb_user.kdestroy()
    gone = krb_user.run("check")
    assert gone.returncode != 0
    assert "✗ kerberos: no valid ticket (none, or expired) → sign in again: kinit" in gone.stdout
    assert "- ssh login: not tried: no Kerberos ticket" in gone.stdout


def test_an_expired_ticket_ends_the_pass_at_once_without_reaching_the_server(
        krb_user: KrbUser, gss_sshd: GssapiSshServer) -> None:
    krb_user.kinit(lifetime="2s")
    time.sleep(3)
    assert not krb_user.has_ticket()
    connections = gss_sshd.log_file.read_text().count("Connection from")

    _assert_needs_ticket(*_timed_sync(krb_user))
    assert gss_sshd.log_file.read_text().count("Connection from") == connections


def test_with_the_kdc_stopped_a_valid_ticket_still_syncs(krb_user: KrbUser,
                                                          realm: Realm) -> None:
    krb_user.kinit()
    assert krb_user.sync().returncode == 0  # the service ticket is in the cache now
    krb_user.close_connection()  # the next pass logs in anew
    (krb_user.home / "Documents" / "c.txt").write_text("KDC down")
    realm.stop_kdc()
    try:
        code, outcome = krb_user.sync_json()
    finally:
        realm.start_kdc()

    assert code == 0, outcome
    assert (krb_user.server_home / "Documents" / "c.txt").read_text() == "KDC down"


def test_a_ticket_that_expires_during_a_pass_loses_nothing(tmp_path: Path, realm: Realm) -> None:
    """The login happens once, at the start; the shared connection carries the pass on after
    the ticket has expired. The server's unison starts 4 s late, past the ticket's 2 s."""
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    real = shutil.which("unison")
    assert real is not None
    (slow / "unison").write_text(f"#!/bin/sh\nsleep 4\nexec {real} \"$@\"\n")
    (slow / "unison").chmod(0o755)
    path = f"{slow}:{without_monitor(tmp_path / 'no-monitor')}"
    with GssapiSshServer(tmp_path / "sshd", realm, env={"PATH": path}) as sshd:
        user = KrbUser(tmp_path / "user", sshd, realm)
        try:
            (user.home / "Documents").mkdir()
            (user.home / "Documents" / "d.txt").write_text("long pass")
            user.kinit(lifetime="2s")

            code, outcome = user.sync_json()

            assert not user.has_ticket()  # expired during the pass
            assert code == 0, outcome
            assert (user.server_home / "Documents" / "d.txt").read_text() == "long pass"
        finally:
            user.close()


def kinit_syncs_at_once(user: KrbUser, daemon: DaemonProcess, path: Path, text: str,
                        within: float) -> None:
    """kinit; the waiting daemon's pass brings `path` (with `text`) to the server within
    `within` seconds (its interval is an hour)."""
    started = time.monotonic()
    user.kinit()
    try:
        wait_for(appears(path, text), within, "the pass after kinit")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; the daemon's log:\n{daemon.log}") from None
    assert time.monotonic() - started < within


def test_the_daemon_waits_for_a_ticket_and_syncs_right_after_kinit(
        krb_user: KrbUser, notifications: RecordingServer) -> None:
    """No ticket at login: one "sign in" notification, no pass reaches the server; kinit (a
    new ticket cache file) starts a pass at once, long before the hour's interval, and "back
    in sync" replaces the notification."""
    krb_user.configure(sync={**krb_user.config["sync"], "interval": 3600},
                       notify={"enabled": True})
    (krb_user.home / "Documents" / "e.txt").write_text("after kinit")
    daemon = DaemonProcess(krb_user, env={"DBUS_SESSION_BUS_ADDRESS": notifications.address})
    try:
        daemon.wait_for_log("no valid Kerberos ticket")
        asked = notifications.wait_for(1)[0]
        assert asked["summary"] == "Sign in again to keep your home in sync"
        assert "kinit" in asked["body"] and asked["actions"] == {}
        assert not (krb_user.server_home / "Documents" / "e.txt").exists()

        kinit_syncs_at_once(krb_user, daemon, krb_user.server_home / "Documents" / "e.txt",
                            "after kinit", 10)
        assert "the Kerberos ticket cache changed: syncing now" in daemon.log
        back = notifications.wait_for(2)[1]
        assert back["summary"] == "Back in sync"
        assert back["replaces_id"] == asked["id"]
        assert len(notifications.notifications()) == 2
    finally:
        daemon.close()


def test_in_real_time_mode_a_lost_ticket_pauses_syncing_until_kinit(
        tmp_path: Path, realm: Realm, tag: str) -> None:
    """The watch's next cycle finds no ticket: nothing reaches the server, real-time mode ends;
    kinit brings a pass at once and the watch back."""
    path = f"{tmp_path / 'bin'}:{CONFTEST_PATH}"  # our unison-fsmonitor (the `tag` fixture's)
    with GssapiSshServer(tmp_path / "sshd", realm, env={"PATH": path}) as sshd:
        user = KrbUser(tmp_path / "user", sshd, realm)
        docs, sdocs = user.home / "Documents", user.server_home / "Documents"
        for side in (docs, sdocs):
            side.mkdir()
        user.kinit()
        user.configure(sync={"watch": True, "interval": 3600})
        daemon = DaemonProcess(user)
        try:
            daemon.wait_for_log("in sync")
            wait_for(lambda: len(monitors_of(user.home, tag)) == 2, 30, "a monitor on each end")
            user.kdestroy()
            (docs / "f.txt").write_text("while signed out")
            daemon.wait_for_log("no valid Kerberos ticket")
            assert not (sdocs / "f.txt").exists()

            user.kinit()

            wait_for(appears(sdocs / "f.txt", "while signed out"), 15, "the pass after kinit")
            assert "the Kerberos ticket cache changed: syncing now" in daemon.log
            wait_for(lambda: len(monitors_of(user.home, tag)) == 2, 30, "watching again")
        finally:
            daemon.signal(signal.SIGTERM)
            daemon.wait(60)
            daemon.close()
            user.close()


def test_a_hung_kdc_costs_a_bounded_wait_and_loses_nothing(krb_user: KrbUser,
                                                            realm: Realm) -> None:
    """A valid ticket-granting ticket, but no ticket for the server yet: the login has to ask
    the KDC, which takes connections and never answers. The pass ends within its bound, says
    the server could not be reached in time, and the next pass (KDC back) syncs."""
    krb_user.kinit()
    (krb_user.home / "Documents" / "g.txt").write_text("kept while the KDC hangs")
    with realm.hung_kdc():
        code, outcome, seconds = _timed_sync(krb_user)

    assert code == 75, outcome  # try later: nothing the user can do about a KDC
    assert outcome["reason"] == "server-unreachable", outcome
    assert seconds < 2 * 3 + 10 + 4, f"took {seconds:.1f} s"  # the login's bound, and slack
    assert "KDC" in outcome["message"], outcome
    assert (krb_user.home / "Documents" / "g.txt").read_text() == "kept while the KDC hangs"
    assert krb_user.sync().returncode == 0
    assert (krb_user.server_home / "Documents" / "g.txt").exists()


def test_a_ticket_of_another_realm_is_named_in_a_clear_message(
        krb_user: KrbUser, tmp_path: Path) -> None:
    """`klist -s` is content (the ticket is valid), the server is not: the refusal names the
    principal whose ticket was offered and the way out."""
    other = Realm(tmp_path / "other-realm", name="ELSEWHERE.TEST").create()
    try:
        other.kinit(krb_user.ccache)
    finally:
        other.close()
    assert krb_user.has_ticket()

    code, outcome = krb_user.sync_json()

    assert (code, outcome["reason"], outcome["action"]) == (3, "auth-refused", "kinit"), outcome
    assert f"{other.user}@ELSEWHERE.TEST" in outcome["message"], outcome
    assert "Kerberos" in outcome["message"]
    assert len(outcome["message"].splitlines()) == 1
    checks = {item["name"]: item for item in
              json.loads(krb_user.run("check", "--json").stdout)["checks"]}
    assert checks["kerberos"]["status"] == "ok", checks["kerberos"]  # a valid ticket…
    assert checks["kerberos kdc"]["status"] == "fail", checks["kerberos kdc"]  # …not for it
    assert "host/localhost" in checks["kerberos kdc"]["detail"]


def test_the_login_hook_syncs_with_the_login_shells_ticket(krb_user: KrbUser,
                                                           tmp_path: Path) -> None:
    """A tty login without a user manager: the shell sources the profile.d hook with the ticket
    cache pam_krb5/sssd gave it (KRB5CCNAME); the background pass logs in with that ticket."""
    hook = Path(__file__).parent.parent / "data" / "profile.d" / "roaming-homes.sh"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "roaming-homes").write_text(
        f"#!/bin/sh\nexec {sys.executable} -m roaming_homes \"$@\"\n")
    (bin_dir / "roaming-homes").chmod(0o755)
    krb_user.kinit()
    (krb_user.home / "Documents" / "h.txt").write_text("synced at login")

    shell_env = {**krb_user.env, "PATH": f"{bin_dir}:{krb_user.env['PATH']}"}
    login = subprocess.run(["sh", "-c", f". {shlex.quote(str(hook))}"], capture_output=True,
                           text=True, timeout=10, env=shell_env, stdin=subprocess.DEVNULL,
                           check=False)

    assert (login.returncode, login.stdout, login.stderr) == (0, "", "")
    wait_for(appears(krb_user.server_home / "Documents" / "h.txt", "synced at login"), 30,
             "the login hook's pass")
    recorded = krb_user.state_home / "roaming-homes" / "history.jsonl"
    wait_for(recorded.exists, 30, "the pass's end")  # nothing of it outlives the test
    assert json.loads(recorded.read_text().splitlines()[-1])["result"] == "in-sync"


def test_with_a_keyring_cache_the_daemon_syncs_right_after_kinit(
        tmp_path: Path, gss_sshd: GssapiSshServer, realm: Realm) -> None:
    """A kernel keyring cache (KEYRING:, as sssd sets up; KCM: behaves alike) has no file to
    watch: while a ticket is awaited the daemon asks `klist -s` every few seconds instead of
    waiting for its interval (an hour here). Once it found one it does not ask again before a
    pass says how it went (on a loaded machine it once found the same ticket over and over,
    each time stopping real-time mode as it started, and never synced)."""
    name = f"KEYRING:user:roaming-homes-test-{os.getpid()}-{tmp_path.name}"
    user = KrbUser(tmp_path / "user", gss_sshd, realm, ccache=name)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "k.txt").write_text("from a keyring")
    user.configure(sync={**user.config["sync"], "interval": 3600})
    daemon = DaemonProcess(user)
    try:
        daemon.wait_for_log("no valid Kerberos ticket")

        # klist -s every 5 s, then a login and a pass: well within the hour's interval (the
        # bound leaves room for a loaded machine; CI once took longer than 30 s)
        kinit_syncs_at_once(user, daemon, user.server_home / "Documents" / "k.txt",
                            "from a keyring", 60)
        assert daemon.log.count("a Kerberos ticket is there again: syncing now") == 1
    finally:
        daemon.close()
        user.kdestroy()
        forget_keyring(name)
        user.close()


def forget_keyring(cache: str) -> None:
    """kdestroy empties a keyring cache and leaves the keyring itself linked to the user's
    keyring: unlink it, so that nothing of the test stays in the kernel."""
    keyring = "_krb_" + cache.split(":", 2)[2]
    found = subprocess.run(["keyctl", "search", "@u", "keyring", keyring], capture_output=True,
                           text=True, timeout=10, check=False)
    if found.returncode == 0:
        subprocess.run(["keyctl", "unlink", found.stdout.strip(), "@u"], capture_output=True,
                       timeout=10, check=True)


def test_the_service_under_systemd_user_logs_in_with_the_imported_ticket_cache(
        manager: UserManager, krb_user: KrbUser) -> None:
    """The unit's environment has no Kerberos variables; the session imports them into the
    user manager (`systemctl --user import-environment`, as README says), then the service's
    login pass runs over GSSAPI with the session's ticket."""
    krb_user.configure(sync={**krb_user.config["sync"], "interval": 3600})
    (krb_user.home / "Documents" / "u.txt").write_text("from the user manager")
    krb_user.kinit()
    install_unit(manager, krb_user, leave_out=("KRB5CCNAME", "KRB5_CONFIG"))
    variables = {name: krb_user.env[name] for name in ("KRB5CCNAME", "KRB5_CONFIG")}

    imported = subprocess.run(
        ["nsenter", "-t", str(manager.proc.pid), "-m", "systemctl", "--user",
         "import-environment", *variables], env={**manager.env, **variables},
        capture_output=True, text=True, timeout=30, check=False)
    assert imported.returncode == 0, imported.stderr
    assert manager.systemctl("start", UNIT.name).returncode == 0

    wait_for(appears(krb_user.server_home / "Documents" / "u.txt", "from the user manager"), 30,
             "the service's login pass")
    assert manager.systemctl("stop", UNIT.name).returncode == 0
