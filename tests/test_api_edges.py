"""The REST API's edges as a hostile or broken client meets them: oversized and never-finished
request heads, bytes a header may not hold, and start-up on a busy port or without its store.

The rules (`ordertrack.http_edge`, shared with ingest) are tested as pure functions; the rest talks to a real
`ordertrack api` process over raw sockets, since an HTTP client library would refuse to send
most of these requests.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys

import orjson
import pytest

from ordertrack.http_edge.refusals import refusal_bytes
from ordertrack.http_edge.request_id import request_id
from ordertrack.protocol import head_fields, parse_error_refusal
from tests.support import REPO, free_port
from tests.test_api import JSON_TYPE, add_order, running_api

HEAD_TIMEOUT = "0.5"


@pytest.fixture(scope="module")
def api(redis_server, keys, tmp_path_factory):
    with running_api(redis_server, keys, tmp_path_factory.mktemp("edges"),
                     API_REQUEST_HEADER_TIMEOUT_SECONDS=HEAD_TIMEOUT) as running:
        yield running


class Answer:
    """One HTTP answer read off a raw socket, and whether the server then closed."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, closed: bool):
        self.status, self.headers, self.body, self.closed = status, headers, body, closed

    def json(self) -> dict:
        assert self.headers["content-type"] == JSON_TYPE
        return orjson.loads(self.body)


def read_answer(stream, expect_close: bool = True) -> Answer:
    """The next answer on `stream` (a socket's binary file); with `expect_close`, also
    reads on to see whether the server closed the connection after it."""
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers["content-length"]))
    closed = False
    if expect_close:
        try:
            closed = stream.read(1) == b""
        except ConnectionResetError:
            closed = True
    return Answer(status, headers, body, closed)


