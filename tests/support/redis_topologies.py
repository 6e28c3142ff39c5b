"""Fixtures for the Redis HA topologies (`sentinel_topology`, `redis_cluster`; the topologies
themselves are `ordertrack.devtools.redis_topologies`, shared with bench/bench_redis_ha.py) and
`FreezingProxy`, a TCP proxy that can go silent.
"""

from __future__ import annotations

import pytest

from ordertrack.devtools.redis_topologies import (  # noqa: F401 - re-exported for tests
    SERVICE_NAME,
    ClusterTopology,
    RedisProcess,
    SentinelTopology,
)
from tests.support import free_port


@pytest.fixture
def sentinel_topology(tmp_path):
    """A running Sentinel topology of this test's own (the test may kill its primary)."""
    topology = SentinelTopology(tmp_path / "sentinel")
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A three-master Redis Cluster shared by a module's tests (they use keys of their own)."""
    cluster = ClusterTopology(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class FreezingProxy:
    """A TCP proxy on a free loopback port in front of `upstream_port`, on its own thread.

    `freeze()` stops forwarding on every connection open now, in both directions, while keeping
    the sockets open: a silent network, as a stalled link or a half-dead node looks to a client.
    Connections opened after it are forwarded as usual (a reconnect gets through).

    `stall_commands()` holds every command a client sends from then on, on any connection that
    has not subscribed (old and new ones alike; subscriptions keep flowing) until
    `resume_commands()`: a command Redis that stopped answering while pub/sub still works.
    """

    def __init__(self, upstream_port: int):
        import asyncio
        import threading

        self.upstream_port = upstream_port
        self.port = free_port()
        self._frozen: set[int] = set()  # ids of the frozen connections
        self._open: set[int] = set()
        self._subscribers: set[int] = set()  # ids of the connections that sent a (P)SUBSCRIBE
        self._commands_flow = None  # an asyncio.Event, set while commands are forwarded
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        self._commands_flow = asyncio.Event()
        self._commands_flow.set()

        async def pipe(conn_id, reader, writer, from_client=False):
            try:
                while data := await reader.read(65536):
                    if conn_id in self._frozen:  # hold the bytes: nothing gets through, ever
                        await asyncio.Event().wait()
                    if from_client:
                        if b"SUBSCRIBE" in data.upper():
                            self._subscribers.add(conn_id)
                        elif conn_id not in self._subscribers:
                            await self._commands_flow.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader, writer):
            self._next += 1
            conn_id = self._next
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                writer.close()
                return
            self._open.add(conn_id)
            try:
                await asyncio.gather(pipe(conn_id, reader, up_writer, from_client=True),
                                     pipe(conn_id, up_reader, writer))
            except asyncio.CancelledError:  # stop()
                pass
            self._open.discard(conn_id)

        async def main():
            self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def freeze(self) -> int:
        """Freeze every connection open now; returns how many."""
        import asyncio

        async def freeze_open() -> int:
            self._frozen.update(self._open)
            return len(self._open)

        return asyncio.run_coroutine_threadsafe(freeze_open(), self._loop).result(5)

    def stall_commands(self) -> None:
        """Hold every command from now on (not subscriptions) until `resume_commands`."""
        self._call(self._commands_flow.clear)

    def resume_commands(self) -> None:
        self._call(self._commands_flow.set)

    def _call(self, fn) -> None:
        import asyncio

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(5)

    def stop(self) -> None:
        import asyncio

        async def shut() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
