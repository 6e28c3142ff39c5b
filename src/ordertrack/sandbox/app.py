"""The sandbox's HTTP routes (Starlette): DHL, FedEx and UPS on one port, plus `/_admin`.

Admin (JSON): GET /_admin/health; GET|POST /_admin/shipments {carrier, tracking_number,
events?}; POST /_admin/advance {tracking_number?, carrier?, steps}; GET|POST /_admin/config;
GET|POST|DELETE /_admin/faults {carrier, tracking_number?, kind, count}; POST
/_admin/tokens/expire {carrier?}; GET /_admin/stats; POST /_admin/reset.

Every tracking request goes through the same gate, in the carriers' order: credentials
(401), request validation (400), injected faults, the quota (429), then the answer rendered
by `shapes` from the shipment's reached events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import secrets
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ordertrack.config import load as load_settings
from ordertrack.models import CARRIERS
from ordertrack.sandbox import (
    DHL_API_KEY,
    FEDEX_CLIENT_ID,
    FEDEX_CLIENT_SECRET,
    UPS_CLIENT_ID,
    UPS_CLIENT_SECRET,
    shapes,
)
from ordertrack.sandbox.faults import FaultBook, parse_fault
from ordertrack.sandbox.push import Pusher
from ordertrack.sandbox.push import routes as push_routes
from ordertrack.sandbox.quota import Quota
from ordertrack.sandbox.settings import SETTINGS
from ordertrack.sandbox.shipments import (
    Shipment,
    is_never_found,
    new_shipment,
    previous_shipment,
    shipment_from_record,
    shipment_record,
)

log = logging.getLogger("ordertrack.sandbox")

FEDEX_MAX_NUMBERS = 30
RECENT_LIMIT = 1000


@dataclass
class SandboxConfig:
    """What `POST /_admin/config` may change: the SANDBOX_* settings of the same names
    (sandbox/settings.py declares them and their defaults)."""

    time_scale: float
    dhl_quota_per_hour: int
    dhl_quota_per_minute: int
    fedex_quota_per_hour: int
    ups_quota_per_hour: int
    fedex_token_ttl: int
    ups_token_ttl: int
    slow_seconds: float

    @classmethod
    def from_settings(cls, settings: SimpleNamespace) -> SandboxConfig:
        return cls(**{f.name: getattr(settings, f"sandbox_{f.name}") for f in fields(cls)})

    @classmethod
    def defaults(cls) -> SandboxConfig:
        return cls.from_settings(load_settings(SETTINGS, environ={}))


class Stats:
    """Requests per carrier and the last 1000 tracking requests."""

    def __init__(self) -> None:
        self.carriers: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_LIMIT)
        self.clear()

    def clear(self) -> None:
        self.carriers = {
            c: {"requests": 0, "token_requests": 0, "tracking_numbers": {}, "responses": {}}
            for c in CARRIERS
        }
        self.recent.clear()

    def tracking(self, carrier: str, numbers: list[str]) -> dict[str, Any]:
        stats = self.carriers[carrier]
        stats["requests"] += 1
        for number in numbers:
            stats["tracking_numbers"][number] = stats["tracking_numbers"].get(number, 0) + 1
        entry = {"time": time.time(), "carrier": carrier, "numbers": numbers, "status": None}
        self.recent.append(entry)
        return entry

    def answered(self, carrier: str, entry: dict[str, Any] | None, status: int) -> None:
        responses = self.carriers[carrier]["responses"]
        responses[str(status)] = responses.get(str(status), 0) + 1
        if entry is not None:
            entry["status"] = status

    def as_dict(self) -> dict[str, Any]:
        return {**self.carriers, "recent": list(self.recent)}


class Sandbox:
    """All mutable sandbox state. Handlers run on one event loop, so no locks are needed.

    With a `state_file`, the shipments are loaded from it and written back whenever one is
    created or reaches a step, so a restarted sandbox tells the same timelines.
    """

    def __init__(self, config: SandboxConfig, state_file: Path | None = None) -> None:
        self.config = config
        self.state_file = state_file
        self.shipments: dict[tuple[str, str], Shipment] = self.load_shipments()
        self.faults = FaultBook()
        self.stats = Stats()
        self.tokens: dict[str, dict[str, float]] = {"fedex": {}, "ups": {}}
        self.quotas: dict[str, Quota] = {}
        self.reset_quotas()

    def reset_quotas(self) -> None:
        c = self.config
        self.quotas = {
            "dhl": Quota(c.dhl_quota_per_hour, c.dhl_quota_per_minute),
            "fedex": Quota(c.fedex_quota_per_hour),
            "ups": Quota(c.ups_quota_per_hour),
        }

    def apply_config(self) -> None:
        c = self.config
        self.quotas["dhl"].set_limits(c.dhl_quota_per_hour, c.dhl_quota_per_minute)
        self.quotas["fedex"].set_limits(c.fedex_quota_per_hour)
        self.quotas["ups"].set_limits(c.ups_quota_per_hour)

    def load_shipments(self) -> dict[tuple[str, str], Shipment]:
        """The shipments in `state_file` (none if it does not exist); ValueError if unreadable."""
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            records = json.loads(self.state_file.read_bytes())
            shipments = [shipment_from_record(r) for r in records]
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"cannot read SANDBOX_STATE_FILE {self.state_file}: {exc}") from None
        log.info("%d shipments loaded from %s", len(shipments), self.state_file)
        return {(s.carrier, s.tracking_number): s for s in shipments}

    def save_shipments(self) -> None:
        if self.state_file is None:
            return
        body = json.dumps([shipment_record(s) for s in self.shipments.values()]).encode()
        partial = self.state_file.with_name(self.state_file.name + ".tmp")
        partial.write_bytes(body)
        partial.replace(self.state_file)

    def shipment(self, carrier: str, number: str, now: float) -> Shipment | None:
        """The shipment behind a number, auto-created on first sight; None if never found."""
        if is_never_found(number):
            return None
        key = (carrier, number)
        shipment = self.shipments.get(key)
        reached = -1 if shipment is None else len(shipment.reached)
        if shipment is None:
            shipment = self.shipments[key] = new_shipment(carrier, number, now,
                                                          self.config.time_scale)
            log.info("%s shipment %s created (%d steps)", carrier, number, len(shipment.steps))
        shipment.observe(now)
        if len(shipment.reached) != reached:
            self.save_shipments()
        return shipment

    def issue_token(self, carrier: str, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[carrier][token] = time.time() + ttl
        return token

    def token_valid(self, carrier: str, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        expires = self.tokens[carrier].get(token.strip())
        return expires is not None and expires > time.time()


# --- carrier error bodies ---------------------------------------------------------------------


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  media_type: str = "application/json") -> Response:
    return Response(json.dumps(body), status_code=status, headers=headers, media_type=media_type)


def carrier_error(carrier: str, status: int, reason: str, detail: str,
                  headers: dict[str, str] | None = None) -> Response:
    """An error in the carrier's own shape. `reason`: unauthorized, rate, daily, unavailable, bad."""
    if carrier == "dhl":
        titles = {401: "Unauthorized", 429: "Too Many Requests", 503: "Service Unavailable",
                  400: "Bad Request", 404: "No result found"}
        body = shapes.dhl_problem(status, titles.get(status, "Error"), detail)
        return json_response(body, status, headers, "application/problem+json")
    if carrier == "fedex":
        codes = {"unauthorized": "NOT.AUTHORIZED.ERROR", "rate": "RATE.LIMIT.EXCEEDED",
                 "daily": "DAILY.QUOTA.EXCEEDED", "unavailable": "SERVICE.UNAVAILABLE.ERROR",
                 "bad": "BAD.REQUEST.ERROR"}
        body = shapes.fedex_errors(str(uuid.uuid4()), codes.get(reason, reason), detail)
        return json_response(body, status, headers)
    codes = {"unauthorized": "250002", "rate": "10429", "daily": "10429",
             "unavailable": "10503", "bad": "10400"}
    return json_response(shapes.ups_errors(codes.get(reason, reason), detail), status, headers)


