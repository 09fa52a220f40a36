"""The tray icon: a StatusNotifierItem (`org.kde.StatusNotifierItem`) with its menu
(`com.canonical.dbusmenu`), served over the session bus by jeepney, without a GUI toolkit.

The item owns `org.kde.StatusNotifierItem-PID-1`, serves `/StatusNotifierItem` and `/MenuBar`,
and registers with `org.kde.StatusNotifierWatcher` when one runs. Without a watcher there is
no tray to show it in, and nothing is said above DEBUG; when a watcher starts later (a panel
restarted, a desktop that starts its tray after us) `NameOwnerChanged` tells, and the item
registers then.

One thread receives everything (method calls from the tray host, replies, signals) and
answers from the current `View`; `show` (any thread) swaps the view and emits the signals that
tell the host what changed. Calls we make ourselves (`RequestName`, `AddMatch`,
`RegisterStatusNotifierItem`) are sent without waiting for their reply: a host that asks for
our properties before it answers the registration never waits for us. A click on a menu item
is handed to `on_click` with the item's key, in a thread of its own: what it does may take
seconds (a pass, a notification), and the host must get its answers meanwhile.

What a view holds is shown as it is: whoever builds it escapes what came from outside (the
tooltip body is markup for some hosts, a menu label takes `_` as a mnemonic).
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ITEM_PATH = "/StatusNotifierItem"
MENU_PATH = "/MenuBar"
ITEM_IFACE = "org.kde.StatusNotifierItem"
MENU_IFACE = "com.canonical.dbusmenu"
WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
_PROPS_IFACE = "org.freedesktop.DBus.Properties"
_INTROSPECT_IFACE = "org.freedesktop.DBus.Introspectable"
_PEER_IFACE = "org.freedesktop.DBus.Peer"
_CONNECT_TIMEOUT = 5.0  # seconds to connect and authenticate to the session bus

Click = Callable[[str], None]


@dataclass(frozen=True)
class MenuItem:
    """One menu entry: `key` is what a click hands to `on_click`; an empty label is a
    separator."""

    key: str
    label: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class View:
    """Everything the tray shows. `status` is the item's Status (Passive, Active,
    NeedsAttention); `tooltip` its title and body; `activate` the key of a click on the icon
    itself."""

    status: str
    icon: str
    title: str
    tooltip: tuple[str, str]
    menu: tuple[MenuItem, ...]
    activate: str = ""


def _menu_props(item: MenuItem) -> dict[str, tuple[str, Any]]:
    if not item.label:
        return {"type": ("s", "separator")}
    return {"label": ("s", item.label), "enabled": ("b", item.enabled), "visible": ("b", True)}


def _layout(view: View) -> tuple[int, dict[str, tuple[str, Any]], list[tuple[str, Any]]]:
    """The menu as dbusmenu's (ia{sv}av): the root (id 0) and one child per entry (id 1…)."""
    children: list[tuple[str, Any]] = [("(ia{sv}av)", (number, _menu_props(item), []))
                                        for number, item in enumerate(view.menu, start=1)]
    return 0, {"children-display": ("s", "submenu")}, children


def _item_props(view: View, interface: str) -> dict[str, tuple[str, Any]]:
    """The properties of `interface` (the item's, or its menu's), as D-Bus variants."""
    if interface == MENU_IFACE:
        return {"Version": ("u", 3), "TextDirection": ("s", "ltr"), "Status": ("s", "normal"),
                "IconThemePath": ("as", [])}
    if interface != ITEM_IFACE:
        return {}
    title, body = view.tooltip
    return {
        "Category": ("s", "ApplicationStatus"),
        "Id": ("s", "roaming-homes"),
        "Title": ("s", view.title),
        "Status": ("s", view.status),
        "WindowId": ("i", 0),
        "IconName": ("s", view.icon),
        "IconPixmap": ("a(iiay)", []),
        "IconThemePath": ("s", ""),
        "OverlayIconName": ("s", ""),
        "OverlayIconPixmap": ("a(iiay)", []),
        "AttentionIconName": ("s", view.icon),
        "AttentionIconPixmap": ("a(iiay)", []),
        "AttentionMovieName": ("s", ""),
        "ToolTip": ("(sa(iiay)ss)", (view.icon, [], title, body)),
        "ItemIsMenu": ("b", not view.activate),
        "Menu": ("o", MENU_PATH),
    }


