"""unison's temporary files left behind by a pass that was killed mid-transfer.

unison writes a file it receives as `.unison.NAME.HASH.unison.tmp` beside it and renames it
when complete; a killed run leaves it there, on either side, holding part of a file. After a
pass, those in the directories the pass looked at are removed (a killed transfer is in the
next pass's plan again, so its directory is among them): here at once (the sync lock says no
unison of ours runs), on the server once nobody has written to them for a while (other
computers' passes write there too). unison itself never syncs them.

On the server that costs no exchange of its own: the pass remembers its directories
(`remember`), and the next pass's server command removes what is left in them before unison's
server starts (`server_script`, run by `guards.guard_command` in unison's own ssh session). A
leftover is only removed once nobody wrote to it for `SERVER_QUIET_MINUTES` anyway, so one
pass later loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from roaming_homes.errors import DiskFull
from roaming_homes.files import is_str, list_of, read_json
from roaming_homes.session.state import write_atomic

log = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"^\.unison\..+\.unison\.tmp$")
SERVER_QUIET_MINUTES = 10
# The directories one pass hands the next (`remember`): a pass that moved more than this many
# folders is a first sync or a big reorganisation; the rest wait for a pass that touches them.
MAX_FOLDERS = 200
FOLDERS_FILE = "leftover-folders.json"


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


def remember(state_dir: Path, folders: Sequence[str]) -> None:
    """The directories of a completed pass's plan (at most MAX_FOLDERS), for the next pass's
    server command to clean (`server_script`); an empty list forgets the last ones."""
    path = state_dir / FOLDERS_FILE
    kept = list(folders[:MAX_FOLDERS])
    if not kept and not path.exists():
        return
    try:
        write_atomic(path, json.dumps(kept) + "\n", durable=False)
    except DiskFull:
        log.debug("no room to remember the pass's folders: their leftovers wait")


def recalled(state_dir: Path) -> list[str]:
    """What `remember` kept (nothing when there is no such file, or it is not ours)."""
    return read_json(state_dir / FOLDERS_FILE, _folders) or []


def _folders(value: Any) -> list[str]:
    if not _FOLDER_LIST(value) or len(value) > MAX_FOLDERS:
        raise ValueError(f"not a list of at most {MAX_FOLDERS} folders")
    return [str(folder) for folder in value]


_FOLDER_LIST = list_of(is_str)


def server_script(root: str, folders: Iterable[str]) -> str:
    """sh for the server: remove unison's temporary files directly in `folders` of `root` that
    nobody wrote to for `SERVER_QUIET_MINUTES` (another computer's pass may be writing its own
    there now: a live transfer keeps writing; a stalled one has long timed out by then).
    Silent, and never fails; empty when there is nothing to clean."""
    q = shlex.quote
    # "./" first: a folder named like an option is not read as one by find.
    listed = " ".join(q(f"./{folder}" if folder else ".") for folder in folders)
    if not listed:
        return ""
    return (f"(cd {q(root)} && for d in {listed}; do find \"$d\" -maxdepth 1 -type f "
            f"-name '.unison.*.unison.tmp' -mmin +{SERVER_QUIET_MINUTES} -delete; done) "
            ">/dev/null 2>&1; ")
