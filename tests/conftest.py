"""Shared fixtures: real redis-server and PostgreSQL, dev keys, and subprocess helpers.

Nothing of ours is mocked: tests start the real `ordertrack` processes and talk to them over
sockets. The suite starts its own redis-server on a free port (never the machine's 6379).
"""

from __future__ import annotations

import os
import shutil

import pytest
import redis.asyncio as aioredis

# a pod of the test's own and Redis clients: fixtures `pod`, `rsync`, `rasync`
from ordertrack.devtools.postgres import private_schema
from tests.support import (
    ProcessGroup,
    RedisServer,
    free_port,
    generate_keys,
    wait_http_ok,
)

# the carrier sandbox, reset for each test: fixture `sandbox`
from tests.support.gateway import sandbox  # noqa: F401
from tests.support.pods import pod, rasync, rsync  # noqa: F401

# Sentinel and Cluster topologies: fixtures `sentinel_topology`, `redis_cluster`
from tests.support.redis_topologies import redis_cluster, sentinel_topology  # noqa: F401

#: a test using one of these starts processes of ours of its own (pods, API, gateway...) or a
#: Redis topology: it is a `system` test, run by `make test`, not by `make test-fast`
SYSTEM_FIXTURES = frozenset({"procs", "sentinel_topology", "redis_cluster"})
#: modules whose every test is one: the dev stack, the bench harness, the browser, the Redis HA
#: topologies, the dashboards' module-wide pod (processes started without `procs`)
SYSTEM_MODULES = frozenset({"test_dev", "test_bench_smoke", "test_browser", "test_redis_ha",
                            "test_dashboards_alerts"})


def pytest_configure(config):
    """Each pytest-xdist worker hands out ports from a range of its own (ports 10,000-19,999
    shared out: below the kernel's ephemeral ports, and a Redis Cluster node's bus port, at
    +10,000, outside every worker's range), so two workers never race for one port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    width = 10_000 // max(count, 1)
    low = 10_000 + width * int(worker.removeprefix("gw"))
    os.environ.setdefault("ORDERTRACK_FREE_PORTS", f"{low}-{low + width}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ()))
                or item.module.__name__.rsplit(".", 1)[-1] in SYSTEM_MODULES):
            item.add_marker(pytest.mark.system)


PG_BASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One private redis-server for the whole session (tests flush it via `redis_url`)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """URL of the session's private Redis, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which the test may stop and restart."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """RSA and EC dev key pairs; `keys.token(user, order)` mints RS256 tokens."""
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def procs():
    """Start `ordertrack` sub-processes; all are stopped (and reaped) after the test."""
    group = ProcessGroup()
    yield group
    group.stop_all()


@pytest.fixture(scope="module")
def sandbox_url():
    """The URL of one carrier sandbox (`ordertrack sandbox`) for the test module."""
    group = ProcessGroup()
    port = free_port()
    group.start("sandbox", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/_admin/health")
        yield url
    finally:
        group.stop_all()


@pytest.fixture
async def clients(redis_url):
    """Two asyncio Redis clients on the session's Redis (two replicas, as it were)."""
    made = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield made
    for client in made:
        await client.aclose()


@pytest.fixture
def pg_url():
    """A PostgreSQL URL on the machine's `test` database, in a schema of this test's own."""
    with private_schema(PG_BASE_URL) as url:
        yield url


def pytest_report_header(config):
    return [
        f"redis-server: {shutil.which('redis-server')}",
        f"postgres: {PG_BASE_URL}",
    ]