def exchange(api, data: bytes, timeout: float = 10.0) -> Answer:
    """Send `data` (which need not be a whole request) on a new connection; read the answer."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        with sock.makefile("rb") as stream:
            return read_answer(stream)


def get(path: str, *header_lines: bytes) -> bytes:
    head = [f"GET {path} HTTP/1.1".encode(), b"Host: api.test", b"Connection: close",
            *header_lines]
    return b"\r\n".join(head) + b"\r\n\r\n"


def assert_refusal(answer: Answer, status: int, code: str) -> dict:
    assert answer.status == status, answer.body
    body = answer.json()
    assert body["error"] == code and body["message"]
    assert re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", answer.headers["x-request-id"])
    assert answer.closed
    return body


# --- the rules ---------------------------------------------------------------------------------


def test_request_id_is_echoed_only_when_clean():
    assert request_id([(b"x-request-id", b"req_track_poll_001")]) == "req_track_poll_001"
    for bad in (b"\xff", b"a b", b"", b"x" * 129, b"id\x01"):
        replaced = request_id([(b"host", b"a"), (b"x-request-id", bad)])
        assert replaced.startswith("req_") and len(replaced) == 20, bad
    assert request_id([]) != request_id([])


def test_a_parse_error_in_the_credentials_is_a_401_any_other_a_400():
    fields = head_fields(b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\x01b\r\n"
                         b"X-Request-ID: r_1\r\nX-Cut")
    assert fields == [(b"host", b"a"), (b"authorization", b"Bearer a\x01b"),
                      (b"x-request-id", b"r_1")]
    assert parse_error_refusal(fields, "Invalid header value char")[:2] == (401, "UNAUTHORIZED")
    assert request_id(fields) == "r_1"
    fields = head_fields(b"GET /x HTTP/1.1\r\nAuthorization: Bearer ok\r\nX-Request-ID: a\x01b\r\n")
    status, code, message = parse_error_refusal(fields, "Invalid header value char")
    assert (status, code) == (400, "BAD_REQUEST")
    assert message == "Malformed HTTP request: invalid header value char"
    assert request_id(fields).startswith("req_")


def test_refusal_bytes_are_a_whole_json_answer_that_closes():
    raw = refusal_bytes(431, "REQUEST_HEADER_TOO_LARGE", "too big", "req_1",
                        [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")])
    answer = read_answer(io.BytesIO(raw))
    assert raw.endswith(answer.body) and answer.closed
    assert (answer.status, answer.headers["x-request-id"]) == (431, "req_1")
    assert answer.headers["connection"] == "close"
    assert answer.json() == {"error": "REQUEST_HEADER_TOO_LARGE", "message": "too big"}


# --- head size ---------------------------------------------------------------------------------


def test_an_oversized_header_gets_a_json_431_before_it_is_finished(api):
    partial = b"GET /healthz HTTP/1.1\r\nHost: api.test\r\nX-Request-ID: big_1\r\nX-Big: " + \
        b"a" * 20_000  # never finished: the server must not wait for the rest
    body = assert_refusal(exchange(api, partial), 431, "REQUEST_HEADER_TOO_LARGE")
    assert "16384" in body["message"]


def test_a_finished_oversized_head_gets_a_431_and_one_under_the_limit_an_answer(api):
    many = [f"X-Filler-{i}: {'b' * 100}".encode() for i in range(200)]  # ~22 KB in small headers
    assert_refusal(exchange(api, get("/healthz", *many)), 431, "REQUEST_HEADER_TOO_LARGE")
    fits = get("/healthz", b"X-Big: " + b"a" * 15_000)
    assert exchange(api, fits).status == 200


# --- head timeout ------------------------------------------------------------------------------


def test_a_request_head_never_finished_gets_a_408_and_is_closed(api):
    answer = exchange(api, b"GET /healthz HTTP/1.1\r\nHost: api.test\r\nX-Request-ID: slow_1\r\nX-Pa")
    body = assert_refusal(answer, 408, "REQUEST_TIMEOUT")
    assert answer.headers["x-request-id"] == "slow_1"
    assert HEAD_TIMEOUT in body["message"]


def test_a_connection_that_sends_nothing_is_closed(api):
    assert_refusal(exchange(api, b""), 408, "REQUEST_TIMEOUT")


def test_kept_alive_connections_serve_several_requests_and_time_out_a_stalled_one(api):
    request = b"GET /healthz HTTP/1.1\r\nHost: api.test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock, \
            sock.makefile("rb") as stream:
        sock.sendall(request + request)  # pipelined: both answered
        assert read_answer(stream, expect_close=False).status == 200
        assert read_answer(stream, expect_close=False).status == 200
        sock.sendall(request)
        assert read_answer(stream, expect_close=False).status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request stalls
        assert_refusal(read_answer(stream), 408, "REQUEST_TIMEOUT")


def test_a_request_body_still_arriving_once_answered_is_not_waited_for(api):
    request = (b"POST /api/v2/orders/ord_x/tracking HTTP/1.1\r\nHost: api.test\r\n"
               b"X-Request-ID: upload_1\r\nContent-Length: 100000\r\n\r\nfirst bytes")
    received = b""
    with socket.create_connection(("127.0.0.1", api.port), timeout=0.5) as sock:
        sock.sendall(request)
        for _ in range(40):  # a slow upload: one more byte of body every 0.5 s
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail(f"the connection is still open for the upload; received {received!r}")
    answer = read_answer(io.BytesIO(received))
    assert (answer.status, answer.headers["x-request-id"]) == (405, "upload_1")
    assert answer.json()["error"] == "METHOD_NOT_ALLOWED"


def test_a_websocket_upgrade_sent_to_the_api_is_a_json_404(api):
    answer = exchange(api, b"GET /ws/orders/ord_x/track HTTP/1.1\r\nHost: api.test\r\n"
                      b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\nX-Request-ID: up_1\r\n\r\n")
    assert (answer.status, answer.json()["error"]) == (404, "NOT_FOUND")
    assert answer.headers["x-request-id"] == "up_1"
    assert answer.headers["connection"] == "close" and answer.closed
    assert "websocket" not in api.log.read_text().lower()


# --- malformed headers -------------------------------------------------------------------------


async def test_non_ascii_credentials_and_request_ids_get_json_refusals(api, keys):
    order_id = "ord_edges_ascii"
    await add_order(api, order_id)
    path = f"/api/v2/orders/{order_id}/tracking"
    token = keys.token("user_1", order_id).encode()

    answer = exchange(api, get(path, b"Authorization: Bearer \xff\xfe", b"X-Request-ID: ok_1"))
    assert_refusal(answer, 401, "UNAUTHORIZED")
    assert answer.headers["x-request-id"] == "ok_1"
    assert answer.headers["www-authenticate"] == 'Bearer realm="ordertrack"'

    answer = exchange(api, get(path, b"Authorization: Bearer " + token, b"X-Request-ID: \xff"))
    assert answer.status == 200 and answer.json()["order_id"] == order_id
    assert answer.headers["x-request-id"].startswith("req_")  # replaced, not echoed


def test_control_bytes_in_headers_get_json_refusals_not_plain_text(api):
    path = "/api/v2/orders/ord_x/tracking"
    answer = exchange(api, get(path, b"Authorization: Bearer a\x01b", b"X-Request-ID: ok_2"))
    assert_refusal(answer, 401, "UNAUTHORIZED")
    assert answer.headers["x-request-id"] == "ok_2"
    assert answer.headers["www-authenticate"] == 'Bearer realm="ordertrack"'

    answer = exchange(api, get(path, b"X-Request-ID: bad\x01id"))
    assert_refusal(answer, 400, "BAD_REQUEST")
    assert answer.headers["x-request-id"].startswith("req_")

    for line in (b"X-\xff: 1", b"No Colon Here", b"Content-Length: \xff", b"X Bad: 1"):
        assert_refusal(exchange(api, get(path, line)), 400, "BAD_REQUEST")
    assert "Traceback" not in api.log.read_text()


# --- start-up ----------------------------------------------------------------------------------


def start_api_once(keys, tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ordertrack", "api"],
        env={"PATH": "/usr/bin:/bin", "JWT_PUBLIC_KEY": str(keys.public_path),
             "API_HOST": "127.0.0.1", "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
             "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **env},
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def test_a_busy_port_stops_start_up_with_one_line(keys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start_api_once(keys, tmp_path, API_PORT=str(port))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ordertrack api: API_PORT {port} on 127.0.0.1 cannot be served: Address already in use"]


def test_an_unreachable_postgresql_stops_start_up_with_one_line(keys, tmp_path):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    result = start_api_once(keys, tmp_path, API_PORT=str(free_port()), DATABASE_URL=url)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ordertrack api: cannot connect to PostgreSQL at {url}"), line
