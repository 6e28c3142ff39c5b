"""The pod's pub/sub reader, Cython and pure-Python twin alike, against a real redis-server.

Bytes are fed the way the event loop feeds a BufferedProtocol (`get_buffer` then
`buffer_updated`) for the parsing rules; `connect()` talks to a real Redis for the rest.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import hiredis
import pytest
import redis
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertrack import malformed, redis_connect, redis_layout
from ordertrack.devtools.resp import confirmation, feed, message, pmessage
from ordertrack.push import pubsub_reader
from ordertrack.push.hub import Watch
from tests.support import REPO

IMPLS = sorted(pubsub_reader.IMPLEMENTATIONS)


@pytest.fixture(params=IMPLS)
def impl(request):
    return pubsub_reader.IMPLEMENTATIONS[request.param]


class Calls:
    """Records every callback of a reader, in order."""

    def __init__(self):
        self.log: list[tuple] = []

    def kwargs(self) -> dict:
        return {
            "on_update": lambda order_id, watch, payload: self.log.append(("update", order_id, payload)),
            "on_control": lambda payload: self.log.append(("control", payload)),
            "on_live": lambda: self.log.append(("live",)),
            "on_malformed": lambda order_id, why: self.log.append(("malformed", order_id, why)),
        }

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.log if c[0] == kind]


def order(order_id: str) -> bytes:
    return redis_layout.channel(order_id).encode()


def test_the_extension_is_built_and_chosen_by_default():
    assert set(IMPLS) == {"cython", "python"}
    assert pubsub_reader.IMPLEMENTATION == "cython"


def test_the_environment_variable_selects_the_twin():
    env = dict(os.environ, ORDERTRACK_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", "from ordertrack.push import pubsub_reader, fanout;"
         "print(pubsub_reader.IMPLEMENTATION, fanout.IMPLEMENTATION)"],
        env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", "python"]


def test_only_watched_orders_go_on_the_rest_is_counted(impl):
    calls = Calls()
    watch = Watch()
    reader = impl({"ord_w": watch}, subscriptions=2, **calls.kwargs())
    stream = (confirmation(b"psubscribe", redis_layout.CHANNEL_PATTERN.encode(), 1)
              + confirmation(b"subscribe", redis_layout.CONTROL_ALL.encode(), 2)
              + pmessage(order("ord_other"), b'{"seq": 1}')
              + pmessage(order("ord_w"), b'{"seq": 2}')
              + message(redis_layout.CONTROL_ALL.encode(), redis_layout.encode_flag_changed())
              + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    feed(reader, stream)
    assert calls.log == [("live",), ("update", "ord_w", b'{"seq": 2}'),
                         ("control", b'{"op":"flag"}')]
    assert (reader.received, reader.discarded, reader.malformed) == (2, 1, 0)
    assert reader.live


@pytest.mark.parametrize(("frame", "reason"), [
    (pmessage(redis_layout.CHANNEL_PREFIX.encode(), b"{}"), malformed.EMPTY_ORDER_ID),
    (pmessage(redis_layout.CHANNEL_PREFIX.encode() + b"\xff\xfe", b"{}"), malformed.BAD_ORDER_ID),
    (pmessage(b"elsewhere:ord_w", b"{}"), malformed.UNEXPECTED_REPLY),
    (pmessage(order("ord_w"), b"x" * (10 << 20)), malformed.PAYLOAD_TOO_LARGE),
    (b"*1\r\n:5\r\n", malformed.UNEXPECTED_REPLY),
    (b"*0\r\n", malformed.UNEXPECTED_REPLY),
    (b"*4\r\n$8\r\npmessage\r\n:1\r\n:2\r\n:3\r\n", malformed.UNEXPECTED_REPLY),
], ids=["empty", "not-utf8", "foreign-channel", "10MB", "odd-array", "empty-array", "ints"])
def test_bad_messages_are_counted_and_the_others_keep_flowing(impl, frame, reason):
    calls = Calls()
    reader = impl({"ord_w": Watch()}, **calls.kwargs())
    feed(reader, frame + pmessage(order("ord_w"), b'{"seq": 3}'))
    assert calls.log[0][0] == "malformed" and calls.log[0][2] == reason
    assert calls.log[1:] == [("update", "ord_w", b'{"seq": 3}')]
    assert reader.malformed == 1


def test_a_handler_that_raises_loses_that_message_only(impl, caplog):
    calls = Calls()
    reader = impl({"ord_w": Watch(), "ord_x": Watch()}, **calls.kwargs())

    def handler(order_id, watch, payload):
        if payload == b"boom":
            raise RuntimeError("a bug in the fan-out")
        calls.log.append(("update", order_id, payload))

    reader.on_update = handler
    with caplog.at_level("ERROR", logger="ordertrack.push.pubsub_reader"):
        feed(reader, pmessage(order("ord_w"), b"boom") + pmessage(order("ord_x"), b"next"))
    assert calls.log == [("update", "ord_x", b"next")]
    assert reader.error is None and reader.malformed == 0
    (record,) = caplog.records
    assert "ord_w" in record.getMessage() and record.exc_info[0] is RuntimeError


def test_not_resp_stops_the_reader_and_counts_once(impl):
    calls = Calls()
    reader = impl({"ord_w": Watch()}, **calls.kwargs())
    feed(reader, pmessage(order("ord_w"), b"1") + b"hello there\r\n" + pmessage(order("ord_w"), b"2"))
    assert calls.log == [("update", "ord_w", b"1"), ("malformed", None, malformed.NOT_RESP)]
    assert isinstance(reader.error, hiredis.ProtocolError)
    feed(reader, pmessage(order("ord_w"), b"3"))
    assert len(calls.log) == 2


def test_a_connection_lost_mid_message_leaves_nothing_half_parsed(impl):
    calls = Calls()
    loop = asyncio.new_event_loop()
    try:
        closed = loop.create_future()
        first = impl({"ord_w": Watch()}, closed=closed, **calls.kwargs())
        whole = pmessage(order("ord_w"), b'{"seq": 9}')
        feed(first, whole[:20])
        first.connection_lost(ConnectionResetError("redis went away"))
        assert isinstance(closed.result(), ConnectionResetError)
        feed(first, whole[20:])  # late bytes of the dead connection are ignored
        assert calls.log == [] and not first.live
    finally:
        loop.close()
    second = impl({"ord_w": Watch()}, **calls.kwargs())  # the next connection's reader
    feed(second, whole)
    assert calls.log == [("update", "ord_w", b'{"seq": 9}')]


# --- both implementations, the same random byte stream -----------------------------------------
items = st.one_of(
    st.builds(lambda o, p: pmessage(order(o), p),
              st.sampled_from(["ord_a", "ord_b", "ord_c", "", "ñ"]), st.binary(max_size=30)),
    st.builds(lambda c, p: pmessage(c, p), st.binary(max_size=20), st.binary(max_size=5)),
    st.builds(lambda p: message(redis_layout.control("pod").encode(), p), st.binary(max_size=20)),
    st.sampled_from([confirmation(b"psubscribe", redis_layout.CHANNEL_PATTERN.encode(), 1),
                     confirmation(b"subscribe", redis_layout.control("pod").encode(), 2),
                     b"+OK\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", b":7\r\n", b"*0\r\n",
                     b"-ERR oops\r\n", b"garbage\r\n"]),
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(items, max_size=30), data=st.data())
def test_both_implementations_see_the_same_stream_the_same_way(parts, data):
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    watched = {"ord_a": Watch(), "ñ": Watch()}
    results = []
    for name in IMPLS:
        calls = Calls()
        reader = pubsub_reader.IMPLEMENTATIONS[name](watched, subscriptions=2,
                                                     buffer_size=16, **calls.kwargs())
        for chunk in chunks:
            feed(reader, chunk)
        results.append((calls.log, reader.received, reader.discarded, reader.malformed,
                        reader.live, type(reader.error)))
    assert results[0] == results[1]


# --- against a real redis-server ---------------------------------------------------------------
async def address_of(url: str):
    """Where the reader connects for `url`, as the broker asks before every connect."""
    return await redis_connect.subscription_address(redis_connect.parse_redis_url(url))


async def subscribed(url: str, impl, calls: Calls, watched: dict, control=(redis_layout.CONTROL_ALL,)):
    live = asyncio.get_running_loop().create_future()
    kwargs = calls.kwargs()
    on_live = kwargs.pop("on_live")

    def went_live():
        on_live()
        live.set_result(True)

    reader = await pubsub_reader.connect(await address_of(url), watched, control_channels=list(control),
                                         on_live=went_live, impl=impl, **kwargs)
    await asyncio.wait_for(live, 5)
    return reader


async def until(predicate, timeout=10.0):
    """Poll `predicate` (a reader's counters have no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_real_redis_watched_unwatched_control_and_malformed(impl, redis_url):
    async def main():
        calls = Calls()
        reader = await subscribed(redis_url, impl, calls, {"ord_w": Watch()})
        client = redis.asyncio.Redis.from_url(redis_url)
        await client.publish(redis_layout.channel("ord_other"), b'{"seq": 1}')
        await client.publish(redis_layout.channel(""), b'{"seq": 1}')
        await client.publish(redis_layout.channel("ord_w"), b'{"seq": 2}')
        await client.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
        await until(lambda: len(calls.log) >= 4)
        assert calls.log == [("live",), ("malformed", None, malformed.EMPTY_ORDER_ID),
                             ("update", "ord_w", b'{"seq": 2}'), ("control", b'{"op":"flag"}')]
        assert (reader.received, reader.discarded, reader.malformed) == (3, 1, 1)
        sock = reader.transport.get_extra_info("socket")
        assert sock.getsockopt(pubsub_reader.socket.SOL_SOCKET, pubsub_reader.socket.SO_KEEPALIVE)
        reader.transport.close()
        assert await asyncio.wait_for(reader.closed, 5) is None
        await client.aclose()

    uvloop.run(main())


def test_real_redis_auth_and_select_from_the_url(impl, own_redis):
    admin = redis.Redis(port=own_redis.port)
    admin.config_set("requirepass", "s3cret")
    admin.close()
    base = f"redis://:s3cret@127.0.0.1:{own_redis.port}"

    async def main():
        calls = Calls()
        reader = await subscribed(base + "/3", impl, calls, {"ord_w": Watch()}, control=())
        client = redis.asyncio.Redis.from_url(base + "/3")
        await client.publish(redis_layout.channel("ord_w"), b"x")
        await until(lambda: calls.of("update"))
        await client.aclose()
        reader.transport.close()

        refused = Calls()
        wrong = await pubsub_reader.connect(await address_of(f"redis://:wrong@127.0.0.1:{own_redis.port}/0"),
                                            {}, impl=impl, **refused.kwargs())
        error = await asyncio.wait_for(wrong.closed, 5)
        assert isinstance(error, hiredis.ReplyError) and "WRONGPASS" in str(error)
        assert not wrong.live and refused.log == []

    uvloop.run(main())


def test_a_server_speaking_garbage_closes_the_connection_counted_malformed(impl):
    async def main():
        async def garbage(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            await reader.read(100)
            writer.close()

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        calls = Calls()
        reader = await pubsub_reader.connect(await address_of(f"redis://127.0.0.1:{port}/0"), {}, impl=impl,
                                             **calls.kwargs())
        error = await asyncio.wait_for(reader.closed, 5)
        assert isinstance(error, hiredis.ProtocolError)
        assert calls.log == [("malformed", None, malformed.NOT_RESP)]
        server.close()

    uvloop.run(main())


def test_a_burst_is_drained_and_the_subscription_survives(impl, redis_url):
    count = 50_000

    async def main():
        calls = Calls()
        got = []
        reader = await subscribed(redis_url, impl, calls, {"ord_w": Watch()})
        reader.on_update = lambda order_id, watch, payload: got.append(payload)
        client = redis.Redis.from_url(redis_url)
        loop = asyncio.get_running_loop()

        def burst():
            pipe = client.pipeline(transaction=False)
            for i in range(count):
                pipe.publish(redis_layout.channel("ord_w" if i % 10 == 0 else f"ord_{i}"), b'{"seq":%d}' % i)
            pipe.execute()

        await loop.run_in_executor(None, burst)
        await until(lambda: reader.received == count, timeout=30)
        assert reader.discarded == count - count // 10 and len(got) == count // 10
        assert not reader.closed.done()
        client.close()
        reader.transport.close()

    uvloop.run(main())
