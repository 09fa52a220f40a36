"""This computer as the server and the user's other computers know it: a stable id, and a name
for people.

unison names its archives after the host name: renaming a laptop (or a DHCP-assigned name)
would turn its next pass into a first sync. The id replaces the host name for unison
(UNISONLOCALHOSTNAME), so a rename changes only what people read. It is random, kept in the
state directory with the machine's id (/etc/machine-id): a home copied to another computer
with its state (a cloned disk, an rsync of the whole home) gets an id of its own there, never
the same archives as the computer it came from.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.paths import Locations
from roaming_homes.session.state import write_atomic

ID_FILE = "computer.json"
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


@dataclass(frozen=True)
class Computer:
    id: str  # 16 hex digits, stable for this computer and user
    name: str  # what people read: client.name, by default the short host name


def machine_id() -> str:
    for path in MACHINE_ID_FILES:
        try:
            value = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return ""


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "computer"


def recorded_id(locations: Locations) -> str | None:
    """The id this computer has (None before its first pass); never makes one."""
    try:
        data = json.loads((locations.state_dir / ID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def this_computer(locations: Locations, name: str = "") -> Computer:
    """The id recorded in the state directory, made anew when missing, damaged or recorded on
    another machine."""
    path = locations.state_dir / ID_FILE
    machine = machine_id()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        recorded, recorded_machine = data["id"], data["machine"]
    except (OSError, ValueError, TypeError, KeyError):
        recorded, recorded_machine = "", None
    valid = (isinstance(recorded, str) and len(recorded) == 16
             and all(c in "0123456789abcdef" for c in recorded))
    if not valid or recorded_machine != machine:
        recorded = secrets.token_hex(8)
        write_atomic(path, json.dumps({"id": recorded, "machine": machine}) + "\n")
    return Computer(recorded, name or default_name())
