"""The D-Bus client of the notification server (`org.freedesktop.Notifications`) and of the file
manager (`org.freedesktop.FileManager1`), by jeepney: pure Python, blocking I/O with timeouts,
no GLib main loop. Every call is bounded by `BUS_TIMEOUT`: a stuck desktop never holds up a
sync.
"""

from __future__ import annotations

import os
from typing import Any

from roaming_homes.desktop.messages import Request

BUS_TIMEOUT = 5.0  # seconds for any one D-Bus call


_PATH = "/org/freedesktop/Notifications"
_IFACE = "org.freedesktop.Notifications"
_FILE_MANAGER = "org.freedesktop.FileManager1"


class Bus:
    """The few calls we make to the notification server, each with a timeout."""

    def __init__(self) -> None:
        from jeepney import DBusAddress
        from jeepney.io.blocking import open_dbus_connection

        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            raise OSError("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        self.conn = open_dbus_connection(bus="SESSION", auth_timeout=BUS_TIMEOUT)
        self.address = DBusAddress(_PATH, bus_name=_IFACE, interface=_IFACE)
        self.server = ""  # the unique bus name of the server that answered us last

    def call(self, method: str, signature: str | None = None, body: tuple[Any, ...] = ()) -> Any:
        from jeepney.low_level import HeaderFields

        reply = self._send(self.address, method, signature, body)
        self.server = str(reply.header.fields.get(HeaderFields.sender, ""))
        return reply.body

    def _send(self, address: Any, method: str, signature: str | None,
              body: tuple[Any, ...]) -> Any:
        from jeepney import new_method_call
        from jeepney.wrappers import unwrap_msg

        msg = new_method_call(address, method, signature, body)
        reply = self.conn.send_and_get_reply(msg, timeout=BUS_TIMEOUT)
        unwrap_msg(reply)  # raises DBusErrorResponse for an error
        return reply

    def show_items(self, uris: list[str]) -> None:
        """Ask the file manager to show these files, selected in their folder (DBusErrorResponse
        when none serves the interface)."""
        from jeepney import DBusAddress

        manager = DBusAddress("/org/freedesktop/FileManager1", bus_name=_FILE_MANAGER,
                              interface=_FILE_MANAGER)
        self._send(manager, "ShowItems", "ass", (uris, ""))

    def capabilities(self) -> list[str]:
        return list(self.call("GetCapabilities")[0])

    def notify(self, request: Request) -> int:
        return int(self.call("Notify", "susssasa{sv}i", request.args())[0])

    def close_notification(self, notification_id: int) -> None:
        self.call("CloseNotification", "u", (notification_id,))

    def subscribe(self) -> Any:
        """Ask the bus to route our server's ActionInvoked and NotificationClosed to us; the
        handle, entered, is the queue of those signals."""
        from jeepney import MatchRule, message_bus
        from jeepney.wrappers import unwrap_msg

        rule = MatchRule(type="signal", interface=_IFACE, path=_PATH)
        unwrap_msg(self.conn.send_and_get_reply(message_bus.AddMatch(rule),
                                                timeout=BUS_TIMEOUT))
        return self.conn.filter(rule)

    def signal(self, queue: Any, timeout: float) -> tuple[str, tuple[Any, ...]] | None:
        """The next signal of the server that shows our notification: (member, body); None
        for a signal from anyone else (another client can emit a look-alike on the bus).
        Raises TimeoutError when none came."""
        from jeepney.low_level import HeaderFields

        msg = self.conn.recv_until_filtered(queue, timeout=timeout)
        if not self.server or msg.header.fields.get(HeaderFields.sender) != self.server:
            return None
        return str(msg.header.fields.get(HeaderFields.member, "")), tuple(msg.body)

    def close(self) -> None:
        self.conn.close()


