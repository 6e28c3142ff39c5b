"""The HTTP edge's limits (`ordertrack.http_edge`) as a hostile client meets them, on both
servers that run it: `ordertrack ingest` (exposed to the internet, bodies) and `ordertrack api`.

Raw sockets: an HTTP client library would not declare a body it never sends, trickle one, or
send a chunked body without end. Each test waits for the server's answer itself, with a
generous deadline (a server that waits for the body forever fails it by that deadline).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest

from ordertrack.http_edge.refusals import CODES
from ordertrack.ingest import auth
from tests.test_api import running_api
from tests.test_api_edges import Answer, read_answer
from tests.test_ingest import DHL_SECRET, FEDEX_SECRET, start_ingest

LIMIT = 65536  # the tests' INGEST_MAX_BODY_BYTES / API_MAX_BODY_BYTES
BODY_TIMEOUT = "1"
LIMITS = {"INGEST_MAX_BODY_BYTES": str(LIMIT), "INGEST_REQUEST_BODY_TIMEOUT_SECONDS": BODY_TIMEOUT,
          "INGEST_REQUEST_HEADER_TIMEOUT_SECONDS": "1"}
DEADLINE = 20.0


@pytest.fixture
def ingest(procs, tmp_path, redis_url):
    return start_ingest(procs, tmp_path, redis_url, f"sqlite:///{tmp_path}/track.db", **LIMITS)


@pytest.fixture(scope="module")
def api(redis_server, keys, tmp_path_factory):
    with running_api(redis_server, keys, tmp_path_factory.mktemp("limits"),
                     API_MAX_BODY_BYTES=str(LIMIT),
                     API_REQUEST_BODY_TIMEOUT_SECONDS=BODY_TIMEOUT) as running:
        yield running


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def post_head(path: str, *lines: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: edge.test", "Content-Type: application/json",
            "X-Request-ID: edge_1", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


@contextlib.contextmanager
def connection(port: int):
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with sock.makefile("rb") as stream:
            yield sock, stream


def assert_refused(answer: Answer, code: str) -> None:
    assert (answer.status, answer.json()["error"]) == (CODES[code].status, code), answer.body
    assert answer.json()["message"]
    assert answer.headers["x-request-id"] == "edge_1"
    assert answer.closed


def send_until_refused(sock: socket.socket, chunk: bytes, most: int) -> int:
    """Send `chunk` until the server stops taking bytes or `most` bytes went; bytes sent."""
    sent = 0
    with contextlib.suppress(OSError):  # the server closed: broken pipe or reset
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


# --- a declared body over the limit: 413 before a byte of it is read ---------------------------


@pytest.mark.parametrize("carrier", ["fedex", "ups", "dhl"])
def test_ingest_refuses_a_declared_oversized_body_at_once(ingest, carrier):
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(post_head(f"/webhooks/{carrier}", f"Content-Length: {64 * 1024 * 1024}"))
        assert_refused(read_answer(stream), "REQUEST_BODY_TOO_LARGE")


def test_ingest_stops_reading_a_chunked_body_past_the_limit(ingest):
    body = b'{"x": "' + b"a" * 200 + b'"}'
    signature = auth.fedex_signature(body, FEDEX_SECRET)  # a real signer would sign it all
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(post_head("/webhooks/fedex", "Transfer-Encoding: chunked",
                               f"fdx-signature: {signature}"))
        chunk = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
        sent = send_until_refused(sock, chunk, 64 * 1024 * 1024)
        assert_refused(read_answer(stream), "REQUEST_BODY_TOO_LARGE")
    assert sent < 64 * 1024 * 1024  # it was cut off, not read to the end


def test_a_header_credential_is_checked_before_the_body_is_read(ingest):
    # a declared body under the limit that never comes: the credential alone decides
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(post_head("/webhooks/dhl", f"Content-Length: {LIMIT}",
                               "X-Webhook-Token: wrong"))
        answer = read_answer(stream)
        assert_refused(answer, "UNAUTHORIZED")
        assert answer.headers["www-authenticate"] == 'Bearer realm="ordertrack"'
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(post_head("/webhooks/ups", f"Content-Length: {LIMIT}"))
        assert_refused(read_answer(stream), "UNAUTHORIZED")


def test_a_good_delivery_under_the_limits_is_still_answered(ingest):
    body = b'{"trackingNumber": "FXNONE"}'
    response = httpx.post(f"{ingest}/webhooks/fedex", content=body, headers={
        "fdx-signature": auth.fedex_signature(body, FEDEX_SECRET), "X-Request-ID": "ok_1"})
    assert response.status_code == 400 and response.json()["error"] == "BAD_REQUEST"
    assert response.headers["x-request-id"] == "ok_1"
    response = httpx.post(f"{ingest}/webhooks/dhl", content=b'{"shipments": []}',
                          headers={"X-Webhook-Token": DHL_SECRET})
    assert response.status_code == 200, response.text
    assert httpx.post(f"{ingest}/healthz").json()["error"] == "METHOD_NOT_ALLOWED"


# --- slow clients: 408 and closed --------------------------------------------------------------


def trickle(sock: socket.socket, stop: threading.Event, interval: float = 1.0) -> None:
    """One byte a second until the server closes or `stop` is set (a thread: the test's
    thread reads the answer meanwhile)."""
    with contextlib.suppress(OSError):
        while not stop.wait(interval):
            sock.send(b"{")


def test_ingest_cuts_off_a_body_trickled_one_byte_a_second(ingest):
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(post_head("/webhooks/dhl", "Content-Length: 40",
                               f"X-Webhook-Token: {DHL_SECRET}") + b"{")
        stop = threading.Event()
        thread = threading.Thread(target=trickle, args=(sock, stop), daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            answer = read_answer(stream)
        finally:
            stop.set()
        assert_refused(answer, "REQUEST_TIMEOUT")
        assert "body" in answer.json()["message"]
        assert time.monotonic() - started < DEADLINE


def test_ingest_times_out_a_head_never_finished(ingest):
    with connection(port_of(ingest)) as (sock, stream):
        sock.sendall(b"POST /webhooks/dhl HTTP/1.1\r\nX-Request-ID: edge_1\r\nHost: a")
        answer = read_answer(stream)
        assert_refused(answer, "REQUEST_TIMEOUT")
        assert "head" in answer.json()["message"]


# --- the API: the same edge ---------------------------------------------------------------------


def test_the_api_refuses_an_oversized_declared_body_at_once(api):
    with connection(api.port) as (sock, stream):
        sock.sendall(post_head("/api/v2/orders/ord_1/tracking",
                               f"Content-Length: {64 * 1024 * 1024}"))
        assert_refused(read_answer(stream), "REQUEST_BODY_TOO_LARGE")


def test_the_api_stops_a_chunked_body_past_the_limit(api):
    with connection(api.port) as (sock, stream):
        sock.sendall(post_head("/orders/ord_1", "Transfer-Encoding: chunked"))
        # the route reads no body: either the 405 comes first and the connection closes, or
        # the body passes the limit first: 413. Both answer and close; neither reads it all.
        chunk = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
        sent = send_until_refused(sock, chunk, 64 * 1024 * 1024)
        answer = read_answer(stream)
    assert answer.status in (405, 413) and answer.closed
    assert sent < 64 * 1024 * 1024


def test_the_api_cuts_off_a_trickled_body(api):
    with connection(api.port) as (sock, stream):
        # a route that would wait for it: none does, so the answer comes and the connection
        # closes; the trickle never holds it
        sock.sendall(post_head("/healthz", "Content-Length: 40") + b"{")
        stop = threading.Event()
        thread = threading.Thread(target=trickle, args=(sock, stop), daemon=True)
        thread.start()
        try:
            answer = read_answer(stream)
        finally:
            stop.set()
    assert answer.status in (405, 408) and answer.closed
