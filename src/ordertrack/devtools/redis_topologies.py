"""Real Redis HA topologies on free loopback ports: Sentinel (primary, replica, three sentinels)
and a three-master Redis Cluster, for the fault suite (tests/redis_topologies.py's fixtures) and
bench/bench_redis_ha.py.

The primary and the replica are `RedisServer`s (replication is set at run time); sentinels and
cluster nodes need their own command lines, started by `RedisProcess`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from ordertrack.devtools.processes import free_port, wait_for
from ordertrack.devtools.redis_server import RedisServer

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
    """Three masters covering all 16384 slots, with `replicas` replicas each (0: none)."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0):
        self.workdir = Path(workdir)
        self.masters = masters
        self.replicas = replicas
        # the bus port gets a free port of its own (the default, port + 10000, may be taken)
        self.nodes = [
            RedisProcess(self.workdir / f"node{index}",
                         ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-port", str(free_port()),
                          "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
            for index in range(masters * (1 + replicas))
        ]

    @property
    def ports(self) -> list[int]:
        """Every node's port (masters first, as created)."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )
        self.wait_ok()
        if self.replicas:
            wait_for(lambda: len(self.replica_ports()) == self.masters * self.replicas, 20,
                     interval=0.1, what="every replica attached")

    def live_ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def wait_ok(self, timeout: float = 20) -> None:
        def ok():
            return all("cluster_state:ok" in _ask(port, "CLUSTER", "INFO") for port in self.live_ports())

        wait_for(ok, timeout, interval=0.1, what="cluster_state:ok on every node")

    def slots(self, port: int | None = None) -> list[tuple[int, int, int]]:
        """CLUSTER SLOTS as (first, last, master port), asked of `port` (a live node)."""
        reply = _ask(port or self.live_ports()[0], "CLUSTER", "SLOTS")
        return sorted((int(first), int(last), int(master[1])) for first, last, master, *_ in reply)

    def master_ports(self) -> list[int]:
        return sorted({port for _, _, port in self.slots()})

    def replica_ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.proc is not None
                and node.proc.poll() is None and _ask(node.port, "ROLE")[0] == "slave"]

    def master_of_slot(self, slot: int) -> int:
        return next(port for first, last, port in self.slots() if first <= slot <= last)

    def kill(self, port: int) -> None:
        """SIGKILL one node (no goodbye to the cluster)."""
        node = next(node for node in self.nodes if node.port == port)
        node.stop()

    def wait_failed_over(self, dead_port: int, timeout: float = 30) -> None:
        """Until a live node reports every slot served by a live master (a replica promoted)."""
        def served():
            try:
                slots = self.slots()
            except redis.RedisError:
                return False
            covered = sum(last - first + 1 for first, last, _ in slots)
            return covered == 16384 and all(port != dead_port for _, _, port in slots)

        wait_for(served, timeout, interval=0.1, what=f"slots of {dead_port} failed over")
        self.wait_ok(timeout)

    def add_master(self) -> int:
        """A new empty master joins (`redis-cli --cluster add-node`); returns its port."""
        node = RedisProcess(self.workdir / f"node{len(self.nodes)}",
                            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                             "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000",
                             "--save", "", "--appendonly", "no"])
        node.start()
        self.nodes.append(node)
        subprocess.run(
            ["redis-cli", "--cluster", "add-node", f"127.0.0.1:{node.port}",
             f"127.0.0.1:{self.master_ports()[0]}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )
        wait_for(lambda: all(node.port in {int(line.split()[1].split(":")[1].split("@")[0])
                                           for line in _ask(port, "CLUSTER", "NODES").splitlines()}
                             for port in self.live_ports()),
                 20, interval=0.1, what="every node knows the new one")
        self.wait_ok()
        return node.port

    def reshard(self, from_port: int, to_port: int, count: int) -> None:
        """`redis-cli --cluster reshard`: move `count` slots (keys included) of the master on
        `from_port` to the one on `to_port`."""
        ids = {port: _ask(port, "CLUSTER", "MYID") for port in (from_port, to_port)}
        subprocess.run(
            ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{to_port}",
             "--cluster-from", ids[from_port], "--cluster-to", ids[to_port],
             "--cluster-slots", str(count), "--cluster-yes", "--cluster-pipeline", "100"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
