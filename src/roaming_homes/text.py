"""Text from outside (file names, unison's and ssh's output) made safe to show.

A file name may hold any byte but `/` and NUL: escape sequences that retitle or recolour a
terminal, newlines that forge lines of a report, bytes that are not UTF-8 (kept by Python as
lone surrogates, `surrogateescape`). Everything printed passes through here.
"""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _char(c: str) -> str:
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def escape(name: str) -> str:
    """A name as it may be printed: control characters, bytes that are not UTF-8 and
    backslashes escaped (like `ls --quoting-style=escape`), everything printable as it is."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join(c if c.isprintable() and c != "\\" else _ESCAPES.get(c) or _char(c)
                   for c in name)


def printable(text: str) -> str:
    """A message as it may be printed: like `escape`, but backslashes stay (the names in a
    message were escaped when it was written; this only keeps a terminal safe from the rest)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\\" else _ESCAPES.get(c) or _char(c)
                   for c in text)
