"""REDIS_URL for one server, Sentinel and Cluster: parsing, the clients, the subscription address,
the subscription watchdog; against real redis-server and redis-sentinel processes."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from ordertrack import config, redis_layout
from ordertrack.config import ConfigError, redis_url
from ordertrack.redis_connect import (
    CLUSTER,
    SENTINEL,
    STANDALONE,
    RedisTarget,
    close_client,
    command_client,
    parse_redis_url,
    subscription_address,
)
from tests.support import free_port

# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "cluster", "expected"), [
    ("redis://127.0.0.1:6379/0", False, RedisTarget(STANDALONE, (("127.0.0.1", 6379),))),
    ("redis://:s3cret@cache/2", False,
     RedisTarget(STANDALONE, (("cache", 6379),), db=2, password="s3cret")),
    ("rediss://app:p%40ss@cache:6380/1?ssl_cert_reqs=none", False,
     RedisTarget(STANDALONE, (("cache", 6380),), db=1, username="app", password="p@ss", tls=True,
                 ssl_cert_reqs="none")),
    ("redis://[::1]:6380", False, RedisTarget(STANDALONE, (("::1", 6380),))),
    ("unix:///run/redis.sock?db=3", False,
     RedisTarget(STANDALONE, (), db=3, unix_path="/run/redis.sock")),
    ("redis+sentinel://:pw@s1:26380,s2,s3:26381/mymaster/3", False,
     RedisTarget(SENTINEL, (("s1", 26380), ("s2", 26379), ("s3", 26381)), db=3, password="pw",
                 service_name="mymaster")),
    ("redis+sentinel://s1/tracking?sentinel_password=sp", False,
     RedisTarget(SENTINEL, (("s1", 26379),), service_name="tracking", sentinel_password="sp")),
    ("rediss+sentinel://s1:26379/mymaster", False,
     RedisTarget(SENTINEL, (("s1", 26379),), tls=True, service_name="mymaster")),
    ("redis+cluster://n1:7000,n2:7001", False,
     RedisTarget(CLUSTER, (("n1", 7000), ("n2", 7001)))),
    ("redis://:pw@n1:7000/0", True, RedisTarget(CLUSTER, (("n1", 7000),), password="pw")),
    ("redis://n1:7000,n2:7001", True, RedisTarget(CLUSTER, (("n1", 7000), ("n2", 7001)))),
])
def test_parse_each_topology(url, cluster, expected):
    assert parse_redis_url(url, cluster=cluster) == expected


@pytest.mark.parametrize(("url", "cluster", "reason"), [
    ("http://cache:6379", False, "expected a Redis URL"),
    ("cache:6379", False, "expected a Redis URL"),
    ("redis://", False, "missing host"),
    ("redis://cache:99999", False, "bad port"),
    ("redis://cache:port", False, "bad port"),
    ("redis://cache/zero", False, "the database must be a number"),
    ("redis://a:6379,b:6379", False, "several hosts need redis+sentinel:// or redis+cluster://"),
    ("redis://a,,b", True, "empty host"),
    ("redis://app@cache", False, "a user name needs a password"),
    ("redis://cache?socket_timeout=1", False, "unknown option 'socket_timeout'"),
    ("rediss://cache?ssl_cert_reqs=maybe", False, "ssl_cert_reqs must be none, optional or required"),
    ("redis+sentinel://s1:26379", False, "missing the service name"),
    ("redis+sentinel://s1:26379/", False, "missing the service name"),
    ("redis+sentinel://s1:26379/mymaster/x", False, "the database must be a number"),
    ("redis+sentinel://s1:26379/mymaster/0/extra", False, "service_name[/db]"),
    ("redis+sentinel://s1/mymaster", True, "cannot be combined"),
    ("redis+cluster://n1:7000/1", False, "only database 0"),
    ("redis://n1:7000/2", True, "only database 0"),
    ("unix:///run/redis.sock", True, "unix socket"),
])
def test_bad_url_is_one_clear_line(url, cluster, reason):
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url, cluster=cluster)
    message = str(info.value)
    assert message.startswith("invalid REDIS_URL=")
    assert reason in message
    assert "\n" not in message


def test_bad_url_error_never_shows_the_password():
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis+sentinel://:topsecret@s1:26379")
    assert "topsecret" not in str(info.value)
    assert ":***@s1:26379" in str(info.value)


def test_describe_names_the_topology_not_the_password():
    target = parse_redis_url("redis+sentinel://:topsecret@s1:26379,s2:26380/mymaster/1")
    assert target.describe() == "sentinel s1:26379,s2:26380 service mymaster db 1"


def test_as_a_setting_a_bad_url_stops_start_up_with_one_line():
    settings = (config.Setting("REDIS_URL", redis_url, "redis://127.0.0.1:6379/0", "Redis"),)
    ok = config.load(settings, environ={"REDIS_URL": "redis+sentinel://s1,s2/mymaster"})
    assert ok.redis_url == "redis+sentinel://s1,s2/mymaster"
    with pytest.raises(ConfigError, match=r"^invalid REDIS_URL='redis\+sentinel://s1': missing the service name"):
        config.load(settings, environ={"REDIS_URL": "redis+sentinel://s1"})










# --- real servers -----------------------------------------------------------------------------


async def _psubscribe(address) -> aioredis.client.PubSub:
    client = aioredis.Redis(host=address.host, port=address.port, password=address.password,
                            db=address.db)
    pubsub = client.pubsub()
    await pubsub.psubscribe(redis_layout.CHANNEL_PATTERN)
    message = await pubsub.get_message(timeout=5)
    assert message and message["type"] == "psubscribe"
    return pubsub


async def _next_message(pubsub, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            return message
    raise AssertionError("no message on the subscription")


async def _close(pubsub) -> None:
    await pubsub.aclose()
    await pubsub.connection_pool.disconnect()


async def test_plain_url_commands_and_subscription(redis_url):
    client = command_client(parse_redis_url(redis_url))
    address = await subscription_address(parse_redis_url(redis_url))
    assert (address.host, address.port, address.db) == ("127.0.0.1", int(redis_url.split(":")[2].split("/")[0]), 0)
    pubsub = await _psubscribe(address)
    try:
        assert await client.publish(redis_layout.channel("ord_1"), b"hello") == 1
        assert (await _next_message(pubsub))["data"] == b"hello"
    finally:
        await _close(pubsub)
        await close_client(client)


async def _write_until_ok(client, key: str, value: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.set(key, value)
            return
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_sentinel_failover_commands_and_subscription_follow_the_new_master(sentinel_topology):
    topology = sentinel_topology
    target = parse_redis_url(topology.url)
    client = command_client(target)
    try:
        await client.set(redis_layout.state("ord_1"), "before")
        assert (await subscription_address(target)).port == topology.primary.port

        topology.kill_primary()
        # the same client, as a running process holds it, writes again within seconds
        await _write_until_ok(client, redis_layout.state("ord_1"), "after", timeout=20)
        replica = aioredis.Redis(port=topology.replica.port)
        assert await replica.get(redis_layout.state("ord_1")) == b"after"
        assert (await replica.execute_command("ROLE"))[0] == b"master"
        await replica.aclose()

        address = await subscription_address(target)
        assert (address.host, address.port, address.db) == ("127.0.0.1", topology.replica.port, 0)
        pubsub = await _psubscribe(address)
        try:
            assert await client.publish(redis_layout.channel("ord_1"), b"after-failover") == 1
            assert (await _next_message(pubsub))["data"] == b"after-failover"
        finally:
            await _close(pubsub)

        topology.sentinels[0].stop()  # one sentinel down: the others still answer
        assert (await subscription_address(target)).port == topology.replica.port
    finally:
        await close_client(client)


async def test_cluster_publish_on_any_node_reaches_a_psubscribe_on_another(redis_cluster):
    target = parse_redis_url(redis_cluster.url)
    address = await subscription_address(target)
    assert address.port in redis_cluster.ports
    pubsub = await _psubscribe(address)
    client = command_client(target)
    try:
        for port in redis_cluster.ports:
            if port == address.port:
                continue
            node = aioredis.Redis(port=port)
            await node.publish(redis_layout.channel("ord_7"), f"from {port}")
            await node.aclose()
            message = await _next_message(pubsub)
            assert (message["channel"], message["data"]) == (redis_layout.channel("ord_7").encode(), f"from {port}".encode())
        await client.publish(redis_layout.channel("ord_8"), b"via the cluster client")
        assert (await _next_message(pubsub))["data"] == b"via the cluster client"
    finally:
        await _close(pubsub)
        await close_client(client)


async def test_cluster_subscription_address_skips_a_dead_seed(redis_cluster):
    dead = free_port()
    target = parse_redis_url(f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{redis_cluster.ports[0]}")
    for _ in range(4):  # the seeds are tried in random order: the dead one is skipped every time
        assert (await subscription_address(target)).port == redis_cluster.ports[0]


async def _raw_command(port: int, *args: str) -> bytes:
    """One RESP command on a plain socket; the first line of the reply, as the server sent it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    writer.write(request.encode())
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line


