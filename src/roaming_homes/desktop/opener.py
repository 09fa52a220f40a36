"""Showing files to the user: the file manager opens their folder with them selected
(`org.freedesktop.FileManager1.ShowItems`, which Nautilus, Dolphin, Nemo, Caja and Thunar
serve), or, without one on the session bus, `xdg-open` opens the folder.

Paths are handed over as `file://` URIs and argv entries, never through a shell; a name that
is not UTF-8 is percent-encoded byte by byte.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

from roaming_homes.desktop.dbus import Bus
from roaming_homes.unison import runner

log = logging.getLogger(__name__)


def show(paths: Sequence[Path]) -> bool:
    """Show `paths` (files or folders that exist); False when nothing could show them."""
    if not paths:
        return False
    try:
        bus = Bus()
    except (OSError, ValueError, RuntimeError) as exc:
        log.debug("no file manager on the session bus: %s", exc)
    else:
        try:
            bus.show_items([path.as_uri() for path in paths])
            return True
        except Exception as exc:  # no FileManager1 (DBusErrorResponse), or it did not answer
            log.debug("the file manager did not show the files: %s", exc)
        finally:
            bus.close()
    folder = paths[0] if paths[0].is_dir() else paths[0].parent
    try:
        runner.start(["xdg-open", str(folder)], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    except OSError as exc:
        log.info("the folder was not opened: %s", exc)
        return False
    return True
