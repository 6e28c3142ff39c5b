"""How big and how slow a request may be: the limits and their rules, as pure functions.

`HttpLimits` comes from a process's `config.http_limits(PREFIX)` settings (`API_...`,
`INGEST_...`); `uvicorn_protocol` applies it to every connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

from ordertrack.http_edge.refusals import Refusal, refusal


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head_bytes: int
    head_timeout: float
    max_body_bytes: int
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: SimpleNamespace, prefix: str) -> HttpLimits:
        """From the settings `config.http_limits(prefix)` declares."""
        p = prefix.lower()
        return cls(getattr(settings, f"{p}_max_header_bytes"),
                   getattr(settings, f"{p}_request_header_timeout_seconds"),
                   getattr(settings, f"{p}_max_body_bytes"),
                   getattr(settings, f"{p}_request_body_timeout_seconds"))

    def head_too_large(self) -> Refusal:
        return refusal("REQUEST_HEADER_TOO_LARGE",
                       f"request line and headers must fit in {self.max_head_bytes} bytes")

    def body_too_large(self) -> Refusal:
        return refusal("REQUEST_BODY_TOO_LARGE",
                       f"request body must fit in {self.max_body_bytes} bytes")

    def head_late(self) -> Refusal:
        return refusal("REQUEST_TIMEOUT",
                       f"request head not received within {self.head_timeout:g} s")

    def body_late(self) -> Refusal:
        return refusal("REQUEST_TIMEOUT",
                       f"request body not received within {self.body_timeout:g} s")


def declared_body(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body length a request head announces: its Content-Length, -1 for a chunked body
    (length unknown until it ends), None for no body. (The parser has already refused a head
    whose Content-Length is not a number.)"""
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.strip().isdigit() else 0
        elif name == b"transfer-encoding":
            return -1
    return length or None
