"""The tracking store on both backends: a SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio

import pytest

from ordertrack import config
from ordertrack.models import Order, OrderState, StoredEvent, TrackingEvent, next_order_state
from ordertrack.store import (
    InvalidOrder,
    OrderExists,
    OrderNotFound,
    TrackingStore,
    open_store,
)
from ordertrack.store.base import (
    StoreError,
    StoreTarget,
    load_migrations,
    parse_store_url,
    redact_url,
    select_new_events,
)
from ordertrack.store.sqlite import split_statements

T1, T2, T3, T4 = (f"2025-10-0{day}T14:00:00Z" for day in (1, 2, 3, 4))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/ordertrack.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def store(store_url):
    async with open_store(store_url) as opened:
        yield opened


def order(order_id: str = "ord_1", carrier: str = "dhl", **fields) -> Order:
    fields.setdefault("user_id", "user_1")
    fields.setdefault("tracking_number", f"TN-{order_id}")
    return Order(order_id=order_id, carrier=carrier, **fields)


def event(status: str, timestamp: str, location: str | None = "Leipzig", **fields) -> TrackingEvent:
    return TrackingEvent(status=status, location=location, timestamp=timestamp, **fields)


# --- schema ----------------------------------------------------------------------------------


async def test_upgrade_is_idempotent_and_keeps_data(store: TrackingStore, store_url):
    assert await store.schema_version() == 3
    await store.add_order(order())
    assert await store.upgrade() == 3
    assert await store.upgrade() == 3
    async with open_store(store_url) as again:  # a second process starting up
        assert await again.schema_version() == 3
        assert (await again.get_order("ord_1")) is not None


async def test_open_store_can_be_awaited(store_url):
    store = await open_store(store_url)
    try:
        assert await store.list_orders() == []
    finally:
        await store.close()


async def test_database_url_reaches_the_store_through_the_settings(store_url):
    settings = config.load(config.STORE, environ={"DATABASE_URL": store_url})
    async with open_store(settings.database_url) as store:
        await store.add_order(order("ord_env"))
    async with open_store(store_url) as store:
        assert (await store.get_order("ord_env")) is not None


# --- orders ----------------------------------------------------------------------------------


async def test_add_get_and_list_orders(store: TrackingStore):
    await store.add_order(order("ord_1", "dhl", region="us-east-1"))
    await store.add_order(order("ord_2", "fedex", status="in_transit"))
    await store.add_order(order("ord_3", "dhl", status="delivered"))
    await store.add_order(order("ord_4", "dhl", status="out_for_delivery", user_id="user_2"))

    got = await store.get_order("ord_1")
    assert got is not None
    assert (got.order_id, got.user_id, got.carrier, got.tracking_number) == (
        "ord_1", "user_1", "dhl", "TN-ord_1"
    )
    assert (got.status, got.region, got.seq, got.consecutive_failures) == (
        "shipped", "us-east-1", 0, 0
    )
    assert got.needs_investigation is False
    assert got.last_update is None
    assert got.created_at and got.created_at.endswith("Z")
    assert await store.get_order("ord_missing") is None

    assert [o.order_id for o in await store.list_orders()] == ["ord_1", "ord_2", "ord_3", "ord_4"]
    assert [o.order_id for o in await store.list_orders(carrier="dhl")] == [
        "ord_1", "ord_3", "ord_4"
    ]
    assert [o.order_id for o in await store.list_orders(active_only=True)] == [
        "ord_1", "ord_2", "ord_4"
    ]
    assert [o.order_id for o in await store.active_orders("dhl")] == ["ord_1", "ord_4"]
    assert await store.active_orders("ups") == []


async def test_duplicate_and_invalid_orders_are_refused(store: TrackingStore):
    await store.add_order(order("ord_1"))
    with pytest.raises(OrderExists, match="ord_1"):
        await store.add_order(order("ord_1", "ups"))
    with pytest.raises(InvalidOrder, match="carrier"):
        await store.add_order(order("ord_2", "royalmail"))
    with pytest.raises(InvalidOrder, match="status"):
        await store.add_order(order("ord_3", status="lost"))
    assert [o.carrier for o in await store.list_orders()] == ["dhl"]


# --- events ----------------------------------------------------------------------------------


async def test_append_numbers_new_events_and_drops_known_ones(store: TrackingStore):
    await store.add_order(order())
    first = [
        event("shipped", T1, raw={"scan": {"code": "PU", "n": [1, 2]}}),
        event("in_transit", T2, location=None, estimated_delivery=T4),
        event("in_transit", T2, location=None, estimated_delivery=T4),  # twice in one answer
    ]
    added = await store.append_events("ord_1", first)
    assert [(e.seq, e.status, e.location) for e in added] == [
        (1, "shipped", "Leipzig"), (2, "in_transit", None)
    ]

    # the carrier answers with the whole history again, plus one new scan
    again = [*first, event("in_transit", T2, location=""), event("out_for_delivery", T3)]
    added = await store.append_events("ord_1", again)
    assert [(e.seq, e.status) for e in added] == [(3, "out_for_delivery")]
    assert await store.append_events("ord_1", again) == []
    assert await store.append_events("ord_1", []) == []

    history = await store.history("ord_1")
    assert [(e.seq, e.status, e.location, e.timestamp) for e in history] == [
        (1, "shipped", "Leipzig", T1),
        (2, "in_transit", None, T2),
        (3, "out_for_delivery", "Leipzig", T3),
    ]
    assert history[0].raw == {"scan": {"code": "PU", "n": [1, 2]}}
    assert history[1].raw is None
    assert history[1].estimated_delivery == T4

    current = await store.get_order("ord_1")
    assert current is not None
    # the ETA of the last scan that had one is kept
    assert (current.status, current.last_update, current.estimated_delivery, current.seq) == (
        "out_for_delivery", T3, T4, 3
    )


async def test_estimate_of_an_earlier_event_in_the_same_batch_is_kept(store: TrackingStore):
    await store.add_order(order())
    await store.append_events("ord_1", [event("in_transit", T1, estimated_delivery=T4),
                                        event("in_transit", T2, location="Hub")])
    current = await store.get_order("ord_1")
    assert current is not None and current.estimated_delivery == T4


async def test_delivered_order_leaves_the_active_set(store: TrackingStore):
    await store.add_order(order("ord_1"))
    await store.add_order(order("ord_2"))
    await store.append_events("ord_1", [event("in_transit", T1), event("delivered", T2)])
    assert [o.order_id for o in await store.active_orders("dhl")] == ["ord_2"]
    delivered = await store.get_order("ord_1")
    assert delivered is not None and delivered.status == "delivered"


async def test_unrecognised_scan_is_stored_but_keeps_the_order_polled(store: TrackingStore):
    """`unknown` says we could not read the carrier's code, not that the shipment ended: the
    event is kept (history, seq), the order keeps its last known status and stays active."""
    await store.add_order(order())
    added = await store.append_events("ord_1", [event("in_transit", T1), event("unknown", T2)])
    assert [(e.seq, e.status) for e in added] == [(1, "in_transit"), (2, "unknown")]
    current = await store.get_order("ord_1")
    assert current is not None
    assert (current.status, current.last_update, current.seq) == ("in_transit", T2, 2)
    assert [o.order_id for o in await store.active_orders("dhl")] == ["ord_1"]
    await store.append_events("ord_1", [event("delivered", T3)])
    assert (await store.get_order("ord_1")).status == "delivered"


async def test_late_scan_is_stored_but_does_not_move_the_order_back(store: TrackingStore):
    await store.add_order(order())
    await store.append_events("ord_1", [event("delivered", T3)])
    added = await store.append_events("ord_1", [event("in_transit", T2)])
    assert [(e.seq, e.status) for e in added] == [(2, "in_transit")]
    current = await store.get_order("ord_1")
    assert current is not None
    assert (current.status, current.last_update, current.seq) == ("delivered", T3, 2)


async def test_a_scan_is_stored_once_whatever_detail_each_poll_gives(store: TrackingStore):
    """DHL's shipment status repeats its newest event with more address detail, and the next
    poll may carry either copy: the history holds the scan once, with its first copy."""
    await store.add_order(order())
    added = await store.append_events("ord_1", [
        event("in_transit", T1, location="Brooklyn NY"),
        event("in_transit", T1, location="Brooklyn NY, US"),  # the same answer, richer copy
    ])
    assert [(e.seq, e.location) for e in added] == [(1, "Brooklyn NY, US")]
    for copy in ("Brooklyn NY", None, "", "BROOKLYN, NY, US"):
        assert await store.append_events("ord_1", [event("in_transit", T1, location=copy)]) == []
    added = await store.append_events("ord_1", [event("in_transit", T1, location="Brooklyn"),
                                                 event("out_for_delivery", T2, "Brooklyn NY")])
    assert [(e.seq, e.status) for e in added] == [(2, "out_for_delivery")]
    history = await store.history("ord_1")
    assert [(e.seq, e.status, e.location, e.timestamp) for e in history] == [
        (1, "in_transit", "Brooklyn NY, US", T1),
        (2, "out_for_delivery", "Brooklyn NY", T2),
    ]


async def sql(store: TrackingStore, statement: str) -> None:
    """Run one literal statement on either backend (to build what older versions stored)."""
    if store.kind == "postgres":
        await store.pool.execute(statement)  # type: ignore[attr-defined]
    else:
        await store.db.execute(statement)  # type: ignore[attr-defined]


async def test_upgrade_drops_copies_of_a_scan_stored_before_and_refuses_new_ones(store_url):
    """A database written before one-scan-one-event holds copies of a scan; the upgrade
    keeps the first one stored (what clients saw first) and the schema refuses another."""
    from ordertrack.store import create_store

    store = create_store(store_url)
    await store.connect()
    try:
        assert await store.upgrade(to=1) == 1
        await store.add_order(order())
        for seq, status, location, timestamp in (
            (1, "in_transit", "'Brooklyn NY'", T1),
            (2, "in_transit", "'Brooklyn NY, US'", T1),
            (3, "out_for_delivery", "NULL", T2),
            (4, "out_for_delivery", "'Brooklyn NY'", T2),
        ):
            await sql(store, f"INSERT INTO events (order_id, seq, status, location, timestamp, "
                             f"created_at) VALUES ('ord_1', {seq}, '{status}', {location}, "
                             f"'{timestamp}', '{T1}')")
        assert len(await store.history("ord_1")) == 4

        assert await store.upgrade() == 3
        history = await store.history("ord_1")
        assert [(e.seq, e.status, e.location) for e in history] == [
            (1, "in_transit", "Brooklyn NY"), (3, "out_for_delivery", None)
        ]
        with pytest.raises(Exception, match="(?i)unique"):
            await sql(store, "INSERT INTO events (order_id, seq, status, location, timestamp, "
                             f"created_at) VALUES ('ord_1', 5, 'in_transit', 'Brooklyn NY, US', "
                             f"'{T1}', '{T1}')")
    finally:
        await store.close()


async def test_find_order_is_served_by_the_tracking_number_index(store: TrackingStore):
    """Every pushed scan looks its order up by carrier and tracking number: with many orders
    that must be an index lookup returning the newest order of a reused number, not a scan."""
    from ordertrack.store.base import find_order_query

    await store.add_order(order("ord_old", tracking_number="TN-reused", created_at=T1))
    await store.add_order(order("ord_new", tracking_number="TN-reused", created_at=T2))
    await store.add_order(order("ord_other", carrier="ups", tracking_number="TN-reused"))
    found = await store.find_order("dhl", "TN-reused")
    assert found is not None and found.order_id == "ord_new"
    assert await store.find_order("fedex", "TN-reused") is None

    if store.kind == "postgres":
        async with store.pool.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("SET enable_seqscan = off")  # a tiny table is seq-scanned anyway
            rows = await conn.fetch("EXPLAIN " + find_order_query("$1", "$2"), "dhl", "TN-reused")
            plan = "\n".join(row[0] for row in rows)
    else:
        async with store.db.execute(  # type: ignore[attr-defined]
            "EXPLAIN QUERY PLAN " + find_order_query("?", "?"), ("dhl", "TN-reused")
        ) as cursor:
            plan = "\n".join(str(row[-1]) for row in await cursor.fetchall())
    assert "orders_tracking_number" in plan, plan
    assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan


async def test_concurrent_appends_each_get_their_own_result(store: TrackingStore):
    """A burst of appends (SQLite commits them as one group): each caller gets its own
    events, numbered per order; a missing order fails alone, the others are stored."""
    for i in range(4):
        await store.add_order(order(f"ord_{i}"))
    calls = [store.append_events(f"ord_{i % 4}", [event("in_transit", f"2025-10-01T1{i}:00:00Z")])
             for i in range(8)]
    calls.insert(3, store.append_events("ord_missing", [event("in_transit", T1)]))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results.pop(3), OrderNotFound)
    assert [[(e.order_id, e.timestamp) for e in r] for r in results] == [
        [(f"ord_{i % 4}", f"2025-10-01T1{i}:00:00Z")] for i in range(8)]
    for i in range(4):  # the two appends of an order got seq 1 and 2, in whichever order
        assert {results[i][0].seq, results[i + 4][0].seq} == {1, 2}
        assert [e.seq for e in await store.history(f"ord_{i}")] == [1, 2]
        assert (await store.get_order(f"ord_{i}")).seq == 2


async def test_append_to_unknown_order_is_an_error(store: TrackingStore):
    with pytest.raises(OrderNotFound):
        await store.append_events("ord_missing", [event("in_transit", T1)])
    assert await store.history("ord_missing") == []


async def test_concurrent_appends_from_two_stores_never_duplicate(store: TrackingStore, store_url):
    """Two gateway replicas poll the same order and append overlapping answers at once."""
    await store.add_order(order())
    scans = [event("in_transit", f"2025-10-01T10:{minute:02d}:00Z") for minute in range(12)]
    async with open_store(store_url) as other:
        calls = []
        for i in range(12):
            replica = store if i % 2 == 0 else other
            # each answer: the history so far (as the carrier returns it), up to scan i
            calls.append(replica.append_events("ord_1", scans[: i + 1]))
            calls.append(replica.append_events("ord_1", scans[max(0, i - 2): i + 1]))
        results = await asyncio.gather(*calls)

    added = [stored for batch in results for stored in batch]
    assert sorted(e.seq for e in added) == list(range(1, 13))
    history = await store.history("ord_1")
    assert [e.seq for e in history] == list(range(1, 13))
    assert sorted(e.timestamp for e in history) == [s.timestamp for s in scans]
    current = await store.get_order("ord_1")
    assert current is not None
    assert (current.seq, current.last_update) == (12, scans[-1].timestamp)


# --- polling health --------------------------------------------------------------------------


async def test_failures_count_and_reset(store: TrackingStore):
    await store.add_order(order())
    assert [await store.record_failure("ord_1") for _ in range(3)] == [1, 2, 3]
    current = await store.get_order("ord_1")
    assert current is not None and current.consecutive_failures == 3
    assert await store.record_success("ord_1") == 3
    assert await store.record_success("ord_1") == 0
    assert await store.record_failure("ord_1") == 1

    await store.set_needs_investigation("ord_1", True)
    flagged = await store.get_order("ord_1")
    assert flagged is not None and flagged.needs_investigation is True
    # flagged orders are still polled
    assert [o.order_id for o in await store.active_orders("dhl")] == ["ord_1"]
    await store.set_needs_investigation("ord_1", False)
    cleared = await store.get_order("ord_1")
    assert cleared is not None and cleared.needs_investigation is False

    for call in (store.record_failure, store.record_success):
        with pytest.raises(OrderNotFound):
            await call("ord_missing")
    with pytest.raises(OrderNotFound):
        await store.set_needs_investigation("ord_missing", True)


# --- pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///abs/path.db", StoreTarget("sqlite", "/abs/path.db")),
        ("sqlite:///./relative.db", StoreTarget("sqlite", "./relative.db")),
        ("sqlite:///:memory:", StoreTarget("sqlite", ":memory:")),
        ("var/x.db", StoreTarget("sqlite", "var/x.db")),
        ("postgresql://u@h/db?search_path=s", StoreTarget("postgres", "postgresql://u@h/db?search_path=s")),
        ("postgres://u@h/db", StoreTarget("postgres", "postgres://u@h/db")),
    ],
)
def test_parse_store_url(url, expected):
    assert parse_store_url(url) == expected


def test_parse_store_url_defaults_and_refusals(monkeypatch):
    # the environment is read by the settings (config.STORE) alone, never behind their back
    monkeypatch.setenv("DATABASE_URL", "postgres://h/db")
    assert parse_store_url(None) == StoreTarget("sqlite", "./var/ordertrack.db")
    with pytest.raises(ValueError, match="mysql"):
        parse_store_url("mysql://h/db")
    with pytest.raises(config.ConfigError, match="invalid DATABASE_URL='mysql://h/db'"):
        config.load(config.STORE, environ={"DATABASE_URL": "mysql://h/db"})


def test_redact_url_hides_the_password():
    assert redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("postgresql://app@db/x") == "postgresql://app@db/x"


def test_select_new_events_one_per_scan_whatever_the_location_says():
    known = [("in_transit", T1)]
    events = [
        event("in_transit", T1, location=""),            # stored already, as None
        event("in_transit", T1, location="Brooklyn NY, US"),  # ... and even with more detail
        event("in_transit", T2, location="Brooklyn NY"),
        event("in_transit", T2, location=None),
        event("in_transit", T2, location="Brooklyn NY, US"),  # the richest copy of T2
        event("in_transit", T2, location="Brooklyn NY"),
        event("delivered", T2, location=None),              # another scan at the same time
    ]
    assert select_new_events(known, events) == [
        event("in_transit", T2, location="Brooklyn NY, US"),
        event("delivered", T2, location=None),
    ]


def test_next_order_state_follows_the_newest_scan_by_time():
    current = OrderState("shipped", None, None, 0)
    stored = [
        StoredEvent("o", 1, "out_for_delivery", None, "2025-10-01T10:00:00.500Z"),
        StoredEvent("o", 2, "in_transit", None, "2025-10-01T10:00:00Z", T4),
    ]
    # status follows the newest scan; the estimate is the newest one any new scan gave
    assert next_order_state(current, stored) == OrderState(
        "out_for_delivery", "2025-10-01T10:00:00.500Z", T4, 2
    )


def test_split_statements_keeps_semicolons_in_strings():
    script = "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\nINSERT INTO a VALUES ('1;2');\n-- end\n"
    assert split_statements(script) == [
        "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "INSERT INTO a VALUES ('1;2');",
    ]


def test_migrations_one_file_for_every_dialect_or_one_per_dialect(tmp_path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (n {{BIGINT}}, raw {{JSON}});")
    (tmp_path / "0002_second.postgres.sql").write_text("SELECT 2;")
    (tmp_path / "0002_second.sqlite.sql").write_text("SELECT 'two';")
    postgres = load_migrations("postgres", tmp_path)
    sqlite = load_migrations("sqlite", tmp_path)
    # recorded under the per-dialect names the shipped migrations always had
    assert [(m.version, m.name, m.sql) for m in postgres] == [
        (1, "0001_first.postgres.sql", "CREATE TABLE t (n BIGINT, raw JSONB);"),
        (2, "0002_second.postgres.sql", "SELECT 2;")]
    assert [(m.version, m.name, m.sql) for m in sqlite] == [
        (1, "0001_first.sqlite.sql", "CREATE TABLE t (n INTEGER, raw TEXT);"),
        (2, "0002_second.sqlite.sql", "SELECT 'two';")]
    (tmp_path / "0003_third.sql").write_text("SELECT {{NUMBER}};")
    with pytest.raises(StoreError, match="0003_third.sql: unknown word {{NUMBER}}"):
        load_migrations("sqlite", tmp_path)
    (tmp_path / "0003_third.sql").write_text("SELECT 3;")
    (tmp_path / "0003_third.sqlite.sql").write_text("SELECT 3;")
    with pytest.raises(StoreError, match="version 0003 has two files"):
        load_migrations("sqlite", tmp_path)
    assert len(load_migrations("postgres", tmp_path)) == 3
