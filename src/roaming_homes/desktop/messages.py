"""What notifications say and look like: the kinds, their texts (overridable by the TOML file
`notify.messages`), and the `Notify` request built from a decision.

The texts carry values from outside (file names, server names, unison's messages). A server
that advertises `body-markup` renders the body as a subset of HTML: there every value is
escaped, so a file named `<a href=…>` shows as that name and never as a link.
"""

from __future__ import annotations

import html
import re
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from roaming_homes.desktop.policy import Decision
from roaming_homes.errors import ConfigError
from roaming_homes.outcome import SyncOutcome
from roaming_homes.text import escape, printable

APP_NAME = "Roaming Homes"


@dataclass(frozen=True)
class Kind:
    urgency: int  # 0 low, 1 normal, 2 critical (stays until dismissed on most servers)
    icon: str  # freedesktop icon naming spec
    category: str  # freedesktop notification category
    resolve: bool = False  # the body names notify.resolve_command ("Resolve…" without `keep`)
    support: bool = False  # "Email support" applies (when notify.support_email is set)
    ignorable: bool = True  # "Ignore" applies: a problem that can be silenced until it changes
    held_back: bool = False  # "Restore files" and "Sync anyway" apply: the loss guard refused
    keep: bool = False  # "Keep both", "Keep this computer's", "Keep the other", "Show…" apply
    resident: bool = False  # it needs the user: stays (and its actions work) until dismissed


KINDS: dict[str, Kind] = {
    "conflicts": Kind(1, "dialog-warning", "transfer", resolve=True, keep=True, resident=True),
    "auth": Kind(2, "dialog-error", "transfer.error", support=True, resident=True),
    # No actions: the way out is a command (kinit), named in the body.
    "ticket": Kind(1, "dialog-password", "transfer.error", ignorable=False),
    "version": Kind(2, "dialog-error", "transfer.error", support=True, resident=True),
    # This computer refused the server: a possible attack, never silenced by "Ignore".
    "identity": Kind(2, "security-high", "transfer.error", support=True, ignorable=False,
                     resident=True),
    "guard": Kind(2, "dialog-error", "transfer.error", support=True, resident=True),
    "losses": Kind(2, "dialog-warning", "transfer.error", support=True, held_back=True,
                   resident=True),
    "disk-full": Kind(2, "dialog-error", "transfer.error", support=True, resident=True),
    "config": Kind(2, "dialog-error", "transfer.error", support=True, resident=True),
    "failing": Kind(1, "dialog-warning", "transfer.error", support=True, resident=True),
    "stale": Kind(1, "dialog-warning", "transfer"),
    "recovered": Kind(0, "dialog-information", "transfer.complete", ignorable=False),
    "first-sync": Kind(1, "folder-remote", "transfer", ignorable=False),
    "first-sync-done": Kind(0, "dialog-information", "transfer.complete", ignorable=False),
    "settled": Kind(0, "dialog-information", "transfer.complete", ignorable=False),
    # The session ends with changes only here: nothing to click, the way out is the server.
    "unsynced": Kind(2, "dialog-warning", "transfer.error", ignorable=False),
}

