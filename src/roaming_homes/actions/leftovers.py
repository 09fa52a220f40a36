"""unison's temporary files left behind by a pass that was killed mid-transfer.

unison writes a file it receives as `.unison.NAME.HASH.unison.tmp` beside it and renames it
when complete; a killed run leaves it there, on either side, holding part of a file. After a
pass, those in the directories the pass looked at are removed (a killed transfer is in the
next pass's plan again, so its directory is among them): here at once (the sync lock says no
unison of ours runs), on the server once nobody has written to them for a while (other
computers' passes write there too). unison itself never syncs them.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from roaming_homes.errors import RoamingHomesError
from roaming_homes.unison import ssh

log = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"^\.unison\..+\.unison\.tmp$")
SERVER_QUIET_MINUTES = 10


def clean_local(root: Path, folders: Iterable[str]) -> int:
    """Remove unison's temporary files directly in `folders` (relative to `root`); the caller
    holds the sync lock, which every unison of ours on this home inherits, so none runs.
    Returns how many."""
    removed = 0
    for folder in folders:
        try:
            names = os.listdir(root / folder)
        except OSError:
            continue
        for name in names:
            path = root / folder / name
            if TEMP_NAME.match(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def clean_remote(server: ssh.Server, socket: Path | None, folders: Iterable[str]) -> None:
    """The same in the server home, in one round trip, for those nobody wrote to for
    `SERVER_QUIET_MINUTES`: another computer's pass may be writing its own there now (a live
    transfer keeps writing; a stalled one has long timed out by then)."""
    q = shlex.quote
    listed = " ".join(q(folder or ".") for folder in folders)
    if not listed:
        return
    script = (f"cd {q(server.home)} || exit 0; for d in {listed}; do find \"$d\" -maxdepth 1 "
              f"-type f -name '.unison.*.unison.tmp' -mmin +{SERVER_QUIET_MINUTES} -delete "
              "2>/dev/null; done; true")
    try:
        ssh.run_remote(server, socket, script)
    except RoamingHomesError as exc:
        log.debug("unison's temporary files on the server not cleaned: %s", exc)
