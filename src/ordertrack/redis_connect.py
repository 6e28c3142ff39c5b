"""The one place that turns a `REDIS_URL` into redis.asyncio clients, for every topology.

- `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path[?db=N]`:
  one server.
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`
  (`rediss+sentinel://` for TLS): the master of `service_name`, as the sentinels say; the
  password is the data nodes'; `?sentinel_password=` if the sentinels have their own.
- `redis+cluster://[[user]:password@]host:port[,host:port...]` (`rediss+cluster://`), or any
  `redis://` URL with `REDIS_CLUSTER=1`: a Redis Cluster; the hosts are seeds.

`parse_redis_url` is pure (redis_target.py's parser): URL in, `RedisTarget` out, or
`ConfigError` with one line.
`command_client` gives the pooled client for commands (it follows a Sentinel failover and the
cluster's slot map by itself). The pod's pub/sub reader connects to host:port itself, so it asks
`subscription_address` before every (re)connect: that is where a failover is noticed.
"""

from __future__ import annotations

import random
import ssl as ssl_module
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ordertrack import config
from ordertrack.config import ConfigError
from ordertrack.redis_target import (
    CERT_REQS,
    CLUSTER,
    SENTINEL,
    STANDALONE,
    RedisTarget,
    SubscriptionAddress,
    parse,
    redact,
)

#: REDIS_CLUSTER, in every process's shared REDIS group (a redis:// URL then names seeds)
CLUSTER_SETTING = next(s for s in config.REDIS if s.env == "REDIS_CLUSTER")


def parse_redis_url(url: str, cluster: bool = False) -> RedisTarget:
    """REDIS_URL (and REDIS_CLUSTER) -> RedisTarget; ConfigError naming what is wrong."""
    try:
        return parse(url.strip(), cluster)
    except ValueError as exc:
        raise ConfigError(f"invalid REDIS_URL={redact(url)!r}: {exc}") from None


def target_from_settings(cfg) -> RedisTarget:
    """The target of a process's settings (`redis_url`, optional `redis_cluster`)."""
    return parse_redis_url(cfg.redis_url, bool(getattr(cfg, "redis_cluster", False)))


def _as_target(target_or_cfg) -> RedisTarget:
    return target_or_cfg if isinstance(target_or_cfg, RedisTarget) else target_from_settings(target_or_cfg)


# --- clients ----------------------------------------------------------------------------------

#: command clients: a dead connection is retried on a fresh one (after a Redis restart or a
#: failover the pool holds stale sockets); a stuck server fails a call after socket_timeout
COMMAND_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "socket_keepalive": True,
}


def _probe_options(target: RedisTarget) -> dict[str, Any]:
    """For one-question clients (a sentinel, a cluster seed): a dead one must not hold up asking
    the next, so a short timeout and no retry (redis-py's default retries 10 times)."""
    return {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry": Retry(NoBackoff(), 0),
            **tls_options(target)}


def command_retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.02), 3)


def tls_options(target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": target.ssl_cert_reqs}
    if target.ssl_ca_certs:
        options["ssl_ca_certs"] = target.ssl_ca_certs
    return options


def ssl_context(target: RedisTarget) -> ssl_module.SSLContext | None:
    """The TLS context a raw asyncio connection to the target's nodes uses (None: plain TCP)."""
    if not target.tls:
        return None
    context = ssl_module.create_default_context(cafile=target.ssl_ca_certs)
    if target.ssl_cert_reqs != "required":
        context.check_hostname = False
        context.verify_mode = CERT_REQS[target.ssl_cert_reqs]
    return context


def _sentinel(target: RedisTarget, **overrides) -> Sentinel:
    sentinel_options = _probe_options(target)
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    options = dict(COMMAND_OPTIONS, **tls_options(target))
    options.update(db=target.db, username=target.username, password=target.password,
                   retry=command_retry(),
                   retry_on_error=[RedisConnectionError, RedisTimeoutError])
    options.update(overrides)
    return Sentinel(list(target.hosts), sentinel_kwargs=sentinel_options, **options)


def command_client(target_or_cfg, **overrides) -> aioredis.Redis | RedisCluster:
    """The pooled command client: `Redis`, Sentinel's `master_for`, or `RedisCluster`.

    `overrides` are redis-py connection options (e.g. `max_connections`, `decode_responses`).
    Close it with `close_client`, which also closes a Sentinel client's sentinel connections.
    """
    target = _as_target(target_or_cfg)
    if target.topology == SENTINEL:
        assert target.service_name is not None  # the URL parser requires it for Sentinel
        return _sentinel(target, **overrides).master_for(target.service_name)
    options = dict(COMMAND_OPTIONS, **tls_options(target))
    options.update(username=target.username, password=target.password, retry=command_retry(),
                   retry_on_error=[RedisConnectionError, RedisTimeoutError])
    options.update(overrides)
    if target.topology == CLUSTER:
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return RedisCluster(startup_nodes=nodes, **options)
    if target.unix_path:
        return aioredis.Redis(unix_socket_path=target.unix_path, db=target.db, **options)
    host, port = target.hosts[0]
    return aioredis.Redis(host=host, port=port, db=target.db, **options)


async def close_client(client: aioredis.Redis | RedisCluster) -> None:
    """Close a client from `command_client` and whatever it opened (a Sentinel's sentinels)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    await client.aclose()
    if manager is not None:
        await manager.aclose()


async def subscription_address(target_or_cfg) -> SubscriptionAddress:
    """Where a pub/sub connection should go now. Call it before every (re)connect.

    Standalone: the URL's server. Sentinel: the master the sentinels report now (a failover
    changes it; raises `MasterNotFoundError` while none is agreed). Cluster: any seed that
    answers with `cluster_state:ok`, in random order so pods spread over the seeds; classic
    PUBLISH reaches every node, so one PSUBSCRIBE anywhere sees every message.
    Raises a `redis.exceptions.RedisError` (a `ConnectionError`) when nothing answers.
    """
    target = _as_target(target_or_cfg)
    context = ssl_context(target)

    def address(host: str, port: int) -> SubscriptionAddress:
        return SubscriptionAddress(host, int(port), target.password, target.db, context,
                                   target.username)

    if target.topology == SENTINEL:
        async with _sentinel(target) as sentinel:
            assert target.service_name is not None  # the URL parser requires it for Sentinel
            host, port = await sentinel.discover_master(target.service_name)
        return address(host, port)
    if target.topology == CLUSTER:
        seeds = list(target.hosts)
        random.shuffle(seeds)
        errors = []
        for host, port in seeds:
            node = aioredis.Redis(host=host, port=port, username=target.username,
                                  password=target.password, **_probe_options(target))
            try:
                info = await node.cluster("INFO")
            except RedisError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            finally:
                await node.aclose()
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state == "ok":
                return address(host, port)
            errors.append(f"{host}:{port}: cluster_state {state}")
        raise RedisConnectionError("no cluster node to subscribe on: " + "; ".join(errors))
    if target.unix_path:
        return SubscriptionAddress("", 0, target.password, target.db, None, target.username,
                                   path=target.unix_path)
    host, port = target.hosts[0]
    return address(host, port)


__all__ = [
    "CLUSTER", "CLUSTER_SETTING", "COMMAND_OPTIONS", "MasterNotFoundError", "RedisTarget",
    "SENTINEL", "STANDALONE", "SubscriptionAddress", "close_client", "command_client",
    "parse_redis_url", "redact", "ssl_context", "subscription_address", "tls_options", "target_from_settings",
]
