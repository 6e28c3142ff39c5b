"""The picows listener factory: routing and the upgrade decision, from in-memory state only.

picows calls the factory synchronously for every HTTP request on the port, so nothing here
waits on Redis: token verification uses keys in memory, the capacity check uses the pod's own
counters, the kill switch the cached flag. Refusals are HTTP answers with the JSON body of the
wire contract; health probes are plain GETs on the same port.
"""

from __future__ import annotations

import logging
import secrets

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from ordertrack import auth, protocol
from ordertrack.push import metrics
from ordertrack.push.connection import Connection

log = logging.getLogger("ordertrack.push.server")

JSON = "application/json; charset=utf-8"
RETRY_AFTER_SECONDS = "5"


def new_connection_id() -> str:
    return "ws_conn_" + secrets.token_hex(4)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def _refuse(status: int, code: str, message: str, request_id: str, extra=()) -> WSUpgradeResponse:
    metrics.REFUSALS.labels(code).inc()
    headers = [("Content-Type", JSON), ("X-Request-ID", request_id), ("Cache-Control", "no-store"),
               *extra]
    return WSUpgradeResponse.create_error_response(
        status, protocol.refusal_body(code, message), headers
    )


def _plain(status: int, body: bytes, request_id: str) -> WSUpgradeResponse:
    headers = [("Content-Type", JSON), ("X-Request-ID", request_id), ("Cache-Control", "no-store")]
    if status == 200:
        return WSUpgradeResponse.create_ok_response(body, headers)
    return WSUpgradeResponse.create_error_response(status, body, headers)


def make_listener_factory(pod):
    cfg = pod.cfg
    allowed_origins = frozenset(cfg.allowed_origins)
    verifier = pod.verifier

    def factory(request: WSUpgradeRequest):
        headers = request.headers
        request_id = headers.get("x-request-id") or new_request_id()
        request_id = request_id[:128]
        path, query = protocol.split_target(request.path.decode("latin-1"))

        if path == "/healthz":
            return WSUpgradeResponseWithListener(_plain(200, b'{"status":"ok"}', request_id), None)
        if path == "/readyz":
            if pod.ready:
                return WSUpgradeResponseWithListener(_plain(200, b'{"status":"ready"}', request_id), None)
            why = b'"draining"' if pod.draining else b'"redis_not_subscribed"'
            return WSUpgradeResponseWithListener(
                _plain(503, b'{"status":"not_ready","reason":' + why + b"}", request_id), None)

        order_id = protocol.order_id_from_path(path)
        if order_id is None or request.method != b"GET":
            return WSUpgradeResponseWithListener(
                _refuse(404, "NOT_FOUND", f"no such endpoint: {path[:200]}", request_id), None)

        if allowed_origins:
            origin = headers.get("origin")
            if origin is not None and origin not in allowed_origins:
                return WSUpgradeResponseWithListener(
                    _refuse(403, "FORBIDDEN", "origin not allowed", request_id), None)

        try:
            token = auth.credentials_from_headers(headers, query)
            claims = verifier.verify(token)
            auth.authorize(claims, order_id)
        except auth.AuthError as exc:
            extra = (("WWW-Authenticate", 'Bearer realm="ordertrack"'),) if exc.status == 401 else ()
            return WSUpgradeResponseWithListener(
                _refuse(exc.status, exc.code, exc.message, request_id, extra), None)

        if pod.draining:
            return WSUpgradeResponseWithListener(_refuse(
                503, "POD_AT_CAPACITY", "pod is shutting down; retry", request_id,
                (("Retry-After", "1"),)), None)
        if len(pod.connections) >= cfg.max_connections_per_pod:
            return WSUpgradeResponseWithListener(_refuse(
                503, "POD_AT_CAPACITY", "this pod holds its maximum of connections; retry",
                request_id, (("Retry-After", RETRY_AFTER_SECONDS),)), None)
        if not pod.accepts_user(claims.user_id):
            return WSUpgradeResponseWithListener(_refuse(
                503, "FEATURE_DISABLED", "real-time tracking is off; poll the REST endpoint",
                request_id), None)

        if (headers.get("upgrade") or "").lower() != "websocket":
            return WSUpgradeResponseWithListener(_refuse(
                426, "UPGRADE_REQUIRED", "this endpoint speaks WebSocket only; poll "
                "/api/v2/orders/{order_id}/tracking for REST", request_id,
                (("Upgrade", "websocket"),)), None)

        resume_seq = protocol.parse_last_seq(protocol.query_param(query, "last_seq"))
        connection_id = new_connection_id()
        response_headers = [("X-Request-ID", request_id), ("X-WS-Connection-ID", connection_id)]
        if protocol.SUBPROTOCOL in auth.offered_subprotocols(headers):
            response_headers.append(("Sec-WebSocket-Protocol", protocol.SUBPROTOCOL))
        conn = Connection(pod, connection_id, claims.user_id, order_id, resume_seq)
        response = WSUpgradeResponse.create_101_response(response_headers)
        return WSUpgradeResponseWithListener(response, conn)

    return factory

