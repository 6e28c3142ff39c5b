"""The REST fallback API and the tracking page: `create_app(settings) -> FastAPI`.

Routes:
- `GET /api/v2/orders/{order_id}/tracking`: the order's tracking answer (JWT required).
- `GET /orders/{order_id}`: the tracking page (HTML + CSS + JS module, token in `#token=`).
- `GET /` and `GET /orders/`: a page telling a customer to open the link they were sent.
- `GET /favicon.ico`: the page's icon.
- `GET /static/...`: the page's files. `GET /healthz`, `GET /metrics`, `GET /openapi.json`.

Every answer carries `X-Request-ID` (echoed, or generated) and every error is
`{"error": CODE, "message": text}` with `Content-Type: application/json; charset=utf-8`.
The tracking route returns pre-serialised orjson bytes: no response-model validation on the
hot path (the OpenAPI document still describes the bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertrack import auth, flags, redis_connect
from ordertrack.api.connection import JSON_TYPE, request_id
from ordertrack.api.metrics import Metrics
from ordertrack.api.tracking import TrackingReader
from ordertrack.flags import providers
from ordertrack.flags.source import FlagSource
from ordertrack.models import CARRIERS
from ordertrack.store import StoreError
from ordertrack.telemetry import metrics_page

log = logging.getLogger("ordertrack.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: what a tracking store that cannot answer raises (Redis failures are handled by the reader)
STORE_ERRORS: tuple[type[BaseException], ...] = (
    StoreError, sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
    TimeoutError, RedisError,
)


class JSONBody(Response):
    """orjson-rendered JSON with an explicit `charset=utf-8` (the wire contract's type)."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None
                   ) -> JSONBody:
    return JSONBody({"error": code, "message": message}, status_code=status, headers=headers)


# --- OpenAPI models (documentation of the bodies; the hot path does not validate) ------------


class HistoryEntry(BaseModel):
    status: str
    location: str | None
    timestamp: str = Field(description="ISO 8601 UTC")
    seq: int = Field(description="the event's sequence number (strictly increasing)")


class Realtime(BaseModel):
    enabled: bool = Field(description="open the WebSocket: the realtime_order_tracking flag "
                          "for this user, region and carrier")
    url: str = Field(description="the order's WebSocket URL")


class TrackingAnswer(BaseModel):
    order_id: str
    tracking_number: str
    carrier: str
    status: str
    last_update: str | None
    estimated_delivery: str | None
    seq: int = Field(description="the newest event's seq (0 before the first event)")
    history: list[HistoryEntry] = Field(description="oldest first")
    realtime: Realtime


class ErrorBody(BaseModel):
    error: str = Field(examples=["FORBIDDEN"])
    message: str = Field(examples=["You can only track orders you own"])


def _error_doc(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


TRACKING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TrackingAnswer, "description": "The order's tracking state and history"},
    401: _error_doc("UNAUTHORIZED: missing, malformed, expired or badly signed token"),
    403: _error_doc("FORBIDDEN: the token does not name this order"),
    404: _error_doc("NOT_FOUND: the token names an order the store does not have"),
    503: _error_doc("UNAVAILABLE: the tracking store or Redis cannot answer right now"),
}

TRACKING_OPENAPI_EXTRA: dict[str, Any] = {
    "security": [{"bearerAuth": []}],
    "parameters": [
        {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "X-Request-ID", "in": "header", "required": False,
         "schema": {"type": "string"}, "description": "echoed; generated when absent"},
        {"name": "X-Fallback-Reason", "in": "header", "required": False,
         "schema": {"type": "string"},
         "description": "why the client polls (e.g. websocket_disconnected); counted"},
    ],
}


# --- middleware ------------------------------------------------------------------------------