# What we serve, for Introspect (a Qt host introspects before it calls): each interface's
# methods as (in, out) signatures, and its signals; the properties come from `_item_props`.
_METHODS = {
    ITEM_IFACE: {"ContextMenu": ("ii", ""), "Activate": ("ii", ""),
                 "SecondaryActivate": ("ii", ""), "Scroll": ("is", "")},
    MENU_IFACE: {"GetLayout": ("iias", "u(ia{sv}av)"), "GetGroupProperties": ("aias", "a(ia{sv})"),
                 "GetProperty": ("is", "v"), "Event": ("isvu", ""), "EventGroup": ("a(isvu)", "ai"),
                 "AboutToShow": ("i", "b"), "AboutToShowGroup": ("ai", "aiai")},
    _PROPS_IFACE: {"Get": ("ss", "v"), "GetAll": ("s", "a{sv}")},
    _INTROSPECT_IFACE: {"Introspect": ("", "s")},
}
_SIGNALS = {
    ITEM_IFACE: {"NewTitle": "", "NewIcon": "", "NewAttentionIcon": "", "NewOverlayIcon": "",
                 "NewToolTip": "", "NewStatus": "s"},
    MENU_IFACE: {"ItemsPropertiesUpdated": "a(ia{sv})a(ias)", "LayoutUpdated": "ui",
                 "ItemActivationRequested": "iu"},
}


def _types(signature: str) -> list[str]:
    """The complete types of a signature, in order ("ia{sv}" -> ["i", "a{sv}"])."""
    types, start, depth = [], 0, 0
    for index, char in enumerate(signature):
        depth += (char in "({") - (char in ")}")
        if depth == 0 and char != "a":
            types.append(signature[start:index + 1])
            start = index + 1
    return types


