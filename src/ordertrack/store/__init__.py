"""The tracking store: orders and their tracking history, on SQLite or PostgreSQL.

    store = await open_store(url)          # connects and runs upgrade()
    async with open_store(url) as store:   # ... and closes at the end
        await store.append_events(order_id, events)

`url` is the `DATABASE_URL` setting (`config.STORE`); None means the SQLite file
./var/ordertrack.db. See `base.TrackingStore` for the operations.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ordertrack.store.base import (
    DEFAULT_SQLITE_PATH,
    InvalidOrder,
    OrderExists,
    OrderNotFound,
    StoreError,
    TrackingStore,
    parse_store_url,
    redact_url,
)

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "InvalidOrder",
    "OrderExists",
    "OrderNotFound",
    "StoreError",
    "TrackingStore",
    "create_store",
    "open_store",
    "redact_url",
]


def create_store(url: str | None = None) -> TrackingStore:
    """The store for `url`, not yet connected. Raises ValueError for an unsupported URL."""
    target = parse_store_url(url)
    if target.kind == "postgres":
        from ordertrack.store.postgres import PostgresStore

        return PostgresStore(target.target)
    from ordertrack.store.sqlite import SqliteStore

    return SqliteStore(target.target)


class _OpenStore:
    """Awaitable (`await open_store(url)`) and async context manager (`async with`)."""

    def __init__(self, url: str | None, upgrade: bool):
        self._store = create_store(url)
        self._upgrade = upgrade

    async def _open(self) -> TrackingStore:
        await self._store.connect()
        try:
            if self._upgrade:
                await self._store.upgrade()
        except BaseException:
            await self._store.close()
            raise
        return self._store

    def __await__(self) -> Generator[Any, None, TrackingStore]:
        return self._open().__await__()

    async def __aenter__(self) -> TrackingStore:
        return await self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._store.close()


def open_store(url: str | None = None, *, upgrade: bool = True) -> _OpenStore:
    """Connect to the store at `url` (see module doc) and bring its schema up to date."""
    return _OpenStore(url, upgrade)
