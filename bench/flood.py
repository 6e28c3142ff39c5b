"""A PUBLISH flood that keeps a pod busy: prebuilt RESP on one raw socket, paced by Redis.

The watched-delivery figure (bench/capacity.py) is messages per pod CPU second with the pod
at 100 % of a core, so the publisher must outrun the pod. redis-py's pipeline could not: it
packs each command in Python (~10 us per PUBLISH with the message's JSON), on the same 2 cores.
Here every PUBLISH of the flood is built before it starts (`commands`: the message by
`redis_layout.encode_message`, only `seq` changing) and written in 256 KB slices to one socket
while a thread drains Redis's replies.

Pacing: Redis holds what a subscriber has not read yet in that client's output buffer and
closes the subscription at `client-output-buffer-limit pubsub` (32 MB by default). The flood
reads the pod's `omem` (`CLIENT LIST TYPE pubsub`) between slices and holds back while it is
above `HIGH_WATER_BYTES`, so the pod always has a backlog to read and never loses its
subscription.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from bench.lib import bench_location
from ordertrack import redis_layout

SLICE_BYTES = 256 << 10
#: Redis's buffer for the pod is kept between these (the pod's own socket buffer holds 4 MB more)
HIGH_WATER_BYTES = 8 << 20
LOW_WATER_BYTES = 2 << 20
_SEQ_MARK = 987654321987654  # a seq no real one equals: where the template takes the seq


def _publish(channel: bytes, payload: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(payload), payload)


def commands(orders: list[str], rounds: int, base_seq: int, sent_at: float) -> list[bytes]:
    """`rounds` PUBLISHes per order, round-robin (round r carries seq base_seq + r), as RESP
    slices of about SLICE_BYTES."""
    template = redis_layout.encode_message(
        "dhl", _SEQ_MARK, "in_transit", bench_location(sent_at), "2026-12-01T00:00:00+00:00",
        "2026-12-24", {"bench": True}, sent_at)
    head, tail = template.split(b"%d" % _SEQ_MARK)
    channels = [redis_layout.channel(order).encode() for order in orders]
    slices: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for r in range(rounds):
        payload = b"%s%d%s" % (head, base_seq + r, tail)
        for channel in channels:
            command = _publish(channel, payload)
            pending.append(command)
            size += len(command)
            if size >= SLICE_BYTES:
                slices.append(b"".join(pending))
                pending, size = [], 0
    if pending:
        slices.append(b"".join(pending))
    return slices


@dataclass
class FloodResult:
    sent: int
    seconds: float          # first byte written -> Redis has answered every PUBLISH
    held_back_seconds: float  # waiting for the pod to read Redis's buffer down
    max_omem_bytes: int


class _Replies(threading.Thread):
    """Counts Redis's replies (`:1\\r\\n` each) on the flood socket."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True, name="flood-replies")
        self.sock = sock
        self.count = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                self.count += data.count(b"\n")
        except OSError:
            return
        finally:
            self.done.set()


def _omem(control) -> int:
    """Output-buffer bytes of the pubsub client with the most (the pod's subscription)."""
    clients = control.client_list(_type="pubsub")
    return max((int(c.get("omem", 0)) for c in clients), default=0)


def flood(redis_url: str, slices: list[bytes], total: int, timeout: float = 120.0) -> FloodResult:
    """Write the `total` PUBLISHes of `slices` (`commands`) as fast as the pod reads them;
    returns once Redis has answered every one."""
    import redis

    url = urlparse(redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    control = redis.Redis.from_url(redis_url)
    replies = _Replies(sock)
    replies.start()
    held = 0.0
    high = 0
    started = time.perf_counter()
    try:
        for n, chunk in enumerate(slices):
            if n % 8 == 0:
                omem = _omem(control)
                high = max(high, omem)
                if omem > HIGH_WATER_BYTES:
                    wait = time.perf_counter()
                    while omem > LOW_WATER_BYTES:
                        time.sleep(0.002)
                        omem = _omem(control)
                    held += time.perf_counter() - wait
            sock.sendall(chunk)
        deadline = time.perf_counter() + timeout
        while replies.count < total and not replies.done.is_set():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"flood: {replies.count} of {total} PUBLISHes answered")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
    finally:
        control.close()
        sock.close()
    return FloodResult(total, seconds, held, high)
