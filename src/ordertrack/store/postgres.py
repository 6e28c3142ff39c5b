"""The tracking store on PostgreSQL (asyncpg pool): production.

`append_events` locks the order's row (`SELECT ... FOR UPDATE`) for the whole transaction,
so two gateway replicas appending to the same order serialise: the second one sees the
first one's events and seq. `upgrade` holds a transaction-scoped advisory lock, so pods
starting together apply each migration once. A `?search_path=schema` query parameter in the
URL is passed to the server as a setting by asyncpg, which puts the tables in that schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from ordertrack.store.base import OrderNotFound, StoreError, redact_url, utc_now_iso
from ordertrack.store.sql import Row, Session, SqlStore

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
#: the advisory lock `upgrade` holds, per schema
_UPGRADE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ordertrack.upgrade.' || current_schema()))"


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (our SQL has no `?` in literals)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${index}{part}" for index, part in enumerate(parts[1:], start=1))


class PostgresSession(Session):
    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        return await self.conn.fetchrow(numbered(sql), *params)

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        return await self.conn.fetch(numbered(sql), *params)

    async def execute(self, sql: str, *params: Any) -> int:
        # without parameters the text goes as it is (a migration script may use jsonb's `?`)
        status = await self.conn.execute(numbered(sql) if params else sql, *params)
        # the command tag: "UPDATE 3", "INSERT 0 1"; no count for other commands
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.conn.executemany(numbered(sql), rows)


class PostgresStore(SqlStore):
    kind = "postgres"
    unique_violation = asyncpg.UniqueViolationError
    lock_order_row = " FOR UPDATE"

    def __init__(self, url: str, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE):
        self.url = url
        self.min_size = min_size
        self.max_size = max_size

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    @property
    def location(self) -> str:
        return redact_url(self.url)

    async def _open(self) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.location}: {exc}") from exc

    @property
    def pool(self) -> asyncpg.Pool:
        return self._connected()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresSession(conn)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Session]:
        async with self.pool.acquire() as conn:
            yield PostgresSession(conn)

    async def _version(self, session: Session) -> int:
        row = await session.fetch_one("SELECT to_regclass('schema_version') IS NOT NULL")
        if not row or not row[0]:
            return 0
        row = await session.fetch_one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(row[0]) if row else 0

    async def _lock_upgrade(self, session: Session) -> None:
        await session.execute(_UPGRADE_LOCK)

    async def _run_migration(self, session: Session, sql: str) -> None:
        await session.execute(sql)

    async def record_success(self, order_id: str) -> int:
        # one round trip per successful poll; writes only when there was a failure streak
        count = await self.pool.fetchval(
            "WITH old AS (SELECT consecutive_failures AS n FROM orders "
            "             WHERE order_id = $1 FOR UPDATE), "
            "reset AS (UPDATE orders SET consecutive_failures = 0, updated_at = $2 "
            "          WHERE order_id = $1 AND consecutive_failures <> 0) "
            "SELECT n FROM old",
            order_id, utc_now_iso(),
        )
        if count is None:
            raise OrderNotFound(order_id)
        return int(count)
