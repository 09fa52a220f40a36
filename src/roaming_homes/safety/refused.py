"""What the loss guard last refused, for `roaming-homes restore --refused`: the side that would
have lost files, and the plan items that would have cost them (refused.json in the state dir).

The file names stay data: JSON strings, never lines of text to parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.safety.guards import Loss, Refusal
from roaming_homes.session.state import write_atomic

FILE = "refused.json"


@dataclass(frozen=True)
class Refused:
    key: str  # the pair of roots the refused pass was for
    side: str  # the side that would have lost files: it is the one to restore *from*
    loss: Loss
    paths: tuple[str, ...]


def save(state_dir: Path, key: str, refusal: Refusal) -> None:
    """Remember a refusal. Successive refusals of the same side (real-time cycles, each over
    a few paths) add up: a restore brings back everything that is still held back."""
    paths = list(refusal.paths)
    if (earlier := load(state_dir)) is not None and (earlier.key, earlier.side) == (
            key, refusal.side):
        paths = list(dict.fromkeys([*earlier.paths, *paths]))
    write_atomic(state_dir / FILE, json.dumps({
        "key": key, "side": refusal.side, "loss": refusal.loss.value, "paths": paths}))


def load(state_dir: Path) -> Refused | None:
    """The last refusal; None when there is none (or the file is not ours)."""
    try:
        data = json.loads((state_dir / FILE).read_text(encoding="utf-8"))
        paths = data["paths"]
        if data["side"] not in ("local", "server") or not all(isinstance(p, str) for p in paths):
            return None
        return Refused(str(data["key"]), data["side"], Loss(data["loss"]), tuple(paths))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear(state_dir: Path, key: str) -> None:
    """A pass of these roots went through: what was refused before is no longer pending."""
    current = load(state_dir)
    if current is not None and current.key == key:
        (state_dir / FILE).unlink(missing_ok=True)