def _introspection() -> str:
    sample = View("Active", "", "", ("", ""), ())
    lines = ['<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
             ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">', "<node>"]
    for interface, methods in _METHODS.items():
        lines.append(f'  <interface name="{interface}">')
        if interface in (ITEM_IFACE, MENU_IFACE):
            lines += [f'    <property name="{name}" type="{html.escape(value[0])}" access="read"/>'
                      for name, value in _item_props(sample, interface).items()]
        for name, (given, returned) in methods.items():
            args = [f'<arg type="{html.escape(t)}" direction="in"/>' for t in _types(given)]
            args += [f'<arg type="{html.escape(t)}" direction="out"/>' for t in _types(returned)]
            lines.append(f'    <method name="{name}">{"".join(args)}</method>')
        for name, signature in _SIGNALS.get(interface, {}).items():
            args = [f'<arg type="{html.escape(t)}"/>' for t in _types(signature)]
            lines.append(f'    <signal name="{name}">{"".join(args)}</signal>')
        lines.append("  </interface>")
    return "\n".join([*lines, "</node>", ""])


class StatusNotifierItem:
    """The item on the session bus. `start` never raises for a missing bus or tray: the item
    is then simply not there (DEBUG says why)."""

    def __init__(self, view: View, on_click: Click) -> None:
        self._view = view
        self._on_click = on_click
        self._lock = threading.Lock()
        self._revision = 1  # the menu layout's, raised whenever the menu changes
        self._pending: dict[int, Callable[[Any], None]] = {}  # our calls' serials -> on reply
        self._serials = iter(range(1, 2**31))
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self.name = f"{ITEM_IFACE}-{os.getpid()}-1"
        self.registered = threading.Event()  # a watcher accepted us (tests wait for it)

    # --- what the owner uses --------------------------------------------------------------

    def start(self) -> bool:
        """Connect and serve; False when there is no session bus."""
        from jeepney.io.threading import open_dbus_connection

        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            log.debug("no tray icon: no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
            return False
        try:
            self._conn = open_dbus_connection(bus="SESSION", auth_timeout=_CONNECT_TIMEOUT)
        except (OSError, ValueError, RuntimeError) as exc:
            log.debug("no tray icon: the session bus cannot be used: %s", exc)
            return False
        self._thread = threading.Thread(target=self._serve, name="tray", daemon=True)
        self._thread.start()
        self._setup()
        return True

    def show(self, view: View) -> None:
        """Show `view` from now on; tell the host what changed (any thread)."""
        with self._lock:
            old, self._view = self._view, view
            if old.menu != view.menu:
                self._revision += 1
            revision = self._revision
        if self._conn is None or old == view:
            return
        changed = [("NewTitle", old.title != view.title), ("NewIcon", old.icon != view.icon),
                   ("NewAttentionIcon", old.icon != view.icon),
                   ("NewToolTip", old.tooltip != view.tooltip or old.icon != view.icon)]
        for member, differs in changed:
            if differs:
                self._signal(ITEM_PATH, ITEM_IFACE, member)
        if old.status != view.status:
            self._signal(ITEM_PATH, ITEM_IFACE, "NewStatus", "s", (view.status,))
        if old.menu != view.menu:
            self._signal(MENU_PATH, MENU_IFACE, "LayoutUpdated", "ui", (revision, 0))

    def close(self) -> None:
        if self._conn is None:
            return
        self._conn.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._conn.close()
        self._conn = None

    # --- our own calls --------------------------------------------------------------------

    def _setup(self) -> None:
        from jeepney import MatchRule, message_bus

        self._call(message_bus.RequestName(self.name), self._named)
        rule = MatchRule(type="signal", sender="org.freedesktop.DBus",
                         interface="org.freedesktop.DBus", member="NameOwnerChanged",
                         path="/org/freedesktop/DBus")
        rule.add_arg_condition(0, WATCHER)
        self._call(message_bus.AddMatch(rule), lambda _reply: None)
        self._call(message_bus.NameHasOwner(WATCHER), self._watcher_known)

    def _call(self, msg: Any, on_reply: Callable[[Any], None]) -> None:
        serial = next(self._serials)
        with self._lock:
            self._pending[serial] = on_reply
        self._conn.send(msg, serial=serial)

    def _named(self, reply: Any) -> None:
        if not _is_error(reply) and reply.body[0] not in (1, 4):  # primary owner, already
            log.debug("tray icon: %s is taken; registering by the unique name", self.name)
            self.name = self._conn.unique_name

    def _watcher_known(self, reply: Any) -> None:
        if _is_error(reply) or not reply.body[0]:
            log.debug("no tray icon: no %s on the session bus (yet)", WATCHER)
            return
        self._register()

    def _register(self) -> None:
        from jeepney import DBusAddress, new_method_call

        watcher = DBusAddress(WATCHER_PATH, bus_name=WATCHER, interface=WATCHER)
        self._call(new_method_call(watcher, "RegisterStatusNotifierItem", "s", (self.name,)),
                   self._registered)

    def _registered(self, reply: Any) -> None:
        if _is_error(reply):
            log.debug("the tray (%s) refused the icon: %s", WATCHER, reply.body)
            return
        log.debug("tray icon registered with %s", WATCHER)
        self.registered.set()

    def _signal(self, path: str, interface: str, member: str, signature: str | None = None,
                body: tuple[Any, ...] = ()) -> None:
        from jeepney import DBusAddress, new_signal

        with contextlib.suppress(OSError):  # the bus is gone: nobody to tell
            self._conn.send(new_signal(DBusAddress(path, interface=interface), member,
                                       signature, body))

    # --- serving --------------------------------------------------------------------------

    def _serve(self) -> None:
        from jeepney import MessageType
        from jeepney.io.threading import ReceiveStopped
        from jeepney.low_level import HeaderFields

        while True:
            try:
                msg = self._conn.receive()
            except (ReceiveStopped, OSError, ValueError):
                return
            kind, fields = msg.header.message_type, msg.header.fields
            if kind == MessageType.method_call:
                self._answer(msg)
            elif kind in (MessageType.method_return, MessageType.error):
                with self._lock:
                    on_reply = self._pending.pop(fields.get(HeaderFields.reply_serial, 0), None)
                if on_reply is not None:
                    on_reply(msg)
            elif (fields.get(HeaderFields.member) == "NameOwnerChanged"
                  and msg.body[0] == WATCHER and msg.body[2]):
                log.debug("a tray (%s) appeared: registering the icon", WATCHER)
                self.registered.clear()
                self._register()

    def _answer(self, msg: Any) -> None:
        from jeepney import new_error, new_method_return
        from jeepney.low_level import HeaderFields

        fields = msg.header.fields
        path, member = fields.get(HeaderFields.path), fields.get(HeaderFields.member)
        with self._lock:
            view, revision = self._view, self._revision
        try:
            signature, body, click = self._reply(view, revision, path, member, msg.body)
        except LookupError as exc:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(exc),))
        else:
            reply = new_method_return(msg, signature, body)
            if click:
                threading.Thread(target=self._clicked, args=(click,), name="tray-click",
                                 daemon=True).start()
        if not msg.header.flags & 1:  # NO_REPLY_EXPECTED
            with contextlib.suppress(OSError):
                self._conn.send(reply)

    def _clicked(self, key: str) -> None:
        try:
            self._on_click(key)
        except Exception as exc:  # one failed action must not take the tray with it
            log.warning("the tray icon's %s did nothing: %s", key, exc)

    def _reply(self, view: View, revision: int, path: str | None, member: str | None,
               args: tuple[Any, ...]) -> tuple[str | None, tuple[Any, ...], str]:
        """(signature, body) of the answer to a call, and the key of the entry it clicked
        ("" for none). LookupError for a call we do not serve."""
        if member == "Introspect":
            return "s", (_introspection(),), ""
        if member == "Ping":
            return None, (), ""
        if member in ("Get", "GetAll"):
            props = _item_props(view, args[0])
            if member == "GetAll":
                return "a{sv}", (props,), ""
            if args[1] not in props:
                raise LookupError(f"no property {args[1]}")
            return "v", (props[args[1]],), ""
        if path == ITEM_PATH:
            return self._item_call(view, member)
        if path == MENU_PATH:
            return self._menu_call(view, revision, member, args)
        raise LookupError(f"no method {member} at {path}")

    @staticmethod
    def _item_call(view: View, member: str | None) -> tuple[str | None, tuple[Any, ...], str]:
        if member == "Activate":
            return None, (), view.activate
        if member in ("SecondaryActivate", "Scroll", "ContextMenu",
                      "ProvideXdgActivationToken"):
            return None, (), ""  # the host shows the menu itself (Menu property)
        raise LookupError(f"no method {member}")

    @staticmethod
    def _menu_call(view: View, revision: int, member: str | None,
                   args: tuple[Any, ...]) -> tuple[str | None, tuple[Any, ...], str]:
        entries = dict(enumerate(view.menu, start=1))
        if member == "GetLayout":
            return "u(ia{sv}av)", (revision, _layout(view)), ""
        if member == "GetGroupProperties":
            ids = args[0] or list(entries)
            return "a(ia{sv})", ([(i, _menu_props(entries[i])) for i in ids if i in entries],), ""
        if member == "GetProperty":
            if args[0] not in entries or args[1] not in _menu_props(entries[args[0]]):
                raise LookupError(f"no property {args[1]} of entry {args[0]}")
            return "v", (_menu_props(entries[args[0]])[args[1]],), ""
        if member == "Event":
            return None, (), _clicked_key(entries, args[0], args[1])
        if member == "EventGroup":
            clicked = [_clicked_key(entries, event[0], event[1]) for event in args[0]]
            missing = [event[0] for event in args[0] if event[0] not in entries]
            return "ai", (missing,), next((key for key in clicked if key), "")
        if member == "AboutToShow":
            return "b", (False,), ""
        if member == "AboutToShowGroup":
            return "aiai", ([], [i for i in args[0] if i not in entries]), ""
        raise LookupError(f"no method {member}")


def _clicked_key(entries: dict[int, MenuItem], number: int, event: str) -> str:
    item = entries.get(number)
    if event != "clicked" or item is None or not item.enabled or not item.label:
        return ""
    return item.key


def _is_error(reply: Any) -> bool:
    from jeepney import MessageType

    return bool(reply.header.message_type == MessageType.error)
