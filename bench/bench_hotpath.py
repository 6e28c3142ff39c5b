"""Micro-benchmarks of the push pod's hot path, Cython and pure-Python twin side by side.

Run: .venv/bin/python -m pytest bench/bench_hotpath.py --benchmark-enable
     (add --benchmark-group-by=func to see each part's two implementations together)

Each round feeds a captured RESP byte stream of `MESSAGES` pmessages (what Redis sends a
PSUBSCRIBEd pod, with the gateway's message JSON) to a reader, the way the event loop does
(`get_buffer`, `buffer_updated`), or calls the fan-out once per message. The watchers are real
connections of the same implementation (`connection.IMPLEMENTATIONS`) on picows transports to
a sink, so a delivery includes the connection's own write path, not the socket. Divide a
round's time by MESSAGES for the cost per message; `extra_info` carries messages/s.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from picows import WSTransport

from ordertrack import protocol, redis_layout
from ordertrack.devtools.resp import feed, order_stream
from ordertrack.push import connection, fanout, pubsub_reader
from ordertrack.push.hub import Watch

MESSAGES = 10_000
READERS = sorted(pubsub_reader.IMPLEMENTATIONS)
FANOUTS = sorted(fanout.IMPLEMENTATIONS)


RAW = {"shipments": [{"id": "00340434", "status": {
    "statusCode": "transit", "description": "The shipment is on its way"}}]}


def gateway_message(seq: int) -> bytes:
    return redis_layout.encode_message(
        "dhl", seq, "in_transit", "Newark NJ Distribution Center", "2025-10-03T14:22:00Z",
        "2025-10-04T18:00:00Z", RAW, 1759501320.25)


def resp_stream(order_ids: list[str]) -> bytes:
    """What Redis writes to a PSUBSCRIBEd client for these PUBLISHes, concatenated."""
    return order_stream((o, gateway_message(seq)) for seq, o in enumerate(order_ids, 1))


UNWATCHED = resp_stream([f"ord_{i:08x}" for i in range(MESSAGES)])
WATCHED_IDS = [f"ord_w{i % 100}" for i in range(MESSAGES)]
WATCHED = resp_stream(WATCHED_IDS)


class SinkTransport:
    """What picows' WSTransport needs of an asyncio transport, writing nowhere: no socket here
    (bench/bench_send.py measures the write syscall)."""

    class _NoSocket:
        def fileno(self) -> int:
            return -1

    def get_write_buffer_size(self) -> int:
        return 1  # "something queued": the Cython connection then writes, never send(2)s

    def write(self, data) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return self._NoSocket() if name == "socket" else default


MAX_PENDING_BYTES = 262144


_LOOP = asyncio.new_event_loop()  # picows' transport makes a future on it; it never runs


def watcher(impl: str):
    """An acked connection of the pod's own type for this implementation (the Cython fan-out
    drives the Cython `Connection` through its C methods), on a picows transport to a sink."""
    conn = connection.IMPLEMENTATIONS[impl](None, "ws_conn_bench", "u_bench", "ord_1", None,
                                            max_pending_bytes=MAX_PENDING_BYTES)
    conn.transport = WSTransport(False, SinkTransport(), logging.getLogger("bench"), _LOOP)
    conn.acked = True
    return conn


def per_second(benchmark, count: int) -> None:
    benchmark.extra_info["msgs_per_s"] = round(count / benchmark.stats.stats.min)
    benchmark.extra_info["us_per_msg"] = round(benchmark.stats.stats.min / count * 1e6, 3)


def _noop(*_args) -> None:
    return None


@pytest.mark.parametrize("impl", READERS)
def test_reader_unwatched(benchmark, impl):
    cls = pubsub_reader.IMPLEMENTATIONS[impl]
    watched = {f"ord_w{i}": Watch() for i in range(1000)}

    def run():
        reader = cls(watched, _noop)
        feed(reader, UNWATCHED)
        return reader

    reader = benchmark(run)
    assert reader.discarded == MESSAGES
    per_second(benchmark, MESSAGES)


@pytest.mark.parametrize("impl", READERS)
def test_reader_watched(benchmark, impl):
    """Reader only: every message is for a watched order, handed to a no-op callback."""
    cls = pubsub_reader.IMPLEMENTATIONS[impl]
    watched = {o: Watch() for o in set(WATCHED_IDS)}

    def run():
        reader = cls(watched, _noop)
        feed(reader, WATCHED)
        return reader

    reader = benchmark(run)
    assert reader.discarded == 0 and reader.received == MESSAGES
    per_second(benchmark, MESSAGES)


def deliver(benchmark, impl: str, stream: bytes, ids: list[str], count: int) -> None:
    cls = pubsub_reader.IMPLEMENTATIONS[impl]
    fan = fanout.IMPLEMENTATIONS[impl]

    def setup():  # not timed: 19,500 watches take as long to build as to deliver to
        watched = {}
        for o in ids:
            watched[o] = Watch()
            watched[o].conns.append(watcher(impl))
        out = fan()
        return (cls(watched, out.publish), out), {}

    def run(reader, out):
        feed(reader, stream)
        return out

    out = benchmark.pedantic(run, setup=setup, rounds=20)
    assert out.frames == count
    per_second(benchmark, count)


@pytest.mark.parametrize("impl", READERS)
def test_watched_delivery_one_watcher(benchmark, impl):
    """Reader + fan-out of the same implementation, one watcher per order (the 150K/s target)."""
    deliver(benchmark, impl, WATCHED, sorted(set(WATCHED_IDS)), MESSAGES)


FLOOD_IDS = [f"bench_order_{i}" for i in range(19_500)]
FLOOD = resp_stream(FLOOD_IDS)


@pytest.mark.parametrize("impl", READERS)
def test_watched_delivery_one_watcher_19500_orders(benchmark, impl):
    """As above, one message to each of 19,500 orders (bench.capacity's flood): every message
    meets a watch and a watcher that are cold in the cache."""
    deliver(benchmark, impl, FLOOD, FLOOD_IDS, len(FLOOD_IDS))


PAYLOADS = [gateway_message(seq) for seq in range(1, MESSAGES + 1)]


@pytest.mark.parametrize("watchers", [0, 1, 10])
@pytest.mark.parametrize("impl", FANOUTS)
def test_fanout(benchmark, impl, watchers):
    """0 watchers: decode + check + encode only (the frame encoding); 1 and 10: plus delivery."""
    cls = fanout.IMPLEMENTATIONS[impl]

    def run():
        watch = Watch()
        watch.conns.extend(watcher(impl) for _ in range(watchers))
        out = cls()
        publish = out.publish
        for payload in PAYLOADS:
            publish("ord_1", watch, payload)
        return out

    out = benchmark(run)
    assert out.frames == MESSAGES * watchers
    per_second(benchmark, MESSAGES)


def test_text_frame(benchmark):
    """Building the whole WebSocket frame once (header + payload) for a typical update."""
    frame = protocol.tracking_update(redis_layout.decode_message(PAYLOADS[0]))

    def run():
        for _ in range(MESSAGES):
            connection.text_frame(frame)

    benchmark(run)
    per_second(benchmark, MESSAGES)
