"""`X-Request-ID`: one rule for the pod, the API and ingest.

A client's id is echoed (in a header, and in our logs) only when it is a clean token: 1-128 of
letters, digits and `._:-`. Anything else (spaces, quotes, non-ASCII, too long) is replaced by
a fresh `req_<16 hex>`, never echoed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MAX_REQUEST_ID_CHARS = 128
_CLEAN = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_CHARS}}}")

#: ids are cut from one os.urandom read of this size: one getrandom call per ~250 ids, not one
#: per id (secrets.token_hex reads os.urandom each time); the pod makes two ids per upgrade
ID_POOL_BYTES = 4096
_id_pool = ""  # hex digits (a str: its slices are not objects the collector tracks)
_id_next = 0  # where the digits not handed out yet start


def clean_request_id(value: str | None) -> str | None:
    """The client's id when it is clean, else None (make a fresh one)."""
    if value and _CLEAN.fullmatch(value):
        return value
    return None


def random_hex(nbytes: int) -> str:
    """`2 * nbytes` hex digits from the OS's CSPRNG (as secrets.token_hex)."""
    global _id_pool, _id_next
    start, end = _id_next, _id_next + 2 * nbytes
    if end > len(_id_pool):
        _id_pool, start, end = os.urandom(ID_POOL_BYTES).hex(), 0, 2 * nbytes
    _id_next = end
    return _id_pool[start:end]


def new_request_id() -> str:
    return "req_" + random_hex(8)


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The id for a request with these `(lower-case name, value)` header fields (as ASGI and
    uvicorn's parser give them): the client's when clean, else a fresh one."""
    for name, value in headers:
        if name == b"x-request-id":
            return clean_request_id(value.decode("latin-1")) or new_request_id()
    return new_request_id()
