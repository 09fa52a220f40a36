"""The sync lock: one holder, who it is and why, and never through a link."""

from __future__ import annotations

from pathlib import Path

import pytest

from roaming_homes.errors import ExitCode, RoamingHomesError
from roaming_homes.session.lock import SyncLock, lock_holder


def test_a_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    (tmp_path / "roaming-homes.lock").symlink_to(victim)

    with pytest.raises(RoamingHomesError) as raised:
        SyncLock(tmp_path / "roaming-homes.lock").acquire()

    assert raised.value.code == ExitCode.FAILED
    assert "cannot use the lock" in raised.value.message and "\n" not in raised.value.message
    assert victim.read_text() == "do not truncate me"
    assert lock_holder(victim) is None