DEFAULT_MESSAGES: dict[str, str] = {
    "conflicts.summary": "Files changed on both sides",
    "conflicts.body": "{count} file(s) changed both here and on {host}; both versions are "
                      "kept until you choose: {paths}",
    "auth.summary": "Sync refused by the server",
    "auth.body": "{host} refused the login of {user}: {message}",
    "ticket.summary": "Sign in again to keep your home in sync",
    "ticket.body": "Your Kerberos ticket has expired (or there is none), so syncing with {host} "
                   "has paused. Sign in again: run kinit in a terminal. Syncing resumes as soon "
                   "as you have.",
    "identity.summary": "The server's identity changed: contact support",
    "identity.body": "This computer refused to sync with {host}: the server did not prove it is "
                     "the one it was. Do not accept a new key yourself; your support can check "
                     "it. {message}",
    "version.summary": "Sync failed: unison versions differ",
    "version.body": "This computer and {host} run unison versions that cannot talk to each "
                    "other: {message}",
    "guard.summary": "Sync stopped to protect your files",
    "guard.body": "Nothing was changed: {message}",
    "losses.summary": "Sync held back a mass deletion or change",
    "losses.body": "{message}",
    "disk-full.summary": "Sync failed: disk full",
    "disk-full.body": "A disk is full, here or on {host}: {message}",
    "config.summary": "Sync is misconfigured",
    "config.body": "{message}",
    "failing.summary": "Sync keeps failing",
    "failing.body": "The last {count} syncs with {host} failed: {message}",
    "stale.summary": "Not synced since {since}",
    "stale.body": "{host} has not been reachable since {since}: your latest changes exist "
                  "only on this computer.",
    "recovered.summary": "Back in sync",
    "recovered.body": "Your files are in sync with {host} again.",
    "first-sync.summary": "Setting up your roaming home: {size} to sync",
    "first-sync.body": "This computer's first sync with {host}. Your files appear as they "
                       "arrive; you will be told when everything is here.",
    "first-sync-done.summary": "Your roaming home is ready",
    "first-sync-done.body": "Your files are in sync with {host} ({size} copied).",
    "settled.summary": "Kept both versions of {paths}",
    "settled.body": "{count} file(s) changed both here and on {host}: sync.prefer chose the "
                    "version that keeps the name; the other is kept beside it as a conflict "
                    "copy, or in the backups: {paths}",
    "unsynced.summary": "Changes not on the server yet",
    "unsynced.body": "{count} file(s) changed on this computer are not on {host} yet "
                     "({message}): {paths}. They sync the next time this computer reaches "
                     "{host}; until then they exist only here.",
    "hint.resolve": "To resolve, run: {command}",
    "hint.restore": "To bring the files back, run: roaming-homes restore --refused (files "
                    "deleted by earlier syncs: roaming-homes restore --since TIME)",
    "hint.confirm": "If this was intended, run: roaming-homes sync --force",
    "hint.support": "Support: {email}",
    "action.resolve": "Resolve…",
    "action.keep_both": "Keep both",
    "action.keep_local": "Keep this computer's",
    "action.keep_server": "Keep the other",
    "action.show": "Show…",
    "action.restore": "Restore files",
    "action.confirm": "Sync anyway",
    "action.email": "Email support",
    "action.ignore": "Ignore",
}
PLACEHOLDERS = ("host", "user", "paths", "count", "since", "message", "command", "email",
                "size")

_SAMPLE = dict.fromkeys(PLACEHOLDERS, "x")
_KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS)


def _field(name: str, spec: str, conversion: str | None) -> str:
    """A replacement field as written, escaped for a one-line message."""
    written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    return escape("{" + written + "}")


