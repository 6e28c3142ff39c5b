"""One load-generator worker process: its share of the connections through the whole scenario.

Open loop: connection `i` starts at `t0 + i / rate` whether or not earlier ones have finished
(`profiles.schedule`), so a slow server shows up as latency and failures, not as a slower
ramp. Each connection: TCP connect -> upgrade (bearer token) -> `connection_ack` (the
establishment time), then during the hold an app-level `{"event":"heartbeat"}` every
`heartbeat_interval` (round trip to `heartbeat_ack` measured; ping frames are answered by picows'
auto-pong), every `tracking_update` timed from the feeder's send stamp (`location`) and checked
for order (`seq`: a duplicate or a gap is counted). Chosen connections close gracefully (1000)
during the hold and reconnect with `?last_seq=N`. Ramp down closes them at the ramp rate.

The parent sends ("start", timeline) once; the worker sends ("status", counters) every second
and ("done", results) at the end.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing.connection
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
)
from bench.load.profiles import schedule, storm_offset
from ordertrack.push.latency_probe import LagProbe

log = logging.getLogger("ordertrack.bench.load.client")

HEARTBEAT = b'{"event":"heartbeat"}'
HANDSHAKE_TIMEOUT = 10.0
ACK_TIMEOUT = 10.0
TICK = 0.05
FREEZE_EVERY = 500
#: a connection cut by the storm retries a failed reconnect this many times, backing off from
#: STORM_RETRY_FIRST_SECONDS (doubling, at most 2 s), as a real client would
STORM_ATTEMPTS = 10
STORM_RETRY_FIRST_SECONDS = 0.1


@dataclass
class WorkerSpec:
    worker: int
    workers: int
    connections: int
    source: str
    #: ws URL with `{order}` (and the pod's path), e.g. ws://127.0.0.1:8080/ws/orders/{order}/track
    url: str
    #: "jwt": RS256 token in Authorization (our pod); "subprotocol:<secret>": offered
    #: `bearer.<secret>` subprotocol (the peers' shared secret)
    auth: str
    private_key_pem: bytes = b""
    resume: bool = True
    #: the feeder's "mixed" mode (odd orders by a bare PUBLISH): delivery is also kept per
    #: order parity, so the two paths compare within one run
    split_parity: bool = False


@dataclass
class Timeline:
    t0: float
    ramp_per_second: float
    hold_seconds: float
    ramp_down_per_second: float
    heartbeat_interval: float
    #: connection index -> seconds into the hold when it disconnects gracefully and comes back
    reconnects: dict[int, float] = field(default_factory=dict)
    #: (seconds into the hold, spread seconds): every connection is cut then and comes back
    #: (`storm_offset` spreads them), or None
    storm: tuple[float, float] | None = None


@dataclass
class Results:
    worker: int
    opened: int = 0
    failures: Counter = field(default_factory=Counter)
    closes: Counter = field(default_factory=Counter)
    #: (wall time of the ack, seconds from connect start to connection_ack)
    establish: list[tuple[float, float]] = field(default_factory=list)
    #: of each first connection: (seconds from the TCP connect to the 101, from the 101 to the
    #: connection_ack): where an establishment's time goes
    establish_split: list[tuple[float, float]] = field(default_factory=list)
    #: the same for reconnects
    reestablish: list[tuple[float, float]] = field(default_factory=list)
    #: (scheduled time, seconds late) of every connection the generator started: its lateness
    start_lag: list[tuple[float, float]] = field(default_factory=list)
    #: (send time, delivery seconds) of every tracking_update
    delivery: list[tuple[float, float]] = field(default_factory=list)
    #: (send time, round trip seconds) of every heartbeat_ack
    heartbeat: list[tuple[float, float]] = field(default_factory=list)
    heartbeats_unanswered: int = 0
    #: updates received with a seq above the last one seen (live or replayed): every one the
    #: client has, so the feeder's count minus this is what was lost
    unique: int = 0
    #: the seqs the first acks said each order already had (updates before the client came)
    acked_seq: int = 0
    duplicates: int = 0
    gaps: int = 0
    frame_bytes: int = 0
    graceful_disconnects: int = 0
    reconnects_ok: int = 0
    reconnect_failures: Counter = field(default_factory=Counter)
    dropped: int = 0
    #: updates a reconnect got replayed (sent before it was back): not in `delivery`
    replayed: int = 0
    #: a second connection_ack on one connection (nchan publishes acks on the order's channel)
    extra_acks: int = 0
    errors: Counter = field(default_factory=Counter)
    #: (wall time, seconds late) of every probe of this process's loop: a frame that arrives
    #: while the loop is busy gets its receive time that much later
    loop_lag: list[tuple[float, float]] = field(default_factory=list)
    #: with WorkerSpec.split_parity: the delivery seconds of even and of odd orders
    delivery_by_parity: list[list[float]] = field(default_factory=lambda: [[], []])
    #: the storm: (wall time of the ack, seconds from the cut to the ack, retries included)
    storm_establish: list[tuple[float, float]] = field(default_factory=list)
    #: (scheduled cut, seconds late) per connection the storm cut
    storm_lag: list[tuple[float, float]] = field(default_factory=list)
    storm_retries: int = 0
    #: connections the storm found open and cut (one that never got in is not cut)
    storm_cut: int = 0
    #: connections the storm cut that were not back after STORM_ATTEMPTS tries
    storm_not_back: int = 0

    def counters(self) -> dict[str, Any]:
        return {"opened": self.opened, "acks": len(self.establish),
                "failed": sum(self.failures.values()), "updates": len(self.delivery),
                "reconnects_ok": self.reconnects_ok}

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("failures", "closes", "reconnect_failures", "errors"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out


def _client_class():
    import orjson
    from picows import WSCloseCode, WSListener, WSMsgType

    class Client(WSListener):
        __slots__ = ("results", "started", "acked", "last_seq", "hb_sent", "ours_closing",
                     "transport", "reconnecting", "acked_at", "acks", "parity", "upgraded")

        def __init__(self, results: Results, acked: asyncio.Future, reconnecting: bool,
                     acks: list | None = None):
            self.results = results
            #: where its ack's (wall time, establishment seconds) goes
            self.acks = acks if acks is not None else (
                results.reestablish if reconnecting else results.establish)
            self.started = time.perf_counter()
            self.acked = acked
            self.last_seq: int | None = None
            self.hb_sent = 0.0
            self.ours_closing = False
            self.transport = None
            self.reconnecting = reconnecting
            self.acked_at = 0.0
            #: 0/1: the list of `delivery_by_parity` its updates also go to, or None
            self.parity = None
            #: perf_counter when the 101 was in
            self.upgraded = 0.0

        def on_ws_connected(self, transport) -> None:
            self.upgraded = time.perf_counter()
            self.transport = transport
            self.results.opened += 1

        def on_ws_frame(self, transport, frame) -> None:
            now = time.time()
            kind = frame.msg_type
            if kind == WSMsgType.TEXT:
                payload = frame.get_payload_as_bytes()
                message = orjson.loads(payload)
                event = message.get("event")
                data = message.get("data") or {}
                if event == "tracking_update":
                    self._update(now, data, len(payload))
                elif event == "heartbeat_ack":
                    if self.hb_sent:
                        self.results.heartbeat.append((self.hb_sent, now - self.hb_sent))
                        self.hb_sent = 0.0
                elif event == "connection_ack":
                    if self.acked_at:
                        self.results.extra_acks += 1
                        return
                    took = time.perf_counter() - self.started
                    self.acks.append((now, took))
                    if self.acks is self.results.establish:
                        upgrade = self.upgraded - self.started
                        self.results.establish_split.append((upgrade, took - upgrade))
                    self.acked_at = now
                    seq = data.get("seq")
                    if self.last_seq is None and isinstance(seq, int):
                        self.last_seq = seq
                        self.results.acked_seq += seq
                    if not self.acked.done():
                        self.acked.set_result(True)
                elif event == "error":
                    self.results.errors[str(data.get("code"))] += 1
            elif kind == WSMsgType.CLOSE:
                self.results.closes[close_code(frame)] += 1
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()

        def _update(self, now: float, data: dict, size: int) -> None:
            results = self.results
            seq = data.get("seq")
            if isinstance(seq, int) and self.last_seq is not None:
                if seq <= self.last_seq:
                    results.duplicates += 1
                    return
                if seq > self.last_seq + 1:
                    results.gaps += 1
            if isinstance(seq, int):
                self.last_seq = seq
                results.unique += 1
            results.frame_bytes += size + 4  # payload + a text frame's 2..4 header bytes
            sent = parse_bench_location(data.get("location"))
            if sent is None:
                return
            if self.reconnecting and (not self.acked_at or sent < self.acked_at):
                results.replayed += 1
            else:
                results.delivery.append((sent, now - sent))
                if self.parity is not None:
                    results.delivery_by_parity[self.parity].append(now - sent)

        def on_ws_disconnected(self, transport) -> None:
            if not self.ours_closing:
                self.results.dropped += 1
            if not self.acked.done():
                self.acked.set_result(False)

    return Client


class Worker:
    def __init__(self, spec: WorkerSpec):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.spec = spec
        self.results = Results(spec.worker)
        self.indices = range(spec.worker, spec.connections, spec.workers)
        self.clients: dict[int, Any] = {}
        self._client_class = _client_class()
        if spec.auth == "jwt":
            key = load_pem_private_key(spec.private_key_pem, password=None)
            # signed before the clock starts: RS256 signing is ~1 ms of CPU per token
            self.tokens = {i: make_token(key, i) for i in self.indices}
        else:
            self.tokens = {}

    def _headers(self, index: int) -> dict[str, str]:
        if self.spec.auth == "jwt":
            return {"Authorization": f"Bearer {self.tokens[index]}",
                    "Sec-WebSocket-Protocol": SUBPROTOCOL}
        secret = self.spec.auth.partition(":")[2]
        return {"Sec-WebSocket-Protocol": f"{SUBPROTOCOL}, bearer.{secret}"}

    async def connect(self, index: int, last_seq: int | None = None, acks: list | None = None,
                      started: float | None = None) -> bool:
        """Open connection `index` (resuming after `last_seq` when given); its ack goes to
        `acks` (default: establish or reestablish), timed from `started` (default: now)."""
        loop = asyncio.get_running_loop()
        acked = loop.create_future()
        reconnecting = last_seq is not None
        failures = self.results.reconnect_failures if reconnecting else self.results.failures
        url = self.spec.url.format(order=order_id(index))
        if reconnecting and self.spec.resume:
            url += f"?last_seq={last_seq}"
        holder: list[Any] = []
        # picows makes the listener only once the 101 is in: the clock starts here, before
        # the TCP connect, so establishment covers connect + upgrade + ack
        started = time.perf_counter() if started is None else started

        def factory():
            client = self._client_class(self.results, acked, reconnecting, acks)
            client.started = started
            client.last_seq = last_seq
            if self.spec.split_parity:
                client.parity = index % 2
            holder.append(client)
            return client

        if await picows_connect(factory, url, self._headers(index), self.spec.source,
                                HANDSHAKE_TIMEOUT, failures, "bench.load.client") is None:
            return False
        try:
            ok = await asyncio.wait_for(acked, ACK_TIMEOUT)
        except TimeoutError:
            ok = False
        if not ok:
            failures["no_ack"] += 1
            if holder and holder[0].transport is not None:
                holder[0].ours_closing = True
                holder[0].transport.disconnect(graceful=False)
            return False
        self.clients[index] = holder[0]
        return True

    async def _opened(self, index: int, due: float) -> None:
        self.results.start_lag.append((due, time.time() - due))
        await self.connect(index)

    async def _at(self, when: float) -> None:
        delay = when - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self, tl: Timeline, pipe: multiprocessing.connection.Connection) -> None:
        tasks: list[asyncio.Task] = []
        status = asyncio.ensure_future(self._status(pipe))
        # the generator's own loop lag (its receive times are only as good as its loop is
        # prompt), by the pod's probe: a timerfd, microseconds
        lag_probe = LagProbe(asyncio.get_running_loop(),
                             lambda lag: self.results.loop_lag.append((time.time(), lag)))
        lag_probe.start()
        heartbeats = asyncio.ensure_future(self._heartbeats(tl.heartbeat_interval))
        for count, index in enumerate(self.indices, 1):  # the ramp, open loop
            due = tl.t0 + schedule(index, tl.ramp_per_second)
            await self._at(due)
            tasks.append(asyncio.ensure_future(self._opened(index, due)))
            if count % FREEZE_EVERY == 0:
                # what is open stays open: out of the collector's way, so a full collection
                # of a growing heap never pauses the ramp (a late start)
                gc.freeze()
        await asyncio.gather(*tasks)
        gc.collect()
        gc.freeze()

        hold_start = tl.t0 + schedule(self.spec.connections, tl.ramp_per_second)
        hold_end = hold_start + tl.hold_seconds
        mine = [(hold_start + offset, i) for i, offset in tl.reconnects.items()
                if i % self.spec.workers == self.spec.worker]
        bounces = [asyncio.ensure_future(self._bounce(i, when)) for when, i in sorted(mine)]
        if tl.storm is not None:
            at, spread = tl.storm
            bounces += [asyncio.ensure_future(self._storm(
                i, hold_start + at + storm_offset(i, self.spec.connections, spread)))
                for i in self.indices]
        await self._at(hold_end)
        await asyncio.gather(*bounces)
        heartbeats.cancel()

        closes = []
        for index in self.indices:  # ramp down, open loop as well
            await self._at(hold_end + schedule(index, tl.ramp_down_per_second))
            client = self.clients.pop(index, None)
            if client is not None:
                closes.append(asyncio.ensure_future(self._close(client)))
        await asyncio.gather(*closes)
        status.cancel()
        lag_probe.stop()

    async def _close(self, client: Any, grace: float = 5.0) -> None:
        from picows import WSCloseCode

        transport = client.transport
        client.ours_closing = True
        if transport is None or transport.is_disconnected:
            return
        transport.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(transport.wait_disconnected(), grace)
        except TimeoutError:
            transport.disconnect(graceful=False)

    async def _bounce(self, index: int, when: float) -> None:
        await self._at(when)
        client = self.clients.pop(index, None)
        if client is None:
            return
        await self._close(client)
        self.results.graceful_disconnects += 1
        if await self.connect(index, last_seq=client.last_seq or 0):
            self.results.reconnects_ok += 1

    async def _storm(self, index: int, when: float) -> None:
        """Cut connection `index` at `when` (no close frame: the balancer went away) and bring
        it back with ?last_seq, retrying with backoff."""
        await self._at(when)
        self.results.storm_lag.append((when, time.time() - when))
        client = self.clients.pop(index, None)
        if client is None:
            return
        self.results.storm_cut += 1
        client.ours_closing = True
        if client.transport is not None and not client.transport.is_disconnected:
            client.transport.disconnect(graceful=False)
        began = time.perf_counter()
        delay = STORM_RETRY_FIRST_SECONDS
        for _ in range(STORM_ATTEMPTS):
            if await self.connect(index, last_seq=client.last_seq or 0,
                                  acks=self.results.storm_establish, started=began):
                return
            self.results.storm_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.results.storm_not_back += 1

    async def _heartbeats(self, interval: float) -> None:
        """Every connection heartbeats once per interval, spread over it (one timer)."""
        from picows import WSMsgType

        cursor = 0
        while True:
            await asyncio.sleep(TICK)
            live = list(self.clients.values())
            if not live:
                continue
            count = max(1, round(len(live) * TICK / interval))
            now = time.time()
            for _ in range(count):
                cursor = (cursor + 1) % len(live)
                client = live[cursor]
                if client.transport is None or client.transport.is_disconnected:
                    continue
                if client.hb_sent:
                    self.results.heartbeats_unanswered += 1
                client.hb_sent = now
                client.transport.send(WSMsgType.TEXT, HEARTBEAT)

    async def _status(self, pipe: multiprocessing.connection.Connection) -> None:
        while True:
            await asyncio.sleep(1.0)
            pipe.send(("status", self.spec.worker, {**self.results.counters(),
                                                     "open": len(self.clients)}))


def worker_main(spec: WorkerSpec, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of a worker process: sign tokens, say ready, run the timeline, report."""
    import uvloop

    worker = Worker(spec)
    client_process()
    pipe.send(("ready", spec.worker, None))
    kind, timeline = pipe.recv()
    if kind != "start":
        return
    try:
        uvloop.run(worker.run(timeline, pipe))
        pipe.send(("done", spec.worker, worker.results.to_dict()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        log.exception("worker %d failed", spec.worker)
        pipe.send(("error", spec.worker, f"{type(exc).__name__}: {exc}"))
