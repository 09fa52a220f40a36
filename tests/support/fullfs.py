"""A full disk under a user's state, without touching the machine's file systems.

`FullStateDisk` starts a holder process in a private mount namespace (`unshare -m
--propagation private`). In it, a small tmpfs gets a copy of the user's `XDG_STATE_HOME`, is
filled to the last page by a filler file, and is then moved over `XDG_STATE_HOME`. Commands run
with `prefix` (`nsenter -t HOLDER -m --`, which execs them: the process started is the command
itself) see that full disk; the test process and the machine still see the real directory,
unchanged. The namespace's files are reached through `/proc/HOLDER/root` (`inside`), and
`free()` removes the filler to make room again. The holder is stopped by its PID; the mounts go
with the last process in the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.homes import Setup

# In the namespace: mount, copy, fill (dd ends with "No space left on device"), move over.
_SCRIPT = """
stage=$1 state=$2 size=$3
mount -t tmpfs -o "size=$size,mode=0755" roaming-homes-test-full "$stage"
cp -a "$state/." "$stage/"
dd if=/dev/zero of="$stage/filler" bs=4096 2>/dev/null || true
mount --move "$stage" "$state"
echo ready
exec sleep 3600
"""


def unavailable() -> str | None:
    """Why a full disk cannot be made here (None when it can): root and util-linux needed."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and tmpfs)"
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed" if missing else None


class FullStateDisk:
    def __init__(self, user: Setup, size: str = "1m") -> None:
        self.state_home = user.state_home
        stage = user.base / "full-disk-stage"
        stage.mkdir()
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-ec", _SCRIPT, "sh",
             str(stage), str(user.state_home), size],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        if self.proc.stdout.readline().strip() != "ready":  # the script failed and ended
            why = self.proc.stderr.read()
            self.close()
            raise RuntimeError(f"no full disk: {why}")

    @property
    def prefix(self) -> list[str]:
        """What runs a command in the namespace (`Setup.run(prefix=…)`, `DaemonProcess`)."""
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--"]

    def inside(self, path: Path) -> Path:
        """`path` (absolute) as the namespace sees it."""
        return Path(f"/proc/{self.proc.pid}/root{path}")

    def free(self) -> None:
        """Make room: remove the filler."""
        self.inside(self.state_home / "filler").unlink()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
