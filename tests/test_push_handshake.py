"""The pod's request-head guard: every head picows would refuse gets the contract's JSON answer.

The rules first, without sockets; then a raw TCP client against a real `ordertrack serve` and a
real Redis, writing the heads no polite client writes.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from ordertrack.push import handshake
from tests.support import ProcessGroup
from tests.support.pods import (
    OP_TEXT,
    RawWebSocket,
    encode_frame,
    request_bytes,
    start_pod,
    upgrade_headers,
)

JSON_CT = "application/json; charset=utf-8"
PATH = "/ws/orders/ord_guard/track"
#: a string the client sends inside every broken part; no answer may carry it
MARK = "zqxmark"


def head(*lines: bytes, request_line: bytes = b"GET " + PATH.encode() + b" HTTP/1.1") -> bytes:
    return b"\r\n".join((request_line, b"Host: 127.0.0.1", *lines)) + b"\r\n\r\n"


M = MARK.encode()
#: (what is wrong, the head, status, code)
BROKEN = [
    ("control byte in a value", head(b"X-Note: a\x01" + M), 400, "BAD_REQUEST"),
    ("bad header name", head(b"X " + M + b": 1"), 400, "BAD_REQUEST"),
    ("line without a colon", head(b"X-" + M), 400, "BAD_REQUEST"),
    ("folded header", head(b"X-Note: a", b"  " + M), 400, "BAD_REQUEST"),
    ("Transfer-Encoding", head(b"Transfer-Encoding: chunked" + M), 400, "BAD_REQUEST"),
    ("a body", head(b"Content-Length: 5" + M), 400, "BAD_REQUEST"),
    ("malformed request line", head(request_line=b"GET /" + M + b" x HTTP/1.1"), 400,
     "BAD_REQUEST"),
    ("HTTP/1.0", head(request_line=b"GET /" + M + b" HTTP/1.0"), 400, "BAD_REQUEST"),
    ("POST", head(request_line=b"POST /" + M + b" HTTP/1.1"), 400, "BAD_REQUEST"),
    ("control byte in Authorization", head(b"Authorization: Bearer a\x01" + M), 401,
     "UNAUTHORIZED"),
    ("too many headers", head(*(b"X-%d: %s" % (n, M) for n in range(130))), 431,
     "REQUEST_HEADER_TOO_LARGE"),
    ("20 KB head", head(b"X-Pad: " + M * 3000), 431, "REQUEST_HEADER_TOO_LARGE"),
]


# --- the rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("what,raw,status,code", BROKEN, ids=[case[0] for case in BROKEN])
def test_each_broken_head_gets_its_own_refusal_naming_no_client_bytes(what, raw, status, code):
    end, refusal = handshake.check_head(raw)
    assert end == len(raw) - 4
    assert (refusal.status, refusal.code) == (status, code)
    assert MARK not in refusal.message and "\x01" not in refusal.message
    # each rule of picows's parser has its own wording, not the catch-all
    assert handshake._UNPARSABLE not in refusal.message


def test_a_401_for_a_broken_authorization_header_says_how_to_authenticate():
    _, refusal = handshake.check_head(head(b"Authorization: Bearer \x7f"))
    assert refusal.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="ordertrack"') in refusal.headers


def test_an_unknown_parser_error_is_a_400_with_the_catch_all_wording():
    refusal = handshake.head_refusal(head(), "Something new: b'" + MARK + "'")
    assert (refusal.status, refusal.code) == (400, "BAD_REQUEST")
    assert MARK not in refusal.message


def test_a_head_is_waited_for_until_it_ends_or_reaches_16_kib():
    assert handshake.check_head(b"GET / HTTP/1.1\r\nHost: a\r\n") == (-1, None)
    assert handshake.check_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 16_400) == (
        -1, handshake.HEAD_TOO_LARGE)
    good = request_bytes(PATH, upgrade_headers("t"))
    assert handshake.check_head(good + b"\x81\x80tail") == (len(good) - 4, None)


@pytest.mark.parametrize("value,expected", [
    (b"req_ok-1", "req_ok-1"), (b"a\x01b", None), (b"caf\xe9", None), (b"r" * 200, None)])
def test_the_request_id_of_a_broken_head_is_echoed_only_when_clean(value, expected):
    rid = handshake.head_request_id(head(b"X-Request-ID: " + value, b"Bad Name: 1"))
    if expected:
        assert rid == expected
    else:
        assert rid.startswith("req_") and len(rid) == 20


# --- against a real pod ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pod(tmp_path_factory, redis_server, keys):
    procs = ProcessGroup()
    try:
        yield start_pod(procs, tmp_path_factory.mktemp("guard"), redis_server.url, keys)
    finally:
        procs.stop_all()


async def read_to_eof(raw: RawWebSocket) -> bytes:
    return await asyncio.wait_for(raw.reader.read(), 5)


#: one broken head of each status: each rule is the unit tests' above; the pod's part is to answer
#: any refusal in JSON, echo the request id and close
ONE_PER_STATUS = list({case[2]: case for case in BROKEN}.values())


@pytest.mark.parametrize("what,raw,status,code", ONE_PER_STATUS,
                         ids=[case[0] for case in ONE_PER_STATUS])
async def test_the_pod_answers_a_broken_head_in_json_and_closes(pod, what, raw, status, code):
    raw = raw.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\nX-Request-ID: req_guard-1", 1)
    answer = await RawWebSocket.open_bytes(pod, [raw])
    assert answer.status == status
    assert answer.headers["content-type"] == JSON_CT
    assert answer.headers["x-request-id"] == "req_guard-1"
    assert answer.headers["connection"] == "close"
    body = answer.json()
    assert set(body) == {"error", "message"} and body["error"] == code
    assert MARK.encode() not in answer.raw and b"\x01" not in answer.raw
    assert await read_to_eof(answer) == b""  # and the pod closed the connection


async def test_a_head_that_never_ends_is_refused_at_16_kib(pod):
    answer = await RawWebSocket.open_bytes(pod, [b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 17_000])
    assert answer.status == 431
    assert answer.json()["error"] == "REQUEST_HEADER_TOO_LARGE"
    assert answer.headers["x-request-id"].startswith("req_")


async def test_a_dirty_request_id_in_a_broken_head_is_replaced(pod):
    answer = await RawWebSocket.open_bytes(pod, [head(b"X-Request-ID: a\x01" + M)])
    assert answer.status == 400
    assert answer.headers["x-request-id"].startswith("req_")
    assert M not in answer.raw


async def test_a_head_sent_in_pieces_is_upgraded(pod, keys):
    good = request_bytes(PATH, upgrade_headers(keys.token("pieces", "ord_guard")))
    cut = good.index(b"\r\n\r\n") + 2  # the blank line arrives on its own
    raw = await RawWebSocket.open_bytes(pod, [good[:20], good[20:cut], good[cut:]])
    assert raw.status == 101
    assert raw.headers["sec-websocket-protocol"] == "vantage-tracking-v1"
    assert (await raw.recv_json())["event"] == "connection_ack"
    await raw.send(OP_TEXT, b'{"event":"heartbeat"}')
    assert (await raw.recv_json())["event"] == "heartbeat_ack"


async def test_a_first_frame_pipelined_right_after_the_head_reaches_the_connection(pod, keys):
    good = request_bytes(PATH, upgrade_headers(keys.token("pipelined", "ord_guard")))
    frames = b"".join(encode_frame(OP_TEXT, b'{"event":"heartbeat"}') for _ in range(300))
    raw = await RawWebSocket.open_bytes(pod, [good + frames])  # one write: head and 300 frames
    assert raw.status == 101
    events = [(await raw.recv_json())["event"] for _ in range(301)]
    assert sorted(set(events)) == ["connection_ack", "heartbeat_ack"]
    assert events.count("heartbeat_ack") == 300


async def test_health_probes_still_answer_through_the_guard(pod):
    answer = await RawWebSocket.open_bytes(pod, [request_bytes("/healthz", {})])
    assert answer.status == 200 and answer.json() == {"status": "ok"}


async def test_a_head_not_finished_within_the_handshake_timeout_is_closed(pod):
    reader, writer = await asyncio.open_connection("127.0.0.1", pod.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    # the pod's handshake timeout is 5 s: closed then, with nothing said
    assert await asyncio.wait_for(reader.read(), 15) == b""
    writer.close()


def test_no_refusal_logged_an_error(pod):
    lines = [json.loads(line) for line in pod.log.read_text().splitlines() if line.startswith("{")]
    assert not any(line.get("level") == "error" for line in lines), lines
    assert "Traceback" not in pod.log.read_text()
