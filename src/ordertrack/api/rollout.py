"""The rollout's page measurements: views and stays by variant (rules in ordertrack/rollout.py).

Routes (registered by `install`):
- `POST /api/v2/orders/{order_id}/views` (JWT as for the tracking answer), body
  `{"variant": "realtime"|"polling"}`: counts one page view of the order in its variant and
  answers 201 `{"view_id"}`.
- `POST /api/v2/page-stays`, body `{"view_id", "seconds"}`: the page's `navigator.sendBeacon`
  on `pagehide`, how long the view stayed; counted once per view id the API issued, a stay
  under `BOUNCE_THRESHOLD_SECONDS` is a bounce. 204; 400 for a bad body, 404 for a view id
  unknown, expired or already reported, 413 over 1 KiB.
- `GET /api/v2/rollout?days=N` (1-35, default 7): the operators' answer, views, distinct
  orders, views per order, stays, bounces and bounce rate per variant.

Both POSTs are rate-limited per client address (`RATE_LIMIT` requests per `RATE_WINDOW`
seconds, at most `RATE_CLIENTS` addresses tracked); nothing about the visitor is kept.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import orjson
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError
from starlette.responses import Response

from ordertrack import auth, rollout
from ordertrack.http_edge.asgi import error_response
from ordertrack.http_edge.refusals import JSON_TYPE

log = logging.getLogger("ordertrack.api.rollout")

MAX_BODY_BYTES = 1024
RATE_LIMIT = 30
RATE_WINDOW = 60.0
RATE_CLIENTS = 10_000


# --- OpenAPI (documentation; the routes read and write the bodies themselves). Answers are
# keyed by JSON_TYPE, as FastAPI keys its own; app.openapi names them application/json. -------
_ERROR = {"type": "object", "required": ["error", "message"],
          "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}


def _errors(**texts: str) -> dict[int | str, dict[str, Any]]:
    return {int(code.lstrip("e")): {"description": text,
                                    "content": {JSON_TYPE: {"schema": _ERROR}}}
            for code, text in texts.items()}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


_RATE = {"e429": "RATE_LIMITED: too many reports from this address",
         "e400": "BAD_REQUEST: the body is not what the endpoint takes",
         "e413": "REQUEST_BODY_TOO_LARGE: over 1 KiB", "e503": "UNAVAILABLE: Redis cannot answer"}
VIEW_DOC = {
    "responses": {201: {"description": "the view is counted; its id is for its stay report",
                        "content": {JSON_TYPE: {"schema": {
                            "type": "object", "required": ["view_id", "variant"],
                            "properties": {"view_id": {"type": "string"},
                                           "variant": {"type": "string",
                                                       "enum": list(rollout.VARIANTS)}}}}}},
                  **_errors(**_RATE, e401="UNAUTHORIZED: missing or bad token",
                            e403="FORBIDDEN: the token does not name this order")},
    "openapi_extra": {"security": [{"bearerAuth": []}], **_body({
        "type": "object", "required": ["variant"],
        "properties": {"variant": {"type": "string", "enum": list(rollout.VARIANTS)}}})},
}
STAY_DOC = {
    "responses": {204: {"description": "the stay is counted"},
                  **_errors(**_RATE, e404="NOT_FOUND: no view with this id awaits its stay")},
    "openapi_extra": _body({
        "type": "object", "required": ["view_id", "seconds"],
        "properties": {"view_id": {"type": "string", "pattern": "^pv_[0-9a-f]{32}$"},
                       "seconds": {"type": "number", "minimum": 0}}}),
}
_FIGURES = {"type": "object", "properties": {
    name: {"type": ["number", "null"]} for name in (
        "views", "orders", "views_per_order", "stays_reported", "bounces", "bounce_rate")}}
FIGURES_DOC = {
    "responses": {200: {"description": "views, orders, stays and bounces per variant",
                        "content": {JSON_TYPE: {"schema": {
                            "type": "object", "properties": {
                                "days": {"type": "integer"},
                                "bounce_threshold_seconds": {"type": "number"},
                                "variants": {"type": "object", "properties": {
                                    v: _FIGURES for v in rollout.VARIANTS}}}}}}},
                  **_errors(e400="BAD_REQUEST: days must be 1 to 35",
                            e503="UNAVAILABLE: Redis cannot answer")},
    "openapi_extra": {"parameters": [{"name": "days", "in": "query", "required": False,
                                      "schema": {"type": "integer", "minimum": 1,
                                                 "maximum": rollout.KEEP_DAYS}}]},
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_TYPE,
                    headers=headers)


class RateLimiter:
    """At most `limit` requests per `window` seconds per key (a fixed window per key), for at
    most `max_keys` keys: the least recently seen is forgotten first."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = RATE_WINDOW,
                 max_keys: int = RATE_CLIENTS, clock=time.monotonic):
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self.clock()
        start, count = self._seen.pop(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        self._seen[key] = (start, count)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return count <= self.limit


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.views = Counter("ordertrack_api_page_views", "tracking-page views by variant",
                             ["variant"], registry=registry)
        self.stays = Counter("ordertrack_api_page_stays",
                             "stays reported by tracking-page views, by variant",
                             ["variant"], registry=registry)
        self.bounces = Counter("ordertrack_api_page_bounces",
                               "stays under BOUNCE_THRESHOLD_SECONDS, by variant",
                               ["variant"], registry=registry)
        self.orders = Gauge("ordertrack_api_page_orders_viewed",
                            "distinct orders whose page was viewed today (UTC), by variant "
                            "(Redis HyperLogLog: every API replica reports the same count)",
                            ["variant"], registry=registry)
        self.refused = Counter("ordertrack_api_page_beacons_refused",
                               "view and stay reports refused, by reason",
                               ["reason"], registry=registry)
        for variant in rollout.VARIANTS:
            for metric in (self.views, self.stays, self.bounces, self.orders):
                metric.labels(variant)


async def _read_json(request: Request) -> Any:
    """The body as JSON, at most MAX_BODY_BYTES; raises ValueError (too big: OverflowError)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise OverflowError
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise OverflowError
    return orjson.loads(body)


def install(app: FastAPI, settings: SimpleNamespace, check_token, runtime: SimpleNamespace,
            registry: CollectorRegistry) -> None:
    """Add the routes. `check_token(headers, order_id)` raises `auth.AuthError`;
    `runtime.reader.redis` is the API's command client once the lifespan has started."""
    metrics = RolloutMetrics(registry)
    limiter = RateLimiter()
    threshold = settings.bounce_threshold_seconds

    def limited(request: Request) -> Response | None:
        client = request.client.host if request.client else "?"
        if limiter.allow(client):
            return None
        metrics.refused.labels("rate_limited").inc()
        return error_response("RATE_LIMITED", "Too many reports; try again later",
                              {"Retry-After": str(int(RATE_WINDOW))})

    def refuse(reason: str, answer: Response) -> Response:
        metrics.refused.labels(reason).inc()
        return answer

    async def body_or_refusal(request: Request) -> tuple[Any, Response | None]:
        try:
            return await _read_json(request), None
        except OverflowError:
            return None, refuse("too_large", error_response(
                "REQUEST_BODY_TOO_LARGE", f"The body must fit in {MAX_BODY_BYTES} bytes"))
        except ValueError:
            return None, refuse("malformed", error_response("BAD_REQUEST", "The body is not JSON"))

    @app.post("/api/v2/orders/{order_id}/views", status_code=201, tags=["rollout"],
              summary="Count a tracking-page view in its rollout variant", **VIEW_DOC)
    async def page_view(request: Request) -> Response:
        order_id: str = request.path_params["order_id"]
        if (refusal := limited(request)) is not None:
            return refusal
        try:
            check_token(request.headers, order_id)
        except auth.AuthError as exc:
            return refuse("unauthorized", error_response(exc.code, exc.message))
        body, refusal = await body_or_refusal(request)
        if refusal is not None:
            return refusal
        variant = body.get("variant") if isinstance(body, dict) else None
        if variant not in rollout.VARIANTS:
            return refuse("malformed", error_response(
                "BAD_REQUEST", "variant must be one of " + ", ".join(rollout.VARIANTS)))
        try:
            view_id, distinct = await rollout.record_view(runtime.reader.redis, variant,
                                                          order_id, time.time())
        except (RedisError, OSError) as exc:
            log.warning("page view not counted: %s: %s", type(exc).__name__, exc)
            return error_response("UNAVAILABLE", "Try again shortly", {"Retry-After": "5"})
        metrics.views.labels(variant).inc()
        metrics.orders.labels(variant).set(distinct)
        return _json({"view_id": view_id, "variant": variant}, 201,
                     {"Cache-Control": "no-store"})

    @app.post("/api/v2/page-stays", status_code=204, tags=["rollout"],
              summary="How long a tracking-page view stayed (the page's beacon)", **STAY_DOC)
    async def page_stay(request: Request) -> Response:
        if (refusal := limited(request)) is not None:
            return refusal
        body, refusal = await body_or_refusal(request)
        if refusal is not None:
            return refusal
        if not isinstance(body, dict) or not rollout.valid_view_id(body.get("view_id")):
            return refuse("malformed", error_response(
                "BAD_REQUEST", "view_id must be the id the view was given"))
        seconds = rollout.stay_seconds(body.get("seconds"))
        if seconds is None:
            return refuse("malformed", error_response(
                "BAD_REQUEST", "seconds must be a number of seconds, 0 or more"))
        try:
            counted = await rollout.record_stay(runtime.reader.redis, body["view_id"], seconds,
                                                threshold, time.time())
        except (RedisError, OSError) as exc:
            log.warning("page stay not counted: %s: %s", type(exc).__name__, exc)
            return error_response("UNAVAILABLE", "Try again shortly", {"Retry-After": "5"})
        if counted is None:
            return refuse("unknown_view", error_response(
                "NOT_FOUND", "No view with this id is waiting for its stay"))
        variant, bounced = counted
        metrics.stays.labels(variant).inc()
        if bounced:
            metrics.bounces.labels(variant).inc()
        return Response(status_code=204)

    @app.get("/api/v2/rollout", tags=["rollout"],
             summary="Page views per order and bounce rate by rollout variant (operators)",
             **FIGURES_DOC)
    async def rollout_figures(request: Request) -> Response:
        raw = request.query_params.get("days", str(rollout.WINDOW_DAYS))
        if not raw.isdigit() or not 1 <= int(raw) <= rollout.KEEP_DAYS:
            return error_response("BAD_REQUEST", f"days must be 1 to {rollout.KEEP_DAYS}")
        try:
            figures = await rollout.read_figures(runtime.reader.redis, time.time(), int(raw))
        except (RedisError, OSError) as exc:
            log.warning("rollout figures unreadable: %s: %s", type(exc).__name__, exc)
            return error_response("UNAVAILABLE", "Try again shortly", {"Retry-After": "5"})
        return _json({"days": int(raw), "bounce_threshold_seconds": threshold,
                      "variants": {v: f.to_json() for v, f in figures.items()}},
                     headers={"Cache-Control": "no-store"})
