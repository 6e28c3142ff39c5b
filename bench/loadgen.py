"""Load generator: many idle, authenticated WebSocket connections to one push pod.

The connections are spread over worker PROCESSES (one uvloop each) because a process may hold
at most 20,000 open files on this machine, and over several loopback SOURCE addresses
(127.0.0.2, 127.0.0.3, ...) because one source address has only ~28K ephemeral ports towards
one server port. Each client socket is bound with IP_BIND_ADDRESS_NO_PORT so the kernel picks
the port at connect() time per 4-tuple instead of reserving one per bind().

Connection `i` is user `bench_user_{i}` (each connection its own user, so the pod's per-user
limit never trips) watching order `bench_order_{i // watchers_per_order}`, with an RS256 token
signed here. Clients answer pings (picows auto-pong) and record, for every `tracking_update`,
`receive time - send time`, the send time being carried in the update's `location`
(`bench:<epoch seconds>`, see `bench_location`): the publisher and the clients share a clock.

The parent drives the workers over a pipe: `open <level>` (hold connections 0..level-1 in
total), `stats` (counters plus latencies since the previous `stats`), `close`.
Used by `bench.capacity`; `python -m bench.loadgen --help` runs it on its own against a pod.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.lib import (
    SUBPROTOCOL,
    client_process,
    close_code,
    make_token,
    order_id,
    parse_bench_location,
    picows_connect,
    source_addresses,
    worker_count,
)

log = logging.getLogger("ordertrack.bench.loadgen")


# --- the worker process ------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    worker: int
    workers: int
    host: str
    port: int
    source: str
    private_key_pem: bytes
    watchers_per_order: int = 1
    concurrency: int = 64
    handshake_timeout: float = 10.0
    token_ttl: float = 3600.0


@dataclass
class WorkerState:
    open: int = 0
    acks: int = 0
    updates: int = 0
    other_frames: int = 0
    failures: Counter = field(default_factory=Counter)
    closes: Counter = field(default_factory=Counter)
    # (send time, latency) of every tracking_update received: the send time places stalls
    latencies: list[tuple[float, float]] = field(default_factory=list)
    connect_times: list[float] = field(default_factory=list)


def _make_client_class():
    """Defined lazily so importing this module does not import picows (the parent needs not)."""
    import orjson
    from picows import WSCloseCode, WSListener, WSMsgType

    class TrackClient(WSListener):
        __slots__ = ("state",)

        def __init__(self, state: WorkerState):
            self.state = state

        def on_ws_connected(self, transport) -> None:
            self.state.open += 1

        def on_ws_frame(self, transport, frame) -> None:
            received = time.time()
            kind = frame.msg_type
            if kind == WSMsgType.TEXT:
                message = orjson.loads(frame.get_payload_as_bytes())
                event = message.get("event")
                if event == "tracking_update":
                    self.state.updates += 1
                    sent = parse_bench_location(message.get("data", {}).get("location"))
                    if sent is not None:
                        self.state.latencies.append((sent, received - sent))
                elif event == "connection_ack":
                    self.state.acks += 1
                else:
                    self.state.other_frames += 1
            elif kind == WSMsgType.CLOSE:
                self.state.closes[close_code(frame)] += 1
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()

        def on_ws_disconnected(self, transport) -> None:
            self.state.open -= 1

    return TrackClient


class Worker:
    """Holds this worker's share of the connections on its own event loop."""

    def __init__(self, spec: WorkerSpec):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.spec = spec
        self.state = WorkerState()
        self.transports: dict[int, Any] = {}
        self._key = load_pem_private_key(spec.private_key_pem, password=None)
        self._client_class = _make_client_class()
        self.url = f"ws://{spec.host}:{spec.port}/ws/orders/{{order}}/track"

    def token(self, index: int) -> str:
        return make_token(self._key, index, self.spec.watchers_per_order, self.spec.token_ttl)

    async def _connect(self, index: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            headers = {
                "Authorization": f"Bearer {self.token(index)}",
                "Sec-WebSocket-Protocol": SUBPROTOCOL,
            }
            url = self.url.format(order=order_id(index, self.spec.watchers_per_order))
            started = time.perf_counter()
            transport = await picows_connect(
                lambda: self._client_class(self.state), url, headers, self.spec.source,
                self.spec.handshake_timeout, self.state.failures, "bench.client")
            if transport is None:
                return
            self.state.connect_times.append(time.perf_counter() - started)
            self.transports[index] = transport

    async def open_until(self, level: int) -> dict[str, Any]:
        started = time.perf_counter()
        self.state.connect_times.clear()
        wanted = [
            index
            for index in range(self.spec.worker, level, self.spec.workers)
            if index not in self.transports
        ]
        gate = asyncio.Semaphore(self.spec.concurrency)
        await asyncio.gather(*(self._connect(index, gate) for index in wanted))
        # The held connections live until the end: keep the collector from re-scanning them,
        # so a client-side GC pause does not show up as delivery latency.
        gc.collect()
        gc.freeze()
        return {"elapsed_s": time.perf_counter() - started, **self.snapshot(reset=False)}

    def snapshot(self, reset: bool) -> dict[str, Any]:
        state = self.state
        out = {
            "worker": self.spec.worker,
            "open": state.open,
            "acks": state.acks,
            "updates": state.updates,
            "other_frames": state.other_frames,
            "failures": dict(state.failures),
            "closes": {str(code): n for code, n in state.closes.items()},
            "latencies": list(state.latencies),
            "connect_times": list(state.connect_times),
        }
        if reset:
            state.latencies.clear()
            state.updates = 0
        return out

    async def close_all(self, grace: float = 5.0) -> None:
        """Close handshake with every connection; abort whatever has not finished in `grace`."""
        from picows import WSCloseCode

        transports = [t for t in self.transports.values() if not t.is_disconnected]
        for transport in transports:
            transport.send_close(WSCloseCode.GOING_AWAY)
            transport.disconnect()
        if transports:
            waiting = [asyncio.ensure_future(t.wait_disconnected()) for t in transports]
            _, late = await asyncio.wait(waiting, timeout=grace)
            for future in late:
                future.cancel()
        for transport in transports:
            if not transport.is_disconnected:
                transport.disconnect(graceful=False)
        self.transports.clear()


async def _serve_commands(worker: Worker, pipe: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            command, arg = await loop.run_in_executor(None, pipe.recv)
        except (EOFError, OSError):  # the parent is gone: drop everything and leave
            await worker.close_all(grace=1.0)
            return
        if command == "open":
            pipe.send(("opened", await worker.open_until(int(arg))))
        elif command == "stats":
            pipe.send(("stats", worker.snapshot(reset=bool(arg))))
        elif command == "close":
            await worker.close_all()
            pipe.send(("closed", worker.snapshot(reset=False)))
            return
        else:
            pipe.send(("error", f"unknown command {command!r}"))


def worker_main(spec: WorkerSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process."""
    import uvloop

    worker = Worker(spec)
    client_process()
    uvloop.run(_serve_commands(worker, pipe))


# --- the parent side ---------------------------------------------------------------------------


class LoadGenerator:
    """Starts the worker processes and fans commands out to them."""

    def __init__(self, host: str, port: int, private_key_pem: bytes, max_connections: int,
                 watchers_per_order: int = 1, concurrency: int = 128,
                 command_timeout: float = 120.0):
        self.workers = worker_count(max_connections)
        self.sources = source_addresses(max_connections, self.workers)
        self.command_timeout = command_timeout
        context = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for n in range(self.workers):
            spec = WorkerSpec(
                worker=n,
                workers=self.workers,
                host=host,
                port=port,
                source=self.sources[n % len(self.sources)],
                private_key_pem=private_key_pem,
                watchers_per_order=watchers_per_order,
                concurrency=max(1, concurrency // self.workers),
            )
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main, args=(spec, child_end), name=f"loadgen-{n}", daemon=True
            )
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)

    def _all(self, command: str, arg: Any = None, timeout: float | None = None) -> list[dict]:
        for pipe in self.pipes:
            pipe.send((command, arg))
        deadline = time.monotonic() + (timeout or self.command_timeout)
        replies = []
        for n, pipe in enumerate(self.pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"loadgen worker {n} did not answer {command!r} in time")
            kind, payload = pipe.recv()
            if kind == "error":
                raise RuntimeError(f"loadgen worker {n}: {payload}")
            replies.append(payload)
        return replies

    def open(self, level: int) -> dict[str, Any]:
        """Hold connections 0..level-1 across the workers; returns the merged counters."""
        started = time.perf_counter()
        merged = merge(self._all("open", level))
        merged["elapsed_s"] = time.perf_counter() - started
        return merged

    def stats(self, reset: bool = False) -> dict[str, Any]:
        return merge(self._all("stats", reset))

    def close(self) -> dict[str, Any] | None:
        """Close every connection and stop the workers (always; safe to call twice)."""
        merged = None
        try:
            if any(process.is_alive() for process in self.processes):
                merged = merge(self._all("close", timeout=15.0))
        except (TimeoutError, OSError, EOFError, RuntimeError) as exc:
            log.warning("loadgen workers did not close cleanly: %s", exc)
        for process in self.processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()
        self.processes.clear()
        self.pipes.clear()
        return merged


def merge(replies: list[dict]) -> dict[str, Any]:
    """Sum the workers' counters; concatenate their latencies."""
    out: dict[str, Any] = {
        "open": 0, "acks": 0, "updates": 0, "other_frames": 0,
        "failures": Counter(), "closes": Counter(), "latencies": [], "connect_times": [],
    }
    for reply in replies:
        for key in ("open", "acks", "updates", "other_frames"):
            out[key] += reply[key]
        out["failures"].update(reply["failures"])
        out["closes"].update(reply["closes"])
        out["latencies"].extend(reply["latencies"])
        out["connect_times"].extend(reply["connect_times"])
    out["failures"] = dict(out["failures"])
    out["closes"] = dict(out["closes"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Open N idle authenticated connections to a running push pod, hold them, report.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--private-key", required=True,
                        help="PEM RSA private key whose public half the pod has as JWT_PUBLIC_KEY")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("the load generator only targets 127.0.0.0/8")
    with open(args.private_key, "rb") as handle:
        pem = handle.read()
    gen = LoadGenerator(args.host, args.port, pem, args.connections)
    try:
        opened = gen.open(args.connections)
        print(f"open={opened['open']} acks={opened['acks']} failures={opened['failures']} "
              f"in {opened['elapsed_s']:.1f}s")
        time.sleep(args.hold_seconds)
        held = gen.stats()
        print(f"after {args.hold_seconds:.0f}s: open={held['open']} closes={held['closes']}")
    finally:
        gen.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
