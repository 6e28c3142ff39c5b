"""The SQL both backends share, written once against a small session interface.

`SqlStore` holds every operation whose SQL is the same in both dialects (written with `?`
placeholders); `SqliteStore` and `PostgresStore` supply a `Session` for their driver and
the few dialect-specific pieces as class attributes and hooks.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

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
    select_new_events,
    utc_now_iso,
    validate_order,
)

log = logging.getLogger("ordertrack.store")

Row = Sequence[Any]


class Session(abc.ABC):
    """One connection's statements, `?` placeholders, positional parameters."""

    @abc.abstractmethod
    async def fetch_one(self, sql: str, *params: Any) -> Row | None: ...

    @abc.abstractmethod
    async def fetch_all(self, sql: str, *params: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *params: Any) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


class SqlStore(TrackingStore):
    """The operations of `TrackingStore` in SQL common to SQLite and PostgreSQL."""

    #: the driver's error for a duplicate primary key
    unique_violation: ClassVar[type[Exception]]
    #: appended to the order's SELECT in `append_events` (a row lock where the dialect has one)
    lock_order_row: ClassVar[str] = ""
    #: the driver's handle while connected (PostgreSQL's pool, SQLite's connection)
    _handle: Any = None

    @abc.abstractmethod
    async def _open(self) -> Any:
        """The driver's handle, opened (StoreError when the database cannot be reached)."""

    async def connect(self) -> None:
        if self._handle is None:
            self._handle = await self._open()

    async def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            await handle.close()

    def _connected(self) -> Any:
        if self._handle is None:
            raise StoreError("the store is not connected (use `await open_store(url)`)")
        return self._handle

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the database is, fit for a log line (no password)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """A session in one write transaction that serialises with other writers."""

    @abc.abstractmethod
    def reading(self) -> AbstractAsyncContextManager[Session]:
        """A session for reads."""

    @abc.abstractmethod
    async def _version(self, session: Session) -> int:
        """The applied schema version, 0 without a schema_version table."""

    @abc.abstractmethod
    async def _run_migration(self, session: Session, sql: str) -> None:
        """Run one migration script inside the upgrade transaction."""

    async def _lock_upgrade(self, session: Session) -> None:
        """Keep concurrent `upgrade`s apart (beyond the transaction) where needed."""

    # --- schema ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self.reading() as session:
            return await self._version(session)

    async def upgrade(self, to: int | None = None) -> int:
        migrations = load_migrations(self.kind)
        async with self.transaction() as session:
            await self._lock_upgrade(session)
            await session.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = await self._version(session)
            for migration in migrations:
                if migration.version <= current or (to is not None and migration.version > to):
                    continue
                await self._run_migration(session, migration.sql)
                await session.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    migration.version, migration.name, utc_now_iso(),
                )
                log.info("applied migration %s to %s", migration.name, self.location)
                current = migration.version
            return current

    # --- orders ---------------------------------------------------------------------------

    async def add_order(self, order: Order) -> None:
        validate_order(order)
        now = utc_now_iso()
        created_at = order.created_at or now
        try:
            async with self.transaction() as session:
                await session.execute(
                    f"INSERT INTO orders ({ORDER_COLUMNS}, updated_at) VALUES ({placeholders(13)})",
                    order.order_id, order.user_id, order.carrier, order.tracking_number,
                    order.status, order.last_update, order.estimated_delivery, order.region,
                    order.seq, order.consecutive_failures, order.needs_investigation,
                    created_at, now,
                )
        except self.unique_violation as exc:
            raise OrderExists(order.order_id) from exc
        order.created_at = created_at

    async def _one_order(self, sql: str, *params: Any) -> Order | None:
        async with self.reading() as session:
            row = await session.fetch_one(sql, *params)
        return order_from_row(row) if row else None

    async def get_order(self, order_id: str) -> Order | None:
        return await self._one_order(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?", order_id)

    async def find_order(self, carrier: str, tracking_number: str) -> Order | None:
        return await self._one_order(find_order_query("?", "?"), carrier, tracking_number)

    async def list_orders(
        self, carrier: str | None = None, active_only: bool = False
    ) -> list[Order]:
        where: list[str] = []
        params: list[object] = []
        if carrier is not None:
            where.append("carrier = ?")
            params.append(carrier)
        if active_only:
            active = sorted(ACTIVE_STATUSES)
            where.append(f"status IN ({placeholders(len(active))})")
            params.extend(active)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        async with self.reading() as session:
            rows = await session.fetch_all(
                f"SELECT {ORDER_COLUMNS} FROM orders{clause} ORDER BY created_at, order_id",
                *params,
            )
        return [order_from_row(row) for row in rows]

    # --- events ---------------------------------------------------------------------------

    async def history(self, order_id: str) -> list[StoredEvent]:
        async with self.reading() as session:
            rows = await session.fetch_all(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ? ORDER BY seq", order_id
            )
        return [event_from_row(row) for row in rows]

    async def append_events(self, order_id: str, events: list[TrackingEvent]) -> list[StoredEvent]:
        async with self.transaction() as session:
            return await self._append_one(session, order_id, events)

    async def _append_one(self, session: Session, order_id: str,
                          events: list[TrackingEvent]) -> list[StoredEvent]:
        """`append_events` inside the caller's transaction (OrderNotFound before any write)."""
        row = await session.fetch_one(
            "SELECT status, last_update, estimated_delivery, seq FROM orders "
            f"WHERE order_id = ?{self.lock_order_row}",
            order_id,
        )
        if row is None:
            raise OrderNotFound(order_id)
        current = OrderState(row[0], row[1], row[2], int(row[3]))
        if not events:
            return []
        known = await session.fetch_all(
            f"SELECT {SCAN_COLUMNS} FROM events WHERE order_id = ?", order_id
        )
        fresh = select_new_events([tuple(r) for r in known], events)
        if not fresh:
            return []
        stored = number_events(order_id, current.seq, fresh)
        now = utc_now_iso()
        await session.execute_many(
            f"INSERT INTO events ({EVENT_COLUMNS}, created_at) VALUES ({placeholders(8)})",
            [
                (e.order_id, e.seq, e.status, e.location, e.timestamp,
                 e.estimated_delivery, raw_json(e.raw), now)
                for e in stored
            ],
        )
        state = next_order_state(current, stored)
        await session.execute(
            "UPDATE orders SET status = ?, last_update = ?, estimated_delivery = ?, seq = ?, "
            "updated_at = ? WHERE order_id = ?",
            state.status, state.last_update, state.estimated_delivery, state.seq, now,
            order_id,
        )
        return stored

    # --- polling health -------------------------------------------------------------------

    async def record_failure(self, order_id: str) -> int:
        async with self.transaction() as session:
            row = await session.fetch_one(
                "UPDATE orders SET consecutive_failures = consecutive_failures + 1, "
                "updated_at = ? WHERE order_id = ? RETURNING consecutive_failures",
                utc_now_iso(), order_id,
            )
        if row is None:
            raise OrderNotFound(order_id)
        return int(row[0])

    async def set_needs_investigation(self, order_id: str, flag: bool) -> None:
        async with self.transaction() as session:
            changed = await session.execute(
                "UPDATE orders SET needs_investigation = ?, updated_at = ? WHERE order_id = ?",
                flag, utc_now_iso(), order_id,
            )
        if changed == 0:
            raise OrderNotFound(order_id)
