"""The sandbox carriers' push: each delivers its scans to a webhook URL, in its real shape
and authentication, with faults.

- FedEx (Advanced Integrated Visibility): one webhook per account (`POST /_admin/webhooks`,
  as set up in the FedEx portal) for every FedEx shipment; the body is a Track API
  `completeTrackResults` entry holding the one scan it announces; `fdx-signature` is the
  base64 HMAC-SHA256 of the body with the account's security token.
- UPS Track Alert: subscriptions per tracking number (`POST /api/track/v1/subscription/
  standard/package`, up to 100 numbers, 14 days); the callback is one activity and carries
  the subscription's credential. UPS never retries: a callback our endpoint missed is lost.
- DHL Unified Push: subscriptions per number (`POST /track/push/v1/subscriptions`); the body
  is the Unified tracking shape holding the one event; a static header of our choosing.
FedEx and DHL retry a failed delivery (non-2xx or no connection) up to 3 times.

Faults (`POST /_admin/push {carrier, tracking_number, events, fault}`): `duplicate` (every
delivery sent twice), `out_of_order` (newest first), `bad_signature` (a wrong signature or
credential), `burst` (all deliveries at once, concurrently).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from ordertrack.sandbox import shapes
from ordertrack.sandbox.shipments import Event, Shipment

log = logging.getLogger("ordertrack.sandbox.push")

UPS_SUBSCRIPTION_SECONDS = 14 * 86400.0
UPS_MAX_NUMBERS = 100
RETRIES = {"fedex": 3, "dhl": 3, "ups": 0}
FAULTS = ("duplicate", "out_of_order", "bad_signature", "burst")
SELECTIONS = ("new", "latest", "all")


@dataclass
class Webhook:
    """Where and how a carrier delivers: FedEx signs with `secret`; UPS and DHL send
    `header: value`."""

    url: str
    secret: str | None = None
    header: str | None = None
    value: str | None = None
    expires_at: float | None = None
    #: subscription calls that made or renewed it (UPS, DHL)
    calls: int = 0


# --- bodies (pure) -----------------------------------------------------------------------------


def _as_of(shipment: Shipment, event: Event) -> Shipment:
    """The shipment as it was when `event` happened."""
    return dataclasses.replace(shipment, reached=list(shipment.reached[: event.index + 1]))


def fedex_body(shipment: Shipment, event: Event, event_id: str) -> dict[str, Any]:
    result = shapes.fedex_track_result(_as_of(shipment, event))
    result["scanEvents"] = [shapes.fedex_scan(event)]
    return {"eventId": event_id, "eventCreateTime": shapes.iso_z(event.timestamp),
            "trackingNumber": shipment.tracking_number, "trackResults": [result]}


def ups_body(shipment: Shipment, event: Event) -> dict[str, Any]:
    activity = shapes.ups_activity(shipment, event)
    package = shapes.ups_package(_as_of(shipment, event))
    scheduled = next((d["date"] for d in package["deliveryDate"] if d["type"] in ("RDD", "SDD")),
                     "")
    delivered = event.step.kind == "delivered"
    return {
        "trackingNumber": shipment.tracking_number,
        "localActivityDate": activity["date"],
        "localActivityTime": activity["time"],
        "gmtActivityDate": activity["gmtDate"],
        "gmtActivityTime": activity["gmtTime"].replace(":", ""),
        "gmtOffset": activity["gmtOffset"],
        "activityLocation": activity["location"]["address"],
        "activityStatus": {k: activity["status"][k] for k in ("type", "code", "description")},
        "scheduledDeliveryDate": scheduled,
        "actualDeliveryDate": activity["date"] if delivered else "",
        "actualDeliveryTime": activity["time"] if delivered else "",
    }


def dhl_body(shipment: Shipment, event: Event) -> dict[str, Any]:
    body = shapes.dhl_body(_as_of(shipment, event))
    body["shipments"][0]["events"] = [shapes.dhl_event(shipment, event)]
    return body


def fedex_signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def delivery(carrier: str, webhook: Webhook, shipment: Shipment, event: Event,
             forged: bool = False) -> tuple[bytes, dict[str, str]]:
    """(raw body, headers) of one delivery; `forged` spoils the signature or credential."""
    if carrier == "fedex":
        data = fedex_body(shipment, event, f"{shipment.tracking_number}-{event.index}")
    elif carrier == "ups":
        data = ups_body(shipment, event)
    else:
        data = dhl_body(shipment, event)
    raw = json.dumps(data).encode()
    headers = {"Content-Type": "application/json"}
    if carrier == "fedex":
        secret = (webhook.secret or "") + ("-forged" if forged else "")
        headers["fdx-signature"] = fedex_signature(raw, secret)
    elif webhook.header:
        headers[webhook.header] = (webhook.value or "") + ("-forged" if forged else "")
    return raw, headers


def order_events(events: list[Event], fault: str | None) -> list[Event]:
    """The deliveries' order: newest first for `out_of_order`, each twice for `duplicate`."""
    if fault == "out_of_order":
        events = list(reversed(events))
    if fault == "duplicate":
        events = [e for event in events for e in (event, event)]
    return events