DETAILS = {
    "dhl": {
        "unauthorized": "Invalid or missing API key (header DHL-API-Key)",
        "rate": "You have exceeded the rate limit of your API key",
        "daily": "The daily quota of your API key is exhausted; it resets at 00:00 GMT",
        "unavailable": "The service is temporarily unavailable, please try again later",
    },
    "fedex": {
        "unauthorized": "Access token expired or invalid. Please modify your request and try again.",
        "rate": "We have received too many requests in a short duration. Please wait a while to try again.",
        "daily": "Daily quota exhausted for this project. Please try again after the quota resets.",
        "unavailable": "The service is currently unavailable and we are working to resolve the issue. We apologize for any inconvenience. Please check back at a later time.",
    },
    "ups": {
        "unauthorized": "Invalid Authentication Information.",
        "rate": "Too Many Requests",
        "daily": "Too Many Requests: daily quota exhausted",
        "unavailable": "Service Unavailable",
    },
}


def fault_response(carrier: str, kind: str) -> Response | None:
    """The answer an injected fault gives instead of the real one (None: slow/malformed)."""
    text = DETAILS[carrier]
    if kind == "503":
        return carrier_error(carrier, 503, "unavailable", text["unavailable"])
    if kind == "429":
        return carrier_error(carrier, 429, "rate", text["rate"])
    if kind == "429_retry_after":
        return carrier_error(carrier, 429, "rate", text["rate"], {"Retry-After": "1"})
    if kind == "daily_quota":
        return carrier_error(carrier, 429, "daily", text["daily"])
    if kind == "401":
        return carrier_error(carrier, 401, "unauthorized", text["unauthorized"])
    return None


