"""A systemd notification socket of a test's own: records what a daemon tells systemd."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from pathlib import Path

from tests.support.waiting import wait_for


class NotifySocket:
    """$NOTIFY_SOCKET for a daemon under test: every datagram it sends is kept in `messages`
    (read in a thread of the test process); `close` stops reading and removes the socket."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rh-notify-", dir="/tmp"))
        self.address = str(self._dir / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def statuses(self) -> list[str]:
        """The STATUS= lines so far, in order."""
        return [line.removeprefix("STATUS=") for message in list(self.messages)
                for line in message.splitlines() if line.startswith("STATUS=")]

    def wait_for_status(self, prefix: str, timeout: float = 20) -> str:
        return wait_for(lambda: next((s for s in self.statuses() if s.startswith(prefix)), ""),
                        timeout, f"STATUS={prefix}…")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
