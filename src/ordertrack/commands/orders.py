"""`ordertrack orders add|list`: register orders to track and see what is tracked.

Neither creates a database at a path nobody named: `list` on a missing SQLite file, and `add`
when only the embedded default `./var/ordertrack.db` is in play and missing, are one clear line
and exit code 1 (`ordertrack db upgrade` creates a store on purpose).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import orjson

from ordertrack.config import STORE, add_flags, load
from ordertrack.models import CARRIERS, STATUSES, Order
from ordertrack.store import InvalidOrder, OrderExists, StoreError, open_store
from ordertrack.store.base import parse_store_url, validate_order

TABLE_COLUMNS = (
    ("ORDER_ID", "order_id"),
    ("USER_ID", "user_id"),
    ("CARRIER", "carrier"),
    ("TRACKING_NUMBER", "tracking_number"),
    ("STATUS", "status"),
    ("SEQ", "seq"),
    ("LAST_UPDATE", "last_update"),
    ("FAILURES", "consecutive_failures"),
    ("INVESTIGATE", "needs_investigation"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="register an order to track")
    add.add_argument("--order-id", required=True)
    add.add_argument("--user-id", required=True, help="the customer who owns the order")
    add.add_argument("--carrier", required=True, help=f"one of {', '.join(CARRIERS)}")
    add.add_argument("--tracking-number", required=True)
    add.add_argument("--region", default=None, help="e.g. us-east-1")
    add.add_argument("--status", default="shipped", help=f"one of {', '.join(STATUSES)}")
    add_flags(add, STORE)

    listing = actions.add_parser("list", help="list orders (a table, or JSON with --json)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument("--carrier", default=None, help=f"only this carrier ({', '.join(CARRIERS)})")
    listing.add_argument("--active", action="store_true", help="only orders the gateway polls")
    add_flags(listing, STORE)


def format_table(orders: list[Order]) -> str:
    """A plain aligned table, one order a line, `-` for empty fields."""
    rows = [[title for title, _ in TABLE_COLUMNS]]
    for order in orders:
        row = []
        for _, name in TABLE_COLUMNS:
            value = getattr(order, name)
            if isinstance(value, bool):
                value = "yes" if value else "no"
            row.append("-" if value is None or value == "" else str(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def missing_database(url: str | None) -> str | None:
    """Why there is nothing to open at `url` (a SQLite file that does not exist), else None."""
    target = parse_store_url(url)
    if target.kind != "sqlite" or target.target == ":memory:" or Path(target.target).exists():
        return None
    return (f"no database at {target.target}: is `ordertrack dev` running from this directory? "
            "Otherwise set DATABASE_URL (or --database-url), or create one with "
            "`ordertrack db upgrade`")


def _fail(message: str, code: int) -> int:
    print(f"ordertrack orders: {message}", file=sys.stderr)
    return code


async def _add(url: str | None, order: Order) -> None:
    async with open_store(url) as store:
        await store.add_order(order)


async def _list(url: str | None, carrier: str | None, active: bool) -> list[Order]:
    async with open_store(url) as store:
        return await store.list_orders(carrier=carrier, active_only=active)


def run(args: argparse.Namespace) -> int:
    settings = load(STORE, args)
    url = settings.database_url
    # an explicitly named new file is created by `add`; the embedded default is not
    if (args.action == "list" or url is None) and (missing := missing_database(url)):
        return _fail(missing, 1)
    try:
        if args.action == "add":
            order = Order(
                order_id=args.order_id,
                user_id=args.user_id,
                carrier=args.carrier.lower(),
                tracking_number=args.tracking_number,
                status=args.status,
                region=args.region,
            )
            try:
                validate_order(order)
            except InvalidOrder as exc:
                return _fail(str(exc), 2)
            asyncio.run(_add(url, order))
            print(
                f"added order {order.order_id} ({order.carrier} {order.tracking_number}, "
                f"status {order.status}, user {order.user_id})"
            )
            return 0
        carrier = args.carrier.lower() if args.carrier else None
        if carrier is not None and carrier not in CARRIERS:
            return _fail(f"unknown carrier {carrier!r}: expected one of {', '.join(CARRIERS)}", 2)
        orders = asyncio.run(_list(url, carrier, args.active))
    except OrderExists as exc:
        return _fail(f"{exc}; nothing changed", 1)
    except (StoreError, OSError) as exc:
        return _fail(str(exc), 1)
    if args.json:
        sys.stdout.write(orjson.dumps([dataclasses.asdict(o) for o in orders]).decode() + "\n")
    else:
        print(format_table(orders))
    return 0
