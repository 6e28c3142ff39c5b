"""Every HTTP refusal and error code the processes answer with, in one table.

As the close codes (`ordertrack.protocol.CLOSE_REASONS`) are the WebSocket's, these are the HTTP
side's: each code has one status and a default message, and every answer's body is
`{"error": CODE, "message": text}` with `Content-Type: application/json; charset=utf-8`. A code
not in `CODES` cannot be answered (`refusal` raises KeyError), so the table is the whole list.
"""

from __future__ import annotations

import http
from collections.abc import Iterable
from dataclasses import dataclass, replace

import orjson

JSON_TYPE = "application/json; charset=utf-8"
#: sent with every 401, as RFC 6750 3 asks; one value for the pod, the API and ingest
WWW_AUTHENTICATE = ("WWW-Authenticate", 'Bearer realm="ordertrack"')
#: seconds a client told `POD_AT_CAPACITY` should wait; a draining pod says 1
CAPACITY_RETRY_AFTER = "5"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP refusal: status, the JSON `error` code and message, extra headers."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def saying(self, message: str) -> Refusal:
        return replace(self, message=message)


def _table(*refusals: Refusal) -> dict[str, Refusal]:
    return {refusal.code: refusal for refusal in refusals}


CODES: dict[str, Refusal] = _table(
    Refusal(400, "BAD_REQUEST", "malformed request"),
    Refusal(401, "UNAUTHORIZED", "missing, malformed, expired or badly signed credentials",
            (WWW_AUTHENTICATE,)),
    Refusal(403, "FORBIDDEN", "You can only track orders you own"),
    Refusal(404, "NOT_FOUND", "No such resource"),
    Refusal(405, "METHOD_NOT_ALLOWED", "method not allowed on this resource"),
    Refusal(408, "REQUEST_TIMEOUT", "request not received in time"),
    Refusal(413, "REQUEST_BODY_TOO_LARGE", "request body too large"),
    Refusal(426, "UPGRADE_REQUIRED", "this endpoint speaks WebSocket only"),
    #: the API's rollout reports (api/rollout.py), per client address
    Refusal(429, "RATE_LIMITED", "too many requests; retry later"),
    Refusal(431, "REQUEST_HEADER_TOO_LARGE", "request line and headers too large"),
    Refusal(500, "INTERNAL_ERROR", "internal error; retry"),
    Refusal(503, "UNAVAILABLE", "temporarily unavailable; retry shortly"),
    Refusal(503, "POD_AT_CAPACITY", "this pod holds its maximum of connections; retry",
            (("Retry-After", CAPACITY_RETRY_AFTER),)),
    Refusal(503, "POD_DRAINING", "pod is shutting down; retry", (("Retry-After", "1"),)),
    Refusal(503, "FEATURE_DISABLED", "real-time tracking is off; poll the REST endpoint"),
    #: any other HTTP error the framework raises, with the framework's status
    Refusal(400, "HTTP_ERROR", "HTTP error"),
)


def refusal(code: str, message: str | None = None) -> Refusal:
    """The table's refusal for `code`, with `message` instead of the default when given."""
    entry = CODES[code]
    return entry if message is None else replace(entry, message=message)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def refusal_bytes(status: int, code: str, message: str, request_id: str,
                  extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete HTTP/1.1 answer with the JSON error body, closing the connection (for a
    protocol that answers before any framework sees the request)."""
    body = error_body(code, message)
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


def header_bytes(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
