"""What the benches share: a process measured from /proc, the processes under test (a private
redis-server, fresh keys, `ordertrack serve` pods), a pod's /metrics, the bench's tracking
messages, and the connection arithmetic of the load generators (users, orders, tokens,
loopback source addresses, percentiles). Each bench under bench/ is a script over these."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ordertrack.devtools.keys import Keys, generate_keys
from ordertrack.devtools.processes import die_with, free_port, stop_process, wait_for
from ordertrack.devtools.redis_server import RedisServer

__all__ = ["free_port", "stop_process"]  # re-exported for the benches

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SUBPROTOCOL = "vantage-tracking-v1"
LOCATION_PREFIX = "bench:"
# Linux value; absent from the socket module on some Python builds.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Well under the 20,000 open files a process may hold (sockets + pipes + the interpreter's own).
MAX_CONNECTIONS_PER_WORKER = 5_000
# Well under the ~28K ephemeral ports a source address has towards one server port.
MAX_CONNECTIONS_PER_SOURCE = 20_000


def cli(doc: str | None, argv: list[str] | None = None, **defaults: Any) -> argparse.Namespace:
    """The command line of a script whose arguments are optional positionals (`bench_wheel.py
    [entries]`): one per keyword, typed by its default; the docstring is the --help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        parser.add_argument(name, nargs="?", type=type(default), default=default,
                            help=f"default {default}")
    return parser.parse_args(argv)


def markdown(header: list[str], *rows: list[Any]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


# --- measuring a process from /proc ------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """VmRSS of a process in kB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # after the command name: state is field 3, utime 14, stime 15 (1-based in proc(5))
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    return sum(cpu_times(pid))


# --- the processes under test ------------------------------------------------------------------


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the bench dies, so nothing is left running."""
    die_with(os.getppid())()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """`devtools.processes.wait_for` with the bench's argument order."""
    return wait_for(predicate, timeout, interval, what=what)


def start_redis(workdir: Path, maxclients: int = 1000) -> tuple[subprocess.Popen, str]:
    """A private redis-server that dies with the bench: (its process, its URL).
    `maxclients` above ~the open-files limit is lowered by Redis."""
    server = RedisServer(workdir, maxclients=maxclients, die_with_parent=True)
    server.start()
    assert server.proc is not None
    return server.proc, server.url


def generate_key_pair(workdir: Path) -> tuple[bytes, Path]:
    """A fresh RSA key: the private PEM for signing, the path of the public PEMs for the pod."""
    keys = generate_keys(workdir)
    return keys.private_pem, keys.public_path


#: the CPUs the server under test (our pod, a peer) is pinned to, or None: not pinned
#: (`bench.load --server-cpu`; set once, before anything starts)
SERVER_CPUS: set[int] | None = None


def pin_server(cpus: set[int]) -> None:
    """From now on the server under test runs on `cpus` and this process (and so every child
    it starts after this: the generator, the feeder, Redis) on the others: the server gets
    cores of its own, as a pod in production does."""
    global SERVER_CPUS
    others = set(os.sched_getaffinity(0)) - cpus
    if not others or not cpus <= set(range(os.cpu_count() or 1)):
        raise ValueError(f"cannot pin the server to CPUs {sorted(cpus)} and keep one for the rest")
    os.sched_setaffinity(0, others)
    SERVER_CPUS = set(cpus)


def pinned(command: list[str]) -> list[str]:
    """`command` run on SERVER_CPUS (taskset, every thread) when the server is pinned."""
    if not SERVER_CPUS:
        return command
    return ["taskset", "-a", "-c", ",".join(map(str, sorted(SERVER_CPUS))), *command]


def pod_command() -> list[str]:
    """The pod under test: `python -m ordertrack serve`, or BENCH_POD_COMMAND (shell words)."""
    override = os.environ.get("BENCH_POD_COMMAND")
    return pinned(shlex.split(override) if override else [sys.executable, "-m", "ordertrack", "serve"])


def start_pod(redis_url: str, public_key: Path, max_connections: int, heartbeat_interval: float,
              log_path: Path, *, shared_port: int | None = None, name: str = "bench-pod",
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int, int]:
    """One pod on a free port, or on `shared_port` with REUSE_PORT (several pods, one port:
    the kernel spreads connections; readiness is then read from the pod's own /metrics);
    `env` last (a bench's own settings, e.g. PYTHONPATH: another tree's pod)."""
    import httpx

    port, metrics_port = shared_port or free_port(), free_port()
    full_env = dict(os.environ)
    full_env.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "REDIS_URL": redis_url,
        "JWT_PUBLIC_KEY": str(public_key),
        "MAX_CONNECTIONS_PER_POD": str(max_connections),
        "MAX_CONNECTIONS_PER_USER": "5",
        "HEARTBEAT_INTERVAL_SECONDS": str(heartbeat_interval),
        "HEARTBEAT_TIMEOUT_SECONDS": "10",
        "POD_NAME": name,
        "REUSE_PORT": "true" if shared_port else "false",
        "REGION": "bench",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    })
    out = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    proc = subprocess.Popen(pod_command(), env=full_env, stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO, preexec_fn=die_with_parent)
    out.close()

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"pod exited with code {proc.returncode}")
        if shared_port:
            return metric_sum(scrape(metrics_port), "ordertrack_ws_redis_subscribed") == 1
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200

    try:
        wait_until(ready, 30, "the pod's /readyz")
    except (TimeoutError, RuntimeError) as exc:
        stop_process(proc)
        raise RuntimeError(f"{exc}; pod log:\n{tail(log_path)}") from None
    return proc, port, metrics_port