def malformed(response: Response) -> Response:
    body = bytes(response.body)
    return Response(body[: max(1, len(body) // 2)], status_code=200, media_type="application/json")


# --- the application --------------------------------------------------------------------------


def create_app(config: SandboxConfig | None = None, state_file: Path | None = None) -> Starlette:
    sandbox = Sandbox(config or SandboxConfig.defaults(), state_file)
    pusher = Pusher()

    def finish(carrier: str, what: str, numbers: list[str], entry: dict[str, Any] | None,
               response: Response, note: str = "") -> Response:
        sandbox.stats.answered(carrier, entry, response.status_code)
        log.info("%s %s numbers=%s status=%d%s", carrier, what, ",".join(numbers) or "-",
                 response.status_code, f" ({note})" if note else "")
        return response

    async def gate(carrier: str, numbers: list[str]) -> tuple[Response | None, str | None]:
        """Faults, then quota. Returns (early answer or None, fault kind still to apply)."""
        kind = sandbox.faults.take(carrier, numbers)
        if kind == "slow":
            await asyncio.sleep(sandbox.config.slow_seconds)
        elif kind is not None and kind != "malformed":
            return fault_response(carrier, kind), kind
        wait = sandbox.quotas[carrier].acquire(time.time())
        if wait is not None:
            headers = {"Retry-After": str(math.ceil(wait))} if carrier == "dhl" else None
            return carrier_error(carrier, 429, "rate", DETAILS[carrier]["rate"], headers), "quota"
        return None, kind

    # --- DHL ---

    async def dhl_track(request: Request) -> Response:
        number = request.query_params.get("trackingNumber", "").strip()
        service = request.query_params.get("service") or None
        numbers = [number] if number else []
        entry = sandbox.stats.tracking("dhl", numbers)

        def done(response: Response, note: str = "") -> Response:
            return finish("dhl", "track", numbers, entry, response, note)

        if request.headers.get("dhl-api-key") != DHL_API_KEY:
            return done(carrier_error("dhl", 401, "unauthorized", DETAILS["dhl"]["unauthorized"]))
        if not number:
            return done(carrier_error("dhl", 400, "bad", "The query parameter trackingNumber is required"))
        early, kind = await gate("dhl", numbers)
        if early is not None:
            return done(early, kind or "")
        shipment = sandbox.shipment("dhl", number, time.time())
        if shipment is None:
            response = carrier_error(
                "dhl", 404, "notfound",
                "Unfortunately, at this time we could not find your shipment.")
        else:
            response = json_response(shapes.dhl_body(shipment, service))
        if kind == "malformed":
            response = malformed(response)
        return done(response, kind or "")

    # --- FedEx ---

    async def fedex_token(request: Request) -> Response:
        sandbox.stats.carriers["fedex"]["token_requests"] += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            response = json_response(shapes.fedex_errors(
                str(uuid.uuid4()), "BAD.REQUEST.ERROR",
                "grant_type must be client_credentials"), 400)
        elif form.get("client_id") != FEDEX_CLIENT_ID or form.get("client_secret") != FEDEX_CLIENT_SECRET:
            response = json_response(shapes.fedex_errors(
                str(uuid.uuid4()), "NOT.AUTHORIZED.ERROR",
                "The given client credentials were not valid. Please modify your request and try again."), 401)
        else:
            ttl = sandbox.config.fedex_token_ttl
            response = json_response(shapes.fedex_token(sandbox.issue_token("fedex", ttl), ttl))
        return finish("fedex", "oauth-token", [], None, response)

    async def fedex_track(request: Request) -> Response:
        numbers: list[str] = []
        problem = ""
        try:
            payload = json.loads(await request.body() or b"null")
            infos = payload.get("trackingInfo") if isinstance(payload, dict) else None
            if not isinstance(infos, list) or not infos:
                problem = "trackingInfo must be a non-empty list"
            else:
                for info in infos:
                    number = str(info["trackingNumberInfo"]["trackingNumber"]).strip()
                    numbers.append(number)
        except (ValueError, KeyError, TypeError):
            problem = "The given JSON is invalid: trackingInfo[].trackingNumberInfo.trackingNumber expected"
        entry = sandbox.stats.tracking("fedex", numbers)

        def done(response: Response, note: str = "") -> Response:
            return finish("fedex", "track", numbers, entry, response, note)

        if not sandbox.token_valid("fedex", request):
            return done(carrier_error("fedex", 401, "unauthorized", DETAILS["fedex"]["unauthorized"]))
        if problem:
            return done(carrier_error("fedex", 400, "bad", problem))
        if len(numbers) > FEDEX_MAX_NUMBERS:
            return done(carrier_error(
                "fedex", 400, "TRACKING.TRACKINGNUMBER.LIMIT.EXCEEDED",
                f"Please limit your request to {FEDEX_MAX_NUMBERS} tracking numbers; got {len(numbers)}."))
        early, kind = await gate("fedex", numbers)
        if early is not None:
            return done(early, kind or "")
        now = time.time()
        results = []
        for number in numbers:
            if "INVALID" in number.upper():
                results.append(shapes.fedex_not_found(
                    number, "TRACKING.TRACKINGNUMBER.INVALID",
                    "Invalid tracking number. Please correct the tracking number and try again."))
                continue
            shipment = sandbox.shipment("fedex", number, now)
            if shipment is None:
                results.append(shapes.fedex_not_found(number))
            elif "MULTI" in number.upper():
                older = previous_shipment(shipment, now)
                results.append(shapes.fedex_complete_result(number, [older, shipment]))
            else:
                results.append(shapes.fedex_complete_result(number, [shipment]))
        response = json_response(shapes.fedex_body(str(uuid.uuid4()), results))
        if kind == "malformed":
            response = malformed(response)
        return done(response, kind or "")

    # --- UPS ---

    async def ups_token(request: Request) -> Response:
        sandbox.stats.carriers["ups"]["token_requests"] += 1
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, secret = base64.b64decode(encoded.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = secret = ""
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if scheme.lower() != "basic" or user != UPS_CLIENT_ID or secret != UPS_CLIENT_SECRET:
            response = json_response(shapes.ups_errors("10401", "ClientId is Invalid"), 401)
        elif form.get("grant_type") != "client_credentials":
            response = json_response(shapes.ups_errors("10400", "Invalid/Missing grant_type"), 400)
        else:
            ttl = sandbox.config.ups_token_ttl
            token = sandbox.issue_token("ups", ttl)
            response = json_response(shapes.ups_token(token, int(time.time() * 1000), ttl))
        return finish("ups", "oauth-token", [], None, response)

    async def ups_track(request: Request) -> Response:
        number = request.path_params["number"].strip()
        numbers = [number]
        entry = sandbox.stats.tracking("ups", numbers)

        def done(response: Response, note: str = "") -> Response:
            return finish("ups", "track", numbers, entry, response, note)

        if not sandbox.token_valid("ups", request):
            return done(carrier_error("ups", 401, "unauthorized", DETAILS["ups"]["unauthorized"]))
        for header in ("transId", "transactionSrc"):
            if not request.headers.get(header):
                return done(carrier_error("ups", 400, "10001", f"Missing required header: {header}"))
        early, kind = await gate("ups", numbers)
        if early is not None:
            return done(early, kind or "")
        if "INVALID" in number.upper():
            return done(carrier_error("ups", 400, "TV1002", "Invalid inquiry number"))
        shipment = sandbox.shipment("ups", number, time.time())
        body = shapes.ups_not_found(number) if shipment is None else shapes.ups_body(shipment)
        response = json_response(body)
        if kind == "malformed":
            response = malformed(response)
        return done(response, kind or "")

    # --- admin ---

    def admin_error(message: str, status: int = 400) -> Response:
        return JSONResponse({"error": "BAD_REQUEST" if status == 400 else "NOT_FOUND",
                             "message": message}, status)

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        return json.loads(raw) if raw.strip() else {}

    def describe(shipment: Shipment) -> dict[str, Any]:
        events = shipment.observe(time.time())
        return {
            "carrier": shipment.carrier,
            "tracking_number": shipment.tracking_number,
            "steps": [s.kind for s in shipment.steps],
            "reached": len(events),
            "status": events[-1].step.kind if events else None,
            "created_at": shipment.created_at,
        }

    async def admin_health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def admin_shipments(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"shipments": [describe(s) for s in sandbox.shipments.values()]})
        try:
            body = await read_json(request)
            carrier = str(body.get("carrier", "")).lower()
            number = str(body.get("tracking_number", "")).strip()
            if carrier not in CARRIERS or not number:
                raise ValueError("carrier (dhl|fedex|ups) and tracking_number are required")
            shipment = new_shipment(carrier, number, time.time(), sandbox.config.time_scale,
                                    body.get("events"))
        except (ValueError, AttributeError, TypeError) as exc:
            return admin_error(str(exc))
        sandbox.shipments[(carrier, number)] = shipment
        sandbox.save_shipments()
        log.info("%s shipment %s created by admin (%d steps)", carrier, number, len(shipment.steps))
        return JSONResponse(describe(shipment), 201)

    async def admin_advance(request: Request) -> Response:
        try:
            body = await read_json(request)
            number = body.get("tracking_number")
            carrier = body.get("carrier")
            steps = int(body.get("steps", 1))
        except (ValueError, AttributeError, TypeError) as exc:
            return admin_error(f"expected {{'tracking_number'?: str, 'steps': int}}: {exc}")
        now = time.time()
        matched = [
            s for (c, n), s in sandbox.shipments.items()
            if (number is None or n == number) and (carrier is None or c == carrier)
        ]
        if number is not None and not matched:
            if carrier not in CARRIERS:
                return admin_error(f"no shipment with tracking number {number!r} "
                                   "(pass carrier to create it)", 404)
            created = sandbox.shipment(carrier, str(number), now)
            if created is None:
                return admin_error(f"{number!r} is a never-found number", 404)
            matched = [created]
        advanced = []
        for shipment in matched:
            moved = shipment.advance(steps, now)
            advanced.append({**describe(shipment), "new_events": moved})
        sandbox.save_shipments()
        log.info("advance numbers=%s steps=%d shipments=%d", number or "*", steps, len(advanced))
        return JSONResponse({"advanced": advanced})

    async def admin_config(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await read_json(request)
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                known = {f.name: f.type for f in fields(SandboxConfig)}
                updates = {}
                for key, value in body.items():
                    if key not in known:
                        raise ValueError(f"unknown config key {key!r}; known: {', '.join(known)}")
                    number = float(value) if known[key] == "float" else int(value)
                    if number <= 0:
                        raise ValueError(f"{key} must be above 0")
                    updates[key] = number
            except (ValueError, TypeError) as exc:
                return admin_error(str(exc))
            for key, value in updates.items():
                setattr(sandbox.config, key, value)
            sandbox.apply_config()
            log.info("config changed: %s", updates)
        return JSONResponse(asdict(sandbox.config))

    async def admin_faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                fault = parse_fault(await read_json(request))
            except ValueError as exc:
                return admin_error(str(exc))
            sandbox.faults.add(fault)
            log.info("fault added: %s", fault.as_dict())
        elif request.method == "DELETE":
            sandbox.faults.clear()
        return JSONResponse({"faults": [f.as_dict() for f in sandbox.faults.faults]})

    async def admin_expire_tokens(request: Request) -> Response:
        try:
            body = await read_json(request)
        except ValueError as exc:
            return admin_error(str(exc))
        carrier = (body or {}).get("carrier")
        targets = [carrier] if carrier else list(sandbox.tokens)
        if any(c not in sandbox.tokens for c in targets):
            return admin_error("carrier must be fedex or ups (DHL uses an API key)")
        expired = 0
        for c in targets:
            expired += len(sandbox.tokens[c])
            sandbox.tokens[c].clear()
        log.info("tokens expired: carriers=%s count=%d", ",".join(targets), expired)
        return JSONResponse({"expired": expired})

    async def admin_stats(request: Request) -> Response:
        return JSONResponse(sandbox.stats.as_dict())

    async def admin_reset(request: Request) -> Response:
        sandbox.faults.clear()
        sandbox.stats.clear()
        sandbox.shipments.clear()
        sandbox.save_shipments()
        sandbox.reset_quotas()
        pusher.clear()
        log.info("reset: faults, stats, shipments and quota counters cleared")
        return JSONResponse({"status": "reset"})

    routes = [
        Route("/track/shipments", dhl_track, methods=["GET"]),
        Route("/oauth/token", fedex_token, methods=["POST"]),
        Route("/track/v1/trackingnumbers", fedex_track, methods=["POST"]),
        Route("/security/v1/oauth/token", ups_token, methods=["POST"]),
        Route("/api/track/v1/details/{number}", ups_track, methods=["GET"]),
        Route("/_admin/health", admin_health, methods=["GET"]),
        Route("/_admin/shipments", admin_shipments, methods=["GET", "POST"]),
        Route("/_admin/advance", admin_advance, methods=["POST"]),
        Route("/_admin/config", admin_config, methods=["GET", "POST"]),
        Route("/_admin/faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_admin/tokens/expire", admin_expire_tokens, methods=["POST"]),
        Route("/_admin/stats", admin_stats, methods=["GET"]),
        Route("/_admin/reset", admin_reset, methods=["POST"]),
        *push_routes(sandbox, pusher),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
