"""`ordertrack db upgrade`: create or migrate the tracking store's schema."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ordertrack.config import STORE, add_flags, load
from ordertrack.store import StoreError, create_store, redact_url
from ordertrack.store.base import parse_store_url


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply pending migrations (idempotent)")
    add_flags(upgrade, STORE)


async def _upgrade(url: str | None) -> tuple[int, int]:
    store = create_store(url)
    await store.connect()
    try:
        before = await store.schema_version()
        after = await store.upgrade()
    finally:
        await store.close()
    return before, after


def run(args: argparse.Namespace) -> int:
    settings = load(STORE, args)
    target = parse_store_url(settings.database_url)
    where = target.target if target.kind == "sqlite" else redact_url(target.target)
    try:
        before, after = asyncio.run(_upgrade(settings.database_url))
    except (StoreError, OSError) as exc:
        print(f"ordertrack db upgrade: {exc}", file=sys.stderr)
        return 1
    change = f" (was {before})" if before != after else " (already up to date)"
    print(f"{target.kind} {where}: schema version {after}{change}")
    return 0
