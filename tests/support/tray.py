"""A tray host's side of the session bus, for tests: a StatusNotifierWatcher that records the
items registered with it, a file manager that records what it was asked to show, and a client
that reads an item's properties and menu and clicks its entries, as a panel does.

Each service owns its name on the test's private bus (`notifications.SessionBus`) and answers
from a thread of the test process (jeepney), like `notifications.RecordingServer`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jeepney import (
    DBusAddress,
    MessageType,
    message_bus,
    new_error,
    new_method_call,
    new_method_return,
    new_signal,
)
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields
from jeepney.wrappers import unwrap_msg

Answer = tuple[str | None, tuple[Any, ...]]  # a method return's signature and body
WATCHER = "org.kde.StatusNotifierWatcher"
FILE_MANAGER = "org.freedesktop.FileManager1"
ITEM_PATH = "/StatusNotifierItem"
MENU_PATH = "/MenuBar"


class _Service:
    """Owns `name` on the bus at `address`; `calls` records (member, sender, body)."""

    name = ""
    path = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn = open_dbus_connection(address)
        reply = self._conn.send_and_get_reply(message_bus.RequestName(self.name), timeout=5)
        if reply.body[0] != 1:
            raise RuntimeError(f"could not own {self.name}: {reply.body}")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def recorded(self, member: str) -> list[tuple[str, tuple[Any, ...]]]:
        with self._lock:
            return [(sender, body) for name, sender, body in self.calls if name == member]

    def wait_for(self, member: str, count: int = 1, timeout: float = 30) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(found := self.recorded(member)) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {member} call(s), got {self.recorded(member)}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._conn.receive(timeout=0.05)
            except TimeoutError:
                continue
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            with self._lock:
                self.calls.append((member, msg.header.fields.get(HeaderFields.sender),
                                   tuple(msg.body)))
            answer = self.answer(member, tuple(msg.body))
            if answer is None:
                self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
            else:
                self._conn.send(new_method_return(msg, *answer))
                self.after(member, tuple(msg.body))

    def answer(self, member: str, body: tuple[Any, ...]) -> Answer | None:
        raise NotImplementedError

    def after(self, member: str, body: tuple[Any, ...]) -> None:
        """Called after a call was answered."""


class RecordingWatcher(_Service):
    """org.kde.StatusNotifierWatcher, with a host registered (as a panel's)."""

    name = WATCHER
    path = "/StatusNotifierWatcher"

    def answer(self, member: str, body: tuple[Any, ...]) -> Answer | None:
        if member in ("RegisterStatusNotifierItem", "RegisterStatusNotifierHost"):
            return None, ()
        if member == "Get" and body[1] == "IsStatusNotifierHostRegistered":
            return "v", (("b", True),)
        if member == "Get" and body[1] == "ProtocolVersion":
            return "v", (("i", 0),)
        return None

    def after(self, member: str, body: tuple[Any, ...]) -> None:
        if member == "RegisterStatusNotifierItem":
            self._conn.send(new_signal(DBusAddress(self.path, interface=WATCHER),
                                       "StatusNotifierItemRegistered", "s", body))

    def item(self, timeout: float = 30) -> str:
        """The bus name of the (last) item registered: the service it gave, as the spec says;
        an object path alone would mean the sender's own name."""
        sender, (service,) = self.wait_for("RegisterStatusNotifierItem", timeout=timeout)[-1]
        return sender if service.startswith("/") else service


class RecordingFileManager(_Service):
    """org.freedesktop.FileManager1: records ShowItems."""

    name = FILE_MANAGER
    path = "/org/freedesktop/FileManager1"

    def answer(self, member: str, body: tuple[Any, ...]) -> Answer | None:
        return (None, ()) if member in ("ShowItems", "ShowFolders") else None


class ItemClient:
    """Reads an item's properties and menu, and clicks its entries, as a tray host does."""

    def __init__(self, address: str, service: str) -> None:
        self.service = service
        self._conn = open_dbus_connection(address)

    def close(self) -> None:
        self._conn.close()

    def _call(self, path: str, interface: str, member: str, signature: str | None = None,
              body: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        address = DBusAddress(path, bus_name=self.service, interface=interface)
        return tuple(unwrap_msg(self._conn.send_and_get_reply(
            new_method_call(address, member, signature, body), timeout=10)))

    def props(self) -> dict[str, Any]:
        found = self._call(ITEM_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s",
                           ("org.kde.StatusNotifierItem",))[0]
        return {name: value for name, (_signature, value) in found.items()}

    def menu(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """The menu's entries by label: (id, properties); separators are left out."""
        _revision, (_root, _props, children) = self._call(
            MENU_PATH, "com.canonical.dbusmenu", "GetLayout", "iias", (0, -1, []))
        entries = {}
        for _signature, (number, props, _children) in children:
            plain = {name: value for name, (_sig, value) in props.items()}
            if plain.get("type") != "separator":
                entries[plain["label"]] = (number, plain)
        return entries

    def click(self, label: str) -> None:
        number, _ = self.menu()[label]
        self._call(MENU_PATH, "com.canonical.dbusmenu", "Event", "isvu",
                   (number, "clicked", ("i", 0), int(time.time())))

    def activate(self) -> None:
        self._call(ITEM_PATH, "org.kde.StatusNotifierItem", "Activate", "ii", (0, 0))

    def introspect(self) -> str:
        return str(self._call(ITEM_PATH, "org.freedesktop.DBus.Introspectable",
                              "Introspect")[0])

    def wait_for(self, check: Any, timeout: float = 30) -> dict[str, Any]:
        """The item's properties once `check(properties)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            props = self.props()
            if check(props) or time.monotonic() > deadline:
                assert check(props), f"the tray icon never matched: {props}"
                return props
            time.sleep(0.05)
