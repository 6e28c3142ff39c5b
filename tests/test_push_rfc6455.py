"""RFC 6455 at the edges of the push pod: a raw TCP client writes the bytes no polite library
writes, against a real `ordertrack serve` and a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from ordertrack.push.wslog import LINES_PER_WINDOW, WINDOW_SECONDS
from tests.support import wait_for_async
from tests.support.pods import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    RawWebSocket,
    close_payload,
    open_raw,
    upgrade_headers,
)

JSON_CT = "application/json; charset=utf-8"
PATH = "/ws/orders/ord_rfc/track"


def reasons_of(pod, user: str) -> list[str]:
    return [d["reason"] for d in pod.disconnects() if d["user_id"] == user]


async def admitted(pod, keys, user: str) -> RawWebSocket:
    raw = await open_raw(pod, keys.token(user, "ord_rfc"), "ord_rfc")
    assert (await raw.recv_json())["event"] == "connection_ack"
    return raw


# --- the opening handshake (4.2.1, 4.2.2, 4.4) ------------------------------------------------------
async def test_an_unsupported_version_gets_426_naming_version_13(pod, keys):
    raw = await RawWebSocket.open(pod, PATH, upgrade_headers(
        keys.token("v1", "ord_rfc"), **{"Sec-WebSocket-Version": "8", "X-Request-ID": "req_v8"}))
    assert raw.status == 426
    assert raw.headers["sec-websocket-version"] == "13"
    assert raw.headers["content-type"] == JSON_CT
    assert raw.headers["x-request-id"] == "req_v8"
    assert raw.json()["error"] == "UPGRADE_REQUIRED"


async def test_firefox_connection_header_is_accepted(pod, keys):
    """Firefox sends `Connection: keep-alive, Upgrade`; 4.2.1 only asks that it include Upgrade."""
    raw = await open_raw(pod, keys.token("ff", "ord_rfc"), "ord_rfc",
                         Connection="keep-alive, Upgrade")
    assert raw.headers["sec-websocket-protocol"] == "vantage-tracking-v1"
    assert (await raw.recv_json())["event"] == "connection_ack"
    await raw.send(OP_TEXT, b'{"event":"heartbeat"}')
    assert (await raw.recv_json())["event"] == "heartbeat_ack"


@pytest.mark.parametrize("extra", [{"Connection": "keep-alive"}, {"Sec-WebSocket-Key": "short"}])
async def test_a_malformed_handshake_is_a_json_400(pod, keys, extra):
    raw = await RawWebSocket.open(pod, PATH, upgrade_headers(keys.token("h", "ord_rfc"), **extra))
    assert raw.status == 400
    assert raw.headers["content-type"] == JSON_CT
    assert raw.json()["error"] == "BAD_REQUEST"


# --- frames (5.2, 5.4, 8.1) ----------------------------------------------------------------------
@pytest.mark.parametrize("opcode,payload,kwargs,code,reason", [
    (OP_TEXT, b'{"event":"heartbeat"}', {"rsv": 4}, 1002, "protocol_error"),  # RSV1, no extension
    (OP_TEXT, b'{"event":"heartbeat"}', {"rsv": 1}, 1002, "protocol_error"),  # RSV3
    (OP_CONT, b"stray", {}, 1002, "protocol_error"),
    (OP_TEXT, b'{"event":"\xff\xfe"}', {}, 1007, "invalid_payload"),
    (OP_TEXT, b'{"event":"heartbeat"}', {"masked": False}, 1002, "protocol_error"),  # picows' own
    (OP_BINARY, b"\x00\x01", {}, 1003, "unsupported_data"),
])
async def test_frames_that_break_the_protocol_close_with_their_code(pod, keys, opcode, payload,
                                                                     kwargs, code, reason):
    user = f"f{opcode}{code}{sorted(kwargs.items())}"
    raw = await admitted(pod, keys, user)
    await raw.send(opcode, payload, **kwargs)
    assert await raw.close_code() == code
    await wait_for_async(lambda: reasons_of(pod, user) == [reason], 5, what=f"{reason} logged")


# --- the closing handshake (5.5.1, 7.4) ----------------------------------------------------------
@pytest.mark.parametrize("sent", [1004, 1005, 1006, 1015, 2000, 5000, 0])
async def test_close_codes_no_peer_may_send_are_answered_with_1002(pod, keys, sent):
    user = f"c{sent}"
    raw = await admitted(pod, keys, user)
    await raw.send(OP_CLOSE, close_payload(sent))
    assert await raw.close_code() == 1002
    await wait_for_async(lambda: reasons_of(pod, user) == ["protocol_error"], 5, what="protocol_error logged")


@pytest.mark.parametrize("sent", [1000, 1001, 1011, 3000, 4999])
async def test_valid_close_codes_are_echoed(pod, keys, sent):
    user = f"e{sent}"
    raw = await admitted(pod, keys, user)
    await raw.send(OP_CLOSE, close_payload(sent, b"bye"))
    assert await raw.close_code() == sent
    await wait_for_async(lambda: reasons_of(pod, user) == ["client_close"], 5, what="client_close logged")


async def test_an_empty_close_is_answered_with_an_empty_close_or_1000(pod, keys):
    raw = await admitted(pod, keys, "empty")
    await raw.send(OP_CLOSE, b"")
    assert await raw.close_code() in (None, 1000)
    await wait_for_async(lambda: reasons_of(pod, "empty") == ["client_close"], 5, what="client_close logged")


# --- the log --------------------------------------------------------------------------------------
async def test_protocol_errors_are_rate_limited_info_lines_not_errors(pod, keys):
    """A client must not be able to flood the log (or page someone) with its own mistakes. The
    window's rule itself is unit-tested with a clock of the test's own (test_protocol_rules);
    here the bound is counted over however many windows this run took, so load cannot fail it."""
    started = time.monotonic()
    conns = [await admitted(pod, keys, f"flood{i}") for i in range(3 * LINES_PER_WINDOW)]
    for raw in conns:  # each trips picows' parser: unmasked, then a bad close code
        await raw.send(OP_TEXT, b"{}", masked=False)
    await asyncio.gather(*(raw.close_code() for raw in conns))
    more = [await admitted(pod, keys, f"flood_b{i}") for i in range(LINES_PER_WINDOW)]
    for raw in more:
        await raw.send(OP_CLOSE, close_payload(1005))
    await asyncio.gather(*(raw.close_code() for raw in more))
    await wait_for_async(lambda: len(pod.disconnects()) == 4 * LINES_PER_WINDOW, 10, what="all disconnects")
    windows = int((time.monotonic() - started) // WINDOW_SECONDS) + 1

    lines = pod.log_lines()
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    assert not any("exc" in line for line in lines)
    protocol_lines = [line for line in lines if line["logger"] == "ordertrack.push.protocol"]
    assert 1 <= len(protocol_lines) <= LINES_PER_WINDOW * windows
    assert len(protocol_lines) + sum(line["suppressed_before"] for line in protocol_lines) \
        <= 4 * LINES_PER_WINDOW
    assert all(line["level"] == "info" for line in protocol_lines)
    assert {d["reason"] for d in pod.disconnects()} == {"protocol_error"}
