"""A resume from a `last_seq` the order never reached (issue 17 item 6): the client says 1000,
the order's state says 5 (Redis restarted without persistence, say). The pod answers `error`
`RESYNC_REQUIRED` with the order's `seq` right after the ack (or after a later `resume`), and
then delivers the order's next seqs, which the client takes from there. Real `ordertrack
serve`, real Redis, an outside client (the `websockets` library)."""

from __future__ import annotations

import json

from tests.support.pods import connect, publish, recv_event, recv_json


async def test_a_resume_from_past_the_orders_seq_is_told_to_resync(pod, keys, rasync):
    for seq in range(1, 6):
        await publish(rasync, "ord_resync", seq)
    ws = await connect(pod, keys.token("resyncer", "ord_resync", alg="ES256"), "ord_resync",
                       query="last_seq=1000")
    ack = await recv_json(ws)
    assert ack["event"] == "connection_ack" and ack["data"]["seq"] == 5
    resync = await recv_json(ws)
    assert resync["event"] == "error"
    assert resync["data"]["code"] == "RESYNC_REQUIRED"
    assert resync["data"]["seq"] == 5
    assert "1000" in resync["data"]["message"]
    await publish(rasync, "ord_resync", 6)
    assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 6

    # the same for a `resume` message on an admitted connection
    await ws.send(json.dumps({"event": "resume", "data": {"last_seq": 999}}))
    again = await recv_event(ws, "error")
    assert (again["data"]["code"], again["data"]["seq"]) == ("RESYNC_REQUIRED", 6)
    await publish(rasync, "ord_resync", 7)
    assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 7
    await ws.close()


async def test_an_ordinary_resume_gets_its_replay_and_no_resync(pod, keys, rasync):
    for seq in range(1, 6):
        await publish(rasync, "ord_resume_ok", seq)
    for last_seq in (3, 5):  # behind the order, and level with it
        ws = await connect(pod, keys.token("resumer", "ord_resume_ok", alg="ES256"),
                           "ord_resume_ok", query=f"last_seq={last_seq}")
        assert (await recv_json(ws))["event"] == "connection_ack"
        for seq in range(last_seq + 1, 6):
            message = await recv_json(ws)
            assert (message["event"], message["data"]["seq"]) == ("tracking_update", seq)
        await ws.send('{"event":"heartbeat"}')
        assert (await recv_json(ws))["event"] == "heartbeat_ack"  # nothing else came first
        await ws.close()