def _placeholder_problem(text: str) -> str | None:
    """Why `text` cannot be a message, or None.

    Only plain fields from PLACEHOLDERS (and literal `{{` `}}`) are allowed. `str.format` does
    much more for whoever writes the text: a width (`{message:>1500000000}` asks for gigabytes
    of padding), a conversion (`{message!r}`), attribute and index access (`{paths.__class__}`
    reaches into Python objects). None of that is needed to word a notification.
    """
    try:
        fields = [(name, spec or "", conversion) for _, name, spec, conversion
                  in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        return f"invalid text: {exc}"
    for name, spec, conversion in fields:
        field = _field(name, spec, conversion)
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in PLACEHOLDERS:
            return f"unknown placeholder {field} (known: {_KNOWN})"
        if name != base or spec or conversion:
            return (f"placeholder {field} is not allowed: write {{{base}}} alone, without "
                    "conversion (!r), format spec (:>10), attribute (.x) or index ([0])")
    return None


def load_messages(path: str) -> dict[str, str]:
    """The texts: DEFAULT_MESSAGES overridden by the TOML file `path` (empty: none)."""
    messages = dict(DEFAULT_MESSAGES)
    if not path:
        return messages
    from roaming_homes.config import read_toml

    data, _ = read_toml(Path(path))
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table of texts ([{section}])")
        for name, text in table.items():
            key = f"{section}.{name}"
            if key not in DEFAULT_MESSAGES:
                raise ConfigError(f"{path}: unknown message key {key} (known: "
                                  f"{', '.join(DEFAULT_MESSAGES)})")
            if not isinstance(text, str):
                raise ConfigError(f"{path}: message {key} must be a string")
            if problem := _placeholder_problem(text):
                raise ConfigError(f"{path}: message {key}: {problem}")
            messages[key] = text
    return messages


def check_config(config: Any) -> None:
    """Raise ConfigError (exit 78) when notify.messages names a bad file; run before a pass."""
    if config["notify"]["enabled"]:
        load_messages(config["notify"]["messages"])


@dataclass(frozen=True)
class Request:
    """One Notify call, ready to send."""

    summary: str
    body: str
    icon: str
    urgency: int
    category: str
    replaces_id: int
    actions: list[str]  # [key, label, key, label, …]
    resident: bool = False

    def args(self) -> tuple[Any, ...]:
        hints: dict[str, tuple[str, Any]] = {
            "urgency": ("y", self.urgency), "category": ("s", self.category),
            "desktop-entry": ("s", "roaming-homes")}
        if self.resident:
            hints["resident"] = ("b", True)
        return (APP_NAME, self.replaces_id, self.icon, self.summary, self.body, self.actions,
                hints, -1)


def build_request(decision: Decision, messages: dict[str, str], fields: dict[str, str], *,
                  with_actions: bool, support_email: str, markup: bool = False) -> Request:
    """The Notify call for `decision`; `fields` holds host, user, command, email. `markup`:
    the server renders the body as markup, so every value in it is escaped."""
    assert decision.kind is not None
    kind = KINDS[decision.kind]
    values = {key: printable(value) for key, value in {
        **_SAMPLE, "paths": "", "count": "", "since": "", "message": "", "size": "",
        **fields, **decision.fields}.items()}
    if markup:
        values = {key: html.escape(value, quote=False) for key, value in values.items()}
    body = messages[f"{decision.kind}.body"].format_map(values)
    actions: list[str] = []
    hints: list[str] = []
    if kind.keep:
        # "default" is also what a click on the notification itself does: keeping both loses
        # nothing.
        actions += ["default", messages["action.keep_both"],
                    "keep-local", messages["action.keep_local"],
                    "keep-server", messages["action.keep_server"],
                    "show", messages["action.show"]]
    elif kind.resolve:
        actions += ["resolve", messages["action.resolve"]]
    if kind.resolve:
        hints.append(messages["hint.resolve"].format_map(values))
    if kind.held_back:
        actions += ["restore", messages["action.restore"], "confirm", messages["action.confirm"]]
        hints += [messages["hint.restore"], messages["hint.confirm"]]
    if kind.support and support_email:
        actions += ["email", messages["action.email"]]
        hints.append(messages["hint.support"].format_map(values))
    if kind.ignorable:
        actions += ["ignore", messages["action.ignore"]]
    if not with_actions:
        body = "\n".join([body, *hints])
        actions = []
    # The summary is never markup.
    summary_values = {key: printable(value) for key, value in
                      {**_SAMPLE, **fields, **decision.fields}.items()}
    return Request(summary=messages[f"{decision.kind}.summary"].format_map(summary_values),
                   body=body,
                   icon=kind.icon, urgency=kind.urgency, category=kind.category,
                   replaces_id=decision.replaces_id, actions=actions,
                   resident=kind.resident and bool(actions))


def mailto(address: str, subject: str, body: str) -> str:
    """The draft as one mailto: URL, every character of subject and body percent-encoded.

    xdg-email's own --subject/--body pass through `echo` in /bin/sh, which in dash interprets
    backslashes (`\\c` ends the text): a log line or a file name could cut the draft short. A
    complete URL is handed on as it is."""
    return (f"mailto:{quote(address, safe='@')}?subject={quote(subject, safe='')}"
            f"&body={quote(body, safe='')}")


def support_mail(outcome: SyncOutcome | None, user: str,
                 log_tail: list[str]) -> tuple[str, str]:
    """Subject and body of the "Email support" draft (the user sees it before it is sent)."""
    host = socket.gethostname()
    result = str(outcome.result) if outcome else "problem"
    subject = f"roaming-homes: sync {result} on {host} ({user})"
    facts = [f"Server: {outcome.server}", f"Exit code: {int(outcome.exit_code)}",
             f"Result: {result}", f"Reason: {outcome.reason or '-'}",
             f"Message: {outcome.message}", f"Time: {outcome.finished}",
             *outcome.notes] if outcome else []
    body = "\n".join([f"Host: {host}", f"User: {user}", *facts, "",
                      "Last lines of sync.log:", *log_tail])
    return subject, body
