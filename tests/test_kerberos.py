"""The Kerberos decisions of unison/kerberos.py that need no realm: klist's listing, the
credential cache's file, and `server.kerberos`'s fixed modes."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from roaming_homes.unison import kerberos

LISTING = """Ticket cache: FILE:/tmp/krb5cc_1000
Default principal: alice@EXAMPLE.ORG

Valid starting     Expires            Service principal
11/29/26 16:19:27  11/29/26 17:19:27  krbtgt/EXAMPLE.ORG@EXAMPLE.ORG
\trenew until 11/30/26 16:19:27
11/29/26 16:19:28  11/29/26 17:19:27  host/homes.example.org@EXAMPLE.ORG
"""


def test_klist_gives_the_principal_and_the_tgt_expiry() -> None:
    assert kerberos.parse_klist(LISTING) == kerberos.Ticket(
        "alice@EXAMPLE.ORG", datetime(2026, 11, 29, 17, 19, 27))


def test_four_digit_years_and_unknown_dates() -> None:
    four = LISTING.replace("11/29/26 17:19:27  krbtgt", "11/29/2026 17:19:27  krbtgt")
    assert kerberos.parse_klist(four).expires == datetime(2026, 11, 29, 17, 19, 27)  # type: ignore[union-attr]
    odd = LISTING.replace("11/29/26 17:19:27  krbtgt", "29.11.26 17:19:27  krbtgt")
    assert kerberos.parse_klist(odd) == kerberos.Ticket("alice@EXAMPLE.ORG", None)


def test_no_principal_is_no_ticket() -> None:
    assert kerberos.parse_klist("") is None


def test_the_cache_file_comes_from_krb5ccname() -> None:
    assert kerberos.cache_file({"KRB5CCNAME": "FILE:/run/u/cc"}) == Path("/run/u/cc")
    assert kerberos.cache_file({"KRB5CCNAME": "/run/u/cc"}) == Path("/run/u/cc")
    assert kerberos.cache_file({}) == Path(f"/tmp/krb5cc_{os.getuid()}")
    for name in ("KCM:", "KEYRING:persistent:1000", "DIR:/run/u/ccdir", "MEMORY:x"):
        assert kerberos.cache_file({"KRB5CCNAME": name}) is None


def test_yes_and_no_need_no_ssh() -> None:
    assert kerberos.uses_kerberos("yes", ["-p", "1", "nowhere.invalid"])
    assert not kerberos.uses_kerberos("no", ["-p", "1", "nowhere.invalid"])


def test_auto_means_gssapi_on_and_no_key_to_offer(tmp_path: Path) -> None:
    base = ["-F", "none", "-o", "GSSAPIAuthentication=yes"]
    assert kerberos.uses_kerberos("auto", [*base, "-o", "PubkeyAuthentication=no", "h"])
    key = tmp_path / "id"
    key.write_text("")
    assert not kerberos.uses_kerberos("auto", [*base, "-i", str(key), "h"])
    assert not kerberos.uses_kerberos("auto", ["-F", "none", "-o", "GSSAPIAuthentication=no",
                                               "-o", "PubkeyAuthentication=no", "h"])
