"""End to end: the real CLI and unison over the real sshd, a real session D-Bus with a
notification server that records what it is asked to show, and clicks it emits."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.support.daemon import DaemonProcess
from tests.support.homes import Setup
from tests.support.notifications import RecordingServer
from tests.support.sshd import free_port
from tests.support.waiting import wait_for


def notifying(user: Setup, server: RecordingServer, **notify: Any) -> dict[str, str]:
    """Turn notifications on for `user`; returns the environment that reaches the bus."""
    user.configure(notify={"enabled": True, **notify})
    return {"DBUS_SESSION_BUS_ADDRESS": server.address}


def recorder(path: Path, out: Path) -> Path:
    """A stub program that writes its arguments, as JSON, to `out`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    path.chmod(0o755)
    return path


def wait_for_file(path: Path, timeout: float = 20) -> str:
    return wait_for(lambda: path.exists() and path.stat().st_size > 0 and path.read_text(),
                    timeout, f"{path} to be written")


def drafted(mail_file: Path) -> tuple[str, str, str]:
    """Address, subject and body of the draft xdg-email was handed (one mailto: URL)."""
    (url,) = json.loads(wait_for_file(mail_file))
    assert url.startswith("mailto:"), url
    address, _, query = url.removeprefix("mailto:").partition("?")
    fields = parse_qs(query, keep_blank_values=True)
    assert set(fields) == {"subject", "body"}, fields
    return unquote(address), fields["subject"][0], fields["body"][0]


def test_the_logout_hooks_sync_offline_tells_what_is_only_here(
        user: Setup, notifications: RecordingServer) -> None:
    """Sessions without the daemon: the logout hook's `sync --logout` cannot reach the server;
    the files changed here since the last sync are named (not those that sync brought)."""
    env = notifying(user, notifications)
    (user.server_home / "Documents").mkdir()
    (user.server_home / "Documents" / "from-server.txt").write_text("fetched")
    assert user.sync(env=env).returncode == 0
    user.configure(server={"port": free_port()}, notify=user.config["notify"])
    time.sleep(1.1)  # the last sync's end is recorded to the second
    (user.home / "Documents" / "draft.txt").write_text("written offline")

    result = user.sync("--skip-if-daemon", "--logout", env=env)

    assert result.returncode == 75
    line = "stopping with 1 file(s) changed here since the last sync ("
    assert line in result.stderr and result.stderr.rstrip().endswith(
        "are not on the server yet (the server is out of reach): Documents/draft.txt; they "
        "sync the next time it is reached"), result.stderr
    assert line in (user.state_home / "roaming-homes" / "sync.log").read_text()
    shown = notifications.wait_for(1)[-1]
    assert shown["summary"] == "Changes not on the server yet"
    assert "(the server is out of reach): Documents/draft.txt." in shown["body"]


def make_conflict(user: Setup, name: str) -> None:
    """Edit `name` in Documents on both sides after it was synced (prefer = none keeps both)."""
    docs = user.home / "Documents"
    docs.mkdir(exist_ok=True)
    (docs / name).write_text("original")
    assert user.sync().returncode in (0, 1)  # 1: an earlier conflict is still there
    server = user.server_home / "Documents" / name
    server.write_text("server edit")
    os.utime(server, (time.time() - 60, time.time() - 60))
    (docs / name).write_text("laptop edit")


def refuse_login(user: Setup) -> None:
    user.configure(server={**user.config["server"], "ssh_options": user.unknown_key_options()},
                   notify=user.config["notify"])