WRITE_BOTH = """
redis.call('XADD', KEYS[1], '1-0', 'msg', ARGV[1])
redis.call('HSET', KEYS[2], 'seq', '1')
return redis.call('HGET', KEYS[2], 'seq')
"""


async def test_cluster_script_needs_its_keys_under_one_hash_tag(redis_cluster):
    client = command_client(parse_redis_url(redis_cluster.url))
    try:
        tagged = [redis_layout.stream("ord_1"), redis_layout.state("ord_1")]
        assert key_slot(tagged[0].encode()) == key_slot(tagged[1].encode())
        assert await client.eval(WRITE_BOTH, 2, *tagged, "m") == b"1"

        untagged = ["order:tracking:stream:ord_1", "order:tracking:state:ord_1"]
        assert key_slot(untagged[0].encode()) != key_slot(untagged[1].encode())
        with pytest.raises(RedisClusterException, match="same key slot"):
            await client.eval(WRITE_BOTH, 2, *untagged, "m")  # refused before it is sent
        # and by the server itself, whichever node gets it
        for port in redis_cluster.ports:
            reply = await _raw_command(port, "EVAL", WRITE_BOTH, "2", *untagged, "m")
            assert reply.startswith(b"-CROSSSLOT Keys in request don't hash to the same slot")
    finally:
        await close_client(client)
