"""What the loss guard last refused, for `roaming-homes restore --refused`: the side that would
have lost files, and the plan items that would have cost them (refused.json in the state dir).

The file names stay data: JSON strings, never lines of text to parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from roaming_homes.files import Shape, is_str, list_of, one_of, read_json
from roaming_homes.safety.guards import Loss, Refusal
from roaming_homes.session.state import write_atomic

FILE = "refused.json"
_REFUSED = Shape.complete({"key": is_str, "side": one_of("local", "server"),
                           "loss": one_of(*(loss.value for loss in Loss)),
                           "paths": list_of(is_str)})


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
    """The last refusal; None when there is none, or it was broken (it is moved aside) or
    cannot be read.

    Without it `restore --refused` has nothing to restore, and nothing is lost by that: the
    refused pass propagated nothing, so both sides still hold what they held, and the next
    pass meets the same plan, is refused again and saves it anew.
    """
    try:
        data = read_json(state_dir / FILE, _REFUSED.checked)
    except OSError:
        return None
    if data is None:
        return None
    return Refused(data["key"], data["side"], Loss(data["loss"]), tuple(data["paths"]))


def clear(state_dir: Path, key: str) -> None:
    """A pass of these roots went through: what was refused before is no longer pending."""
    current = load(state_dir)
    if current is not None and current.key == key:
        (state_dir / FILE).unlink(missing_ok=True)
