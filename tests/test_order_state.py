"""One order-state rule for every reader: the store, the REST answer built from the stream and
the pod's `connection_ack` built from the state hash say the same about the same events.

The real Poller (DHL through an httpx transport, the outside world) stores and publishes; the
REST API runs on a store that does not show those events yet (a lagging replica), so its
answer comes from the order's stream; a real pod acks from the state hash."""

from __future__ import annotations

import httpx
import orjson

from tests.support.api import add_order, get_tracking, running_api
from tests.support.gateway import NUMBERS, InProcessGateway, order
from tests.support.pods import connect, recv_json, start_pod_async


def dhl_answer(scans: list[tuple[str, str]]) -> bytes:
    """A DHL answer with these (statusCode, timestamp) scans, oldest first."""
    events = [{"timestamp": timestamp, "statusCode": code, "status": code,
               "location": {"address": {"addressLocality": f"Hub {i}", "countryCode": "DE"}}}
              for i, (code, timestamp) in enumerate(scans)][::-1]
    return orjson.dumps({"shipments": [{"id": NUMBERS["dhl"], "service": "parcel-de",
                                        "status": events[0], "events": events}]})


async def test_a_scan_nobody_can_read_leaves_every_reader_at_the_known_status(
        redis_server, redis_url, keys, procs, tmp_path):
    # an unrecognised code says nothing about where the parcel is: the order stays in transit
    body = dhl_answer([("transit", "2025-10-02T10:00:00Z"), ("unknown", "2025-10-02T12:00:00Z")])
    order_id = "ord_unknown_scan"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    (tmp_path / "api").mkdir()
    with running_api(redis_server, keys, tmp_path / "api") as api:
        await add_order(api, order_id, events=(), user="shopper")   # the lagging store
        async with InProcessGateway(redis_url, str(tmp_path / "gateway.db"), answer) as gw:
            await gw.store.add_order(order(order_id, "dhl"))
            await gw.poller.poll_batch("dhl", gw.client, [await gw.store.get_order(order_id)])
            stored = await gw.store.get_order(order_id)
        rest = get_tracking(api, order_id, keys.token("shopper", order_id)).json()

    pod = await start_pod_async(procs, tmp_path, redis_url, keys)
    async with await connect(pod, keys.token("shopper", order_id), order_id) as ws:
        ack = (await recv_json(ws))["data"]

    assert (stored.status, stored.seq) == ("in_transit", 2)
    assert (rest["status"], rest["seq"]) == ("in_transit", 2)
    assert [h["status"] for h in rest["history"]] == ["in_transit", "unknown"]
    assert rest["last_update"] == stored.last_update == "2025-10-02T12:00:00Z"
    assert (ack["current_status"], ack["seq"]) == ("in_transit", 2)
