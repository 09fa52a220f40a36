"""A private session D-Bus and a notification server on it that records every call.

`SessionBus` runs a real `dbus-daemon` with a config of its own that has no <servicedir>: the
bus can never auto-start the machine's dunst or notification-daemon. `RecordingServer` owns
`org.freedesktop.Notifications` on that bus (jeepney, in a thread of the test process), answers
`GetCapabilities` (with or without "actions"), records `Notify` and `CloseNotification`, and
emits `ActionInvoked` / `NotificationClosed` when a test says so, as a desktop would on a click.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, MessageType, message_bus, new_method_return, new_signal
from jeepney.io.blocking import open_dbus_connection

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class SessionBus:
    """`dbus-daemon --session`-like bus in `workdir`, stopped by its PID."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "bus.conf"
        self.config.write_text(_BUS_CONFIG.format(socket=workdir / "bus"))
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={self.config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError("dbus-daemon did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


@dataclass
class RecordingServer:
    """The notification server: `calls` holds every Notify / CloseNotification, in order."""

    address: str
    capabilities: list[str] = field(default_factory=lambda: ["actions", "body"])
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._emit: queue.Queue[tuple[str, str, tuple[Any, ...]]] = queue.Queue()
        self._stop = threading.Event()
        self._next_id = 100
        self._lock = threading.Lock()
        self._conn = open_dbus_connection(self.address)
        reply = self._conn.send_and_get_reply(message_bus.RequestName(NAME), timeout=5)
        if reply.body[0] != 1:  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
            raise RuntimeError(f"could not own {NAME}: {reply.body}")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # --- what tests use ---

    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self.calls if c["method"] == "Notify"]

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The Notify calls, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.notifications()
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notification(s), got {self.notifications()}")

    def invoke(self, notification_id: int, action: str) -> None:
        """Emit ActionInvoked, as when the user clicks a button."""
        self._emit.put(("ActionInvoked", "us", (notification_id, action)))

    def impostor_invoke(self, notification_id: int, action: str) -> None:
        """Emit a look-alike ActionInvoked from another connection of the bus (any program of
        the session can), which does not own the notification server's name."""
        with open_dbus_connection(self.address) as other:
            other.send(new_signal(DBusAddress(PATH, interface=NAME), "ActionInvoked", "us",
                                  (notification_id, action)))
            other.send_and_get_reply(message_bus.GetId(), timeout=5)  # flushed before we go

    def close_by_user(self, notification_id: int) -> None:
        self._emit.put(("NotificationClosed", "uu", (notification_id, 2)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()

    # --- the server ---

    def _serve(self) -> None:
        emitter = DBusAddress(PATH, interface=NAME)
        while not self._stop.is_set():
            while not self._emit.empty():
                member, signature, body = self._emit.get()
                self._conn.send(new_signal(emitter, member, signature, body))
            try:
                msg = self._conn.receive(timeout=0.05)
            except TimeoutError:
                continue
            if msg.header.message_type == MessageType.method_call:
                self._answer(msg, emitter)

    def _answer(self, msg: Any, emitter: DBusAddress) -> None:
        from jeepney.low_level import HeaderFields

        member = msg.header.fields.get(HeaderFields.member)
        if member == "GetCapabilities":
            self._conn.send(new_method_return(msg, "as", (self.capabilities,)))
        elif member == "GetServerInformation":
            self._conn.send(new_method_return(msg, "ssss", ("recorder", "tests", "1", "1.2")))
        elif member == "Notify":
            app, replaces, icon, summary, body, actions, hints, timeout = msg.body
            with self._lock:
                notification_id = replaces or self._next_id
                if not replaces:
                    self._next_id += 1
                self.calls.append({
                    "method": "Notify", "id": notification_id, "app_name": app,
                    "replaces_id": replaces, "icon": icon, "summary": summary, "body": body,
                    "actions": dict(zip(actions[::2], actions[1::2], strict=True)),
                    "hints": {k: v[1] for k, v in hints.items()}, "timeout": timeout})
            self._conn.send(new_method_return(msg, "u", (notification_id,)))
        elif member == "CloseNotification":
            with self._lock:
                self.calls.append({"method": "CloseNotification", "id": msg.body[0]})
            self._conn.send(new_method_return(msg))
            self._conn.send(new_signal(emitter, "NotificationClosed", "uu", (msg.body[0], 3)))
        else:
            from jeepney import new_error

            self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