@dataclass
class Stack:
    """A bench's private world: a folder, fresh keys (RS256 and ES256), a redis-server, and the
    pods it starts (`pod()`); `stack()` stops and removes all of it."""

    workdir: Path
    keys: Keys
    redis_url: str = ""
    redis_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def pod(self, redis_url: str | None = None, log: str = "pod.log", max_connections: int = 10_000,
            heartbeat_interval: float = 30.0, **env: Any) -> tuple[subprocess.Popen, int, int]:
        """One `ordertrack serve` on this stack's Redis (or `redis_url`), ready: (its process,
        port, metrics port); `env` are its settings beyond start_pod's (None or "": unset)."""
        settings = {key: str(value) for key, value in env.items() if value not in (None, "")}
        started = start_pod(redis_url or self.redis_url, self.keys.public_path, max_connections,
                            heartbeat_interval, self.workdir / log, env=settings)
        self.procs.append(started[0])
        return started

    def stop_pods(self) -> None:
        while self.procs:
            stop_process(self.procs.pop())


@contextlib.contextmanager
def stack(prefix: str = "ordertrack-bench-", redis: bool = True,
          maxclients: int = 10_000) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    server = RedisServer(workdir / "redis", maxclients=maxclients, die_with_parent=True)
    world = Stack(workdir, generate_keys(workdir / "keys"))
    try:
        if redis:
            server.start()
            world.redis_url, world.redis_port = server.url, server.port
        yield world
    finally:
        world.stop_pods()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- a pod's /metrics --------------------------------------------------------------------------


def scrape(metrics_port: int) -> str:
    """The pod's /metrics text ("" when it cannot be read: the figures are cross-checks only)."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return ""


def metric_sum(text: str, name: str) -> float | None:
    """Sum of the samples of metric `name` over all label sets; None when absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or line.split("{")[0].split(" ")[0] != name:
            continue
        with contextlib.suppress(ValueError, IndexError):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """Samples of metric `name` summed per value of `label`."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line:
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            found[value] = found.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


# --- clients -----------------------------------------------------------------------------------


def ws_connect(port: int, order: str, token: str, query: str = "", **options: Any) -> Any:
    """A `websockets` client of the pod on 127.0.0.1:port, watching `order` with `token`."""
    import websockets

    return websockets.connect(f"ws://127.0.0.1:{port}/ws/orders/{order}/track{query}",
                              subprotocols=[SUBPROTOCOL],
                              additional_headers={"Authorization": f"Bearer {token}"}, **options)


def upgrade_request(order: str, token: str) -> bytes:
    """A raw WebSocket upgrade of a client of `order` with `token` (a fixed key)."""
    return (f"GET /ws/orders/{order}/track HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\nAuthorization: Bearer {token}\r\n\r\n").encode()


async def raw_upgrade(port: int, order: str, token: str) -> socket.socket:
    """A raw, non-blocking WebSocket client with a 4 KB receive buffer, upgraded (101)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(order, token))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise RuntimeError("upgrade refused: connection closed")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head[:80]!r}")
    return sock


