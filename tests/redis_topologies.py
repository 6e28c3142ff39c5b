"""Real Redis HA topologies on free loopback ports: Sentinel (primary, replica, three sentinels)
and a three-master Redis Cluster. Fixtures `sentinel_topology` and `redis_cluster`.

The primary and the replica are `tests.support.RedisServer`s (replication is set at run time);
sentinels and cluster nodes need their own command lines, started by `RedisProcess`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from tests.support import RedisServer, free_port, wait_for

SERVICE_NAME = "mymaster"


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True)


def _ask(port: int, *command):
    client = _client(port)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


class RedisProcess:
    """A redis-server (or sentinel) with its own command line; killed and reaped on stop."""

    def __init__(self, workdir: Path, args: list[str], port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.workdir / "redis.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["redis-server", *self.args, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.workdir)],
                stdout=out, stderr=subprocess.STDOUT,
            )

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text(errors='replace')[-1000:]}")
            return _ask(self.port, "PING")

        wait_for(up, 10, what=f"redis on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class SentinelTopology:
    """A primary, a replica and three sentinels (quorum 2, down-after 1 s, failover-timeout 3 s)."""

    def __init__(self, workdir: Path, sentinels: int = 3):
        self.workdir = Path(workdir)
        self.primary = RedisServer(self.workdir / "primary")
        self.replica = RedisServer(self.workdir / "replica")
        self.sentinels: list[RedisProcess] = []
        self.count = sentinels

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        _ask(self.primary.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
        _ask(self.replica.port, "REPLICAOF", "127.0.0.1", str(self.primary.port))
        wait_for(lambda: _ask(self.replica.port, "INFO", "replication")["master_link_status"] == "up",
                 10, what="replica in sync")
        for index in range(self.count):
            directory = self.workdir / f"sentinel{index}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"  # a sentinel rewrites its own file
            conf.write_text(
                f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE_NAME} 1000\n"
                f"sentinel failover-timeout {SERVICE_NAME} 3000\n"
                f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
            )
            sentinel = RedisProcess(directory, [str(conf), "--sentinel"])
            sentinel.start()
            self.sentinels.append(sentinel)

        def agreed():
            for sentinel in self.sentinels:
                state = _ask(sentinel.port, "SENTINEL", "MASTER", SERVICE_NAME)  # parsed to a dict
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < self.count - 1:
                    return False
            return True

        wait_for(agreed, 20, interval=0.2, what="sentinels see the replica and each other")

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        _host, port = _ask(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME)
        return int(port)

    def kill_primary(self) -> None:
        """SIGKILL the primary: no shutdown, no goodbye to the replica or the sentinels."""
        self.primary.proc.kill()
        self.primary.proc.wait()

    def wait_promoted(self, timeout: float = 15.0) -> None:
        """Until every sentinel names the replica as master and the replica says it is one."""
        def promoted():
            for sentinel in self.sentinels:
                _host, port = _ask(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE_NAME)
                if int(port) != self.replica.port:
                    return False
            return _ask(self.replica.port, "ROLE")[0] == "master"

        wait_for(promoted, timeout, interval=0.1, what="replica promoted")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()


class ClusterTopology:
    """Three masters (no replicas) covering all 16384 slots."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.workdir = Path(workdir)
        # the bus port gets a free port of its own (the default, port + 10000, may be taken)
        self.nodes = [
            RedisProcess(self.workdir / f"node{index}",
                         ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-port", str(free_port()),
                          "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
            for index in range(masters)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )

        def ok():
            return all("cluster_state:ok" in _ask(port, "CLUSTER", "INFO") for port in self.ports)

        wait_for(ok, 20, interval=0.1, what="cluster_state:ok on every node")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


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
    """

    def __init__(self, upstream_port: int):
        import asyncio
        import threading

        self.upstream_port = upstream_port
        self.port = free_port()
        self._frozen: set[int] = set()  # ids of the frozen connections
        self._open: set[int] = set()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        async def pipe(conn_id, reader, writer):
            try:
                while data := await reader.read(65536):
                    if conn_id in self._frozen:  # hold the bytes: nothing gets through, ever
                        await asyncio.Event().wait()
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
                await asyncio.gather(pipe(conn_id, reader, up_writer), pipe(conn_id, up_reader, writer))
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
