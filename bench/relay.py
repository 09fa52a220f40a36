"""A TCP relay that delays every byte by a fixed time each way: the latency of an emulated link.

This kernel has no `netem`, so the link's latency is added here, in user space; its bandwidth is
capped by `tc … tbf` on the veth pair behind it (see `bench.link`). Each direction is a
timestamped queue: a chunk is read as soon as it arrives, stamped with the moment it may leave
(arrival + delay), and written once that moment has come, in order. Reading never waits for
writing, so the delay adds latency without cutting throughput (a sleep per chunk would).

The relay also counts turns: a chunk from the server that follows data from the client on the
same connection is one request/response turn, i.e. one round trip the client waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading

log = logging.getLogger(__name__)

_CHUNK = 64 << 10
# Chunks a direction may hold before reading waits: bounds the relay's memory (16 MiB a way);
# far above any bandwidth-delay product of the profiles, so it never limits throughput.
_QUEUED = 256
_UP, _DOWN = "up", "down"


@dataclasses.dataclass
class Counters:
    """What went through the relay, over every connection it carried."""

    connections: int = 0
    turns: int = 0
    up: int = 0  # bytes client -> server
    down: int = 0  # bytes server -> client


class _Flow:
    """One connection's direction of the latest data, for counting turns."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.last = ""

    def saw(self, direction: str, size: int) -> None:
        if direction == _DOWN and self.last == _UP:
            self.counters.turns += 1
        self.last = direction
        if direction == _UP:
            self.counters.up += size
        else:
            self.counters.down += size


class Relay:
    """Listens on 127.0.0.1:`port` and forwards each connection to `upstream`, `delay` seconds
    late each way. Runs its own event loop in a thread; `close` stops it and every connection."""

    def __init__(self, upstream: tuple[str, int], delay: float,
                 connect_timeout: float = 30) -> None:
        self.upstream = upstream
        self.delay = delay
        self.connect_timeout = connect_timeout
        self.counters = Counters()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="relay")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> Relay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def snapshot(self) -> Counters:
        return dataclasses.replace(self.counters)

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_in: asyncio.StreamReader,
                      client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._carry(client_in, client_out)
        except asyncio.CancelledError:
            pass  # the relay is closing: the connection ends with it, that is all
        finally:
            self._tasks.discard(task)

    async def _carry(self, client_in: asyncio.StreamReader,
                     client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            log.debug("relay: upstream %s: %s", self.upstream, exc)
            client_out.close()
            return
        self.counters.connections += 1
        flow = _Flow(self.counters)
        try:
            await asyncio.gather(self._direction(client_in, server_out, flow, _UP),
                                 self._direction(server_in, client_out, flow, _DOWN))
        finally:
            for writer in (client_out, server_out):
                writer.close()

    async def _direction(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                         flow: _Flow, direction: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUED)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            while True:
                try:
                    data = await source.read(_CHUNK)
                except OSError:
                    data = b""
                await queue.put((loop.time() + self.delay, data))
                if not data:
                    return
                flow.saw(direction, len(data))

        async def write() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        if sink.can_write_eof():
                            sink.write_eof()
                    return
                sink.write(data)
                try:
                    await sink.drain()
                except OSError:
                    return

        reader = asyncio.ensure_future(read())
        try:
            await write()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
