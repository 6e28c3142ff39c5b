"""The one place that turns a `REDIS_URL` into redis.asyncio clients, for every topology.

- `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path[?db=N]`:
  one server.
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`
  (`rediss+sentinel://` for TLS): the master of `service_name`, as the sentinels say; the
  password is the data nodes'; `?sentinel_password=` if the sentinels have their own.
- `redis+cluster://[[user]:password@]host:port[,host:port...]` (`rediss+cluster://`), or any
  `redis://` URL with `REDIS_CLUSTER=1`: a Redis Cluster; the hosts are seeds.

`parse_redis_url` is pure: URL in, `RedisTarget` out, or `ConfigError` with one line.
`command_client` gives the pooled client for commands (it follows a Sentinel failover and the
cluster's slot map by itself). The pod's pub/sub reader connects to host:port itself, so it asks
`subscription_address` before every (re)connect: that is where a failover is noticed.
"""

from __future__ import annotations

import random
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

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

STANDALONE = "standalone"
SENTINEL = "sentinel"
CLUSTER = "cluster"

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_SCHEMES = {
    "redis": (STANDALONE, False),
    "rediss": (STANDALONE, True),
    "unix": (STANDALONE, False),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
}
_CERT_REQS = {
    "none": ssl_module.CERT_NONE,
    "optional": ssl_module.CERT_OPTIONAL,
    "required": ssl_module.CERT_REQUIRED,
}
_EXAMPLE = ("e.g. redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/mymaster/0 "
            "or redis+cluster://h1:6379,h2:6379")

#: REDIS_CLUSTER, in every process's shared REDIS group (a redis:// URL then names seeds)
CLUSTER_SETTING = next(s for s in config.REDIS if s.env == "REDIS_CLUSTER")


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL names. `hosts` are the server, the sentinels, or the cluster's seeds."""

    topology: str
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    service_name: str | None = None
    sentinel_password: str | None = None
    unix_path: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None

    def describe(self) -> str:
        """For logs: the topology and addresses, never a password."""
        where = self.unix_path or ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.topology == SENTINEL:
            return f"sentinel {where} service {self.service_name} db {self.db}"
        return f"{self.topology} {where}" + (f" db {self.db}" if self.topology == STANDALONE else "")


@dataclass(frozen=True)
class SubscriptionAddress:
    """Where the pod's own pub/sub reader connects now (`path` set for a unix socket)."""

    host: str
    port: int
    password: str | None
    db: int
    ssl: ssl_module.SSLContext | None
    username: str | None = None
    path: str | None = None

    @property
    def url(self) -> str:
        """The same address as a redis:// (or unix://) URL, for push/pubsub_reader.connect
        (which is given `ssl` beside it for a TLS subscription)."""
        from urllib.parse import quote

        auth = ""
        if self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        if self.path:
            return f"unix://{auth}{self.path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{auth}{host}:{self.port}/{self.db}"


# --- parsing (pure) ---------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostpart = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}{slash}{tail}"


def _hosts(text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError("empty host in the host list")
        if item.startswith("["):  # [IPv6]:port
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ValueError(f"bad IPv6 host {item!r}")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"missing host name in {item!r}")
        port = default_port
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise ValueError(f"bad port in {item!r}")
            port = int(port_text)
        hosts.append((host, port))
    return tuple(hosts)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)


def _parse(url: str, cluster: bool) -> RedisTarget:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"expected a Redis URL, {_EXAMPLE}")
    topology, tls = _SCHEMES[scheme.lower()]
    if cluster:
        if topology == SENTINEL:
            raise ValueError("REDIS_CLUSTER=1 cannot be combined with a redis+sentinel:// URL")
        topology = CLUSTER
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    path, _, query_text = rest[len(authority):].partition("?")
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    options: dict[str, Any] = {}
    allowed = {"db", "ssl_cert_reqs", "ssl_ca_certs"} | ({"sentinel_password"} if topology == SENTINEL else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    if "ssl_cert_reqs" in query:
        if query["ssl_cert_reqs"] not in _CERT_REQS:
            raise ValueError("ssl_cert_reqs must be none, optional or required")
        options["ssl_cert_reqs"] = query["ssl_cert_reqs"]
    if query.get("ssl_ca_certs"):
        options["ssl_ca_certs"] = query["ssl_ca_certs"]
    if query.get("sentinel_password"):
        options["sentinel_password"] = query["sentinel_password"]

    if scheme.lower() == "unix":
        if cluster:
            raise ValueError("a Redis Cluster cannot be reached over a unix socket")
        if not path:
            raise ValueError("expected unix:///path/to/redis.sock")
        return RedisTarget(STANDALONE, (), db=_db(query.get("db", "0")),
                           unix_path=unquote(path), **options)

    userinfo, at, hostlist = authority.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        if not colon:  # AUTH needs a password; redis-py would send AUTH user ""
            raise ValueError("a user name needs a password: redis://user:password@host "
                             "or redis://:password@host")
        username = unquote(user_text) or None
        password = unquote(password_text) or None
    if not hostlist:
        raise ValueError(f"missing host, {_EXAMPLE}")
    hosts = _hosts(hostlist, DEFAULT_SENTINEL_PORT if topology == SENTINEL else DEFAULT_PORT)
    segments = [unquote(part) for part in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()

    if topology == SENTINEL:
        if not segments or not segments[0]:
            raise ValueError("missing the service name: redis+sentinel://host:port/service_name[/db]")
        if len(segments) > 2:
            raise ValueError("expected redis+sentinel://host:port/service_name[/db]")
        db = _db(segments[1]) if len(segments) == 2 else _db(query.get("db", "0"))
        return RedisTarget(SENTINEL, hosts, db=db, username=username, password=password,
                           tls=tls, service_name=segments[0], **options)
    if len(segments) > 1:
        raise ValueError("expected at most one path segment, the database number")
    db = _db(segments[0]) if segments else _db(query.get("db", "0"))
    if topology == CLUSTER:
        if db != 0:
            raise ValueError("Redis Cluster has only database 0")
        return RedisTarget(CLUSTER, hosts, username=username, password=password, tls=tls, **options)
    if len(hosts) > 1:
        raise ValueError("several hosts need redis+sentinel:// or redis+cluster:// (or REDIS_CLUSTER=1)")
    return RedisTarget(STANDALONE, hosts, db=db, username=username, password=password, tls=tls,
                       **options)


def parse_redis_url(url: str, cluster: bool = False) -> RedisTarget:
    """REDIS_URL (and REDIS_CLUSTER) -> RedisTarget; ConfigError naming what is wrong."""
    try:
        return _parse(url.strip(), cluster)
    except ValueError as exc:
        raise ConfigError(f"invalid REDIS_URL={redact(url)!r}: {exc}") from None


def redis_url(value: str) -> str:
    """A `config.Setting` parser for REDIS_URL: any topology's URL, checked, returned as is."""
    _parse(value.strip(), cluster=False)
    return value


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
        context.verify_mode = _CERT_REQS[target.ssl_cert_reqs]
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
    "parse_redis_url", "redact", "redis_url", "ssl_context", "subscription_address", "tls_options", "target_from_settings",
]
