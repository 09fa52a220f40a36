"""When to notify, what the notification says, and the messages file (pure parts of notify)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from roaming_homes.desktop.messages import DEFAULT_MESSAGES, build_request, load_messages
from roaming_homes.desktop.notify import FirstSyncAnnouncer
from roaming_homes.desktop.policy import (
    FIRST_SYNC_MIN_BYTES,
    TRANSIENT_PASSES,
    Decision,
    NotifyState,
    Shown,
    decide,
    decide_first_sync,
    decide_unsynced,
    failure_kind,
)
from roaming_homes.errors import ConfigError
from roaming_homes.outcome import Reason, Result, SyncOutcome
from roaming_homes.session.progress import Progress

NOW = datetime(2024, 5, 2, 12, 0).astimezone()
DAY = 86400


def outcome(result: str, message: str = "", conflicts: list[str] | None = None,
            finished: datetime = NOW, reason: str = "") -> SyncOutcome:
    return SyncOutcome(Result(result), message, finished.isoformat(), finished.isoformat(),
                       0.1, "h", conflicts=conflicts or [], reason=Reason(reason))


AUTH = outcome("failed", "refused without a password", reason="auth-refused")


def step(state: NotifyState, out: SyncOutcome, *, last_success: datetime | None = None,
         now: datetime = NOW, shown_id: int = 7) -> tuple[Decision | None, NotifyState]:
    """One pass; the server gives the shown notification `shown_id`."""
    decision, new = decide(state, out,
                           last_success=last_success.isoformat() if last_success else None,
                           now=now, stale_after=DAY)
    if decision and decision.kind and new.active is not None:
        new.active.id = shown_id
    return decision, new


def kinds(state: NotifyState, outcomes: list[SyncOutcome], **kw: Any) -> list[str | None]:
    shown = []
    for out in outcomes:
        decision, state = step(state, out, **kw)
        shown.append(decision.kind if decision else None)
    return shown


# --- which states notify ---

@pytest.mark.parametrize("result", ["busy", "excluded", "paused"])
def test_busy_and_excluded_never_notify_nor_change_state(result: str) -> None:
    state = NotifyState(active=Shown("conflicts", 3, 1), transient_failures=2)
    assert step(state, outcome(result)) == (None, state)


def test_in_sync_with_nothing_shown_notifies_nothing() -> None:
    assert step(NotifyState(), outcome("in-sync"))[0] is None


def test_offline_alone_never_notifies() -> None:
    recent = NOW - timedelta(hours=23)
    assert kinds(NotifyState(), [outcome("offline")] * 5, last_success=recent) == [None] * 5


def test_offline_longer_than_stale_after_notifies_once_with_the_last_success() -> None:
    old = NOW - timedelta(hours=25)
    decision, state = step(NotifyState(), outcome("offline"), last_success=old)
    assert decision is not None and decision.kind == "stale"
    assert decision.fields["since"] == old.strftime("%Y-%m-%d %H:%M")
    assert kinds(state, [outcome("offline")] * 3, last_success=old) == [None] * 3


def test_never_synced_counts_from_the_first_offline_pass() -> None:
    first = outcome("offline", finished=NOW - timedelta(days=2))
    _, state = step(NotifyState(), first, now=NOW - timedelta(days=2))
    assert state.offline_since == first.finished
    decision, _ = step(state, outcome("offline"))
    assert decision is not None and decision.kind == "stale"


def test_back_online_after_stale_replaces_it_with_back_in_sync() -> None:
    _, state = step(NotifyState(), outcome("offline"), last_success=NOW - timedelta(days=3),
                    shown_id=41)
    decision, state = step(state, outcome("in-sync"))
    assert decision == Decision("recovered", replaces_id=41)
    assert state.active is None and state.offline_since is None


def test_conflicts_notify_new_paths_only() -> None:
    state = NotifyState()
    d1, state = step(state, outcome("conflicts", conflicts=["a.txt"]))
    d2, state = step(state, outcome("conflicts", conflicts=["a.txt"]))
    d3, state = step(state, outcome("conflicts", conflicts=["a.txt", "b.txt"]))
    assert d1 is not None and d1.fields == {"paths": "a.txt", "count": "1"}
    assert d2 is None
    assert d3 is not None and d3.fields == {"paths": "b.txt", "count": "1"}
    assert d3.replaces_id == 7  # replaces the earlier conflicts notification


def test_a_conflict_that_comes_back_after_being_solved_is_new_again() -> None:
    out = [outcome("conflicts", conflicts=["a", "b"]), outcome("conflicts", conflicts=["b"]),
           outcome("conflicts", conflicts=["a", "b"])]
    assert kinds(NotifyState(), out) == ["conflicts", None, "conflicts"]


@pytest.mark.parametrize(("result", "message", "reason", "kind"), [
    ("failed", "ssh login to u@h refused without a password (Permission denied)",
     "auth-refused", "auth"),
    ("failed", "the identity of the server h is not known", "host-key", "identity"),
    ("failed", "the identity of the server h changed", "host-key-changed", "identity"),
    ("failed", "unison failed: Received unexpected header from the server:",
     "version-mismatch", "version"),
    ("refused", "the server home is empty", "replica", "guard"),
    ("config-error", "bad profile value", "", "config"),
    ("partial", "1 item(s) failed to transfer: big.iso", "disk-full", "disk-full"),
])
def test_failures_that_need_someone_notify_at_once(result: str, message: str,
                                                   reason: str, kind: str) -> None:
    out = outcome(result, message, reason=reason)
    assert failure_kind(out) == kind
    decision, state = step(NotifyState(), out)
    assert decision is not None and decision.kind == kind
    assert decision.fields["message"] == message
    assert step(state, out)[0] is None  # once


def test_the_kind_comes_from_the_reason_never_from_the_wording() -> None:
    """A message (it may carry a file name) that reads like a full disk is not one."""
    out = outcome("partial", "1 item(s) failed to transfer: No space left on device",
                  reason="unison-failed")
    assert failure_kind(out) == "failing"


def test_transient_failures_notify_only_after_they_persist() -> None:
    out = outcome("failed", "unison failed: Cannot find canonical name of /srv/x")
    shown = kinds(NotifyState(), [out] * (TRANSIENT_PASSES + 2))
    assert shown == [None] * (TRANSIENT_PASSES - 1) + ["failing", None, None]


def test_offline_passes_neither_reset_nor_advance_the_failure_count() -> None:
    fail = outcome("partial", "1 item(s) failed to transfer: x")
    shown = kinds(NotifyState(), [fail, outcome("offline"), fail, outcome("offline"), fail],
                  last_success=NOW)
    assert shown == [None, None, None, None, "failing"]


def test_a_success_resets_the_failure_count() -> None:
    fail = outcome("failed", "unison failed: x")
    assert kinds(NotifyState(), [fail, fail, outcome("in-sync"), fail, fail]) == [None] * 5


def test_recovery_replaces_the_failure_notification() -> None:
    _, state = step(NotifyState(), AUTH,
                    shown_id=12)
    decision, state = step(state, outcome("in-sync"))
    assert decision == Decision("recovered", replaces_id=12)
    assert step(state, outcome("in-sync"))[0] is None


def test_another_kind_of_failure_replaces_the_one_shown() -> None:
    _, state = step(NotifyState(), AUTH,
                    shown_id=12)
    decision, _ = step(state, outcome("refused", "replica emptied"))
    assert decision is not None and (decision.kind, decision.replaces_id) == ("guard", 12)


def test_conflicts_left_after_a_failure_are_shown_again() -> None:
    _, state = step(NotifyState(), outcome("conflicts", conflicts=["a"]))
    _, state = step(state, AUTH, shown_id=9)
    decision, _ = step(state, outcome("conflicts", conflicts=["a"]))
    assert decision is not None and decision.kind == "conflicts" and decision.replaces_id == 9


# --- ignore ---

def test_ignored_conflicts_stay_silent_until_in_sync() -> None:
    _, state = step(NotifyState(), outcome("conflicts", conflicts=["a"]))
    state.ignored.append("conflicts")
    assert step(state, outcome("conflicts", conflicts=["a", "b"]))[0] is None
    decision, state = step(state, outcome("in-sync"))
    assert decision == Decision(None, close_id=7)  # no "back in sync" for an ignored one
    assert state.ignored == []
    again, _ = step(state, outcome("conflicts", conflicts=["a"]))
    assert again is not None and again.kind == "conflicts"


def test_an_ignored_failure_comes_back_when_the_failure_changes() -> None:
    auth = AUTH
    _, state = step(NotifyState(), auth)
    state.ignored.append("auth")
    _, state = step(state, auth)
    decision, state = step(state, outcome("refused", "emptied"))
    assert decision is not None and decision.kind == "guard"
    assert state.ignored == []


def test_an_undelivered_notification_is_tried_again_next_pass() -> None:
    previous = NotifyState()
    decision, new = step(previous, outcome("conflicts", conflicts=["a"]))
    assert decision is not None
    kept = new.undelivered(previous)
    again, _ = step(kept, outcome("conflicts", conflicts=["a"]))
    assert again is not None and again.kind == "conflicts"


def test_damaged_state_is_refused_and_a_good_one_reads_back() -> None:
    with pytest.raises(ValueError, match="'active' has the wrong type"):
        NotifyState.from_dict({"active": "nonsense"})
    state = NotifyState(active=Shown("auth", 5, 2), ignored=["stale"], serial=2)
    assert NotifyState.from_dict(state.to_dict()) == state


# --- the first sync ---

BIG = 12_000_000_000


def announce(state: NotifyState, to_transfer: int = BIG, first_run: bool = True,
             shown_id: int = 7) -> tuple[Decision | None, NotifyState]:
    decision, new = decide_first_sync(state, first_run=first_run, to_transfer=to_transfer)
    if decision and new.active is not None:
        new.active.id = shown_id
    return decision, new


def test_a_big_first_sync_is_announced_with_its_size() -> None:
    decision, state = announce(NotifyState())
    assert decision == Decision("first-sync", fields={"size": "12.0 GB"})
    assert state.first_sync == "12.0 GB" and state.active == Shown("first-sync", 7, 1)


@pytest.mark.parametrize(("to_transfer", "first_run"), [
    (FIRST_SYNC_MIN_BYTES - 1, True),  # a small first sync is over before it would matter
    (BIG, False),  # a later pass that copies a lot is not the setting up of the home
])
def test_small_first_syncs_and_later_passes_are_not_announced(to_transfer: int,
                                                              first_run: bool) -> None:
    assert announce(NotifyState(), to_transfer, first_run) == (None, NotifyState())


def test_the_threshold_itself_is_announced() -> None:
    assert announce(NotifyState(), FIRST_SYNC_MIN_BYTES)[0] is not None


def test_a_resumed_first_sync_is_not_announced_again_but_ends_ready() -> None:
    _, state = announce(NotifyState())
    # The pass was killed: no outcome. The next pass announces nothing, even with less to copy.
    again, resumed = announce(state, to_transfer=BIG // 2)
    assert (again, resumed) == (None, state)
    decision, done = step(resumed, outcome("in-sync"))
    assert decision == Decision("first-sync-done", replaces_id=7, fields={"size": "12.0 GB"})
    assert done.first_sync is None and done.active is None


def test_an_interrupted_or_offline_first_sync_stays_announced() -> None:
    _, state = announce(NotifyState())
    for result in ("offline", "failed"):
        decision, after = step(state, outcome(result))
        assert decision is None and after.first_sync == "12.0 GB"
        assert after.active == Shown("first-sync", 7, 1)


def test_first_sync_ending_in_conflicts_shows_them_instead_of_ready() -> None:
    _, state = announce(NotifyState())
    decision, after = step(state, outcome("conflicts", conflicts=["a"]), shown_id=8)
    assert decision is not None and decision.kind == "conflicts" and decision.replaces_id == 7
    assert after.first_sync is None
    assert step(after, outcome("in-sync"))[0] == Decision("recovered", replaces_id=8)


def test_first_sync_with_failed_items_closes_the_announcement() -> None:
    _, state = announce(NotifyState())
    decision, after = step(state, outcome("partial", "1 item(s) failed to transfer"))
    assert decision == Decision(None, close_id=7)
    assert after.first_sync is None and after.active is None and after.transient_failures == 1


def test_a_failure_shown_during_a_first_sync_is_replaced_by_ready() -> None:
    _, state = announce(NotifyState())
    _, refused = step(state, outcome("refused", "guard"), shown_id=9)
    decision, _ = step(refused, outcome("in-sync"))
    assert decision is not None
    assert (decision.kind, decision.replaces_id) == ("first-sync-done", 9)


def test_an_undelivered_announcement_is_tried_again() -> None:
    previous = NotifyState()
    _, new = announce(previous)
    assert announce(new.undelivered(previous))[0] is not None


def test_announcer_asks_once_per_unison_run_when_propagation_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr("roaming_homes.desktop.notify.first_sync_started",
                        lambda *_args, to_transfer, **_kw: asked.append(to_transfer))
    announcer = FirstSyncAnnouncer({"notify": {"enabled": True}}, None)
    run = [Progress(phase="scanning", first_run=True),
           Progress(phase="propagating", first_run=True, bytes_to_fetch=5, bytes_to_send=1),
           Progress(phase="propagating", first_run=True, bytes_to_fetch=5, percent=50)]

    for p in [*run, *run, Progress(phase="done", first_run=True),
              Progress(phase="propagating", bytes_to_fetch=BIG)]:  # the last: not a first run
        announcer(p)

    assert asked == [6, 6]  # two runs (sync.first_paths, then the rest), asked once each


def test_first_sync_texts_take_size_and_host_and_offer_no_actions() -> None:
    start = build_request(Decision("first-sync", fields={"size": "12.0 GB"}), DEFAULT_MESSAGES,
                          FIELDS, with_actions=True, support_email="help@example.org")
    done = build_request(Decision("first-sync-done", replaces_id=4,
                                  fields={"size": "12.0 GB"}), DEFAULT_MESSAGES, FIELDS,
                         with_actions=True, support_email="help@example.org")
    assert start.summary == "Setting up your roaming home: 12.0 GB to sync"
    assert "homes.example.org" in start.body
    assert (done.summary, done.replaces_id) == ("Your roaming home is ready", 4)
    assert done.body == "Your files are in sync with homes.example.org (12.0 GB copied)."
    assert start.actions == done.actions == []


def test_first_sync_texts_can_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "messages.toml"
    path.write_text('[first-sync]\nsummary = "Einrichtung: {size} von {host}"\n'
                    '[first-sync-done]\nsummary = "Fertig"\n')
    messages = load_messages(str(path))
    request = build_request(Decision("first-sync", fields={"size": "1.0 GB"}), messages,
                            FIELDS, with_actions=True, support_email="")
    assert request.summary == "Einrichtung: 1.0 GB von homes.example.org"
    assert messages["first-sync-done.summary"] == "Fertig"


# --- texts and actions ---

FIELDS = {"host": "homes.example.org", "user": "ann", "command": "roaming-homes resolve",
          "email": "help@example.org"}


def test_conflicts_request_offers_the_ways_out_and_stays_with_warning_look() -> None:
    decision = Decision("conflicts", replaces_id=3, fields={"paths": "a, b", "count": "2"})
    request = build_request(decision, DEFAULT_MESSAGES, FIELDS, with_actions=True,
                            support_email="help@example.org")
    assert request.actions == ["default", "Keep both", "keep-local", "Keep this computer's",
                               "keep-server", "Keep the other", "show", "Show…",
                               "ignore", "Ignore"]
    assert request.resident and request.args()[6]["resident"] == ("b", True)
    assert request.body == ("2 file(s) changed both here and on homes.example.org; both "
                            "versions are kept until you choose: a, b")
    assert (request.urgency, request.icon, request.replaces_id) == (1, "dialog-warning", 3)
    assert request.args()[0] == "Roaming Homes"


def test_failure_request_offers_email_only_when_an_address_is_set() -> None:
    decision = Decision("auth", fields={"message": "denied"})
    with_mail = build_request(decision, DEFAULT_MESSAGES, FIELDS, with_actions=True,
                              support_email="help@example.org")
    without = build_request(decision, DEFAULT_MESSAGES, FIELDS, with_actions=True,
                            support_email="")
    assert with_mail.actions == ["email", "Email support", "ignore", "Ignore"]
    assert without.actions == ["ignore", "Ignore"]
    assert (with_mail.urgency, with_mail.icon) == (2, "dialog-error")


def test_without_the_actions_capability_the_body_names_the_command() -> None:
    decision = Decision("conflicts", fields={"paths": "a", "count": "1"})
    request = build_request(decision, DEFAULT_MESSAGES, FIELDS, with_actions=False,
                            support_email="help@example.org")
    assert request.actions == []
    assert request.body.endswith("\nTo resolve, run: roaming-homes resolve")


def test_messages_file_overrides_texts_with_placeholders(tmp_path: Path) -> None:
    path = tmp_path / "messages.toml"
    path.write_text('[conflicts]\nsummary = "Konflikt auf {host}"\n'
                    'body = "{count}: {paths}"\n[action]\nignore = "Ignorieren"\n')
    messages = load_messages(str(path))
    request = build_request(Decision("conflicts", fields={"paths": "a", "count": "1"}),
                            messages, FIELDS, with_actions=True, support_email="")
    assert (request.summary, request.body) == ("Konflikt auf homes.example.org", "1: a")
    assert request.actions[-2:] == ["ignore", "Ignorieren"]


@pytest.mark.parametrize(("text", "problem"), [
    ('[conflicts]\ntitle = "x"\n', "unknown message key conflicts.title"),
    ('[nonsense]\nbody = "x"\n', "unknown message key nonsense.body"),
    ('[conflicts]\nbody = "{hostname}"\n', "message conflicts.body: unknown placeholder "
                                           "{hostname}"),
    ('[conflicts]\nbody = "{host.x}"\n', "message conflicts.body: placeholder {host.x} is not "
                                         "allowed: write {host} alone"),
    ('[conflicts]\nbody = "{"\n', "message conflicts.body: invalid text"),
    ('[conflicts]\nbody = 3\n', "message conflicts.body must be a string"),
    ("conflicts = 1\n", "conflicts must be a table"),
])
def test_bad_messages_file_is_a_config_error_naming_file_and_key(
        tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "messages.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_messages(str(path))
    assert caught.value.message.startswith(f"{path}: {problem}")
    assert caught.value.code == 78


@pytest.mark.parametrize(("text", "field"), [
    ("{message:>1500000000}", "{message:>1500000000}"),  # a width: gigabytes of padding
    ("{message:.3}", "{message:.3}"),
    ("{count:{size}}", "{count:{size}}"),  # a nested field in the spec
    ("{paths.__class__}", "{paths.__class__}"),  # attribute access reaches Python objects
    ("{paths.__class__.__mro__}", "{paths.__class__.__mro__}"),
    ("{count[0]}", "{count[0]}"),
    ("{message!r}", "{message!r}"),
    ("{message!s:>9}", "{message!s:>9}"),
])
def test_message_placeholders_are_plain_names_only(tmp_path: Path, text: str,
                                                   field: str) -> None:
    path = tmp_path / "messages.toml"
    path.write_text(f'[hint]\nsupport = "Mail {text} now"\n')
    with pytest.raises(ConfigError) as caught:
        load_messages(str(path))
    base = re.split(r"[.:!\[]", field[1:], maxsplit=1)[0]
    assert caught.value.message == (
        f"{path}: message hint.support: placeholder {field} is not allowed: write {{{base}}} "
        "alone, without conversion (!r), format spec (:>10), attribute (.x) or index ([0])")
    assert caught.value.code == 78


def test_unknown_fields_and_newlines_in_them_stay_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "messages.toml"
    for text, field in [("{}", "{}"), ("{0}", "{0}"), ("{a\\nb}", "{a\\nb}")]:
        path.write_text(f'[stale]\nbody = "{text}"\n')
        with pytest.raises(ConfigError) as caught:
            load_messages(str(path))
        assert caught.value.message.startswith(
            f"{path}: message stale.body: unknown placeholder {field} (known: {{host}}, ")
        assert "\n" not in caught.value.message


def test_literal_braces_stay_allowed(tmp_path: Path) -> None:
    path = tmp_path / "messages.toml"
    path.write_text('[conflicts]\nbody = "{{{count}}} on {host}: {{paths}}"\n')
    request = build_request(Decision("conflicts", fields={"paths": "a", "count": "1"}),
                            load_messages(str(path)), FIELDS, with_actions=True,
                            support_email="")
    assert request.body == "{1} on homes.example.org: {paths}"


def test_a_loss_refusal_offers_restore_and_confirm_a_replica_refusal_neither() -> None:
    losses = outcome("refused", "30 of 40 files were deleted …", reason="losses")
    replica = outcome("refused", "the server home is missing", reason="replica")
    assert failure_kind(losses) == "losses" and failure_kind(replica) == "guard"
    fields = {"host": "h", "user": "u", "command": "c", "email": ""}

    def request(kind: str, with_actions: bool) -> Any:
        return build_request(Decision(kind, fields={"message": "m"}), DEFAULT_MESSAGES, fields,
                             with_actions=with_actions, support_email="")

    assert request("losses", True).actions == ["restore", "Restore files", "confirm",
                                               "Sync anyway", "ignore", "Ignore"]
    assert "resolve" not in request("guard", True).actions  # Resolve… is for conflicts
    body = request("losses", False).body  # no actions on this server: the body says how
    assert "roaming-homes restore --refused" in body and "roaming-homes sync --force" in body


def test_the_support_draft_is_one_url_that_no_shell_echo_can_cut_short() -> None:
    """xdg-email's --body goes through dash's echo, where `\\c` ends the text: the draft is
    handed over as one percent-encoded mailto: URL instead."""
    from urllib.parse import parse_qs

    from roaming_homes.desktop.messages import mailto

    body = "line one\nname with \\c and \\x1b & ?body=x #frag 100%"
    url = mailto("help@example.org", "sync failed & more", body)

    assert "\\" not in url and "\n" not in url and " " not in url
    address, _, query = url.removeprefix("mailto:").partition("?")
    assert address == "help@example.org"
    assert parse_qs(query) == {"subject": ["sync failed & more"], "body": [body]}


def test_a_missing_ticket_asks_to_sign_in_once_and_back_in_sync_replaces_it() -> None:
    no_ticket = outcome("failed", "no valid Kerberos ticket", reason="no-ticket")
    decision, state = step(NotifyState(), no_ticket, shown_id=21)
    assert decision is not None and decision.kind == "ticket"  # at once: not transient
    assert failure_kind(no_ticket) == "ticket"
    assert kinds(state, [no_ticket, no_ticket]) == [None, None]  # never again while it lasts
    assert step(state, outcome("in-sync"))[0] == Decision("recovered", replaces_id=21)


def test_the_sign_in_notification_names_kinit_and_offers_no_button() -> None:
    request = build_request(Decision("ticket"), DEFAULT_MESSAGES, {"host": "homes.example.org"},
                            with_actions=True, support_email="help@example.org")
    assert request.summary == "Sign in again to keep your home in sync"
    assert "kinit" in request.body and "homes.example.org" in request.body
    assert request.actions == []


# --- conflicts prefer settled ---

def settled(*paths: str, result: str = "in-sync",
            conflicts: list[str] | None = None) -> SyncOutcome:
    out = outcome(result, conflicts=conflicts)
    out.settled = list(paths)
    return out


def test_a_settled_conflict_is_told_once_per_path_with_low_urgency() -> None:
    state = NotifyState()
    first, state = step(state, settled("Documents/a.odt"))
    again, state = step(state, settled("Documents/a.odt"))
    other, state = step(state, settled("Documents/a.odt", "Documents/b.odt"))

    assert first is not None and first.kind == "settled"
    assert first.fields["paths"] == "Documents/a.odt"
    assert again is None
    assert other is not None and other.fields == {"paths": "Documents/b.odt", "count": "1"}
    assert state.active is None  # nothing on screen to replace later
    request = build_request(first, DEFAULT_MESSAGES, FIELDS, with_actions=True,
                            support_email="")
    assert request.summary == "Kept both versions of Documents/a.odt"
    assert (request.urgency, request.actions, request.resident) == (0, [], False)


def test_a_settled_conflict_replaces_back_in_sync_but_never_a_notification_that_needs_you(
) -> None:
    failing = NotifyState(active=Shown("auth", 5, 1), serial=1)
    recovered, _ = step(failing, settled("Documents/a.odt"))
    conflicts = NotifyState()
    shown, _ = step(conflicts, settled("Documents/a.odt", result="conflicts",
                                       conflicts=["Documents/c.odt"]))

    assert recovered is not None and recovered.kind == "settled"
    assert recovered.replaces_id == 5
    assert shown is not None and shown.kind == "conflicts"
    assert shown.paths == ("Documents/c.odt",)


def test_the_settled_paths_survive_a_notification_that_did_not_reach_the_screen() -> None:
    before = NotifyState(settled_seen=["Documents/old.odt"])
    _, after = step(before, settled("Documents/a.odt"))

    assert after.undelivered(before).settled_seen == ["Documents/old.odt"]
    assert NotifyState.from_dict(after.to_dict()).settled_seen == ["Documents/old.odt",
                                                                   "Documents/a.odt"]


def test_a_session_ending_with_changes_only_here_replaces_what_is_shown_until_in_sync() -> None:
    stale = NotifyState(active=Shown("stale", 5, 3), serial=3)

    decision, new = decide_unsynced(stale, count="2", paths="a, b", why="syncing is paused")

    assert decision.kind == "unsynced" and decision.replaces_id == 5
    assert decision.fields == {"count": "2", "paths": "a, b", "message": "syncing is paused"}
    assert new.active is not None and new.active.key == "unsynced"
    assert stale.active is not None and stale.active.key == "stale"  # not changed in place
    new.active.id = 9
    back, _ = step(new, outcome("in-sync"))
    assert back is not None and (back.kind, back.replaces_id) == ("recovered", 9)
    request = build_request(decision, DEFAULT_MESSAGES, {"host": "srv"}, with_actions=True,
                            support_email="help@example.org")
    assert (request.urgency, request.actions, request.resident) == (2, [], False)
    assert request.body.startswith("2 file(s) changed on this computer are not on srv yet "
                                   "(syncing is paused): a, b.")