class RequestIdMiddleware:
    """Echo `X-Request-ID` (or generate one) on every answer; turn a crash into a JSON 500.

    Plain ASGI rather than BaseHTTPMiddleware: it costs almost nothing per request.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", scope.get("method"),
                          scope.get("path"), rid)
            if started:
                raise
            response = error_response(500, "INTERNAL_ERROR", "Internal error; request "
                                      f"{rid} is logged")
            await response(scope, receive, send_with_id)


# --- the app ---------------------------------------------------------------------------------


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
    from urllib.parse import quote

    return f"{base.rstrip('/')}/ws/orders/{quote(order_id, safe='')}/track"


def create_app(settings: SimpleNamespace, store: Any = None) -> FastAPI:
    """The ASGI app. `settings` as loaded by `ordertrack.api.main.load_settings`.

    Redis, and the store unless an open one is given (`ordertrack api` opens it first, so an
    unreachable store stops start-up with one line), are opened by the lifespan (uvicorn
    runs it); both are closed on shutdown.
    """
    verifier = auth.verifier_from_settings(settings)
    jwks_url = settings.jwt_jwks_url
    tokens = ClaimsCache(verifier)
    metrics = Metrics()
    ws_base = settings.realtime_ws_url
    region = settings.region
    page_html = (STATIC_DIR / "tracking.html").read_bytes()
    home_html = (STATIC_DIR / "home.html").read_bytes()
    favicon_ico = (STATIC_DIR / "favicon.ico").read_bytes()
    runtime = SimpleNamespace(reader=None, flags=None)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from ordertrack.store import open_store

        jwks = None
        if jwks_url:
            # as the push pods: keys by kid, fetched now and refreshed in the background
            jwks = auth.JwksRefresher(verifier, jwks_url)
            await jwks.start()
        opened = store if store is not None else await open_store(settings.database_url)
        redis = redis_connect.command_client(settings, socket_connect_timeout=2,
                                             socket_timeout=2, health_check_interval=30)
        runtime.reader = TrackingReader(opened, redis, ttl=settings.rest_cache_ttl_seconds)
        runtime.flags = FlagSource(
            providers.build(settings), loop=asyncio.get_running_loop(), region=region,
            carriers=CARRIERS, registry=metrics.registry)
        # long-lived start-up objects out of the collector's way: fewer, shorter GC pauses
        gc.collect()
        gc.freeze()
        log.info("api ready: store %s, redis %s, realtime %s", getattr(opened, "kind", "?"),
                 redis_connect.target_from_settings(settings).describe(), ws_base)
        try:
            yield
        finally:
            if jwks is not None:
                jwks.stop()
            runtime.flags.close()
            await redis_connect.close_client(redis)
            await opened.close()

    app = FastAPI(
        title="ordertrack REST fallback",
        version="2",
        description="Order tracking over REST: the fallback for clients whose WebSocket "
        "dropped, and the tracking page.",
        lifespan=lifespan,
        default_response_class=JSONBody,
    )
    app.add_middleware(RequestIdMiddleware)
    app.state.metrics = metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        code = codes.get(exc.status_code, "HTTP_ERROR")
        message = "No such resource" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "BAD_REQUEST", "Invalid request")

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
            extra = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
            return error_response(refusal.status, refusal.code, refusal.message, extra)

        try:
            read = await runtime.reader.read(order_id)
        except STORE_ERRORS as exc:
            metrics.count("unavailable")
            log.error("tracking read for order %s failed: %s: %s", order_id,
                      type(exc).__name__, exc)
            return error_response(503, "UNAVAILABLE",
                                  "Tracking is temporarily unavailable; retry shortly",
                                  {"Retry-After": "5"})
        metrics.count_source(read.source)
        if read.doc is None:
            metrics.count("not_found")
            return error_response(404, "NOT_FOUND", f"Order {order_id} not found")
        body = dict(read.doc)
        owner = body.pop("user_id", None)
        if owner is not None and owner != claims.user_id:
            # the token names the order, but the store says someone else owns it
            metrics.count("forbidden")
            return error_response(403, "FORBIDDEN", auth.FORBIDDEN_MESSAGE)
        metrics.count("ok")
        enabled = False
        if read.redis_up:  # with Redis down no pod can push: realtime off, whatever the flag
            runtime.flags.observe_document(read.flag)
            enabled = runtime.flags.realtime_enabled(
                claims.user_id, read.doc["carrier"], flags.client_class(headers.get("user-agent")))
        body["realtime"] = {"enabled": enabled,
                            "url": websocket_url(ws_base, order_id)}
        return JSONBody(orjson.dumps(body), headers={"Cache-Control": "no-store"})

    def html_page(body: bytes) -> Response:
        return Response(
            body,
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
            },
        )

    @app.get("/orders/{order_id}", include_in_schema=False)
    async def tracking_page(order_id: str) -> Response:
        return html_page(page_html)

    @app.get("/", include_in_schema=False)
    @app.get("/orders/", include_in_schema=False)
    async def home_page() -> Response:
        # no order in the address: tell a customer where the tracking link is
        return html_page(home_html)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(favicon_ico, media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONBody({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        body, content_type = metrics_page(metrics.registry)
        return Response(body, media_type=content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            # the route returns bodies itself: drop FastAPI's unused 422 entry; name the
            # media type plainly (the charset parameter is in the Content-Type header)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    for response in responses.values():
                        content = response.get("content", {})
                        if JSON_TYPE in content:
                            content["application/json"] = content.pop(JSON_TYPE)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
