"""The tracking store on PostgreSQL (asyncpg pool): production.

`append_events` locks the order's row (`SELECT ... FOR UPDATE`) for the whole transaction,
so two gateway replicas appending to the same order serialise: the second one sees the
first one's events and seq. `upgrade` holds a transaction-scoped advisory lock, so pods
starting together apply each migration once. A `?search_path=schema` query parameter in the
URL is passed to the server as a setting by asyncpg, which puts the tables in that schema.
"""

from __future__ import annotations

import logging

import asyncpg

from ordertrack.models import (
    ACTIVE_STATUSES,
    Order,
    OrderState,
    StoredEvent,
    TrackingEvent,
    next_order_state,
)
from ordertrack.store.base import (
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    SCAN_COLUMNS,
    OrderExists,
    OrderNotFound,
    StoreError,
    TrackingStore,
    event_from_row,
    find_order_query,
    load_migrations,
    number_events,
    order_from_row,
    raw_json,
    redact_url,
    select_new_events,
    utc_now_iso,
    validate_order,
)

log = logging.getLogger("ordertrack.store")

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
#: the advisory lock `upgrade` holds, per schema
_UPGRADE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ordertrack.upgrade.' || current_schema()))"


class PostgresStore(TrackingStore):
    kind = "postgres"

    def __init__(self, url: str, min_size: int = POOL_MIN_SIZE, max_size: int = POOL_MAX_SIZE):
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    async def connect(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self.min_size, max_size=self.max_size
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {redact_url(self.url)}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not connected (use `await open_store(url)`)")
        return self._pool

    # --- schema ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self.pool.acquire() as conn:
            return await self._version(conn)

    @staticmethod
    async def _version(conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))

    async def upgrade(self, to: int | None = None) -> int:
        migrations = load_migrations("postgres")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_UPGRADE_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = await self._version(conn)
            for migration in migrations:
                if migration.version <= current or (to is not None and migration.version > to):
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version, migration.name, utc_now_iso(),
                )
                log.info("applied migration %s to %s", migration.name, redact_url(self.url))
                current = migration.version
            return current

    # --- orders ---------------------------------------------------------------------------

    async def add_order(self, order: Order) -> None:
        validate_order(order)
        now = utc_now_iso()
        created_at = order.created_at or now
        try:
            await self.pool.execute(
                f"INSERT INTO orders ({ORDER_COLUMNS}, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                order.order_id, order.user_id, order.carrier, order.tracking_number,
                order.status, order.last_update, order.estimated_delivery, order.region,
                order.seq, order.consecutive_failures, order.needs_investigation,
                created_at, now,
            )
        except asyncpg.UniqueViolationError as exc:
            raise OrderExists(order.order_id) from exc
        order.created_at = created_at

    async def get_order(self, order_id: str) -> Order | None:
        row = await self.pool.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1", order_id
        )
        return order_from_row(row) if row else None

    async def find_order(self, carrier: str, tracking_number: str) -> Order | None:
        row = await self.pool.fetchrow(find_order_query("$1", "$2"), carrier, tracking_number)
        return order_from_row(row) if row else None

    async def list_orders(
        self, carrier: str | None = None, active_only: bool = False
    ) -> list[Order]:
        where: list[str] = []
        params: list[object] = []
        if carrier is not None:
            params.append(carrier)
            where.append(f"carrier = ${len(params)}")
        if active_only:
            params.append(sorted(ACTIVE_STATUSES))
            where.append(f"status = ANY(${len(params)}::text[])")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.pool.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders{clause} ORDER BY created_at, order_id", *params
        )
        return [order_from_row(row) for row in rows]

    # --- events ---------------------------------------------------------------------------

    async def history(self, order_id: str) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            "SELECT order_id, seq, status, location, timestamp, estimated_delivery, raw::text "
            "FROM events WHERE order_id = $1 ORDER BY seq",
            order_id,
        )
        return [event_from_row(row) for row in rows]

    async def append_events(self, order_id: str, events: list[TrackingEvent]) -> list[StoredEvent]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT status, last_update, estimated_delivery, seq FROM orders "
                "WHERE order_id = $1 FOR UPDATE",
                order_id,
            )
            if row is None:
                raise OrderNotFound(order_id)
            current = OrderState(row[0], row[1], row[2], int(row[3]))
            if not events:
                return []
            known = await conn.fetch(
                f"SELECT {SCAN_COLUMNS} FROM events WHERE order_id = $1", order_id
            )
            fresh = select_new_events([tuple(r) for r in known], events)
            if not fresh:
                return []
            stored = number_events(order_id, current.seq, fresh)
            now = utc_now_iso()
            await conn.executemany(
                f"INSERT INTO events ({EVENT_COLUMNS}, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
                [
                    (e.order_id, e.seq, e.status, e.location, e.timestamp,
                     e.estimated_delivery, raw_json(e.raw), now)
                    for e in stored
                ],
            )
            state = next_order_state(current, stored)
            await conn.execute(
                "UPDATE orders SET status = $1, last_update = $2, estimated_delivery = $3, "
                "seq = $4, updated_at = $5 WHERE order_id = $6",
                state.status, state.last_update, state.estimated_delivery, state.seq, now,
                order_id,
            )
            return stored

    # --- polling health -------------------------------------------------------------------

    async def record_failure(self, order_id: str) -> int:
        count = await self.pool.fetchval(
            "UPDATE orders SET consecutive_failures = consecutive_failures + 1, updated_at = $2 "
            "WHERE order_id = $1 RETURNING consecutive_failures",
            order_id, utc_now_iso(),
        )
        if count is None:
            raise OrderNotFound(order_id)
        return int(count)

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

    async def set_needs_investigation(self, order_id: str, flag: bool) -> None:
        result = await self.pool.execute(
            "UPDATE orders SET needs_investigation = $2, updated_at = $3 WHERE order_id = $1",
            order_id, flag, utc_now_iso(),
        )
        if result.endswith(" 0"):
            raise OrderNotFound(order_id)
