"""The tracking store on SQLite (aiosqlite): the embedded default for dev and tests.

One connection per store, in WAL mode, in autocommit mode with explicit transactions. An
asyncio lock keeps this store's coroutines from interleaving statements of two transactions
on the shared connection; `BEGIN IMMEDIATE` takes SQLite's write lock up front, so two
processes (two gateway replicas) appending to the same order serialise instead of both
reading the same last seq. `busy_timeout` makes the second one wait rather than fail.

Group commit: appends that arrive while a transaction runs wait for it, then the first of
them writes them all in one transaction (one COMMIT for the batch), and each gets its own
result once that COMMIT is done. A webhook burst (ingest answers only once its scans are
stored) thus costs one transaction per batch, not per delivery. Statements on the hot path
use `execute_fetchall` (one trip to aiosqlite's thread instead of three).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

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

BUSY_TIMEOUT_MS = 10_000


def split_statements(script: str) -> list[str]:
    """A SQL script as single statements (sqlite3 cannot run a script inside a transaction)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement.rstrip(";").strip():
                statements.append(statement)
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise StoreError(f"incomplete SQL statement at the end of a migration: {buffer.strip()!r}")
    return statements


class SqliteStore(TrackingStore):
    kind = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        #: appends waiting for the next group commit: (order_id, events, result future)
        self._appends: list[tuple[str, list[TrackingEvent], asyncio.Future]] = []

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def connect(self) -> None:
        if self._db is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not connected (use `await open_store(url)`)")
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction holding SQLite's write lock from its first statement."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self.db

    # --- schema ---------------------------------------------------------------------------

    async def schema_version(self) -> int:
        async with self._reading() as db:
            return await self._version(db)

    @staticmethod
    async def _version(db: aiosqlite.Connection) -> int:
        async with db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ) as cursor:
            if await cursor.fetchone() is None:
                return 0
        async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def upgrade(self, to: int | None = None) -> int:
        migrations = load_migrations("sqlite")
        async with self._transaction() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = await self._version(db)
            for migration in migrations:
                if migration.version <= current or (to is not None and migration.version > to):
                    continue
                for statement in split_statements(migration.sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, utc_now_iso()),
                )
                log.info("applied migration %s to %s", migration.name, self.path)
                current = migration.version
            return current

    # --- orders ---------------------------------------------------------------------------

    async def add_order(self, order: Order) -> None:
        validate_order(order)
        now = utc_now_iso()
        created_at = order.created_at or now
        try:
            async with self._transaction() as db:
                await db.execute(
                    f"INSERT INTO orders ({ORDER_COLUMNS}, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        order.order_id, order.user_id, order.carrier, order.tracking_number,
                        order.status, order.last_update, order.estimated_delivery, order.region,
                        order.seq, order.consecutive_failures, int(order.needs_investigation),
                        created_at, now,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise OrderExists(order.order_id) from exc
        order.created_at = created_at

    async def get_order(self, order_id: str) -> Order | None:
        async with self._reading() as db:
            async with db.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
            ) as cursor:
                row = await cursor.fetchone()
        return order_from_row(row) if row else None

    async def find_order(self, carrier: str, tracking_number: str) -> Order | None:
        async with self._reading() as db:
            rows = await db.execute_fetchall(find_order_query("?", "?"),
                                             (carrier, tracking_number))
        return order_from_row(next(iter(rows))) if rows else None

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
            where.append(f"status IN ({', '.join('?' * len(active))})")
            params.extend(active)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        async with self._reading() as db:
            async with db.execute(
                f"SELECT {ORDER_COLUMNS} FROM orders{clause} ORDER BY created_at, order_id",
                params,
            ) as cursor:
                rows = await cursor.fetchall()
        return [order_from_row(row) for row in rows]

    # --- events ---------------------------------------------------------------------------

    async def history(self, order_id: str) -> list[StoredEvent]:
        async with self._reading() as db:
            async with db.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE order_id = ? ORDER BY seq",
                (order_id,),
            ) as cursor:
                rows = await cursor.fetchall()
        return [event_from_row(row) for row in rows]

    async def append_events(self, order_id: str, events: list[TrackingEvent]) -> list[StoredEvent]:
        done: asyncio.Future[list[StoredEvent]] = asyncio.get_running_loop().create_future()
        self._appends.append((order_id, events, done))
        async with self._lock:
            if not done.done():  # no earlier waiter took this one into its batch
                batch, self._appends = self._appends, []
                await self._append_batch(batch)
        return done.result()

    async def _append_batch(
        self, batch: list[tuple[str, list[TrackingEvent], asyncio.Future]]
    ) -> None:
        """One transaction for every append of the batch; results set once it committed."""
        results: list[tuple[asyncio.Future, list[StoredEvent] | BaseException]] = []
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for order_id, events, done in batch:
                    try:
                        results.append((done, await self._append_one(db, order_id, events)))
                    except OrderNotFound as exc:  # raised before it wrote anything
                        results.append((done, exc))
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        except BaseException as exc:  # nothing of the batch is stored: every append fails
            error = exc if isinstance(exc, Exception) else StoreError(
                f"append interrupted ({type(exc).__name__}): nothing stored")
            for _order_id, _events, done in batch:
                if not done.done():
                    done.set_exception(error)
            if error is not exc:
                raise
            return
        for done, result in results:
            if done.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)

    @staticmethod
    async def _append_one(db: aiosqlite.Connection, order_id: str,
                          events: list[TrackingEvent]) -> list[StoredEvent]:
        rows = list(await db.execute_fetchall(
            "SELECT status, last_update, estimated_delivery, seq FROM orders WHERE order_id = ?",
            (order_id,)))
        if not rows:
            raise OrderNotFound(order_id)
        row = rows[0]
        current = OrderState(row[0], row[1], row[2], int(row[3]))
        if not events:
            return []
        known = [tuple(r) for r in await db.execute_fetchall(
            f"SELECT {SCAN_COLUMNS} FROM events WHERE order_id = ?", (order_id,))]
        fresh = select_new_events(known, events)
        if not fresh:
            return []
        stored = number_events(order_id, current.seq, fresh)
        now = utc_now_iso()
        await db.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.order_id, e.seq, e.status, e.location, e.timestamp,
                 e.estimated_delivery, raw_json(e.raw), now)
                for e in stored
            ],
        )
        state = next_order_state(current, stored)
        await db.execute(
            "UPDATE orders SET status = ?, last_update = ?, estimated_delivery = ?, seq = ?, "
            "updated_at = ? WHERE order_id = ?",
            (state.status, state.last_update, state.estimated_delivery, state.seq, now,
             order_id),
        )
        return stored

    # --- polling health -------------------------------------------------------------------

    async def _failures(self, db: aiosqlite.Connection, order_id: str) -> int:
        async with db.execute(
            "SELECT consecutive_failures FROM orders WHERE order_id = ?", (order_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise OrderNotFound(order_id)
        return int(row[0])

    async def record_failure(self, order_id: str) -> int:
        async with self._transaction() as db:
            count = await self._failures(db, order_id) + 1
            await db.execute(
                "UPDATE orders SET consecutive_failures = ?, updated_at = ? WHERE order_id = ?",
                (count, utc_now_iso(), order_id),
            )
            return count

    async def record_success(self, order_id: str) -> int:
        async with self._transaction() as db:
            count = await self._failures(db, order_id)
            if count:
                await db.execute(
                    "UPDATE orders SET consecutive_failures = 0, updated_at = ? "
                    "WHERE order_id = ?",
                    (utc_now_iso(), order_id),
                )
            return count

    async def set_needs_investigation(self, order_id: str, flag: bool) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE orders SET needs_investigation = ?, updated_at = ? WHERE order_id = ?",
                (int(flag), utc_now_iso(), order_id),
            )
            if cursor.rowcount == 0:
                raise OrderNotFound(order_id)