def test_offline_sync_shows_nothing(user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(server={"port": free_port()}, notify=user.config["notify"])
    (user.home / "Documents").mkdir()

    results = [user.sync(env=env).returncode for _ in range(2)]

    assert results == [75, 75]
    assert notifications.calls == []
    state = json.loads((user.state_home / "roaming-homes" / "notify.json").read_text())
    assert state["offline_since"] and state["active"] is None


def test_conflict_notifies_once_and_again_only_for_a_new_path(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")

    first = user.sync(env=env)
    again = user.sync(env=env)
    make_conflict(user, "budget.txt")
    third = user.sync(env=env)

    assert [first.returncode, again.returncode, third.returncode] == [1, 1, 1]
    shown = notifications.wait_for(2)
    assert len(shown) == 2
    assert shown[0]["app_name"] == "Roaming Homes"
    assert shown[0]["summary"] == "Files changed on both sides"
    assert "Documents/report.txt" in shown[0]["body"]
    assert shown[0]["actions"] == {"default": "Keep both", "keep-local": "Keep this computer's",
                                   "keep-server": "Keep the other", "show": "Show…",
                                   "ignore": "Ignore"}
    assert shown[0]["hints"]["urgency"] == 1 and shown[0]["hints"]["resident"] is True
    assert "Documents/budget.txt" in shown[1]["body"]
    assert "report.txt" not in shown[1]["body"]
    assert shown[1]["replaces_id"] == shown[0]["id"]


def test_show_action_opens_the_folder_and_the_notification_keeps_working(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    argv_file = tmp_path / "xdg-open-argv.json"
    recorder(tmp_path / "bin" / "xdg-open", argv_file)
    env = notifying(user, notifications)
    env["PATH"] = f"{tmp_path / 'bin'}:{user.env['PATH']}"
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "show")
    assert json.loads(wait_for_file(argv_file)) == [str(user.home / "Documents")]
    argv_file.unlink()
    notifications.invoke(shown["id"], "show")  # resident: a second click still works

    assert json.loads(wait_for_file(argv_file)) == [str(user.home / "Documents")]


def test_show_without_xdg_open_is_no_error(user: Setup, notifications: RecordingServer,
                                           tmp_path: Path) -> None:
    """No xdg-open on the PATH: nothing opens, and the notification's other actions work."""
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "unison").symlink_to(subprocess.run(["sh", "-c", "command -v unison"],
                                                capture_output=True, text=True,
                                                check=True).stdout.strip())
    for tool in ("ssh", "sh", "stat"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                               text=True, check=True).stdout.strip()
        (bare / tool).symlink_to(found)
    env["PATH"] = str(bare)
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "show")
    notifications.invoke(shown["id"], "keep-local")

    wait_for(lambda: (user.server_home / "Documents" / "report.txt").read_text()
             == "laptop edit", 40, "the conflict settled")


def test_a_click_counts_only_from_the_server_that_showed_the_notification(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    """Any program on the session bus can emit an ActionInvoked signal: the listener acts only
    on the one sent by the notification server's own connection."""
    argv_file = tmp_path / "xdg-open-argv.json"
    recorder(tmp_path / "bin" / "xdg-open", argv_file)
    env = notifying(user, notifications)
    env["PATH"] = f"{tmp_path / 'bin'}:{user.env['PATH']}"
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]

    notifications.impostor_invoke(shown["id"], "show")
    time.sleep(2)
    assert not argv_file.exists()

    notifications.invoke(shown["id"], "show")
    assert json.loads(wait_for_file(argv_file)) == [str(user.home / "Documents")]


MARKUP_NAME = "<a href=http:evil.example>click<b>me.txt"


def test_a_name_is_never_markup_where_the_server_renders_markup(
        user: Setup, notifications: RecordingServer) -> None:
    notifications.capabilities.append("body-markup")
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, MARKUP_NAME)

    assert user.sync(env=env).returncode == 1

    body = notifications.wait_for(1)[0]["body"]
    assert "&lt;a href=http:evil.example&gt;click&lt;b&gt;me.txt" in body
    assert "<a" not in body and "<b>" not in body


def test_a_name_is_plain_text_where_the_server_renders_plain_text(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, MARKUP_NAME)

    assert user.sync(env=env).returncode == 1

    assert MARKUP_NAME in notifications.wait_for(1)[0]["body"]


def test_ignore_action_silences_new_conflicts_until_in_sync(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]
    state_file = user.state_home / "roaming-homes" / "notify.json"

    notifications.invoke(shown["id"], "ignore")
    deadline = time.monotonic() + 20
    while "conflicts" not in json.loads(state_file.read_text())["ignored"]:
        assert time.monotonic() < deadline, state_file.read_text()
        time.sleep(0.05)
    make_conflict(user, "budget.txt")

    assert user.sync(env=env).returncode == 1
    assert notifications.notifications() == [shown]
    assert {"method": "CloseNotification", "id": shown["id"]} in notifications.calls


