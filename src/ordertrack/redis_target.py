"""What a REDIS_URL names, parsed once (pure: no I/O, no imports from the rest of ordertrack).

`parse(url, cluster)` turns a URL of any topology into a `RedisTarget`, or raises ValueError
saying what is wrong; `redis_connect` builds every client from that value, and the pod's
pub/sub reader connects to the `SubscriptionAddress` it resolves to (host, port or unix path,
credentials, db, TLS): the URL is never rebuilt nor parsed again. `config` checks REDIS_URL
with `parse` too, so this module sits below both (no import cycle).
"""

from __future__ import annotations

import ssl as ssl_module
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

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
CERT_REQS = {
    "none": ssl_module.CERT_NONE,
    "optional": ssl_module.CERT_OPTIONAL,
    "required": ssl_module.CERT_REQUIRED,
}
_EXAMPLE = ("e.g. redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/mymaster/0 "
            "or redis+cluster://h1:6379,h2:6379")



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


def parse(url: str, cluster: bool = False) -> RedisTarget:
    """REDIS_URL (and REDIS_CLUSTER) -> RedisTarget; ValueError naming what is wrong."""
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
        if query["ssl_cert_reqs"] not in CERT_REQS:
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
