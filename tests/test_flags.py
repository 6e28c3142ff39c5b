"""Feature flags on OpenFeature: the kill switch and the heartbeat settings, per client class.

Rules and providers in-process (the shipped flagd file, LaunchDarkly's offline test data
source, the Redis document), then real pods, a real redis-server and a real `ordertrack api`
driven by a flagd file that the test rewrites, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from ldclient import datasystem as ld_datasystem
from ldclient.integrations.test_datav2 import TestDataV2
from prometheus_client import CollectorRegistry

from ordertrack import flags
from ordertrack.flags import client_class, providers
from ordertrack.flags.source import FlagSource
from ordertrack.models import CARRIERS
from tests.support import free_port, wait_for, wait_for_async
from tests.support.api import add_order, get_tracking, running_api
from tests.support.pods import (
    Heartbeats,
    RawWebSocket,
    close_code,
    connect,
    open_raw,
    recv_event,
    recv_json,
    start_pod,
    start_pod_async,
    upgrade_headers,
)

SHIPPED = Path(__file__).resolve().parents[1] / "deploy" / "flags" / "realtime_order_tracking.json"
MOBILE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
DESKTOP_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")


def flag_file(path: Path, realtime: bool | None = True, pong: dict | None = None,
              interval: float | None = None, raw: str | None = None) -> Path:
    """Write a flagd flag-definition file atomically (as `kubectl apply` of a ConfigMap does)."""
    flags: dict = {}
    if realtime is not None:
        flags["realtime_order_tracking"] = {
            "state": "ENABLED", "variants": {"on": True, "off": False},
            "defaultVariant": "on" if realtime else "off"}
    if pong:
        flags["ws_pong_timeout_seconds"] = {
            "state": "ENABLED", "variants": {"default": pong["desktop"], "mobile": pong["mobile"]},
            "defaultVariant": "default",
            "targeting": {"if": [{"==": [{"var": "client_class"}, "mobile"]}, "mobile", "default"]}}
    if interval:
        flags["ws_ping_interval_seconds"] = {"state": "ENABLED", "variants": {"v": interval},
                                             "defaultVariant": "v"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(raw if raw is not None else json.dumps({"flags": flags}))
    os.replace(tmp, path)
    return path


async def source_for(provider, **kwargs) -> FlagSource:
    registry = CollectorRegistry()
    source = FlagSource(provider, loop=asyncio.get_running_loop(), region=kwargs.pop("region", "us-east-1"),
                        carriers=CARRIERS, registry=registry, **kwargs)
    source.registry = registry
    changed = asyncio.Event()
    source.on_change(changed.set)
    if not source.uses_redis:
        from openfeature.provider import ProviderStatus

        await wait_for_async(lambda: source.client.get_provider_status() is ProviderStatus.READY, 5)
        await asyncio.wait_for(changed.wait(), 5)
    return source


# --- rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("user_agent", "expected"), [
    (MOBILE_UA, "mobile"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0 Mobile Safari/537.36", "mobile"),
    ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15", "mobile"),
    (DESKTOP_UA, "desktop"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
     "desktop"),
    ("okhttp/4.12.0", "native"),
    ("VantageShop/5.2 CFNetwork/1494.0.7 Darwin/23.4.0", "native"),
    ("", "native"),
    (None, "native"),
])
def test_client_class_from_user_agent(user_agent, expected):
    assert client_class(user_agent) == expected


def test_provider_is_chosen_by_configuration():
    assert providers.choose(SimpleNamespace()) == providers.REDIS
    assert providers.choose(SimpleNamespace(flags_file="f.json")) == providers.FLAGD_FILE
    assert providers.choose(SimpleNamespace(launchdarkly_sdk_key="sdk-1")) == providers.LAUNCHDARKLY
    with pytest.raises(ValueError, match="not both"):
        providers.choose(SimpleNamespace(flags_file="f.json", launchdarkly_sdk_key="sdk-1"))


def test_both_providers_set_stops_start_up_with_one_line(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "FLAGS_FILE": str(SHIPPED), "LAUNCHDARKLY_SDK_KEY": "sdk-x"}
    done = subprocess.run([sys.executable, "-m", "ordertrack", "serve"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "FLAGS_FILE or LAUNCHDARKLY_SDK_KEY, not both" in done.stderr
    assert "Traceback" not in done.stderr


async def test_shipped_file_is_the_logs_rollout_and_the_runbooks_mobile_timeout():
    source = await source_for(providers.build(SimpleNamespace(flags_file=str(SHIPPED))),
                              heartbeat_defaults=(30.0, 10.0))
    try:
        users = [f"user_{n}" for n in range(4000)]
        share = sum(source.realtime_enabled(u, "dhl", "desktop") for u in users) / len(users)
        assert 0.035 < share < 0.065  # 5 % of users, by flagd's `fractional`
        assert not any(source.realtime_enabled(u, "ups", "desktop") for u in users[:500])
        # at the upgrade the carrier is not known yet: allowed when some carrier would be
        assert [source.realtime_enabled(u, None, "desktop") for u in users[:500]] == \
               [source.realtime_enabled(u, "dhl", "desktop") for u in users[:500]]
        assert source.heartbeat("mobile") == (30.0, 15.0)
        assert source.heartbeat("desktop") == (30.0, 10.0)
        assert source.heartbeat("native") == (30.0, 10.0)
    finally:
        source.close()
    other = await source_for(providers.build(SimpleNamespace(flags_file=str(SHIPPED))),
                             region="eu-west-1")
    try:
        assert not any(other.realtime_enabled(f"user_{n}", "dhl", "desktop") for n in range(500))
    finally:
        other.close()


async def test_launchdarkly_provider_built_from_the_sdk_key_evaluates_offline():
    data = TestDataV2.data_source()
    data.update(data.flag("realtime_order_tracking").variation_for_all(False))
    data.update(data.flag("ws_pong_timeout_seconds").variations(10.0, 15.0)
                .fallthrough_variation(0).if_match("client_class", "mobile").then_return(1))
    settings = SimpleNamespace(launchdarkly_sdk_key="sdk-test-key")
    system = ld_datasystem.custom()
    system.initializers([data.builder])
    system.synchronizers(data.builder)
    provider = providers.build(settings, launchdarkly_data_system=system.build())
    from ld_openfeature import LaunchDarklyProvider

    assert isinstance(provider, LaunchDarklyProvider)
    assert provider.client.get_sdk_key() == "sdk-test-key"
    source = await source_for(provider)
    try:
        assert not source.realtime_enabled("user_1", "dhl", "desktop")
        assert source.heartbeat("mobile")[1] == 15.0 and source.heartbeat("desktop")[1] == 10.0
        changed = asyncio.Event()
        source.on_change(changed.set)
        # the log's targeting rule: region us-east-1 AND carrier dhl
        data.update(data.flag("realtime_order_tracking").variations(False, True)
                    .fallthrough_variation(0).if_match("region", "us-east-1")
                    .and_match("carrier", "dhl").then_return(1))
        await asyncio.wait_for(changed.wait(), 5)
        # the SDK may tell of the change before its store answers with it: wait for the decision
        await wait_for_async(lambda: source.realtime_enabled("user_1", "dhl", "desktop"), 5,
                             what="the new targeting decided")
        assert not source.realtime_enabled("user_1", "fedex", "desktop")
    finally:
        source.close()


async def test_unreadable_redis_document_keeps_the_last_good_decision():
    source = await source_for(providers.RedisFlagProvider())
    try:
        assert not source.realtime_enabled("u", "dhl", "desktop")  # no document read yet
        source.observe_document(b'{"enabled": false}')
        assert not source.realtime_enabled("u", "dhl", "desktop")
        source.observe_document(None)  # unset: on for everyone
        assert source.realtime_enabled("u", "dhl", "desktop")
        source.observe_document(b"{not json")
        assert source.realtime_enabled("u", "dhl", "desktop")
        # the provider's error event reaches the loop from a worker thread
        await wait_for_async(lambda: source.registry.get_sample_value(
            "ordertrack_flag_provider_errors_total", {"provider": "ordertrack-redis"}), 10,
            what="the unreadable document counted")
        assert source.realtime_enabled("u", "dhl", "desktop")
    finally:
        source.close()


async def test_a_decision_for_everyone_gives_way_to_a_rollout_per_user():
    """A flag without targeting is decided once for every context (OpenFeature's STATIC /
    DISABLED reasons); once a rollout per user replaces it, users are told apart again."""
    provider = providers.RedisFlagProvider()
    source = await source_for(provider)
    users = [f"user_{n}" for n in range(400)]
    try:
        source.observe_document(None)  # on for everyone
        assert all(source.realtime_enabled(u, None, "desktop") for u in users)
        source.observe_document(b'{"percentage": 50}')
        upgrades = [source.realtime_enabled(u, None, "desktop") for u in users]
        assert 0.35 < sum(upgrades) / len(users) < 0.65
        assert [source.realtime_enabled(u, "dhl", "desktop") for u in users] == upgrades
        source.observe_document(b'{"enabled": false}')
        assert not any(source.realtime_enabled(u, "dhl", "mobile") for u in users)
        source.observe_document(b'{"carriers": ["ups"]}')
        assert source.realtime_enabled("user_1", "ups", "desktop")
        assert not source.realtime_enabled("user_1", "dhl", "desktop")
        assert source.realtime_enabled("user_1", None, "desktop")  # ups might be its carrier
    finally:
        source.close()


# --- real pods, a real API, a flagd file ---------------------------------------------------------
def metric(port: int, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_file_change_closes_with_4003_refuses_upgrades_and_rest_follows(
        procs, tmp_path, redis_server, keys):
    path = flag_file(tmp_path / "flags.json", realtime=True)
    pod = await start_pod_async(procs, tmp_path, redis_server.url, keys, flags_file=path,
                    flags_file_poll_seconds=0.2)
    order_id = "ord_flagfile"
    with running_api(redis_server, keys, tmp_path, FLAGS_FILE=str(path),
                     FLAGS_FILE_POLL_SECONDS="0.2") as api:
        await add_order(api, order_id)
        token = keys.token("user_1", order_id)
        assert get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True
        ws = await connect(pod, token, order_id)
        assert (await recv_json(ws))["event"] == "connection_ack"

        flag_file(path, realtime=False)
        assert await close_code(ws, timeout=5) == 4003
        refused = await RawWebSocket.open(pod, f"/ws/orders/{order_id}/track", upgrade_headers(token))
        assert (refused.status, refused.json()["error"]) == (503, "FEATURE_DISABLED")
        await wait_for_async(lambda: get_tracking(api, order_id, token).json()["realtime"]["enabled"] is False,
                 5, what="REST realtime.enabled false")
        await wait_for_async(lambda: any(d["reason"] == "feature_disabled" for d in pod.disconnects()), 5)

        flag_file(path, realtime=True)
        await wait_for_async(lambda: get_tracking(api, order_id, token).json()["realtime"]["enabled"] is True,
                 5, what="REST realtime.enabled true again")

        async def reopened() -> bool:  # refused until the pod's watcher has seen the file
            ws = await connect(pod, token, order_id)
            return (await recv_json(ws))["event"] == "connection_ack"

        await wait_for_async(reopened, 10, interval=0.1, what="upgrades accepted again")


async def test_broken_file_keeps_the_last_good_decision_and_is_reported(procs, tmp_path, redis_url, keys):
    path = flag_file(tmp_path / "flags.json", realtime=True)
    metrics_port = free_port()
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, flags_file=path, flags_file_poll_seconds=0.2,
                    metrics_port=metrics_port)
    ws = await connect(pod, keys.token("u_b1", "ord_broken"), "ord_broken")
    await recv_json(ws)
    flag_file(path, raw='{"flags": {"realtime_order_tracking": ')  # a half-written edit
    await wait_for_async(lambda: metric(metrics_port, "ordertrack_flag_provider_errors_total") >= 1, 5,
             what="error counted")
    errors = [line for line in pod.log_lines() if line.get("logger") == "ordertrack.flags"
              and line.get("level") == "error"]
    assert errors and errors[0]["provider"] == "FlagdProvider" and errors[0]["keeping"] == "last good decision"
    assert "Traceback" not in pod.log.read_text()
    assert metric(metrics_port, "ordertrack_flag_provider_ready") == 0
    # the connection stays, and new upgrades are still accepted
    other = await connect(pod, keys.token("u_b2", "ord_broken"), "ord_broken")
    assert (await recv_json(other))["event"] == "connection_ack"
    await ws.send('{"event": "heartbeat"}')  # the first one stays open too
    assert (await recv_event(ws, "heartbeat_ack"))["event"] == "heartbeat_ack"
    # repaired: reported healthy again
    flag_file(path, realtime=True)
    await wait_for_async(lambda: metric(metrics_port, "ordertrack_flag_provider_ready") == 1, 5, what="ready again")
    await ws.close()
    await other.close()


def test_pod_that_never_had_a_decision_refuses_until_the_file_is_readable(
        procs, tmp_path, redis_url, keys):
    path = flag_file(tmp_path / "flags.json", raw="this is not a flag file")
    pod = start_pod(procs, tmp_path, redis_url, keys, flags_file=path, flags_file_poll_seconds=0.2)
    token = keys.token("u_n1", "ord_never")
    headers = {"Authorization": f"Bearer {token}", "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    response = httpx.get(pod.base + "/ws/orders/ord_never/track", headers=headers, timeout=5)
    assert (response.status_code, response.json()["error"]) == (503, "FEATURE_DISABLED")
    assert httpx.get(pod.base + "/readyz", timeout=5).status_code == 200  # REST still serves them
    assert any(line.get("keeping") == "no decision yet: realtime off" for line in pod.log_lines())
    flag_file(path, realtime=True)
    wait_for(lambda: httpx.get(pod.base + "/ws/orders/ord_never/track", headers=headers,
                               timeout=5).status_code == 101, 5, what="upgrade accepted")


def changes(pod) -> int:
    return sum(line.get("event") == "PROVIDER_CONFIGURATION_CHANGED" for line in pod.log_lines())


async def test_pong_deadline_follows_the_client_class_and_a_flag_change_moves_it(
        procs, tmp_path, redis_url, keys):
    """The runbook's 10 s desktop / 15 s mobile at test scale, the mobile one widened to 30 s so
    a loaded machine never reaches it. Nothing sleeps: the order of the pod's pings and closes
    proves which deadline each connection had (the timer wheel fires deadlines in time order)."""
    path = flag_file(tmp_path / "flags.json", pong={"desktop": 0.6, "mobile": 30.0})
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, flags_file=path,
                                flags_file_poll_seconds=0.2, heartbeat_interval_seconds=0.3,
                                heartbeat_timeout_seconds=0.6)

    async def client(user: str, agent: str) -> Heartbeats:
        raw = await open_raw(pod, keys.token(user, "ord_ua"), "ord_ua", **{"User-Agent": agent})
        beats = Heartbeats(raw)
        assert (await beats.text())["event"] == "connection_ack"
        return beats

    desktop, mobile = await client("u_d", DESKTOP_UA), await client("u_m", MOBILE_UA)
    try:
        mobile.stop_answering()
        outstanding = await mobile.unanswered_ping()
        # desktop's first unanswered ping goes out after mobile's: its deadline is the later one
        # if both were 0.6 s, so mobile would be closed first
        desktop.stop_answering(after=1)
        await desktop.unanswered_ping()
        assert await desktop.close_code() == 4000
        assert await mobile.still_open(), "the mobile client was closed at the desktop deadline"

        # a flag change applies to an open connection from its next ping: 30 s -> 0.6 s
        before = changes(pod)
        flag_file(path, pong={"desktop": 0.6, "mobile": 0.6})
        await wait_for_async(lambda: changes(pod) > before, 10, what="flag change seen")
        await mobile.pong(outstanding)  # answered late: the next ping gets the new deadline
        assert await mobile.close_code(timeout=10) == 4000  # the old 30 s would not be over
    finally:
        desktop.stop()
        mobile.stop()
    await wait_for_async(lambda: sorted((d["user_id"], d["reason"]) for d in pod.disconnects())
                         == [("u_d", "heartbeat_timeout"), ("u_m", "heartbeat_timeout")], 10,
                         what="both disconnects logged")


def test_flag_evaluation():
    assert flags.is_enabled(flags.parse_flag(None), "anyone")
    assert not flags.is_enabled(flags.parse_flag(b'{"enabled": false}'), "anyone")
    rollout = flags.parse_flag(b'{"enabled": true, "percentage": 5, "regions": ["us-east-1"], "carriers": ["dhl"]}')
    assert not flags.is_enabled(rollout, "u", region="eu-west-1")
    users = [f"user{i}" for i in range(4000)]
    share = sum(flags.is_enabled(rollout, u, "us-east-1", "dhl") for u in users) / len(users)
    assert 0.03 < share < 0.07
    assert not any(flags.is_enabled(rollout, u, "us-east-1", "ups") for u in users)
    assert flags.parse_flag(b"not json") == flags.Flag()
