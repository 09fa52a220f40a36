"""Generated homes: many small files, or a mixed tree of realistic sizes (fast to build).

Contents are slices of one random buffer, so building costs little CPU, yet files differ and
do not compress (ssh's zlib window is 32 KB, far smaller than the buffer).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sysconfig
from pathlib import Path

_FILES_PER_DIR = 100
_BUFFER = 8 << 20
_KB, _MB = 1 << 10, 1 << 20


class Pool:
    """A random buffer that file contents are cut from."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.data = self.rng.randbytes(_BUFFER)

    def write(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = size
            while left > 0:
                start = self.rng.randrange(0, _BUFFER - min(left, _BUFFER // 2))
                chunk = min(left, _BUFFER // 2)
                os.write(fd, memoryview(self.data)[start:start + chunk])
                left -= chunk
        finally:
            os.close(fd)


SMALL_MEAN = (100 + 4 * _KB) // 2  # bytes: the mean size of a file `small_files` writes


def small_files(root: Path, count: int, pool: Pool) -> list[Path]:
    """`count` files of 100 B to 4 KB, 100 to a directory; returns their paths."""
    paths = []
    for i in range(count):
        directory = root / f"d{i // _FILES_PER_DIR:04d}"
        if i % _FILES_PER_DIR == 0:
            directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{i:06d}.txt"
        pool.write(path, pool.rng.randint(100, 4 * _KB))
        paths.append(path)
    return paths


def mixed_sizes(total: int, rng: random.Random) -> list[int]:
    """File sizes adding up to about `total`: many small, some medium, few large.

    Roughly what a home holds by count: 80 % documents and config (≤ 64 KB), 18 % pictures and
    PDFs (64 KB-4 MB), 2 % media and archives (4-64 MB); most bytes sit in the few large ones.
    """
    sizes: list[int] = []
    budget = total
    while budget > 0:
        roll = rng.random()
        if roll < 0.80:
            size = int(rng.lognormvariate(8.5, 1.3)) % (64 * _KB) + 1
        elif roll < 0.98:
            size = rng.randint(64 * _KB, 4 * _MB)
        else:
            size = rng.randint(4 * _MB, 64 * _MB)
        size = min(size, budget)
        sizes.append(size)
        budget -= size
    return sizes


def mixed_tree(root: Path, total: int, pool: Pool) -> tuple[int, int]:
    """A tree of about `total` bytes; returns (files, bytes)."""
    sizes = mixed_sizes(total, pool.rng)
    for i, size in enumerate(sizes):
        directory = root / f"d{i // 50:03d}" / f"s{i % 5}"
        directory.mkdir(parents=True, exist_ok=True)
        pool.write(directory / f"f{i:05d}.bin", size)
    return len(sizes), sum(sizes)


_NOT_THE_LIBRARY = {"site-packages", "dist-packages", "__pycache__", "test", "tests",
                    "idlelib", "tkinter", "turtledemo"}


def python_sources(root: Path, copies: int = 1) -> tuple[int, int]:
    """The `.py` files of this Python's standard library (installed packages and the library's
    own tests left out), `copies` times below `root` (`copy-1`, …), modification times kept:
    text as people write it, the same megabytes wherever the benchmark runs (about 11 a copy).
    Returns (files, bytes)."""
    library = Path(sysconfig.get_paths()["stdlib"])
    files = size = 0
    for directory, subdirectories, names in os.walk(library):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _NOT_THE_LIBRARY)
        for name in sorted(n for n in names if n.endswith(".py")):
            source = Path(directory, name)
            for copy in range(1, copies + 1):
                target = root / f"copy-{copy}" / source.relative_to(library)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                files, size = files + 1, size + target.stat().st_size
    return files, size


def copy_tree(source: Path, target: Path) -> None:
    """An identical copy, modification times included (the server side of a synced home)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def touch(paths: list[Path], pool: Pool) -> None:
    """Change the contents (and so the size or time) of each path."""
    for path in paths:
        pool.write(path, pool.rng.randint(100, 4 * _KB))
