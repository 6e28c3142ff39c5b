"""A TCP proxy that adds latency: every chunk reaches the other side `delay` seconds after it
was read, in order, in both directions (a far-away Redis; latency, not a bandwidth limit).

It runs on a thread of its own with its own event loop, so a busy test or bench loop does not
add to the delay. `set_delay` changes it for bytes read from then on. With `commands_only`,
a connection that subscribes (its client sent `SUBSCRIBE`/`PSUBSCRIBE`) is never delayed: a
command Redis far away (or stalled, with a long delay) while pub/sub flows. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DelayProxy:
    """`DelayProxy(upstream_port, delay).start()`; then `url` in front of the upstream Redis."""

    def __init__(self, upstream_port: int, delay: float = 0.0, commands_only: bool = False):
        self.upstream_port = upstream_port
        self.delay = delay
        self.commands_only = commands_only
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def set_delay(self, seconds: float) -> None:
        """The latency each way for bytes read from now on."""
        self.delay = seconds

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("delay proxy did not start")
        return self

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    # --- the proxy's own loop ----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        subscriber = [False]  # shared by both directions of this connection
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self._pipe(reader, up_writer, subscriber, True),
                                 self._pipe(up_reader, writer, subscriber, False))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    subscriber: list[bool], from_client: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = loop.create_task(deliver())
        try:
            while data := await reader.read(65536):
                if self.commands_only and from_client and b"SUBSCRIBE" in data.upper():
                    subscriber[0] = True
                delay = 0.0 if subscriber[0] else self.delay
                queue.put_nowait((loop.time() + delay, data))
            queue.put_nowait(None)
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            writer.close()
