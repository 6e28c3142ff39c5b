"""The JS tracking client on `error` `RESYNC_REQUIRED` (issue 17 item 6), in headless Chromium:
it takes the pod's seq as its own, refetches over REST and applies the order's next updates,
which it used to drop as duplicates. The client module runs unchanged; its WebSocket and fetch
(its constructor's `WebSocket` and `fetch` options) are scripted with the pod's and the API's
answers, the resync frame being the pod's own bytes (`delivery.resync_frame`). The pod's side is
tests/test_push_resync.py; the whole page against real processes is tests/test_browser.py."""

from __future__ import annotations

import pytest

from ordertrack.push import delivery
from tests.support import REPO

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ORIGIN = "http://client.test"
CLIENT_JS = REPO / "src" / "ordertrack" / "api" / "static" / "tracking-client.js"

SCENARIO = """
async ({ resyncFrame }) => {
  const { TrackingClient } = await import("/tracking-client.js");
  const event = (seq) => ({ seq, status: "in_transit", location: `stop ${seq}`,
                            timestamp: `2026-12-06T10:${String(seq % 60).padStart(2, "0")}:00Z` });
  // the API's answers: before Redis lost the order the client had seen seq 1000; after, the
  // order's history as the store has it now
  const answers = [
    { order_id: "ord_rs", status: "in_transit", seq: 1000, history: [event(999), event(1000)],
      realtime: { enabled: true, url: "ws://pod.test/ws/orders/ord_rs/track" } },
    { order_id: "ord_rs", status: "in_transit", seq: 5, history: [1, 2, 3, 4, 5].map(event),
      realtime: { enabled: true, url: "ws://pod.test/ws/orders/ord_rs/track" } },
  ];
  const fetched = [];
  const fetchImpl = async (url) => {
    const body = answers[Math.min(fetched.length, answers.length - 1)];
    fetched.push(url);
    return { ok: true, status: 200, statusText: "OK", json: async () => body };
  };
  const sockets = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url; this.readyState = 0; this.sent = []; sockets.push(this);
      setTimeout(() => { this.readyState = 1; if (this.onopen) this.onopen(); }, 0);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() { this.readyState = 3; }
    receive(text) { if (this.onmessage) this.onmessage({ data: text }); }
  }
  const until = async (what) => {
    for (let i = 0; i < 500 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!what()) throw new Error("timed out: " + what);
  };
  const client = new TrackingClient({ orderId: "ord_rs", token: "t", apiBase: "",
                                      WebSocket: ScriptedSocket, fetch: fetchImpl });
  const failures = [];
  client.addEventListener("failure", (e) => failures.push(e.detail.code));
  await client.start();
  await until(() => sockets.length === 1 && sockets[0].sent.length > 0);
  const ws = sockets[0];
  const resumedFrom = ws.sent[0].data.last_seq;
  ws.receive(JSON.stringify({ event: "connection_ack", data: {
    connection_id: "ws_conn_00000001", order_id: "ord_rs", carrier: "dhl",
    current_status: "in_transit", seq: 5 } }));
  ws.receive(resyncFrame);
  await until(() => fetched.length === 2 && client.snapshot().history.length === 5);
  const afterResync = client.snapshot();
  ws.receive(JSON.stringify({ event: "tracking_update", data: {
    ...event(6), estimated_delivery: null, carrier: "dhl" } }));
  const final = client.snapshot();
  client.stop();
  return { resumedFrom, afterResyncSeq: afterResync.seq,
           afterResyncHistory: afterResync.history.map((e) => e.seq),
           finalSeq: final.seq, finalHistory: final.history.map((e) => e.seq),
           finalLocation: final.location, mode: afterResync.mode, failures };
}
"""


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route(f"{ORIGIN}/", lambda route: route.fulfill(
                body="<!doctype html><title>client</title>", content_type="text/html"))
            page.route(f"{ORIGIN}/tracking-client.js", lambda route: route.fulfill(
                body=CLIENT_JS.read_text(), content_type="text/javascript"))
            page.goto(f"{ORIGIN}/")
            yield page
        finally:
            browser.close()


def test_the_client_takes_the_pods_seq_refetches_and_applies_the_next_updates(page):
    frame = delivery.resync_frame(1000, 5).decode()
    result = page.evaluate(SCENARIO, {"resyncFrame": frame})
    assert result["resumedFrom"] == 1000
    # the pod's seq is the client's now; what it held past it is gone, REST's history is in
    assert result["afterResyncSeq"] == 5
    assert result["afterResyncHistory"] == [1, 2, 3, 4, 5]
    assert result["mode"] == "live"
    # seq 6 is a new event, not a duplicate of the 6th of the lost numbering
    assert result["finalSeq"] == 6
    assert result["finalHistory"] == [1, 2, 3, 4, 5, 6]
    assert result["finalLocation"] == "stop 6"
    assert result["failures"] == []
