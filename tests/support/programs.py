"""Fake programs for tests: a script put first on a PATH in place of the real one."""

from __future__ import annotations

from pathlib import Path

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def faked(directory: Path, name: str, script: str, path: str = SYSTEM_PATH) -> str:
    """A PATH on which `name` is `script` (made in `directory`), before `path`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(script)
    (directory / name).chmod(0o755)
    return f"{directory}:{path}"
