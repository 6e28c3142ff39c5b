"""The webhook endpoint: `create_app(settings, store, redis) -> FastAPI`.

Routes: `POST /webhooks/{fedex,ups,dhl}`, `GET /healthz`, `GET /metrics`, `GET /openapi.json`.

A delivery is answered after its scans are stored and published (a few ms: one store
transaction and one Lua call per order), not queued: the carrier's retry is then our only
buffer, and a 2xx means the scan is safe. Per delivery:
0. the edge (`http_edge`, uvicorn) has bounded the request: a body over INGEST_MAX_BODY_BYTES
   or slower than INGEST_REQUEST_BODY_TIMEOUT_SECONDS never reaches this app (413 / 408);
1. verify the carrier's authentication (`auth`): UPS's and DHL's is a header, checked before
   the body is read (a 401 closes the connection, the body unread); FedEx's signs the raw
   body, read first: else 401, nothing parsed;
2. parse with the carrier's push parser (`gateway.carriers.push`): else 400, nothing stored;
3. per tracking number: find the order; store the scans its history lacks and publish each
   (`gateway.record`, the poller's own path); record the push for the scheduler;
4. 200 `{"stored", "duplicates", "unknown"}`. A repeated delivery stores and publishes
   nothing. A store or Redis failure answers 503 so that the carrier retries (FedEx, DHL);
   the retry publishes what the failed call stored but did not publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from ordertrack.config import PUBSUB_PATTERN
from ordertrack.gateway.carriers.common import CarrierError, parse_datetime
from ordertrack.gateway.carriers.push import PARSERS
from ordertrack.gateway.poller import with_estimate
from ordertrack.gateway.publisher import Publisher
from ordertrack.gateway.record import catch_up, record_events
from ordertrack.gateway.scheduler import mark_pushed
from ordertrack.http_edge import asgi
from ordertrack.http_edge.asgi import JSONBody, error_response
from ordertrack.http_edge.refusals import Refusal, refusal
from ordertrack.ingest import auth
from ordertrack.ingest.metrics import Metrics
from ordertrack.models import CarrierResult, OrderState
from ordertrack.store import StoreError
from ordertrack.telemetry import metrics_page

log = logging.getLogger("ordertrack.ingest")

WEBHOOK_PREFIX = "/webhooks/"
REFUSED_CREDENTIAL = refusal("UNAUTHORIZED", "bad or missing signature or credential")


@dataclass(frozen=True, slots=True)
class Verifier:
    """A carrier's check: `check(headers, raw body)`; `reads_body` False when the credential is
    a header alone (checked before the body is read; `body` is then b"")."""

    check: Callable[[Any, bytes], bool]
    reads_body: bool


def verifiers(settings: SimpleNamespace) -> dict[str, Verifier]:
    """carrier -> its Verifier, for the carriers whose secret is set."""
    checks: dict[str, Verifier] = {}
    if settings.fedex_webhook_secret:
        checks["fedex"] = Verifier(
            functools.partial(_fedex_check, settings.fedex_webhook_secret), reads_body=True)
    if settings.ups_webhook_credential:
        checks["ups"] = Verifier(functools.partial(
            _header_check, settings.ups_webhook_header, settings.ups_webhook_credential),
            reads_body=False)
    if settings.dhl_webhook_secret:
        checks["dhl"] = Verifier(functools.partial(
            _header_check, settings.dhl_webhook_header, settings.dhl_webhook_secret),
            reads_body=False)
    return checks


def head_precheck(checks: dict[str, Verifier], metrics: Metrics
                  ) -> Callable[[str, dict[str, str]], Refusal | None]:
    """For the edge (`http_edge.uvicorn_protocol`): a delivery whose carrier's credential is a
    header is refused on its head, before a byte of its body is read, and an accepted one
    reaches the app only once its body is complete. Other paths and FedEx (its signature
    covers the body) are left to the route."""

    def judge(path: str, headers: dict[str, str]) -> Refusal | None:
        carrier = path.removeprefix(WEBHOOK_PREFIX) if path.startswith(WEBHOOK_PREFIX) else ""
        verifier = checks.get(carrier)
        if verifier is None or verifier.reads_body or verifier.check(headers, b""):
            return None
        metrics.received.labels(carrier).inc()
        metrics.refused.labels(carrier, "unauthorized").inc()
        log.warning("%s: delivery refused: bad or missing credential", carrier)
        return REFUSED_CREDENTIAL

    return judge


def _fedex_check(secret: str, headers: Any, body: bytes) -> bool:
    return auth.fedex_verified(body, headers.get(auth.FEDEX_SIGNATURE_HEADER), secret)


def _header_check(header: str, credential: str, headers: Any, _body: bytes) -> bool:
    return auth.header_verified(headers, header, credential)


class OrderLocks:
    """One asyncio.Lock per order while in use: scans of one order are stored and published
    in seq order (the publish script refuses a seq older than the order's)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, order_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(order_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[order_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[order_id]
            if users == 1:
                del self._locks[order_id]
            else:
                self._locks[order_id] = (lock, users - 1)


class Ingest:
    """What one delivery does once verified and parsed (the I/O around the pure rules)."""

    def __init__(self, store: Any, redis: Any, metrics: Metrics,
                 pubsub_mode: str = PUBSUB_PATTERN):
        self.store = store
        self.redis = redis
        self.publisher = Publisher(redis, mode=pubsub_mode)
        self.metrics = metrics
        self.locks = OrderLocks()

    async def deliver(self, carrier: str, results: list[CarrierResult]) -> dict[str, int]:
        counts = {"stored": 0, "duplicates": 0, "unknown": 0}
        pushed: list[str] = []
        for result in results:
            events = with_estimate(result)
            order = await self.store.find_order(carrier, result.tracking_number)
            if order is None:
                log.info("%s: pushed scan for tracking number %s, which no order has: ignored",
                         carrier, result.tracking_number)
                counts["unknown"] += len(events)
                self.metrics.unknown.labels(carrier).inc(len(events))
                continue
            async with self.locks.hold(order.order_id):
                recorded = await record_events(self.store, self.publisher, carrier,
                                               order.order_id, events)
                if not recorded:
                    # a retry of a delivery whose publish failed: publish what is stored
                    current = await self.store.get_order(order.order_id)
                    if current is not None:
                        await catch_up(self.store, self.publisher, carrier, order.order_id,
                                       current.seq + 1, OrderState.of(current))
            now = time.time()
            for event, _published in recorded:
                self.metrics.lag.labels(carrier).observe(
                    max(0.0, now - parse_datetime(event.timestamp).timestamp()))
            stored = len(recorded)
            counts["stored"] += stored
            counts["duplicates"] += len(events) - stored
            self.metrics.stored.labels(carrier).inc(stored)
            self.metrics.duplicates.labels(carrier).inc(len(events) - stored)
            pushed.append(order.order_id)
            if recorded:
                log.info("%s: order %s: %d pushed event(s) stored and published, now seq %d",
                         carrier, order.order_id, stored, recorded[-1][0].seq)
        await mark_pushed(self.redis, carrier, pushed, time.time())
        return counts


def create_app(settings: SimpleNamespace, metrics: Metrics | None = None) -> FastAPI:
    """The app; its lifespan opens the store (`DATABASE_URL`) and Redis (`REDIS_URL`)."""
    from ordertrack import redis_connect
    from ordertrack.store import open_store

    metrics = metrics or Metrics()
    checks = verifiers(settings)
    holder: dict[str, Ingest] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        redis = redis_connect.command_client(settings)
        try:
            store = await open_store(settings.database_url)
        except BaseException:
            await redis_connect.close_client(redis)
            raise
        holder["ingest"] = Ingest(store, redis, metrics, settings.pubsub_mode)
        log.info("ingest: webhooks for %s", ", ".join(sorted(checks)))
        try:
            yield
        finally:
            await store.close()
            await redis_connect.close_client(redis)

    app = FastAPI(title="ordertrack ingest", version="1", lifespan=lifespan,
                  description="Carrier tracking webhooks (FedEx, UPS, DHL)")
    app.state.metrics = metrics
    app.state.precheck = head_precheck(checks, metrics)  # `ordertrack ingest` gives it the edge
    asgi.install(app, log)

    def unauthorized(carrier: str) -> Response:
        metrics.refused.labels(carrier, "unauthorized").inc()
        log.warning("%s: delivery refused: bad or missing credential", carrier)
        return error_response(REFUSED_CREDENTIAL.code, REFUSED_CREDENTIAL.message)

    @app.post(WEBHOOK_PREFIX + "{carrier}", summary="A carrier's tracking webhook")
    async def webhook(carrier: str, request: Request) -> Response:
        verifier = checks.get(carrier)
        if verifier is None:
            return error_response("NOT_FOUND", f"no webhook for {carrier!r} (configured: "
                                  f"{', '.join(sorted(checks)) or 'none'})")
        metrics.received.labels(carrier).inc()
        if not verifier.reads_body and not verifier.check(request.headers, b""):
            return unauthorized(carrier)  # (a body-less request: the edge judged the others)
        body = await request.body()  # at most INGEST_MAX_BODY_BYTES (the edge refuses more)
        if verifier.reads_body and not verifier.check(request.headers, body):
            return unauthorized(carrier)
        metrics.verified.labels(carrier).inc()
        try:
            results = PARSERS[carrier](body)
        except CarrierError as exc:
            metrics.refused.labels(carrier, "malformed").inc()
            log.warning("%s: delivery refused: %s", carrier, exc)
            return error_response("BAD_REQUEST", str(exc))
        try:
            counts = await holder["ingest"].deliver(carrier, results)
        except (StoreError, RedisError, OSError) as exc:
            log.warning("%s: delivery not stored or not published (%s: %s): answered 503 so "
                        "the carrier retries", carrier, type(exc).__name__, exc)
            return error_response("UNAVAILABLE", "tracking store or Redis unavailable; retry")
        return JSONBody(counts)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONBody(b'{"status":"ok"}')

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, content_type = metrics_page(metrics.registry)
        return Response(body, media_type=content_type)

    return app
