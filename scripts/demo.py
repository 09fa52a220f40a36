"""The demo behind scripts/demo: a real two-way sync with a throwaway sshd on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.homes import Setup
from tests.support.sshd import SshServer


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def run(setup: Setup, *args: str) -> int:
    print(f"$ roaming-homes {' '.join(args)}", flush=True)
    result = subprocess.run([".venv/bin/roaming-homes", *args], env=setup.env, check=False)
    return result.returncode


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="roaming-homes-demo-"))
    try:
        with SshServer(base / "sshd") as server:
            setup = Setup(base / "user", server)
            setup.env["PATH"] = f"{Path('.venv/bin').resolve()}:{os.environ['PATH']}"
            print(f"throwaway sshd on 127.0.0.1:{server.port}; laptop home {setup.home}; "
                  f"server home {setup.server_home}")
            docs = setup.home / "Documents"
            docs.mkdir()
            (docs / "notes.txt").write_text("written on the laptop\n")
            (setup.server_home / "Documents").mkdir()
            (setup.server_home / "Documents" / "from-server.txt").write_text("on the server\n")

            step("first sync: the union of both sides (unison -ignorearchives)")
            codes = [run(setup, "sync")]
            step("a change on each side, then a sync")
            (docs / "notes.txt").write_text("edited on the laptop\n")
            (setup.server_home / "Documents" / "todo.txt").write_text("added on the server\n")
            codes.append(run(setup, "sync"))
            for side, root in (("laptop", setup.home), ("server", setup.server_home)):
                files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
                print(f"{side}: {', '.join(files)}")
            step("status")
            codes.append(run(setup, "status"))
            setup.close()
        same = all(
            (setup.home / "Documents" / n).read_text()
            == (setup.server_home / "Documents" / n).read_text()
            for n in ("notes.txt", "from-server.txt", "todo.txt"))
        print("\ndemo:", "both sides are identical" if same else "the sides differ!")
        return 0 if same and codes == [0, 0, 0] else 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
