"""The fan-out through the real connections, as production pairs them: the Cython fan-out with
the Cython connection (its C branch: `_offer` and `write_frame` on the connection's fields) and
the pure-Python twin with the twin connection. Each connection is a real picows server
connection on a loopback socket with a real picows client at the other end; both pairs get the
same random messages and connection states, and what the clients receive (frames, close codes)
and every counter must be the same.

The connections' pod is a stand-in that records what the connections tell it (open, cleanup,
the close deadline): the pod's own rules are tested with real pods (test_push_pod.py).
"""

from __future__ import annotations

import asyncio

import orjson
import picows
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertrack import protocol
from ordertrack.push import connection, fanout
from ordertrack.push.close_scheduler import CloseScheduler
from ordertrack.push.hub import Watch
from tests.test_fanout import message

#: production's pairs: ORDERTRACK_PURE_PYTHON picks both twins, else both compiled parts
PAIRS = {name: (fanout.IMPLEMENTATIONS[name], connection.IMPLEMENTATIONS[name])
         for name in sorted(set(fanout.IMPLEMENTATIONS) & set(connection.IMPLEMENTATIONS))}
END = b'{"event":"end"}'


def test_both_pairs_are_built():
    assert set(PAIRS) == {"cython", "python"}


class StandInEvents:
    """What a connection tells of its life (push/lifecycle.py's part), recorded; its closes go
    through the real close scheduler."""

    def __init__(self, max_pending_bytes: int):
        self.max_pending_bytes = max_pending_bytes
        self.closes = CloseScheduler(asyncio.get_running_loop().call_soon)
        self.opened: list = []
        self.cleaned: list = []
        self.close_deadlines = 0

    def on_open(self, conn) -> None:
        self.opened.append(conn)

    def cleanup(self, conn) -> None:
        self.cleaned.append(conn)

    def schedule_close_deadline(self, conn) -> None:
        self.close_deadlines += 1

    def on_text(self, conn, payload: bytes) -> None:
        pass

    def on_pong(self, conn, payload: bytes) -> None:
        pass


class Client(picows.WSListener):
    """A client that records every text frame's payload and the close code."""

    def __init__(self):
        self.texts: list[bytes] = []
        self.close_code: int | None = None
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport, frame) -> None:
        if frame.msg_type == picows.WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if payload == END:
                self._finish()
            else:
                self.texts.append(payload)
        elif frame.msg_type == picows.WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            self._finish()

    def on_ws_disconnected(self, transport) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_pair(name: str, states: list[tuple], stream: list[bytes], read: bool = True) -> tuple:
    """Open one real connection per state, fan `stream` out to them, and return what happened."""
    fanout_impl, conn_impl = PAIRS[name]
    pods = [StandInEvents(budget) for *_, budget in states]
    pending: asyncio.Queue = asyncio.Queue()

    def factory(request):
        n = int(request.path.rsplit(b"/", 1)[1])
        conn = conn_impl(pods[n], f"c{n}", f"u{n}", "ord_p", None,
                         max_pending_bytes=pods[n].max_pending_bytes)
        pending.put_nowait((n, conn))
        return conn

    server = await picows.ws_create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conns: list = [None] * len(states)
    clients: list[Client] = []
    transports = []
    try:
        for n, _ in enumerate(states):
            transport, client = await picows.ws_connect(Client, f"ws://127.0.0.1:{port}/c/{n}",
                                                        enable_auto_ping=False)
            clients.append(client)
            transports.append(transport)
            index, conn = await asyncio.wait_for(pending.get(), 5)
            conns[index] = conn
        for conn, (acked, sent_seq, closing, _budget) in zip(conns, states, strict=True):
            conn.acked, conn.sent_seq = acked, sent_seq
            if closing:
                conn.close(protocol.SERVER_SHUTDOWN)
        if not read:
            for transport in transports:
                transport.underlying_transport.pause_reading()
        calls: list = []
        out = fanout_impl(on_malformed=lambda order_id, why: calls.append((order_id, why)))
        watch = Watch()
        watch.conns.extend(conns)
        counts = [out.publish("ord_p", watch, payload) for payload in stream]
        for conn in conns:
            if conn.close_reason is None:
                conn.send(END)  # the client has read everything before it
        if not read:
            for transport in transports:
                transport.underlying_transport.resume_reading()
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), 30)
        return (counts, calls, watch.seq, out.messages, out.frames, out.malformed,
                sum(out.latency_counts()),
                [(c.sent_seq, c.backlog, c.held_bytes, c.close_reason) for c in conns],
                [(client.texts, client.close_code) for client in clients],
                [(len(p.opened), p.close_deadlines) for p in pods])
    finally:
        for transport in transports:
            transport.disconnect(False)
        server.close()
        await server.wait_closed()


payloads = st.one_of(
    st.builds(lambda seq, status, pad: orjson.dumps(message(seq, status=status, location=pad,
                                                            published_at=1.0)),
              st.integers(-2, 2**53 + 2), st.sampled_from(["in_transit", "delivered", None]),
              st.sampled_from(["Newark NJ", "x" * 300, "y" * 70000])),
    st.sampled_from([b"{", b"[]", b"null", orjson.dumps(message("1"))]),
    st.binary(max_size=20),
)
#: (acked, sent_seq, closing, the pod's WS_MAX_PENDING_BYTES)
connection_states = st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.booleans(),
                                       st.sampled_from([200, 600, 1 << 20])),
                             min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=connection_states, stream=st.lists(payloads, max_size=12))
def test_both_pairs_send_the_same_frames_closes_and_counters(states, stream):
    results = {name: asyncio.run(run_pair(name, states, stream)) for name in PAIRS}
    assert results["cython"] == results["python"]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_client_that_stops_reading_is_closed_1013_by_both_pairs(name):
    """The partial send(2) and the transport's buffer behind it (`write_frame`'s slow branch):
    a client reading nothing while 20 MB of updates go out against a 256 KB budget (the
    kernel's loopback buffers hold a few MB). What it gets, once it reads again, is whole
    frames, in order, then 1013."""
    big = "z" * 60000
    stream = [orjson.dumps(message(seq, location=big, published_at=1.0)) for seq in range(1, 350)]
    (counts, _calls, _seq, _messages, frames, _malformed, _latency, conns, clients, pods) = \
        asyncio.run(run_pair(name, [(True, 0, False, 256 << 10)], stream, read=False))
    ((_sent_seq, _backlog, _held, close_reason),) = conns
    ((texts, close_code),) = clients
    assert close_reason is protocol.SLOW_CONSUMER and close_code == 1013
    assert pods == [(1, 1)]  # opened once, its close deadline set once
    assert 0 < frames < len(stream) and frames == sum(counts)
    # every frame the client got is a whole update, in order, from the first on
    assert [orjson.loads(text)["data"]["seq"] for text in texts] == list(range(1, len(texts) + 1))