# --- the bench's users, orders, tokens and messages --------------------------------------------


def user_id(index: int) -> str:
    return f"bench_user_{index}"


def order_id(index: int, watchers_per_order: int = 1) -> str:
    return f"bench_order_{index // watchers_per_order}"


def make_token(key: Any, index: int, watchers_per_order: int = 1, ttl: float = 3600.0) -> str:
    """The RS256 token of connection `index`: its own user, its order."""
    import jwt

    now = int(time.time())
    claims = {"sub": user_id(index), "order_id": order_id(index, watchers_per_order),
              "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, key, algorithm="RS256")


def bench_location(sent_at: float) -> str:
    """The `location` a bench update carries: its send time, so receivers compute latency."""
    return f"{LOCATION_PREFIX}{sent_at:.6f}"


def parse_bench_location(location: Any) -> float | None:
    if isinstance(location, str) and location.startswith(LOCATION_PREFIX):
        try:
            return float(location[len(LOCATION_PREFIX):])
        except ValueError:
            return None
    return None


def bench_message(seq: int, sent_at: float) -> bytes:
    """A tracking message as the gateway publishes it, its send time carried in `location`."""
    import orjson

    stamp = dt.datetime.fromtimestamp(sent_at, dt.UTC).isoformat()
    return orjson.dumps({
        "status": "in_transit",
        "location": bench_location(sent_at),
        "timestamp": stamp,
        "estimated_delivery": "2026-12-24",
        "carrier": "dhl",
        "raw_carrier_response": {"bench": True},
        "seq": seq,
        "published_at": sent_at,
    })


UNWATCHED_PAYLOAD = (
    b'{"status":"in_transit","location":"Newark NJ Distribution Center","timestamp":'
    b'"2025-10-03T14:22:00Z","estimated_delivery":"2025-10-04T18:00:00Z","carrier":"dhl",'
    b'"raw_carrier_response":{"shipments":[{"id":"00340434"}]},"seq":1,'
    b'"published_at":1759501320.25}')


def unwatched_message(n: int) -> tuple[str, bytes]:
    from ordertrack import redis_layout

    return redis_layout.channel(f"nobody_{n % 50_000:08x}"), UNWATCHED_PAYLOAD


def publish_steady(redis_url: str, rate: int, seconds: float,
                   message: Callable[[int], tuple[str, bytes]]) -> int:
    """PUBLISH `rate` messages/s for `seconds` in pipelines of one 10 ms tick each;
    `message(n)` gives the n-th (channel, payload). Returns how many were sent."""
    import redis

    client = redis.Redis.from_url(redis_url)
    per_tick = max(1, rate // 100)
    sent = 0
    start = time.perf_counter()
    try:
        for tick in range(max(1, int(seconds * 100))):
            pipe = client.pipeline(transaction=False)
            for i in range(per_tick):
                pipe.publish(*message(sent + i))
            pipe.execute()
            sent += per_tick
            pause = start + (tick + 1) / 100 - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    finally:
        client.close()
    return sent


# --- load generators: processes, source addresses, percentiles ---------------------------------


def worker_count(connections: int, per_worker: int = MAX_CONNECTIONS_PER_WORKER) -> int:
    return max(1, math.ceil(connections / per_worker))


def source_addresses(connections: int, workers: int) -> list[str]:
    """One loopback source address per worker, at least one per MAX_CONNECTIONS_PER_SOURCE."""
    needed = max(workers, math.ceil(connections / MAX_CONNECTIONS_PER_SOURCE))
    return [f"127.0.0.{2 + n}" for n in range(needed)]


def bound_socket(source: str) -> socket.socket:
    """A non-blocking client socket bound to loopback address `source`, its port picked at
    connect() time (IP_BIND_ADDRESS_NO_PORT), for picows' socket_factory."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def picows_connect(factory: Callable[[], Any], url: str, headers: dict[str, str],
                         source: str, timeout: float, failures: Any, logger_name: str) -> Any:
    """picows' ws_connect from loopback address `source`: the transport, or None with the
    reason counted in `failures` (http_<status>, handshake, the WSError's class, timeout,
    os_<errno>)."""
    from picows import WSError, WSHandshakeError, ws_connect

    try:
        transport, _ = await ws_connect(factory, url, extra_headers=headers,
                                        socket_factory=lambda _url: bound_socket(source),
                                        websocket_handshake_timeout=timeout,
                                        read_buffer_init_size=4096, max_redirects=0,
                                        logger_name=logger_name)
        return transport
    except WSHandshakeError as exc:
        status = getattr(exc.response, "status", None)
        failures[f"http_{int(status)}" if status else "handshake"] += 1
    except WSError as exc:
        failures[type(exc).__name__] += 1
    except TimeoutError:
        failures["timeout"] += 1
    except OSError as exc:
        failures[f"os_{exc.errno}"] += 1
    return None


def client_process() -> None:
    """What a load-generator process does first: warnings-only logging to stderr, and the
    collector tuned as the pod's (the clients measure the server, not their own full
    collections)."""
    import logging

    from ordertrack.telemetry import tune_gc

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    tune_gc()


def close_code(frame: Any) -> int:
    """A picows CLOSE frame's code as an int."""
    code = frame.get_close_code()
    return int(getattr(code, "value", code))


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (pct in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: list[float]) -> dict[str, float | int]:
    """count, p50, p99, max in milliseconds of latencies in seconds."""
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": percentile(ordered, 50) * 1e3,
            "p99_ms": percentile(ordered, 99) * 1e3,
            "max_ms": ordered[-1] * 1e3 if ordered else math.nan}


