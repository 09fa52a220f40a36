"""An ssh ProxyCommand that relays to HOST:PORT at a bounded rate and counts the bytes.

    python throttle.py HOST PORT BYTES_PER_SECOND COUNT_FILE [DELAY]

Tests use it to make a pass last long enough to watch (and to cut) it, and to measure what
really went through the link: COUNT_FILE holds the bytes relayed in each direction so far.
DELAY (seconds, default 0) holds each chunk from the server that long before it is passed on:
every answer comes that much later, as over a link with that round trip (throughput suffers
too: this is a slow link for tests, not an emulation to measure with).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time


def main() -> None:
    host, port, rate, count_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    conn = socket.create_connection((host, port))
    stdin, stdout = sys.stdin.buffer.raw, sys.stdout.buffer.raw
    counts = {"up": 0, "down": 0}
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "up")
    selector.register(conn, selectors.EVENT_READ, "down")
    due, written = time.monotonic(), 0.0  # when the bytes relayed so far may have passed
    chunk = max(1024, int(rate / 50))

    def save() -> None:
        tmp = f"{count_file}.{os.getpid()}"
        with open(tmp, "w") as handle:
            json.dump(counts, handle)
        os.replace(tmp, count_file)

    while True:
        for key, _ in selector.select():
            if key.data == "up":
                data = os.read(stdin.fileno(), chunk)
                if not data:
                    save()
                    return
                conn.sendall(data)
            else:
                data = conn.recv(chunk)
                if not data:
                    save()
                    return
                time.sleep(delay)
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout.fileno(), view):]
            counts[key.data] += len(data)
            # At most 0.1 s of unused time is credited: an idle link does not earn a burst.
            now = time.monotonic()
            due = max(due, now - 0.1) + len(data) / rate
            if due > now:
                time.sleep(due - now)
        if time.monotonic() - written > 0.1:
            save()
            written = time.monotonic()


if __name__ == "__main__":
    main()
