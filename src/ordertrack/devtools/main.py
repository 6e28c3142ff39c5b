"""`ordertrack dev`: the whole system on one machine with embedded defaults.

Starts a private redis-server, adds fresh demo orders over the three carriers to a SQLite store
under `DEV_DIR`, and runs the carrier sandbox (accelerated timelines, kept in
`DEV_DIR/sandbox-shipments.json` so store and sandbox agree across restarts), carrier push
(`ordertrack ingest`: the sandbox's FedEx webhook and the gateway's UPS/DHL subscriptions point
at it), the gateway, one push pod and the API as child processes. Prints a tracking-page URL with a fresh token per demo
order, and writes `DEV_DIR/env` for the operator commands (see `devtools.env`).

A child that dies is restarted with backoff, with a line saying so. Ctrl-C, SIGTERM or SIGHUP
stops every child, also when stdout is gone (`make run | tee run.log`); children get SIGTERM
from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG), so none outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from ordertrack import config
from ordertrack.api.main import API_SETTINGS as API
from ordertrack.devtools import env
from ordertrack.devtools import prometheus as prom
from ordertrack.devtools.keys import ensure_dev_keys, mint
from ordertrack.devtools.processes import (
    ORDERTRACK,
    Supervisor,
    describe_exit,
    free_port,
    port_busy,
    say,
    wait_port,
)
from ordertrack.devtools.redis_server import redis_server_argv
from ordertrack.gateway.settings import SETTINGS as GATEWAY
from ordertrack.ingest.settings import SETTINGS as INGEST
from ordertrack.models import Order
from ordertrack.push.settings import SETTINGS as PUSH
from ordertrack.sandbox import (
    DHL_API_KEY,
    FEDEX_CLIENT_ID,
    FEDEX_CLIENT_SECRET,
    UPS_CLIENT_ID,
    UPS_CLIENT_SECRET,
)
from ordertrack.sandbox.settings import SETTINGS as SANDBOX
from ordertrack.sandbox.shipments import new_shipment

DEMO_USER = "demo_user"
#: carrier and tracking-number prefix of the demo orders; each start adds a fresh set
DEMO_CARRIERS = (("dhl", "JD014600"), ("fedex", "FX7712"), ("ups", "1Z999AA1"))

SETTINGS = (
    config.Setting("DEV_DIR", config.text, "var/dev", "where the dev store, Redis and logs live"),
    config.Setting("DEV_REDIS_PORT", config.port, "0", "private redis-server port (0: a free one)"),
    # the processes' own declarations (INGEST_PORT: a free one when it is busy or 0)
    config.pick(PUSH, "PORT"),
    config.pick(API, "API_PORT"),
    config.pick(SANDBOX, "SANDBOX_PORT"),
    config.pick(PUSH, "METRICS_PORT"),
    config.pick(GATEWAY, "GATEWAY_METRICS_PORT"),
    config.pick(INGEST, "INGEST_PORT"),
    # 300: an hour of transit in 12 s, a delivery in about 3 min
    config.redefault(config.pick(SANDBOX, "SANDBOX_TIME_SCALE"), "300"),
    config.Setting("DEV_POLL_INTERVAL_SECONDS", config.duration, "5", "carrier poll interval"),
    config.Setting("DEV_PUBLIC_HOST", config.text, "127.0.0.1", "host name printed in URLs"),
    config.Setting("PROMETHEUS_PORT", config.port, "9099",
                   "port of the dev stack's Prometheus (a free one when it is busy or 0)"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)


# --- pure rules ---------------------------------------------------------------------------


def demo_orders(run_id: str) -> list[Order]:
    """This start's demo orders: new ids and tracking numbers, so their shipments start now."""
    return [Order(order_id=f"ord_demo_{run_id}_{carrier}", user_id=DEMO_USER, carrier=carrier,
                  tracking_number=f"{prefix}{run_id.upper()}", region="local")
            for carrier, prefix in DEMO_CARRIERS]


def delivery_minutes(order: Order, scale: float) -> float:
    """Real minutes until the sandbox delivers this order's shipment at this time scale."""
    shipment = new_shipment(order.carrier, order.tracking_number, 0.0, scale)
    due = shipment.estimated_delivery()
    assert due is not None  # a new shipment is never finished
    return due / 60.0


async def _seed(database_url: str, orders: list[Order]) -> int:
    from ordertrack.store import OrderExists, open_store

    store = await open_store(database_url)
    added = 0
    try:
        for order in orders:
            try:
                await store.add_order(order)
                added += 1
            except OrderExists:
                pass
    finally:
        await store.close()
    return added


def register_fedex_webhook(sandbox_url: str, url: str, secret: str) -> None:
    """Set up the sandbox's FedEx webhook (FedEx: once per account, in its portal); UPS and
    DHL subscriptions are made by the gateway."""
    import httpx

    try:
        httpx.post(f"{sandbox_url}/_admin/webhooks", json={
            "carrier": "fedex", "url": url, "secret": secret}, timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"the sandbox refused the FedEx webhook ({exc})") from exc