# --- delivering --------------------------------------------------------------------------------


class Pusher:
    """Webhooks and subscriptions, and the deliveries made to them."""

    def __init__(self, retry_base: float = 0.2):
        self.fedex: Webhook | None = None
        #: (carrier, tracking number) -> subscription (UPS, DHL)
        self.subscriptions: dict[tuple[str, str], Webhook] = {}
        #: (carrier, tracking number) -> how many of its events were delivered already
        self.delivered_upto: dict[tuple[str, str], int] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=1000)
        self.auto = True
        self.retry_base = retry_base
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task | None = None

    def clear(self) -> None:
        self.fedex = None
        self.subscriptions.clear()
        self.delivered_upto.clear()
        self.log.clear()
        self.auto = True

    def webhook(self, carrier: str, number: str, now: float) -> Webhook | None:
        if carrier == "fedex":
            return self.fedex
        sub = self.subscriptions.get((carrier, number))
        if sub is None or (sub.expires_at is not None and sub.expires_at <= now):
            return None
        return sub

    def subscribe(self, carrier: str, numbers: list[str], webhook: Webhook) -> None:
        for number in numbers:
            before = self.subscriptions.get((carrier, number))
            calls = (before.calls if before else 0) + 1
            self.subscriptions[(carrier, number)] = dataclasses.replace(webhook, calls=calls)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        return self._http

    async def _send(self, carrier: str, webhook: Webhook, number: str, event: Event,
                    body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": time.time(), "carrier": carrier,
                                 "tracking_number": number, "event": event.index,
                                 "kind": event.step.kind, "url": webhook.url, "attempts": 0}
        for attempt in range(RETRIES[carrier] + 1):
            entry["attempts"] = attempt + 1
            try:
                response = await self.http.post(webhook.url, content=body, headers=headers)
                entry["status"] = response.status_code
                entry.pop("error", None)
                if response.status_code < 500 and response.status_code != 429:
                    break
            except httpx.HTTPError as exc:
                entry["status"] = None
                entry["error"] = f"{type(exc).__name__}: {exc}"
            if attempt < RETRIES[carrier]:
                await asyncio.sleep(self.retry_base * 2 ** attempt)
        entry["lost"] = entry.get("status") is None or entry["status"] >= 300
        log.info("push %s %s event %d -> %s: %s", carrier, number, event.index, webhook.url,
                 entry.get("status") or entry.get("error"))
        self.log.append(entry)
        return entry

    async def push(self, carrier: str, shipment: Shipment, events: list[Event],
                   fault: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Deliver `events` of the shipment to its webhook (none: nothing is sent)."""
        number = shipment.tracking_number
        webhook = self.webhook(carrier, number, time.time() if now is None else now)
        if webhook is None or not events:
            return []
        key = (carrier, number)
        self.delivered_upto[key] = max(self.delivered_upto.get(key, 0),
                                       max(e.index for e in events) + 1)
        sends = []
        for event in order_events(events, fault):
            body, headers = delivery(carrier, webhook, shipment, event,
                                     forged=fault == "bad_signature")
            sends.append((event, body, headers))
        if fault == "burst":
            return list(await asyncio.gather(*(
                self._send(carrier, webhook, number, e, b, h) for e, b, h in sends)))
        return [await self._send(carrier, webhook, number, e, b, h) for e, b, h in sends]

    def select(self, carrier: str, shipment: Shipment, which: str) -> list[Event]:
        events = shipment.events()
        if which == "all":
            return events
        if which == "latest":
            return events[-1:]
        return events[self.delivered_upto.get((carrier, shipment.tracking_number), 0):]

    def start(self, shipments: dict[tuple[str, str], Shipment], interval: float = 0.5) -> None:
        """Deliver newly reached scans of subscribed shipments by themselves (while `auto`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(shipments, interval))

    async def _run(self, shipments: dict[tuple[str, str], Shipment], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.auto:
                continue
            now = time.time()
            for (carrier, _number), shipment in list(shipments.items()):
                if self.webhook(carrier, shipment.tracking_number, now) is None:
                    continue
                shipment.observe(now)
                events = self.select(carrier, shipment, "new")
                if events:
                    try:
                        await self.push(carrier, shipment, events, now=now)
                    except Exception:  # noqa: BLE001 - a sandbox bug must not stop pushing
                        log.exception("push of %s %s failed", carrier, shipment.tracking_number)


# --- routes --------------------------------------------------------------------------------


def routes(sandbox: Any, pusher: Pusher) -> list[Any]:
    """The subscription APIs (UPS Track Alert, DHL push) and `/_admin/webhooks|push`."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ordertrack.sandbox import DHL_API_KEY

    def bad(message: str, status: int = 400) -> Response:
        return JSONResponse({"error": "BAD_REQUEST" if status == 400 else "NOT_FOUND",
                             "message": message}, status)

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def ups_subscribe(request: Request) -> Response:
        if not sandbox.token_valid("ups", request):
            return JSONResponse({"response": {"errors": [
                {"code": "250002", "message": "Invalid Authentication Information."}]}}, 401)
        try:
            data = await body_of(request)
            numbers = [str(n) for n in data.get("trackingNumberList") or []]
            destination = data.get("destination") or {}
            url = str(destination["url"])
            credential = str(destination.get("credential") or "")
            kind = str(destination.get("credentialType") or "Bearer")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return JSONResponse({"response": {"errors": [
                {"code": "TA0001", "message": f"invalid subscription request: {exc}"}]}}, 400)
        if not 0 < len(numbers) <= UPS_MAX_NUMBERS:
            return JSONResponse({"response": {"errors": [
                {"code": "TA0002", "message": f"1 to {UPS_MAX_NUMBERS} tracking numbers"}]}}, 400)
        valid = [n for n in numbers if "INVALID" not in n.upper()]
        header, value = (("Authorization", f"Bearer {credential}") if kind.lower() == "bearer"
                         else (kind, credential))
        pusher.subscribe("ups", valid, Webhook(url, header=header, value=value,
                                               expires_at=time.time() + UPS_SUBSCRIPTION_SECONDS))
        pusher.start(sandbox.shipments)
        log.info("ups track alert: %d number(s) subscribed to %s", len(valid), url)
        return JSONResponse({"validTrackingNumbers": valid,
                             "invalidTrackingNumbers": [n for n in numbers if n not in valid]})

    async def dhl_subscribe(request: Request) -> Response:
        if request.headers.get("dhl-api-key") != DHL_API_KEY:
            return JSONResponse({"status": 401, "title": "Unauthorized",
                                 "detail": "Invalid or missing API key"}, 401,
                                media_type="application/problem+json")
        try:
            data = await body_of(request)
            number = str(data["trackingNumber"]).strip()
            url = str(data["callbackUrl"])
            (header, value), = dict(data.get("headers") or {}).items()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return JSONResponse({"status": 400, "title": "Bad Request",
                                 "detail": f"trackingNumber, callbackUrl and one header: {exc}"},
                                400, media_type="application/problem+json")
        pusher.subscribe("dhl", [number], Webhook(url, header=str(header), value=str(value)))
        pusher.start(sandbox.shipments)
        return JSONResponse({"id": f"sub-{number}", "trackingNumber": number,
                             "callbackUrl": url}, 201)

    async def admin_webhooks(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await body_of(request)
                if "auto" in data:
                    pusher.auto = bool(data["auto"])
                if data.get("carrier") == "fedex":
                    pusher.fedex = Webhook(str(data["url"]), secret=str(data["secret"]))
                    pusher.start(sandbox.shipments)
                elif data.get("carrier") in ("ups", "dhl"):
                    number = str(data["tracking_number"])
                    pusher.subscribe(data["carrier"], [number], Webhook(
                        str(data["url"]), header=str(data["header"]), value=str(data["value"])))
                    pusher.start(sandbox.shipments)
                elif "carrier" in data:
                    raise ValueError("carrier must be fedex, ups or dhl")
            except (ValueError, KeyError, TypeError) as exc:
                return bad(f"expected {{carrier, url, secret}} (fedex) or {{carrier, "
                           f"tracking_number, url, header, value}}, and/or {{auto}}: {exc}")
        return JSONResponse({
            "auto": pusher.auto,
            "fedex": dataclasses.asdict(pusher.fedex) if pusher.fedex else None,
            "subscriptions": [{"carrier": c, "tracking_number": n, **dataclasses.asdict(w)}
                              for (c, n), w in pusher.subscriptions.items()],
        })

    async def admin_push(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"deliveries": list(pusher.log)})
        try:
            data = await body_of(request)
            carrier = str(data["carrier"])
            number = str(data["tracking_number"])
            which = str(data.get("events", "new"))
            fault = data.get("fault")
            if which not in SELECTIONS:
                raise ValueError(f"events must be one of {', '.join(SELECTIONS)}")
            if fault is not None and fault not in FAULTS:
                raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        except (ValueError, KeyError, TypeError) as exc:
            return bad(f"expected {{carrier, tracking_number, events?, fault?}}: {exc}")
        shipment = sandbox.shipment(carrier, number, time.time())
        if shipment is None:
            return bad(f"no shipment {carrier} {number}", 404)
        if pusher.webhook(carrier, number, time.time()) is None:
            return bad(f"{carrier} {number} has no webhook or subscription", 404)
        deliveries = await pusher.push(carrier, shipment, pusher.select(carrier, shipment, which),
                                       fault)
        return JSONResponse({"deliveries": deliveries})

    return [
        Route("/api/track/v1/subscription/standard/package", ups_subscribe, methods=["POST"]),
        Route("/track/push/v1/subscriptions", dhl_subscribe, methods=["POST"]),
        Route("/_admin/webhooks", admin_webhooks, methods=["GET", "POST"]),
        Route("/_admin/push", admin_push, methods=["GET", "POST"]),
    ]