def test_refused_login_notifies_at_once_and_email_support_drafts_a_mail(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    mail_file = tmp_path / "xdg-email-argv.json"
    bin_dir = tmp_path / "bin"
    recorder(bin_dir / "xdg-email", mail_file)
    env = notifying(user, notifications, support_email="help@example.org")
    env["PATH"] = f"{bin_dir}:{user.env['PATH']}"
    # No shared connection: the refused key must be tried, not an open master reused.
    user.configure(server={"connection_reuse": 0}, notify=user.config["notify"])
    (user.home / "Documents").mkdir()
    assert user.sync().returncode == 0  # leaves unison's output in sync.log
    refuse_login(user)

    result = user.sync(env=env)

    assert result.returncode == 3
    shown = notifications.wait_for(1)[0]
    assert shown["summary"] == "Sync refused by the server"
    assert shown["hints"]["urgency"] == 2 and shown["icon"] == "dialog-error"
    assert shown["actions"] == {"email": "Email support", "ignore": "Ignore"}

    notifications.invoke(shown["id"], "email")

    address, subject, body = drafted(mail_file)
    assert "failed" in subject and address == "help@example.org"
    assert f"User: {user.sshd.user}" in body and "Host: " in body
    assert "Exit code: 3" in body
    assert "refused without a password" in body
    assert "Last lines of sync.log:" in body and "pass started" in body


def test_transient_failure_notifies_after_three_passes_and_recovery_replaces_it(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a").write_text("a")
    # unison itself cannot be run (a missing program): every pass fails (exit 3).
    user.configure(sync={**user.config["sync"], "unison": "/nonexistent-rh-test/unison"},
                   notify=user.config["notify"])

    codes = []
    for _ in range(3):
        codes.append(user.sync(env=env).returncode)
        if len(codes) < 3:
            assert notifications.calls == [], codes
    shown = notifications.wait_for(1)
    user.configure(sync={**user.config["sync"], "unison": "unison"},
                   notify=user.config["notify"])
    recovered = user.sync(env=env)

    assert codes == [3, 3, 3]
    assert shown[0]["summary"] == "Sync keeps failing"
    assert "The last 3 syncs" in shown[0]["body"]
    assert recovered.returncode == 0
    back = notifications.wait_for(2)[1]
    assert back["summary"] == "Back in sync"
    assert back["replaces_id"] == shown[0]["id"]
    assert back["actions"] == {}


def test_without_actions_capability_the_body_names_the_command(
        user: Setup, notifications: RecordingServer) -> None:
    notifications.capabilities = ["body"]
    env = notifying(user, notifications, resolve_command=["roaming-homes", "resolve"])
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")

    assert user.sync(env=env).returncode == 1

    shown = notifications.wait_for(1)[0]
    assert shown["actions"] == {}
    assert shown["body"].endswith("To resolve, run: roaming-homes resolve")


def test_custom_messages_are_used(user: Setup, notifications: RecordingServer,
                                  tmp_path: Path) -> None:
    messages = tmp_path / "messages.toml"
    messages.write_text('[conflicts]\nsummary = "Konflikt mit {host}"\n'
                        'body = "{count} Datei(en): {paths}"\n')
    env = notifying(user, notifications, messages=str(messages))
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")

    assert user.sync(env=env).returncode == 1

    shown = notifications.wait_for(1)[0]
    assert shown["summary"] == "Konflikt mit 127.0.0.1"
    assert shown["body"] == "1 Datei(en): Documents/report.txt"


def test_bad_messages_file_exits_78_before_syncing(user: Setup, tmp_path: Path) -> None:
    messages = tmp_path / "messages.toml"
    messages.write_text('[stale]\nbody = "offline since {when}"\n')
    user.configure(notify={"enabled": True, "messages": str(messages)})
    (user.home / "Documents").mkdir()
    (user.home / "Documents" / "a").write_text("a")

    result = user.sync()

    assert result.returncode == 78
    assert f"{messages}: message stale.body: unknown placeholder {{when}}" in result.stderr
    assert not (user.server_home / "Documents").exists()


def test_without_a_session_bus_sync_exits_as_usual(user: Setup, tmp_path: Path) -> None:
    user.configure(sync={"prefer": "none"}, notify={"enabled": True})
    make_conflict(user, "report.txt")

    unset = user.sync()
    invalid = user.run("-v", "sync", env={
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/no-such-bus"})

    assert unset.returncode == 1 and unset.stderr == ""
    assert invalid.returncode == 1
    assert invalid.stderr.count("notification not shown") == 1


def held_back(user: Setup, env: dict[str, str]) -> Path:
    """30 files synced, then 25 deleted here: a pass the loss guard refuses (exit 4)."""
    docs = user.home / "Documents"
    docs.mkdir()
    for index in range(30):
        (docs / f"f{index:02}.txt").write_text(str(index))
    assert user.sync(env=env).returncode == 0
    for index in range(25):
        (docs / f"f{index:02}.txt").unlink()
    assert user.sync(env=env).returncode == 4
    return docs


def test_a_mass_deletion_notifies_once_with_both_ways_out_and_restore_works(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    docs = held_back(user, env)

    assert user.sync(env=env).returncode == 4  # the same refusal again: shown once
    shown = notifications.wait_for(1)[0]

    assert shown["summary"] == "Sync held back a mass deletion or change"
    assert "25 of 30 files were deleted on this computer" in shown["body"]
    assert shown["actions"] == {"restore": "Restore files", "confirm": "Sync anyway",
                                "ignore": "Ignore"}
    assert len(notifications.notifications()) == 1
    notifications.invoke(shown["id"], "restore")
    wait_for(lambda: len(list(docs.iterdir())) == 30, 30, "the files to come back")
    assert len(list((user.server_home / "Documents").iterdir())) == 30
    # The resident notification does not stay saying what is no longer true.
    back = notifications.wait_for(2)[1]
    assert back["summary"] == "Back in sync" and back["replaces_id"] == shown["id"]


def test_the_confirm_action_propagates_what_was_held_back(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    docs = held_back(user, env)
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "confirm")

    wait_for(lambda: len(list((user.server_home / "Documents").iterdir())) == 5, 30,
             "the deletions to reach the server")
    assert len(list(docs.iterdir())) == 5


def swap_host_key(user: Setup) -> tuple[str, str]:
    """Point this computer's known_hosts at another key for the server, as if the server's key
    changed (or someone answered in its place). Returns (known, offered) fingerprints."""
    assert user.sshd is not None
    other = user.base / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = user.base / "known_hosts"
    key = (other.with_suffix(".pub")).read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{user.sshd.port} {key[0]} {key[1]}\n")
    options = [o.replace(str(user.sshd.known_hosts), str(known_hosts))
               for o in user.sshd.ssh_options()]
    user.configure(server={**user.config["server"], "ssh_options": options,
                           "connection_reuse": 0}, notify=user.config["notify"])

    def fingerprint(pub: Path) -> str:
        return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                              check=True).stdout.split()[1]

    return (fingerprint(other.with_suffix(".pub")),
            fingerprint(user.sshd.host_key.with_suffix(".pub")))


def test_a_changed_server_identity_has_its_own_notification_that_ignore_never_hid(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    """A login refused and ignored earlier must not silence "the server's identity changed";
    the user is told to contact support (never to accept the key), and the support mail
    carries both fingerprints."""
    mail_file = tmp_path / "xdg-email-argv.json"
    recorder(tmp_path / "bin" / "xdg-email", mail_file)
    env = notifying(user, notifications, support_email="help@example.org")
    env["PATH"] = f"{tmp_path / 'bin'}:{user.env['PATH']}"
    # No shared connection: each pass meets the server's key (and login) afresh.
    user.configure(server={"connection_reuse": 0}, notify=user.config["notify"])
    (user.home / "Documents").mkdir()
    assert user.sync().returncode == 0
    saved = dict(user.config["server"])
    refuse_login(user)
    assert user.sync(env=env).returncode == 3
    auth = notifications.wait_for(1)[0]
    notifications.invoke(auth["id"], "ignore")
    state_file = user.state_home / "roaming-homes" / "notify.json"
    wait_for(lambda: "auth" in json.loads(state_file.read_text())["ignored"], 10, "ignored")
    user.configure(server=saved, notify=user.config["notify"])
    known, offered = swap_host_key(user)

    result = user.run("sync", "--json", env=env)

    outcome = json.loads(result.stdout)
    assert result.returncode == 3 and outcome["reason"] == "host-key-changed"
    assert "contact support" in outcome["message"] and "known_hosts" not in outcome["message"]
    assert any(known in note for note in outcome["notes"])
    assert any(offered in note for note in outcome["notes"])
    shown = notifications.wait_for(2)[1]
    assert shown["summary"] == "The server's identity changed: contact support"
    assert "ignore" not in shown["actions"] and "email" in shown["actions"]
    notifications.invoke(shown["id"], "email")
    body = drafted(mail_file)[2]
    assert known in body and offered in body


def test_a_changed_server_identity_stops_the_daemon_passes_and_says_so(user: Setup) -> None:
    (user.home / "Documents").mkdir()
    swap_host_key(user)
    user.configure(server=user.config["server"], sync={"interval": 1})

    daemon = DaemonProcess(user)
    try:
        wait_for(lambda: user.status()["result"] == "failed", 30, "the refused pass recorded")
        status = user.run("status")
        assert "identity of the server 127.0.0.1 changed" in status.stdout
        assert "contact support" in status.stdout
        assert daemon.proc.poll() is None
        assert not (user.server_home / "Documents").exists()
    finally:
        daemon.close()


def test_keep_this_computers_settles_the_conflict_on_both_sides(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "keep-local")

    back = notifications.wait_for(2, timeout=40)[1]
    assert back["summary"] == "Back in sync" and back["replaces_id"] == shown["id"]
    for home in (user.home, user.server_home):
        assert (home / "Documents" / "report.txt").read_text() == "laptop edit"
    assert user.status()["conflicts"] == []
    kept = user.server_home / ".roaming-homes" / "backup" / "Documents" / "report.txt"
    assert kept.read_text() == "server edit"


def test_clicking_the_notification_keeps_both_versions(
        user: Setup, notifications: RecordingServer) -> None:
    env = notifying(user, notifications)
    user.configure(sync={"prefer": "none"}, notify=user.config["notify"])
    make_conflict(user, "report.txt")
    assert user.sync(env=env).returncode == 1
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "default")

    notifications.wait_for(2, timeout=40)
    for home in (user.home, user.server_home):
        docs = home / "Documents"
        assert (docs / "report.txt").read_text() == "laptop edit"
        (copy,) = [p for p in docs.iterdir() if "conflict from" in p.name]
        assert copy.read_text() == "server edit"


def test_without_xdg_email_the_support_report_is_saved_and_its_place_told(
        user: Setup, notifications: RecordingServer, tmp_path: Path) -> None:
    env = notifying(user, notifications, support_email="help@example.org")
    user.configure(server={"connection_reuse": 0}, notify=user.config["notify"])
    (user.home / "Documents").mkdir()
    assert user.sync().returncode == 0
    refuse_login(user)
    bare = tmp_path / "bare-bin"  # ssh and unison, but no xdg-email
    bare.mkdir()
    for tool in ("ssh", "unison"):
        (bare / tool).symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"],
                                                capture_output=True, text=True,
                                                check=True).stdout.strip())
    env["PATH"] = str(bare)
    assert user.sync(env=env).returncode == 3
    shown = notifications.wait_for(1)[0]

    notifications.invoke(shown["id"], "email")

    told = notifications.wait_for(2)[1]
    assert told["summary"] == "Support report saved"
    (report,) = user.state_dir.glob("support-report-*.txt")
    assert str(report) in told["body"] and "help@example.org" in told["body"]
    text = report.read_text()
    assert text.startswith("To: help@example.org\nSubject: roaming-homes: sync failed")
    assert "Exit code: 3" in text and "Last lines of sync.log:" in text