def latency_summary(samples: list[tuple[float, float]]) -> dict[str, float | int]:
    """count, p50, p99, max in milliseconds of (send time, latency seconds) samples."""
    return summary([latency for _, latency in samples])


class Feeder:
    """RATE updates/s over the orders through publish.lua (`Publisher`, in PUBSUB_MODE `mode`),
    each carrying its send time (the clients' latency)."""

    def __init__(self, url: str, orders: int, mode: str, seq: dict[str, int]):
        from ordertrack import redis_connect

        self.redis = redis_connect.command_client(redis_connect.parse_redis_url(url))
        self.orders = orders
        self.mode = mode
        #: every order's last seq, kept across the modes (publish.lua refuses an old seq)
        self.seq = seq
        self.published = 0
        self.failed_attempts = 0

    async def publish(self, index: int) -> None:
        import redis as sync_redis

        from ordertrack.gateway.publisher import Publisher
        from ordertrack.models import StoredEvent

        order = order_id(index)
        seq = self.seq.get(order, 0) + 1
        event = StoredEvent(order, seq, "in_transit", bench_location(time.time()),
                            "2025-10-03T12:00:00Z", None)
        while True:
            try:
                if not await Publisher(self.redis, mode=self.mode).publish(order, "dhl", event):
                    raise RuntimeError(f"publish of {order} seq {seq} refused")
                break
            except (sync_redis.RedisError, OSError):
                self.failed_attempts += 1
                await asyncio.sleep(0.05)
        self.seq[order] = seq
        self.published += 1

    async def run(self, rate: float, seconds: float) -> None:
        tick = 0.05
        per_tick = rate * tick
        owed = 0.0
        cursor = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            owed += per_tick
            batch = int(owed)
            owed -= batch
            indices = [(cursor + n) % self.orders for n in range(batch)]
            cursor = (cursor + batch) % self.orders
            await asyncio.gather(*(self.publish(i) for i in indices))
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started) % tick))
