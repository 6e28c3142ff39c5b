"""The picows listener factory: routing and the upgrade decision, from in-memory state only.

picows calls the factory synchronously for every HTTP request on the port, so nothing here
waits on Redis: token verification uses keys in memory, the capacity check uses the pod's own
counters, the kill switch the cached flag. Refusals are HTTP answers with the JSON body of the
wire contract; health probes are plain GETs on the same port.
"""

from __future__ import annotations

import logging

import orjson
from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from ordertrack import auth, flags, protocol
from ordertrack.http_edge.refusals import CODES, JSON_TYPE, Refusal, error_body, refusal
from ordertrack.http_edge.request_id import clean_request_id, new_request_id, random_hex
from ordertrack.push import metrics
from ordertrack.push.connection import Connection

log = logging.getLogger("ordertrack.push.server")

_DRAINING = CODES["POD_DRAINING"]
_AT_CAPACITY = CODES["POD_AT_CAPACITY"]
_FEATURE_DISABLED = CODES["FEATURE_DISABLED"]


def new_connection_id() -> str:
    return "ws_conn_" + random_hex(4)


def refuse(answer: Refusal, request_id: str) -> WSUpgradeResponseWithListener:
    """The upgrade's refusal (counted by code): the table's JSON answer, no listener."""
    metrics.REFUSALS.labels(answer.code).inc()
    headers = [("Content-Type", JSON_TYPE), ("X-Request-ID", request_id),
               ("Cache-Control", "no-store"), *answer.headers]
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(
        answer.status, error_body(answer.code, answer.message), headers), None)


def _plain(status: int, body: bytes, request_id: str) -> WSUpgradeResponse:
    headers = [("Content-Type", JSON_TYPE), ("X-Request-ID", request_id),
               ("Cache-Control", "no-store")]
    if status == 200:
        return WSUpgradeResponse.create_ok_response(body, headers)
    return WSUpgradeResponse.create_error_response(status, body, headers)


def make_listener_factory(cfg, verifier, health, hub, flag_source, events):
    """picows' factory for the pod's port, given what it decides from: the settings, the token
    verifier, `health` (`dead_task`, `ready`, `draining`: the pod's state for the probes and
    the drain), the hub (how many connections are open), the flag source (the kill switch) and
    the `events` every new `Connection` reports its life to (push/lifecycle.py)."""
    allowed_origins = frozenset(cfg.allowed_origins)
    max_pending_bytes = cfg.ws_max_pending_bytes

    def factory(request: WSUpgradeRequest):
        # picows answers an exception here with a plain-text 500: answer in the contract's JSON
        request_id = clean_request_id(request.headers.get("x-request-id")) or new_request_id()
        try:
            return decide(request, request_id)
        except Exception:  # noqa: BLE001 - a bug must still get the contract's JSON answer
            log.exception("upgrade decision failed")
            return refuse(CODES["INTERNAL_ERROR"], request_id)

    def decide(request: WSUpgradeRequest, request_id: str):
        headers = request.headers
        path, query = protocol.split_target(request.path.decode("latin-1"))

        if path == "/healthz":
            dead = health.dead_task
            if dead is not None:
                return WSUpgradeResponseWithListener(_plain(
                    503, orjson.dumps({"status": "unhealthy", "reason": f"{dead} stopped"}),
                    request_id), None)
            return WSUpgradeResponseWithListener(_plain(200, b'{"status":"ok"}', request_id), None)
        if path == "/readyz":
            if health.ready:
                return WSUpgradeResponseWithListener(_plain(200, b'{"status":"ready"}', request_id), None)
            why = b'"draining"' if health.draining else b'"redis_not_subscribed"'
            return WSUpgradeResponseWithListener(
                _plain(503, b'{"status":"not_ready","reason":' + why + b"}", request_id), None)

        order_id = protocol.order_id_from_path(path)
        if order_id is None or request.method != b"GET":
            return refuse(refusal("NOT_FOUND", f"no such endpoint: {path[:200]}"), request_id)

        if allowed_origins:
            origin = headers.get("origin")
            if origin is not None and origin not in allowed_origins:
                return refuse(refusal("FORBIDDEN", "origin not allowed"), request_id)

        try:
            token = auth.credentials_from_headers(headers, query)
            claims = verifier.verify(token)
            auth.authorize(claims, order_id)
        except auth.AuthError as exc:
            return refuse(refusal(exc.code, exc.message), request_id)

        if health.draining:
            return refuse(_DRAINING, request_id)
        if len(hub) >= cfg.max_connections_per_pod:
            return refuse(_AT_CAPACITY, request_id)
        client_class = flags.client_class(headers.get("user-agent"))
        # the kill switch: the order's carrier is not known yet (see flags)
        if not flag_source.realtime_enabled(claims.user_id, None, client_class):
            return refuse(_FEATURE_DISABLED, request_id)

        upgrade = ",".join(headers.getall("upgrade", ()))
        connection = ",".join(headers.getall("connection", ()))
        refused = protocol.check_handshake(upgrade, connection, headers.get("sec-websocket-version"),
                                           headers.get("sec-websocket-key"))
        if refused is not None:
            return refuse(refused, request_id)
        # picows (2.3.1) then insists on these exact values, stricter than RFC 6455 4.2.1
        # (Firefox sends `Connection: keep-alive, Upgrade`): we checked them, so normalize
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"

        resume = protocol.parse_last_seq(protocol.query_param(query, "last_seq"))
        connection_id = new_connection_id()
        response_headers = [("X-Request-ID", request_id), ("X-WS-Connection-ID", connection_id)]
        if protocol.SUBPROTOCOL in auth.offered_subprotocols(headers):
            response_headers.append(("Sec-WebSocket-Protocol", protocol.SUBPROTOCOL))
        conn = Connection(events, connection_id, claims.user_id, order_id, resume, claims.expires_at,
                          client_class, max_pending_bytes)
        response = WSUpgradeResponse.create_101_response(response_headers)
        return WSUpgradeResponseWithListener(response, conn)

    return factory

