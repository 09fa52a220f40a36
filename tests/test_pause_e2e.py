"""End to end: `pause` and `resume` through the real CLI, and what a pause does to `sync` and
`status` (the daemon's side is in test_daemon_watch_e2e.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.support.homes import Setup


def test_pause_holds_the_hooks_sync_not_an_explicit_one_until_resume(user: Setup) -> None:
    docs, server_docs = user.home / "Documents", user.server_home / "Documents"
    docs.mkdir()
    bad = user.run("pause", "2x")
    assert (bad.returncode, bad.stderr) == (
        64, "roaming-homes: error: '2x' is not a duration (e.g. 30m, 1h, 2h30m)\n")

    paused = user.run("pause", "1h")

    assert paused.returncode == 0 and paused.stdout.startswith("syncing paused until "), paused
    status = user.status()
    assert status["state"] == "paused" and status["action"] is None
    until = datetime.fromisoformat(status["paused"]["until"])
    assert abs(until - datetime.now().astimezone() - timedelta(hours=1)) < timedelta(minutes=1)
    # the date too when the hour ends tomorrow (a test run just before midnight)
    shown = f"{until:%H:%M}" if until.date() == datetime.now().astimezone().date() else \
        f"{until:%Y-%m-%d %H:%M}"
    assert user.run("status").stdout.splitlines()[0] == (
        f"roaming-homes: paused until {shown} (roaming-homes resume)")
    checked = user.run("check")
    assert checked.returncode == 0, checked.stdout  # a warning: not a failure
    assert f"! pause: syncing paused until {shown} (since " in checked.stdout
    (docs / "a.txt").write_text("a")
    code, skipped = user.sync_json("--skip-if-daemon")  # what the login and logout hooks run
    assert (code, skipped["result"], skipped["exit_code"]) == (75, "paused", 75), skipped
    assert skipped["message"].startswith("syncing is paused until ")
    assert not (server_docs / "a.txt").exists()
    assert user.status()["state"] == "paused"  # a skipped pass is not recorded

    explicit = user.sync()

    assert explicit.returncode == 0, explicit.stderr
    assert "this pass runs because you asked; real-time and periodic syncing stay paused" \
        in explicit.stderr
    assert (server_docs / "a.txt").read_text() == "a"
    assert user.status()["paused"] is not None  # still paused for everything else
    resumed = user.run("resume")
    assert (resumed.returncode, resumed.stdout) == (0, "resumed: syncing again\n")
    status = user.status()
    assert status["state"] == "in-sync" and status["paused"] is None
    assert user.run("resume").stdout == "syncing was not paused\n"
