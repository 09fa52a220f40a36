"""`python -m build`: an sdist and a wheel whose console scripts include `roaming-homes`."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_build_makes_sdist_and_wheel_with_the_console_script(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("roaming_homes-*-py3-none-any.whl")
    (sdist,) = tmp_path.glob("roaming_homes-*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert "roaming-homes = roaming_homes.cli:main" in scripts
    assert "roaming_homes/actions/check.py" in names and "roaming_homes/config/legacy.py" in names
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "data/roaming-homes.toml" in sdist_names
    assert "src/roaming_homes/cli.py" in sdist_names
