"""The API's HTTP/1.1 connections: uvicorn's httptools protocol plus the limits it lacks.

uvicorn (httptools) bounds neither the size of a request head nor the time a client may take
to send it: a 10 MB header is buffered and answered, and a request that is never finished
keeps its connection (and its buffer) forever. `ApiHttpProtocol` adds, per connection:

- a head (request line and headers) over `max_head_bytes`: 431 `REQUEST_HEADER_TOO_LARGE`;
- a head not complete within `head_timeout` seconds of the connection opening (or, on a
  kept-alive connection, of the request's first byte): 408 `REQUEST_TIMEOUT`;
- a head the parser refuses (control bytes in a header, a broken header name, bad framing):
  400 `BAD_REQUEST`, or 401 `UNAUTHORIZED` when the broken line is the `Authorization` header;

each as the wire contract's JSON error with a clean `X-Request-ID`, then the connection is
closed. And a request body still arriving once the request is answered (no route reads one)
is not waited for: the connection is closed. The rules are pure functions (`request_id` and
`refusal_bytes` here; `head_fields` and `parse_error_refusal` in `ordertrack.protocol`, shared
with the push pod), tested without sockets; the protocol class only wires them to uvicorn's
callbacks.
"""

from __future__ import annotations

import functools
import http
import logging
import re
import secrets
from collections.abc import Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ordertrack.protocol import head_fields, parse_error_refusal, refusal_body

log = logging.getLogger("ordertrack.api")

JSON_TYPE = "application/json; charset=utf-8"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's `X-Request-ID` when it is a clean token, else a fresh `req_<16 hex>`.

    A bad one (non-ASCII, spaces, over 128 characters) is replaced, never echoed. Names are
    lower-case, as ASGI and uvicorn's parser give them.
    """
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID.match(value):
                return value.decode("ascii")
            break
    return "req_" + secrets.token_hex(8)


def refusal_bytes(status: int, code: str, message: str, request_id: str,
                  extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete HTTP/1.1 answer with the contract's JSON error body, closing the connection."""
    body = refusal_body(code, message)
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(),
        b"content-type: " + JSON_TYPE.encode(),
        b"content-length: " + str(len(body)).encode(),
        b"x-request-id: " + request_id.encode(),
        b"cache-control: no-store",
        b"connection: close",
    ]
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing an oversized head."""


class ApiHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head size and a head timeout.

    Use `protocol_factory(...)` to bind the limits; uvicorn builds one instance per connection.
    """

    def __init__(self, *args: Any, max_head_bytes: int, head_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        self._head_pending = True  # the next bytes belong to a request head
        self._head_bytes = 0  # bytes received so far of that head (or a bit more)
        self._head_timer: Any = None

    # --- the head's deadline ----------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(408, "REQUEST_TIMEOUT",
                         f"request head not received within {self.head_timeout:g} s")
        elif not self.transport.is_closing():  # pragma: no cover - a pipelined slow head
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    # --- parsing ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._head_pending:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the API serves no WebSocket (uvicorn runs with ws="none"): an upgrade request
            # is answered as plain HTTP (a 404) and the connection closed, without uvicorn's
            # "install websockets" warning
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse_too_large()
            else:
                reason = str(exc.args[0]) if exc.args else "unparsable"
                if isinstance(exc, httptools.HttpParserCallbackError):
                    reason = f"{type(exc.__context__).__name__}: {exc.__context__}"
                fields = head_fields(data)
                self._refuse(*parse_error_refusal(fields, reason), headers=fields)
        else:
            if self._head_pending and self._head_bytes > self.max_head_bytes:
                self._refuse_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._head_pending = False
        # only when the chunks of this head were big is it measured exactly
        if self._head_bytes > self.max_head_bytes and self._measured_head() > self.max_head_bytes:
            raise HeadTooLarge
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        # the API reads no request body: once answered, a request whose body is still
        # arriving (a slow upload) is not waited for, the connection is closed
        if self.cycle is not None and self.cycle.more_body:
            self.transport.close()
            return
        super().on_response_complete()

    def _measured_head(self) -> int:
        # request line (method, target, version) + "name: value\r\n" per header + blank line
        return len(self.url) + 20 + sum(len(n) + len(v) + 4 for n, v in self.headers) + 2

    # --- refusals ---------------------------------------------------------------------------

    def _refuse_too_large(self) -> None:
        self._refuse(431, "REQUEST_HEADER_TOO_LARGE",
                     f"request line and headers must fit in {self.max_head_bytes} bytes")

    def _refuse(self, status: int, code: str, message: str,
                headers: Iterable[tuple[bytes, bytes]] | None = None) -> None:
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        extra = list(self.server_state.default_headers)
        if status == 401:
            extra.append((b"www-authenticate", b"Bearer"))
        rid = request_id((self.headers or ()) if headers is None else headers)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("refused a request from %s: %d %s (%s); request %s", client, status, code,
                    message, rid, extra={"fields": {
                        "client": client, "status": status, "code": code, "request_id": rid}})
        self.transport.write(refusal_bytes(status, code, message, rid, extra))
        self.transport.close()


def protocol_factory(max_head_bytes: int, head_timeout: float) -> Any:
    """The `http=` value for `uvicorn.Config`: `ApiHttpProtocol` bound to these limits."""
    return functools.partial(ApiHttpProtocol, max_head_bytes=max_head_bytes,
                             head_timeout=head_timeout)
