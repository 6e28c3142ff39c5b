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
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ordertrack.models import StoredEvent, TrackingEvent
from ordertrack.store.base import OrderNotFound, StoreError, utc_now_iso
from ordertrack.store.sql import Row, Session, SqlStore

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


class SqliteSession(Session):
    def __init__(self, db: aiosqlite.Connection):
        self.db = db

    async def fetch_one(self, sql: str, *params: Any) -> Row | None:
        rows = await self.db.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetch_all(self, sql: str, *params: Any) -> list[Row]:
        return list(await self.db.execute_fetchall(sql, params))

    async def execute(self, sql: str, *params: Any) -> int:
        cursor = await self.db.execute(sql, params)
        return cursor.rowcount

    async def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.db.executemany(sql, rows)


class SqliteStore(SqlStore):
    kind = "sqlite"
    unique_violation = sqlite3.IntegrityError

    def __init__(self, path: str):
        self.path = path
        self._lock = asyncio.Lock()
        #: appends waiting for the next group commit: (order_id, events, result future)
        self._appends: list[tuple[str, list[TrackingEvent], asyncio.Future]] = []

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    @property
    def location(self) -> str:
        return self.path

    async def _open(self) -> aiosqlite.Connection:
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
        return db

    @property
    def db(self) -> aiosqlite.Connection:
        return self._connected()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """A write transaction holding SQLite's write lock from its first statement."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteSession(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Session]:
        async with self._lock:
            yield SqliteSession(self.db)

    async def _version(self, session: Session) -> int:
        exists = await session.fetch_one(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        )
        if exists is None:
            return 0
        row = await session.fetch_one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(row[0]) if row else 0

    async def _run_migration(self, session: Session, sql: str) -> None:
        for statement in split_statements(sql):
            await session.execute(statement)

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
        session = SqliteSession(db)
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for order_id, events, done in batch:
                    try:
                        results.append((done, await self._append_one(session, order_id, events)))
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

    async def record_success(self, order_id: str) -> int:
        async with self.transaction() as session:
            row = await session.fetch_one(
                "SELECT consecutive_failures FROM orders WHERE order_id = ?", order_id
            )
            if row is None:
                raise OrderNotFound(order_id)
            count = int(row[0])
            if count:
                await session.execute(
                    "UPDATE orders SET consecutive_failures = 0, updated_at = ? "
                    "WHERE order_id = ?",
                    utc_now_iso(), order_id,
                )
            return count
