"""`GET /api/v2/orders/{order_id}/tracking`: the REST fallback's one data route.

It returns pre-serialised orjson bytes: no response-model validation on the hot path (the
OpenAPI document, `api/openapi.py`, still describes the bodies).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from ordertrack import auth, flags, protocol
from ordertrack.api.metrics import Metrics
from ordertrack.api.openapi import TRACKING_OPENAPI_EXTRA, TRACKING_RESPONSES
from ordertrack.api.runtime import Runtime
from ordertrack.http_edge.asgi import JSONBody, error_response
from ordertrack.store import StoreError

log = logging.getLogger("ordertrack.api")

#: what a tracking store that cannot answer raises (Redis failures are handled by the reader)
STORE_ERRORS: tuple[type[BaseException], ...] = (
    StoreError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
    TimeoutError, RedisError,
)


class ClaimsCache:
    """`check(headers, order_id) -> Claims`, raising `auth.AuthError` (401/403).

    Pollers repeat the same token every 30 s: a verified token's claims are kept (until the
    token's `exp`, bounded in number) so the signature is checked once, not on every poll.
    """

    def __init__(self, verifier: auth.Verifier, max_entries: int = 10_000):
        self.verifier = verifier
        self.max_entries = max_entries
        self._claims: dict[str, auth.Claims] = {}

    def check(self, headers: Any, order_id: str) -> auth.Claims:
        token = auth.credentials_from_headers(headers)
        claims = self._claims.get(token)
        if claims is None or claims.expires_at <= time.time():
            self._claims.pop(token, None)
            claims = self.verifier.verify(token)
            if len(self._claims) >= self.max_entries:
                self._claims.pop(next(iter(self._claims)))
            self._claims[token] = claims
        auth.authorize(claims, order_id)
        return claims


def websocket_url(base: str, order_id: str) -> str:
    """The order's WebSocket URL on the pods at `base` (REALTIME_WS_URL)."""
    return base.rstrip("/") + protocol.websocket_path(order_id)


def register(app: FastAPI, settings: Any, verifier: auth.Verifier, metrics: Metrics,
             runtime: Runtime) -> None:
    tokens = ClaimsCache(verifier)
    ws_base = settings.realtime_ws_url

    @app.get(
        "/api/v2/orders/{order_id}/tracking",
        responses=TRACKING_RESPONSES,
        openapi_extra=TRACKING_OPENAPI_EXTRA,
        summary="An order's tracking state and history",
        tags=["tracking"],
    )
    async def tracking(request: Request) -> Response:
        # the path parameter is read from the request, not injected: FastAPI's parameter
        # machinery costs more than the rest of a cached answer (see bench/bench_api.py)
        order_id: str = request.path_params["order_id"]
        headers = request.headers
        reason = headers.get("x-fallback-reason")
        if reason is not None:
            metrics.count_fallback(reason)

        try:
            claims = tokens.check(headers, order_id)
        except auth.AuthError as refusal:
            metrics.count(refusal.code.lower())
            return error_response(refusal.code, refusal.message)

        try:
            read = await runtime.reader.read(order_id)
        except STORE_ERRORS as exc:
            metrics.count("unavailable")
            log.error("tracking read for order %s failed: %s: %s", order_id,
                      type(exc).__name__, exc)
            return error_response("UNAVAILABLE",
                                  "Tracking is temporarily unavailable; retry shortly",
                                  {"Retry-After": "5"})
        metrics.count_source(read.source)
        if read.doc is None:
            metrics.count("not_found")
            return error_response("NOT_FOUND", f"Order {order_id} not found")
        body = dict(read.doc)
        owner = body.pop("user_id", None)
        if owner is not None and owner != claims.user_id:
            # the token names the order, but the store says someone else owns it
            metrics.count("forbidden")
            return error_response("FORBIDDEN", auth.FORBIDDEN_MESSAGE)
        metrics.count("ok")
        enabled = False
        if read.redis_up:  # with Redis down no pod can push: realtime off, whatever the flag
            runtime.flags.observe_document(read.flag)
            enabled = runtime.flags.realtime_enabled(
                claims.user_id, read.doc["carrier"], flags.client_class(headers.get("user-agent")))
        body["realtime"] = {"enabled": enabled, "url": websocket_url(ws_base, order_id)}
        return JSONBody(orjson.dumps(body), headers={"Cache-Control": "no-store"})
