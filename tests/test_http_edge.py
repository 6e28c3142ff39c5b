"""One HTTP edge for the pod, the API and ingest (`ordertrack.http_edge`): one table of refusal
codes, one request-id rule, one `WWW-Authenticate`, and the draining pod's own code."""

from __future__ import annotations

import asyncio
import http
import re
import signal
from pathlib import Path

import httpx

from ordertrack import auth, protocol
from ordertrack.http_edge.refusals import CODES, JSON_TYPE, WWW_AUTHENTICATE, refusal
from tests.pods import open_raw, start_pod, upgrade_headers
from tests.support import REPO, wait_for

SRC = REPO / "src" / "ordertrack"
#: a code literal handed to the edge: refusal("X"...), error_response("X"...), CODES["X"]
_CODE_USE = re.compile(r"""(?:refusal|error_response|CODES\[)\(?\s*["']([A-Z_]+)["']""")


def test_every_code_any_process_answers_with_is_in_the_one_table():
    used = set()
    for path in SRC.rglob("*.py"):
        used |= set(_CODE_USE.findall(path.read_text()))
    used |= {"UNAUTHORIZED", "FORBIDDEN"}  # auth.AuthError's codes
    assert used, "the pattern finds the edge's calls"
    assert used <= set(CODES), used - set(CODES)
    for code, entry in CODES.items():
        assert entry.code == code and http.HTTPStatus(entry.status) and entry.message
    try:
        auth.authorize(auth.Claims("u1", frozenset({"ord_a"}), 0.0), "ord_b")
    except auth.AuthError as exc:
        assert (exc.status, exc.code) == (CODES[exc.code].status, exc.code)


def test_the_refusals_headers_come_from_the_table():
    assert refusal("UNAUTHORIZED", "x").headers == (WWW_AUTHENTICATE,)
    assert WWW_AUTHENTICATE == ("WWW-Authenticate", 'Bearer realm="ordertrack"')
    assert dict(CODES["POD_DRAINING"].headers) == {"Retry-After": "1"}
    assert CODES["POD_DRAINING"].status == CODES["POD_AT_CAPACITY"].status == 503
    assert int(dict(CODES["POD_AT_CAPACITY"].headers)["Retry-After"]) > 0
    assert JSON_TYPE == "application/json; charset=utf-8"


def test_the_readme_lists_every_code():
    readme = (REPO / "README.md").read_text()
    for code, entry in CODES.items():
        assert re.search(rf"\| {entry.status} \| `{code}` \|", readme), code


def test_the_websocket_path_has_one_home():
    from ordertrack.api.tracking_route import websocket_url

    assert protocol.order_id_from_path(protocol.websocket_path("ord_1")) == "ord_1"
    assert websocket_url("wss://push.example/", "ord a/b") == \
        "wss://push.example/ws/orders/ord%20a%2Fb/track"
    api_sources = "".join(p.read_text() for p in (SRC / "api").glob("*.py"))
    assert "/ws/orders/" not in api_sources and "/track\"" not in api_sources


async def test_a_draining_pod_refuses_upgrades_with_pod_draining(procs, tmp_path: Path,
                                                                 redis_url, keys):
    pod = start_pod(procs, tmp_path, redis_url, keys, drain_seconds=6)
    # the drain closes these one batch (here: one) per 50 ms: it lasts about 3 s
    held = [await open_raw(pod, keys.token(f"dr{i}", "ord_dr"), "ord_dr") for i in range(60)]
    pod.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(wait_for, lambda: any(
        line.get("msg", "").startswith("draining") for line in pod.log_lines()), 10)
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{pod.base}/ws/orders/ord_dr/track",
                                    headers=upgrade_headers(keys.token("dr2", "ord_dr"),
                                                            **{"X-Request-ID": "drain_1"}))
    assert response.status_code == 503
    assert response.headers["content-type"] == JSON_TYPE
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-request-id"] == "drain_1"
    assert response.json() == {"error": "POD_DRAINING", "message": "pod is shutting down; retry"}
    for raw in held:
        raw.writer.close()
