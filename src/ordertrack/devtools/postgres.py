"""A throw-away PostgreSQL schema for tests and benches: the store's tables in a schema of
their own (`?search_path=`), dropped at the end, so runs never see each other's rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def _run(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def private_schema(base_url: str, prefix: str = "t") -> Iterator[str]:
    """A store URL on `base_url` in a fresh schema `<prefix>_<12 hex>`, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _run(base_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base_url}?search_path={schema}"
    finally:
        _run(base_url, f'DROP SCHEMA "{schema}" CASCADE')