def _command() -> str:
    """How to type `ordertrack` from here: on PATH, else the venv's script, else -m."""
    script = Path(sys.executable).parent / "ordertrack"
    on_path = shutil.which("ordertrack")
    if on_path and script.exists() and Path(on_path).resolve() == script.resolve():
        return "ordertrack"
    if script.exists():
        try:
            return str(script.absolute().relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -m ordertrack"


def start_prometheus(supervisor: Supervisor, dev_dir: Path, cfg, ingest_port: int) -> str | None:
    """Debian's prometheus scraping every process of the stack; its URL, or None (with a line
    saying so) when it is not installed."""
    if not prom.installed():
        say("prometheus is not installed (apt-get install prometheus): no rollout report")
        return None
    port = cfg.prometheus_port if cfg.prometheus_port and not port_busy(cfg.prometheus_port) \
        else free_port()
    rules = prom.rules_files()
    if not rules:
        say("deploy/prometheus/alerts.yaml not found: prometheus runs without the rules")
    config_path = dev_dir / "prometheus.yml"
    config_path.write_text(prom.config_text({
        "ws-order-tracking": {"dev-pod": f"127.0.0.1:{cfg.metrics_port}"},
        "logistics-gateway": {"dev-gateway": f"127.0.0.1:{cfg.gateway_metrics_port}"},
        "order-tracking-api": {"dev-api": f"127.0.0.1:{cfg.api_port}"},
        "order-tracking-ingest": {"dev-ingest": f"127.0.0.1:{ingest_port}"},
    }, rules))
    proc = supervisor.start("prometheus", prom.argv(config_path, dev_dir / "prometheus", port), {})
    wait_port(port, proc, "prometheus")
    return f"http://127.0.0.1:{port}"


def run(args: argparse.Namespace) -> int:
    cfg = config.load(SETTINGS, args)
    if not shutil.which("redis-server"):
        raise config.ConfigError("redis-server is not installed (make run installs it)")
    for name, value in (("PORT", cfg.port), ("API_PORT", cfg.api_port),
                        ("SANDBOX_PORT", cfg.sandbox_port)):
        if port_busy(value):
            raise config.ConfigError(f"{name} {value} is already in use; pick another with --{name.lower().replace('_', '-')}")

    dev_dir = Path(cfg.dev_dir).resolve()
    (dev_dir / "logs").mkdir(parents=True, exist_ok=True)
    env_file = env.env_path({"DEV_DIR": cfg.dev_dir})
    private_key, public_key = ensure_dev_keys()
    redis_port = cfg.dev_redis_port or free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    database_url = f"sqlite:///{dev_dir / 'ordertrack.db'}"
    sandbox_url = f"http://127.0.0.1:{cfg.sandbox_port}"
    host = cfg.dev_public_host
    ws_url = f"ws://{host}:{cfg.port}"
    py = list(ORDERTRACK)
    common = {"REDIS_URL": redis_url, "DATABASE_URL": database_url,
              "JWT_PUBLIC_KEY": str(public_key.resolve()), "PYTHONUNBUFFERED": "1"}
    interval = str(cfg.dev_poll_interval_seconds)
    orders = demo_orders(secrets.token_hex(3))
    # carrier push: the sandbox delivers to ingest; fresh webhook secrets per start
    ingest_port = cfg.ingest_port if cfg.ingest_port and not port_busy(cfg.ingest_port) \
        else free_port()
    ingest_url = f"http://127.0.0.1:{ingest_port}/webhooks"
    push = {"FEDEX_WEBHOOK_SECRET": secrets.token_urlsafe(16),
            "UPS_WEBHOOK_CREDENTIAL": secrets.token_urlsafe(16),
            "DHL_WEBHOOK_SECRET": secrets.token_urlsafe(16)}

    supervisor = Supervisor(dev_dir / "logs")
    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        redis_proc = supervisor.start("redis", redis_server_argv(redis_port, dev_dir), {})
        wait_port(redis_port, redis_proc, "redis-server")
        added = asyncio.run(_seed(database_url, orders))
        sandbox = supervisor.start("sandbox", [*py, "sandbox"], {
            "SANDBOX_PORT": str(cfg.sandbox_port),
            "SANDBOX_TIME_SCALE": str(cfg.sandbox_time_scale),
            "SANDBOX_STATE_FILE": str(dev_dir / "sandbox-shipments.json")})
        wait_port(cfg.sandbox_port, sandbox, "sandbox")
        ingest = supervisor.start("ingest", [*py, "ingest"], {
            **common, **push, "INGEST_HOST": "127.0.0.1", "INGEST_PORT": str(ingest_port)})
        wait_port(ingest_port, ingest, "ingest")
        register_fedex_webhook(sandbox_url, f"{ingest_url}/fedex", push["FEDEX_WEBHOOK_SECRET"])
        supervisor.start("gateway", [*py, "poll"], {
            **common,
            "UPS_WEBHOOK_URL": f"{ingest_url}/ups",
            "UPS_WEBHOOK_CREDENTIAL": push["UPS_WEBHOOK_CREDENTIAL"],
            "DHL_WEBHOOK_URL": f"{ingest_url}/dhl", "DHL_WEBHOOK_SECRET": push["DHL_WEBHOOK_SECRET"],
            "DHL_API_URL": sandbox_url, "DHL_API_KEY": DHL_API_KEY,
            "FEDEX_API_URL": sandbox_url, "FEDEX_CLIENT_ID": FEDEX_CLIENT_ID,
            "FEDEX_CLIENT_SECRET": FEDEX_CLIENT_SECRET,
            "UPS_API_URL": sandbox_url, "UPS_CLIENT_ID": UPS_CLIENT_ID,
            "UPS_CLIENT_SECRET": UPS_CLIENT_SECRET,
            "DHL_POLL_INTERVAL_SECONDS": interval, "FEDEX_POLL_INTERVAL_SECONDS": interval,
            "UPS_POLL_INTERVAL_SECONDS": interval, "ORDERS_REFRESH_SECONDS": interval,
            "GATEWAY_METRICS_PORT": str(cfg.gateway_metrics_port),
            "GATEWAY_METRICS_HOST": "127.0.0.1", "REPLICA_NAME": "dev-gateway"})
        pod = supervisor.start("pod", [*py, "serve"], {
            **common, "HOST": "127.0.0.1", "PORT": str(cfg.port), "METRICS_PORT": str(cfg.metrics_port),
            "POD_NAME": "dev-pod", "DRAIN_SECONDS": "1"})
        api = supervisor.start("api", [*py, "api"], {
            **common, "API_HOST": "127.0.0.1", "API_PORT": str(cfg.api_port),
            "REALTIME_WS_URL": ws_url})
        wait_port(cfg.port, pod, "push pod")
        wait_port(cfg.api_port, api, "api")
        prometheus_url = start_prometheus(supervisor, dev_dir, cfg, ingest_port)
        time.sleep(0.5)
        if (dead := supervisor.exited()) is not None:
            raise RuntimeError(f"{dead[0]} {describe_exit(dead[1])}")
        shared = {"REDIS_URL": redis_url, "DATABASE_URL": database_url}
        if prometheus_url:
            shared["PROMETHEUS_URL"] = prometheus_url
        env_file.write_text(env.format_env(shared, os.getpid()))

        pem = private_key.read_bytes()
        cmd = _command()
        say(f"""
ordertrack dev is running (logs in {dev_dir / 'logs'}; {added} fresh demo orders)
  redis         {redis_url}
  carrier sandbox {sandbox_url}   (time x{cfg.sandbox_time_scale:g})
  push pod      {ws_url}/ws/orders/{{order_id}}/track   metrics http://{host}:{cfg.metrics_port}/metrics
  REST API      http://{host}:{cfg.api_port}/api/v2/orders/{{order_id}}/tracking
  gateway       polling every {interval}s   metrics http://{host}:{cfg.gateway_metrics_port}/metrics
  carrier push  {ingest_url}/{{fedex,ups,dhl}}   metrics http://127.0.0.1:{ingest_port}/metrics
  prometheus    {prometheus_url or 'not installed (apt-get install prometheus)'}   (rules of deploy/prometheus)
  pids          {supervisor.pids()}

Open a tracking page (the token is in the #fragment, never the query string); a new scan lands
every few seconds until the shipment is delivered:""")
        for order in orders:
            token = mint(pem, DEMO_USER, [order.order_id], ttl=24 * 3600)
            minutes = delivery_minutes(order, cfg.sandbox_time_scale)
            say(f"  {order.carrier:6} http://{host}:{cfg.api_port}/orders/{order.order_id}"
                f"#token={token}   (delivered in about {minutes:.0f} min)")
        say(f"""
Operator commands run from this directory reach this stack (settings in {env_file}):
  {cmd} orders list
  {cmd} flag --enabled false      # the kill switch: pages fall back to REST
  {cmd} token --user {DEMO_USER} --order {orders[0].order_id}
  {cmd} rollout report            # the ramp-to-25 % criteria, from Prometheus and Redis
A process that dies is restarted. Ctrl-C stops everything.""")

        while not stop_requested:
            supervisor.tend()
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        say(f"ordertrack dev: {exc}; logs in {dev_dir / 'logs'}")
        return 1
    finally:
        env_file.unlink(missing_ok=True)
        say("stopping every process ordertrack dev started...")
        supervisor.stop_all()
        say("stopped.")
