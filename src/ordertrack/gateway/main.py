"""`ordertrack poll`: the logistics gateway process (one of 1..N replicas).

Polls every configured carrier (a carrier without an API URL is not polled), stores new
tracking events and publishes them to Redis. SIGTERM/SIGINT: stop claiming, finish the polls
in flight, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx

from ordertrack import redis_connect
from ordertrack.config import ConfigError, add_flags, load
from ordertrack.gateway.metrics import Metrics
from ordertrack.gateway.pagerduty import PagerDuty
from ordertrack.gateway.poller import CarrierLoop, Poller, quota_gate
from ordertrack.gateway.publisher import Publisher
from ordertrack.gateway.quota import Quota, carrier_limits, hourly_rate
from ordertrack.gateway.scheduler import Scheduler
from ordertrack.gateway.settings import SETTINGS
from ordertrack.telemetry import setup_logging, start_metrics_server

log = logging.getLogger("ordertrack.gateway")

#: carrier -> (URL setting, credential settings)
CARRIER_SETTINGS = {
    "dhl": ("dhl_api_url", ("dhl_api_key",)),
    "fedex": ("fedex_api_url", ("fedex_client_id", "fedex_client_secret")),
    "ups": ("ups_api_url", ("ups_client_id", "ups_client_secret")),
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SETTINGS)


@dataclass(frozen=True)
class CarrierConfig:
    carrier: str
    url: str
    credentials: tuple[str, ...]
    interval: float


def carriers_to_poll(settings: SimpleNamespace) -> list[CarrierConfig]:
    """The carriers with a URL; ConfigError when one has a URL but lacks credentials."""
    chosen = []
    for carrier, (url_attr, cred_attrs) in CARRIER_SETTINGS.items():
        url = getattr(settings, url_attr)
        if not url:
            log.warning("%s: %s is not set, %s orders are not polled", carrier,
                        url_attr.upper(), carrier.upper())
            continue
        missing = [attr.upper() for attr in cred_attrs if not getattr(settings, attr)]
        if missing:
            raise ConfigError(f"{url_attr.upper()} is set but {', '.join(missing)} is not")
        creds = tuple(getattr(settings, attr) for attr in cred_attrs)
        interval = getattr(settings, f"{carrier}_poll_interval_seconds")
        chosen.append(CarrierConfig(carrier, url, creds, interval))
    if not chosen:
        raise ConfigError("no carrier to poll: set DHL_API_URL, FEDEX_API_URL or UPS_API_URL")
    return chosen


def make_client(config: CarrierConfig, http: httpx.AsyncClient | None, policy: Any) -> Any:
    if config.carrier == "dhl":
        from ordertrack.gateway.carriers.dhl import DhlClient

        return DhlClient(config.url, api_key=config.credentials[0], http=http, policy=policy)
    if config.carrier == "fedex":
        from ordertrack.gateway.carriers.fedex import FedexClient

        return FedexClient(config.url, client_id=config.credentials[0],
                           client_secret=config.credentials[1], http=http, policy=policy)
    from ordertrack.gateway.carriers.ups import UpsClient

    return UpsClient(config.url, client_id=config.credentials[0],
                     client_secret=config.credentials[1], http=http, policy=policy)


def run(args: argparse.Namespace) -> int:
    settings = load(SETTINGS, args)
    redis_connect.target_from_settings(settings)  # REDIS_URL with REDIS_CLUSTER: one line
    setup_logging(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    carriers = carriers_to_poll(settings)
    from ordertrack.store import StoreError

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency
            return asyncio.run(serve(settings, carriers))
        return uvloop.run(serve(settings, carriers))
    except StoreError as exc:  # unreachable or unusable store at start: one line, exit 1
        print(f"ordertrack poll: {exc}", file=sys.stderr)
        return 1


def push_subscribers(settings: SimpleNamespace, redis: Any, store: Any,
                     loops: list[CarrierLoop]) -> list[Any]:
    """UPS Track Alert / DHL push subscriptions for the polled carriers with a webhook URL."""
    from ordertrack.gateway.subscriptions import Subscriber

    clients = {loop.carrier: loop.client for loop in loops}
    wanted = {
        "ups": (settings.ups_webhook_url, settings.ups_webhook_credential, "",
                "UPS_WEBHOOK_CREDENTIAL"),
        "dhl": (settings.dhl_webhook_url, settings.dhl_webhook_secret,
                settings.dhl_webhook_header, "DHL_WEBHOOK_SECRET"),
    }
    subscribers = []
    for carrier, (url, credential, header, secret_name) in wanted.items():
        if not url or carrier not in clients:
            continue
        if not credential:
            raise ConfigError(f"{carrier.upper()}_WEBHOOK_URL is set but {secret_name} is not")
        subscribers.append(Subscriber(redis, store, carrier, clients[carrier], url, credential,
                                      header, settings.subscription_renew_before_seconds))
    return subscribers


@dataclass
class Gateway:
    """One replica's parts, wired: `run(stopping)` polls every carrier (and keeps its push
    subscriptions) until `stopping` is set; `aclose()` releases the HTTP clients, the store
    and Redis."""

    poller: Poller
    loops: list[CarrierLoop]
    subscribers: list[Any]
    https: list[httpx.AsyncClient]
    redis: Any
    refresh_seconds: float

    @property
    def metrics(self) -> Metrics:
        return self.poller.metrics

    async def run(self, stopping: asyncio.Event) -> None:
        await asyncio.gather(*(carrier_loop.run(stopping) for carrier_loop in self.loops),
                             *(sub.run(stopping, self.refresh_seconds)
                               for sub in self.subscribers))

    async def aclose(self) -> None:
        for carrier_loop in self.loops:
            await carrier_loop.client.aclose()
        for http in self.https:
            await http.aclose()
        await self.poller.pager.aclose()
        await self.poller.store.close()
        await redis_connect.close_client(self.redis)


async def build_gateway(settings: SimpleNamespace, carriers: list[CarrierConfig],
                        metrics: Metrics | None = None) -> Gateway:
    """The gateway of `ordertrack poll` (and of bench/bench_gateway.py): Redis, the store,
    the shared quota and scheduler, PagerDuty, the poller, one loop per carrier and the push
    subscriptions."""
    from ordertrack.gateway.retry import RetryPolicy
    from ordertrack.store import open_store

    replica = settings.replica_name
    metrics = metrics or Metrics()
    redis = redis_connect.command_client(settings)
    store = await open_store(settings.database_url)
    limits = carrier_limits(settings.dhl_quota_per_hour, settings.dhl_burst_per_minute,
                            settings.fedex_quota_per_hour, settings.ups_quota_per_hour)
    quota = Quota(redis, limits, replica)
    scheduler = Scheduler(redis, replica)
    pager = PagerDuty(settings.pagerduty_routing_key, settings.pagerduty_events_url,
                      source=f"ordertrack-gateway/{replica}", metrics=metrics)
    poller = Poller(store, Publisher(redis, mode=settings.pubsub_mode), quota, scheduler, pager, metrics,
                    failure_threshold=settings.failure_alert_threshold, replica=replica)
    https: list[httpx.AsyncClient] = []
    loops: list[CarrierLoop] = []
    for config in carriers:
        # our quota gates every tracking request (retries too); a poll waits for room at most
        # 10 s (or one interval), so a SIGTERM never waits long for in-flight polls
        hook = quota_gate(quota, config.carrier, max_wait=min(config.interval, 10.0),
                          metrics=metrics)
        http = httpx.AsyncClient(event_hooks={"request": [hook]})
        https.append(http)
        policy = RetryPolicy(base_delay=settings.carrier_retry_base_seconds,
                             on_retry=metrics.retry_hook)
        client = make_client(config, http, policy)
        loops.append(CarrierLoop(poller, config.carrier, client, interval=config.interval,
                                 requests_per_hour=hourly_rate(limits[config.carrier]),
                                 refresh_seconds=settings.orders_refresh_seconds,
                                 safety_net=settings.push_safety_net_seconds))
    subscribers = push_subscribers(settings, redis, store, loops)
    return Gateway(poller, loops, subscribers, https, redis, settings.orders_refresh_seconds)


async def serve(settings: SimpleNamespace, carriers: list[CarrierConfig]) -> int:
    replica = settings.replica_name
    metrics = Metrics()
    if settings.gateway_metrics_port:
        try:
            start_metrics_server(metrics.registry, settings.gateway_metrics_port,
                                 settings.gateway_metrics_host)
        except OSError as exc:
            raise ConfigError(f"GATEWAY_METRICS_PORT {settings.gateway_metrics_port} cannot be "
                              f"served: {exc.strerror}") from None
        log.info("metrics on %s:%d/metrics", settings.gateway_metrics_host,
                 settings.gateway_metrics_port)
    gateway = await build_gateway(settings, carriers, metrics)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("gateway replica %s polling %s", replica, ", ".join(c.carrier for c in carriers))
    try:
        await gateway.run(stopping)
    finally:
        await gateway.aclose()
    log.info("gateway replica %s stopped", replica)
    return 0
