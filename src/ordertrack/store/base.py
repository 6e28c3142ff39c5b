"""The tracking store's interface and the rules both backends share.

`TrackingStore` is what the gateway, the API and the CLI use; `SqliteStore` and
`PostgresStore` implement it. Everything here that is not abstract is a pure function
(URL parsing, event de-duplication, row mapping, migration discovery) so it is tested
without a database.

Timestamps are ISO 8601 UTC strings ending in `Z`, stored as text in both dialects so what
comes out equals what went in.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ordertrack.models import (
    CARRIERS,
    STATUSES,
    Order,
    StoredEvent,
    TrackingEvent,
    one_per_scan,
    scan_identity,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_SQLITE_PATH = "./var/ordertrack.db"
POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreError(Exception):
    """The tracking store cannot do what was asked."""


class OrderExists(StoreError):
    """An order with this order_id is already registered."""

    def __init__(self, order_id: str):
        super().__init__(f"order {order_id!r} already exists")
        self.order_id = order_id


class OrderNotFound(StoreError, LookupError):
    """No order with this order_id."""

    def __init__(self, order_id: str):
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class InvalidOrder(StoreError, ValueError):
    """An order field has a value the system does not know (carrier, status)."""


# --- URLs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreTarget:
    """Where a store lives: `kind` is "sqlite" (target = file path) or "postgres" (target = URL)."""

    kind: str
    target: str


def parse_store_url(url: str | None) -> StoreTarget:
    """Resolve a store URL (`DATABASE_URL`, read by `config.STORE`); None: ./var/ordertrack.db.

    Accepted: `sqlite:///abs/path.db`, `sqlite:///./relative.db`, `sqlite:///:memory:`,
    a bare file path, `postgresql://...` / `postgres://...`. Anything else raises ValueError.
    """
    if not url:
        url = DEFAULT_SQLITE_PATH
    scheme, sep, rest = url.partition("://")
    if not sep:
        return StoreTarget("sqlite", url)
    scheme = scheme.lower()
    if scheme in POSTGRES_SCHEMES:
        return StoreTarget("postgres", url)
    if scheme == "sqlite":
        # sqlite:///abs -> "/abs"; sqlite:///./rel -> "./rel"; sqlite://rel -> "rel"
        path = rest[1:] if rest.startswith("/") and rest[1:2] in (".", ":") else rest
        if not path:
            raise ValueError("sqlite URL has no file path, e.g. sqlite:///./var/ordertrack.db")
        return StoreTarget("sqlite", path)
    raise ValueError(
        f"unsupported database URL scheme {scheme + '://'!r}: "
        "expected sqlite:///path.db, a file path, or postgresql://..."
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and CLI output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- time and events -------------------------------------------------------------------------


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC with milliseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def select_new_events(
    known: Iterable[tuple[str, str]], events: Iterable[TrackingEvent]
) -> list[TrackingEvent]:
    """The events of scans the history lacks, in list order, one per scan.

    `known`: the (status, timestamp) of every stored event. A scan is one event whatever
    detail each copy carries (`models.scan_identity`): of several copies in `events`, the one
    with most detail is kept; a copy of a stored scan is dropped even when it says more.
    """
    seen = {scan_identity(*identity) for identity in known}
    return [event for event in one_per_scan(events) if event.identity not in seen]


def number_events(order_id: str, last_seq: int, events: Sequence[TrackingEvent]) -> list[StoredEvent]:
    """Give each event the next seq after `last_seq`, in list order."""
    return [
        StoredEvent(
            order_id=order_id,
            seq=last_seq + index,
            status=event.status,
            location=event.location,
            timestamp=event.timestamp,
            estimated_delivery=event.estimated_delivery,
            raw=event.raw,
        )
        for index, event in enumerate(events, start=1)
    ]


def validate_order(order: Order) -> None:
    """Raise InvalidOrder for an unknown carrier or status, or empty ids."""
    if order.carrier not in CARRIERS:
        raise InvalidOrder(
            f"unknown carrier {order.carrier!r}: expected one of {', '.join(CARRIERS)}"
        )
    if order.status not in STATUSES:
        raise InvalidOrder(
            f"unknown status {order.status!r}: expected one of {', '.join(STATUSES)}"
        )
    for name in ("order_id", "user_id", "tracking_number"):
        if not getattr(order, name):
            raise InvalidOrder(f"{name} must not be empty")


# --- rows ------------------------------------------------------------------------------------

ORDER_COLUMNS = (
    "order_id, user_id, carrier, tracking_number, status, last_update, estimated_delivery, "
    "region, seq, consecutive_failures, needs_investigation, created_at"
)
EVENT_COLUMNS = "order_id, seq, status, location, timestamp, estimated_delivery, raw"
#: what `select_new_events` needs of the stored events: their scan identity
SCAN_COLUMNS = "status, timestamp"


def find_order_query(carrier: str, tracking_number: str) -> str:
    """`find_order`'s SELECT, given each dialect's two placeholders; served by the index
    `orders_tracking_number` (migration 0003) without a scan or a sort."""
    return (f"SELECT {ORDER_COLUMNS} FROM orders WHERE carrier = {carrier} "
            f"AND tracking_number = {tracking_number} "
            "ORDER BY created_at DESC, order_id DESC LIMIT 1")


def order_from_row(row: Sequence[Any]) -> Order:
    """An Order from a row selected with ORDER_COLUMNS."""
    return Order(
        order_id=row[0],
        user_id=row[1],
        carrier=row[2],
        tracking_number=row[3],
        status=row[4],
        last_update=row[5],
        estimated_delivery=row[6],
        region=row[7],
        seq=int(row[8]),
        consecutive_failures=int(row[9]),
        needs_investigation=bool(row[10]),
        created_at=row[11],
    )


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A StoredEvent from a row selected with EVENT_COLUMNS (raw is JSON text or NULL)."""
    return StoredEvent(
        order_id=row[0],
        seq=int(row[1]),
        status=row[2],
        location=row[3],
        timestamp=row[4],
        estimated_delivery=row[5],
        raw=orjson.loads(row[6]) if row[6] is not None else None,
    )


