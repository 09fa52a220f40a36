"""Kerberos (GSSAPI) logins: whether the login to the server uses a ticket, and the ticket.

ssh reports every Kerberos failure alike (exit 255, "Permission denied"), and with no or an
expired ticket it fails only after a login attempt; with a hung KDC it may hang for half a
minute. So before a pass connects, a login that uses Kerberos has its ticket checked locally
with `klist -s` (exit 0: a valid ticket; 1: none, or expired). Whether the login uses Kerberos
is `server.kerberos`:

- "yes": always check the ticket;
- "no": never (GSSAPI may still be used by ssh, unchecked);
- "auto" (default): when ssh, with the options in force (`ssh -G`), enables GSSAPI and has no
  key to offer: public key authentication off, or none of its identity files exists and no
  ssh agent holds a key (`ssh-add -l` exit 0). `klist` must be installed.

Decisions come from exit codes; `klist`'s listing is read only for `check`'s line (principal,
expiry), here and nowhere else.
"""

from __future__ import annotations

import enum
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from roaming_homes.unison import runner

KLIST = "klist"
_TIMEOUT = 10
# klist's dates under LC_ALL=C (strftime %x %X: two- or four-digit years, by build).
_DATE_FORMATS = ("%m/%d/%y %H:%M:%S", "%m/%d/%Y %H:%M:%S")
_C_LOCALE = {"LC_ALL": "C"}


@dataclass(frozen=True)
class Ticket:
    """The ticket-granting ticket in the default cache, as `klist` lists it."""

    principal: str
    expires: datetime | None  # naive local time; None when klist's date was not understood


def ssh_settings(ssh_argv: Sequence[str]) -> dict[str, list[str]]:
    """`ssh -G` for this destination and options: each setting (lower case) and its values."""
    try:
        result = runner.run(["ssh", "-G", *ssh_argv], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if result.returncode != 0:
        return {}
    settings: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, []).append(value)
    return settings


def _has_key(settings: dict[str, list[str]]) -> bool:
    """Whether ssh would offer a key: an identity file that exists, or one in an agent."""
    if settings.get("pubkeyauthentication", ["yes"])[0] in ("no", "false"):
        return False
    home = pwd.getpwuid(os.getuid()).pw_dir  # ssh expands ~ from the password database
    for name in settings.get("identityfile", []):
        path = home + name[1:] if name.startswith("~/") else name
        if Path(path).is_file():
            return True
    if not os.environ.get("SSH_AUTH_SOCK"):
        return False
    try:
        agent = runner.run(["ssh-add", "-l"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return agent.returncode == 0  # 1: the agent holds no key; 2: no agent


def uses_kerberos(mode: str, ssh_argv: Sequence[str]) -> bool:
    """Whether the login `ssh ssh_argv` makes relies on a Kerberos ticket (see the module)."""
    if mode != "auto":
        return mode == "yes"
    if shutil.which(KLIST) is None:
        return False
    settings = ssh_settings(ssh_argv)
    gssapi = settings.get("gssapiauthentication", ["no"])[0] in ("yes", "true")
    return gssapi and not _has_key(settings)


def has_ticket() -> bool:
    """Whether the default credential cache holds a valid (unexpired) ticket: `klist -s`.

    Without klist (Kerberos not installed) there is nothing to check: ssh will say.
    """
    try:
        result = runner.run([KLIST, "-s"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=_TIMEOUT)
    except FileNotFoundError:
        return True
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


class Kdc(enum.Enum):
    """What asking for a ticket to the server's host principal (`kvno`) gave."""

    TICKET = "ticket"  # one was issued by the KDC (or is cached already)
    REFUSED = "refused"  # an answer without one: no such principal, another realm…
    NO_ANSWER = "no-answer"  # no answer within the bound: the KDC is down or hangs
    UNAVAILABLE = "unavailable"  # kvno is not installed


def service_ticket(host: str, timeout: float) -> tuple[Kdc, str]:
    """Ask for a ticket to `host`'s host principal as ssh's GSSAPI login does (`kvno -S host
    HOST`: the same name-to-principal mapping); with kvno's last line of complaint, to show.

    A ticket it gets is cached, so the login that follows does not ask the KDC again.
    """
    try:
        result = runner.run(["kvno", "-q", "-S", "host", host], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return Kdc.UNAVAILABLE, ""
    except subprocess.TimeoutExpired:
        return Kdc.NO_ANSWER, ""
    if result.returncode == 0:
        return Kdc.TICKET, ""
    lines = result.stderr.strip().splitlines()
    return Kdc.REFUSED, lines[-1] if lines else f"kvno exit code {result.returncode}"


def _date(fields: list[str]) -> datetime | None:
    text = " ".join(fields)
    for form in _DATE_FORMATS:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    return None


def parse_klist(text: str) -> Ticket | None:
    """The principal and the ticket-granting ticket's expiry from `klist`'s listing (C locale).

    `Default principal: u@REALM`, then one line per ticket: start date and time, expiry date
    and time, service principal (`krbtgt/REALM@REALM` for the ticket-granting ticket).
    """
    principal = ""
    for line in text.splitlines():
        if line.startswith("Default principal:"):
            principal = line.split(":", 1)[1].strip()
            continue
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("krbtgt/") and principal:
            return Ticket(principal, _date(fields[2:4]))
    return Ticket(principal, None) if principal else None


def ticket() -> Ticket | None:
    """The default cache's principal and expiry (for `check`), or None when klist lists none."""
    try:
        result = runner.run([KLIST], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=_TIMEOUT, env={**os.environ, **_C_LOCALE})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_klist(result.stdout) if result.returncode == 0 else None


def cache_file(environ: dict[str, str] | None = None) -> Path | None:
    """The credential cache's file, when it is one (`FILE:` or a path in KRB5CCNAME, else
    MIT's default /tmp/krb5cc_UID); None for caches without a file (KCM:, KEYRING:, DIR:…),
    where only the next interval's `klist -s` can tell that a ticket is back."""
    name = (os.environ if environ is None else environ).get("KRB5CCNAME", "")
    if not name:
        return Path(f"/tmp/krb5cc_{os.getuid()}")
    if name.startswith("FILE:"):
        name = name[len("FILE:"):]
    return Path(name) if name.startswith("/") else None
