"""Big trees and a slow, counted link: what tests of long passes need."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from tests.support.homes import Setup

THROTTLE = Path(__file__).parent / "throttle.py"
MB = 1 << 20


def random_files(root: Path, count: int, size: int) -> int:
    """`count` files of `size` random (incompressible) bytes in `root`; returns the total."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (root / f"f{index:03d}").write_bytes(os.urandom(size))
    return count * size


def throttle(user: Setup, rate: float, count_file: Path, delay: float = 0.0) -> None:
    """Route the ssh connection through a relay limited to `rate` bytes/s that counts bytes
    (and holds each answer `delay` seconds: a slow link)."""
    assert user.sshd is not None
    proxy = f"ProxyCommand={sys.executable} {THROTTLE} 127.0.0.1 {user.sshd.port} {rate:.0f} " \
            f"{count_file} {delay}"
    kept = {section: keys for section, keys in user.config.items() if section != "server"}
    server = {**user.config.get("server", {}),
              "ssh_options": [*user.sshd.ssh_options(), "-o", proxy]}
    user.configure(server=server, **kept)


def size_of(root: Path) -> int:
    """Bytes in the files below `root`, unison's temporary files included."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):  # unison renames its temporary files
                total += (Path(dirpath) / name).lstat().st_size
    return total


def copying(folder: Path, name: str) -> bool:
    """unison is copying a file called `name` into `folder`: its temporary file is there."""
    try:
        return any(entry.startswith(f".unison.{name}.") and entry.endswith(".unison.tmp")
                   for entry in os.listdir(folder))
    except FileNotFoundError:
        return False