def raw_json(raw: dict[str, Any] | None) -> str | None:
    return orjson.dumps(raw).decode() if raw is not None else None


# --- migrations ------------------------------------------------------------------------------

#: `NNNN_name.sql` serves every dialect, `NNNN_name.<dialect>.sql` one dialect
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(?:(sqlite|postgres)\.)?sql$")
#: what a migration's `{{WORD}}` stands for in each dialect: where their types differ
DIALECT_WORDS = {
    "postgres": {"BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN", "FALSE": "FALSE", "JSON": "JSONB"},
    "sqlite": {"BIGINT": "INTEGER", "BOOLEAN": "INTEGER", "FALSE": "0", "JSON": "TEXT"},
}
_WORD = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Migration:
    version: int
    #: as schema_version records it: `NNNN_name.<dialect>.sql` (each dialect had its own file
    #: once; the name stays, so databases migrated before and since agree)
    name: str
    sql: str


def dialect_sql(template: str, dialect: str, source: str) -> str:
    """A migration's text for `dialect`: every `{{WORD}}` spelled as DIALECT_WORDS says."""
    words = DIALECT_WORDS[dialect]

    def spell(match: re.Match[str]) -> str:
        if match.group(1) not in words:
            raise StoreError(f"migration {source}: unknown word {match.group(0)}")
        return words[match.group(1)]

    return _WORD.sub(spell, template)


def load_migrations(dialect: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """`NNNN_name[.<dialect>].sql` files, by version. Versions must be 1, 2, 3, ... without
    gaps, each in one file (for every dialect, or one per dialect)."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if not match or match.group(3) not in (None, dialect):
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"migration {path.name}: version {version:04d} has two files")
        sql = dialect_sql(path.read_text(), dialect, path.name)
        found[version] = Migration(version, f"{version:04d}_{match.group(2)}.{dialect}.sql", sql)
    migrations = [found[version] for version in sorted(found)]
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StoreError(f"migration {migration.name}: expected version {expected:04d}")
    return migrations


# --- the interface ---------------------------------------------------------------------------


class TrackingStore(abc.ABC):
    """Orders and their tracking history. Open one with `open_store(url)`."""

    kind: str = ""

    async def __aenter__(self) -> TrackingStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (pool) without touching the schema."""

    @abc.abstractmethod
    async def upgrade(self, to: int | None = None) -> int:
        """Apply pending migrations, up to version `to` (default: all); idempotent, safe from
        concurrent processes. Returns the schema version."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def add_order(self, order: Order) -> None:
        """Register an order. Raises OrderExists for a duplicate order_id, InvalidOrder."""

    @abc.abstractmethod
    async def get_order(self, order_id: str) -> Order | None: ...

    @abc.abstractmethod
    async def list_orders(
        self, carrier: str | None = None, active_only: bool = False
    ) -> list[Order]:
        """Orders by creation time; `active_only` keeps those in ACTIVE_STATUSES."""

    @abc.abstractmethod
    async def find_order(self, carrier: str, tracking_number: str) -> Order | None:
        """The newest order the carrier's tracking number belongs to (a pushed scan names
        only the number), or None."""

    async def active_orders(self, carrier: str) -> list[Order]:
        """The carrier's orders the gateway polls (status in ACTIVE_STATUSES)."""
        return await self.list_orders(carrier=carrier, active_only=True)

    @abc.abstractmethod
    async def history(self, order_id: str) -> list[StoredEvent]:
        """The order's events, oldest first (by seq)."""

    @abc.abstractmethod
    async def append_events(self, order_id: str, events: list[TrackingEvent]) -> list[StoredEvent]:
        """Store the events the order's history lacks, numbered; one transaction.

        Raises OrderNotFound. Returns the newly stored events (empty when nothing was new).
        """

    @abc.abstractmethod
    async def record_failure(self, order_id: str) -> int:
        """One more consecutive carrier failure for the order; the new count."""

    @abc.abstractmethod
    async def record_success(self, order_id: str) -> int:
        """Reset the consecutive failure count; the count it had."""

    @abc.abstractmethod
    async def set_needs_investigation(self, order_id: str, flag: bool) -> None: ...
