"""`ordertrack dev`: the whole system on one machine with embedded defaults.

Starts a private redis-server, seeds a SQLite store with demo orders over the three carriers,
and runs the carrier sandbox (accelerated timelines), the gateway, one push pod and the API as
child processes. Prints a tracking-page URL with a fresh token for a few orders. Ctrl-C (or
SIGTERM) stops every process it started; if one of them dies, it stops the rest and says which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ordertrack import config
from ordertrack.dev_keys import ensure_dev_keys, mint
from ordertrack.models import Order

DEMO_USER = "demo_user"
DEMO_ORDERS = (
    ("ord_demo_dhl_1", "dhl", "JD014600003DEMO1"),
    ("ord_demo_dhl_2", "dhl", "JD014600003DEMO2"),
    ("ord_demo_fedex_1", "fedex", "FX7712DEMO0001"),
    ("ord_demo_fedex_2", "fedex", "FX7712DEMO0002"),
    ("ord_demo_ups_1", "ups", "1Z999AA1DEMO0001"),
    ("ord_demo_ups_2", "ups", "1Z999AA1DEMO0002"),
)

SETTINGS = (
    config.Setting("DEV_DIR", config.text, "var/dev", "where the dev store, Redis and logs live"),
    config.Setting("DEV_REDIS_PORT", config.port, "0", "private redis-server port (0: a free one)"),
    config.Setting("PORT", config.port, "8080", "push pod WebSocket port"),
    config.Setting("API_PORT", config.port, "8000", "REST API and tracking page port"),
    config.Setting("SANDBOX_PORT", config.port, "8700", "carrier sandbox port"),
    config.Setting("METRICS_PORT", config.port, "9090", "push pod metrics port"),
    config.Setting("GATEWAY_METRICS_PORT", config.port, "9091", "gateway metrics port"),
    config.Setting("SANDBOX_TIME_SCALE", config.duration, "600",
                   "shipment seconds per real second (600: an hour of transit in 6 s)"),
    config.Setting("DEV_POLL_INTERVAL_SECONDS", config.duration, "5", "carrier poll interval"),
    config.Setting("DEV_PUBLIC_HOST", config.text, "127.0.0.1", "host name printed in URLs"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
        if _port_busy(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")


async def _seed(database_url: str) -> int:
    from ordertrack.store import OrderExists, open_store

    store = await open_store(database_url)
    added = 0
    try:
        for order_id, carrier, number in DEMO_ORDERS:
            try:
                await store.add_order(Order(order_id=order_id, user_id=DEMO_USER, carrier=carrier,
                                            tracking_number=number, region="local"))
                added += 1
            except OrderExists:
                pass
    finally:
        await store.close()
    return added


class Supervisor:
    """Starts child processes in order and stops them all, in reverse, exactly once."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append((name, proc))
        return proc

    def exited(self) -> tuple[str, int] | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop_all(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.children):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in time: killing it", flush=True)
                proc.kill()
                proc.wait()
        self.children.clear()


def run(args: argparse.Namespace) -> int:
    cfg = config.load(SETTINGS, args)
    if not shutil.which("redis-server"):
        raise config.ConfigError("redis-server is not installed (make run installs it)")
    for name, value in (("PORT", cfg.port), ("API_PORT", cfg.api_port),
                        ("SANDBOX_PORT", cfg.sandbox_port)):
        if _port_busy(value):
            raise config.ConfigError(f"{name} {value} is already in use; pick another with --{name.lower().replace('_', '-')}")

    dev_dir = Path(cfg.dev_dir).resolve()
    (dev_dir / "logs").mkdir(parents=True, exist_ok=True)
    private_key, public_key = ensure_dev_keys()
    redis_port = cfg.dev_redis_port or _free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    database_url = f"sqlite:///{dev_dir / 'ordertrack.db'}"
    sandbox_url = f"http://127.0.0.1:{cfg.sandbox_port}"
    host = cfg.dev_public_host
    ws_url = f"ws://{host}:{cfg.port}"
    py = [sys.executable, "-m", "ordertrack"]
    common = {"REDIS_URL": redis_url, "DATABASE_URL": database_url,
              "JWT_PUBLIC_KEY": str(public_key.resolve()), "PYTHONUNBUFFERED": "1"}
    interval = str(cfg.dev_poll_interval_seconds)

    supervisor = Supervisor(dev_dir / "logs")
    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        redis_proc = supervisor.start("redis", [
            "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(dev_dir)], {})
        _wait_port(redis_port, redis_proc, "redis-server")
        added = asyncio.run(_seed(database_url))
        sandbox = supervisor.start("sandbox", [*py, "sandbox"], {
            "SANDBOX_PORT": str(cfg.sandbox_port),
            "SANDBOX_TIME_SCALE": str(cfg.sandbox_time_scale)})
        _wait_port(cfg.sandbox_port, sandbox, "sandbox")
        gateway = supervisor.start("gateway", [*py, "poll"], {
            **common,
            "DHL_API_URL": sandbox_url, "DHL_API_KEY": "sandbox-dhl-key",
            "FEDEX_API_URL": sandbox_url, "FEDEX_CLIENT_ID": "sandbox-fedex-id",
            "FEDEX_CLIENT_SECRET": "sandbox-fedex-secret",
            "UPS_API_URL": sandbox_url, "UPS_CLIENT_ID": "sandbox-ups-id",
            "UPS_CLIENT_SECRET": "sandbox-ups-secret",
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
        _wait_port(cfg.port, pod, "push pod")
        _wait_port(cfg.api_port, api, "api")
        time.sleep(0.5)
        if (dead := supervisor.exited()) is not None:
            raise RuntimeError(f"{dead[0]} exited with code {dead[1]}")
        if gateway.poll() is not None:
            raise RuntimeError(f"gateway exited with code {gateway.returncode}")

        pem = private_key.read_bytes()
        print(f"""
ordertrack dev is running (logs in {dev_dir / 'logs'}; {added} demo orders added)
  redis         {redis_url}
  carrier sandbox {sandbox_url}   (time x{cfg.sandbox_time_scale:g}: shipments move every few seconds)
  push pod      {ws_url}/ws/orders/{{order_id}}/track   metrics http://{host}:{cfg.metrics_port}/metrics
  REST API      http://{host}:{cfg.api_port}/api/v2/orders/{{order_id}}/tracking
  gateway       polling every {interval}s   metrics http://{host}:{cfg.gateway_metrics_port}/metrics

Open a tracking page (the token is in the #fragment, never the query string):""", flush=True)
        for order_id, carrier, _ in DEMO_ORDERS[::2]:
            token = mint(pem, DEMO_USER, [order_id], ttl=24 * 3600)
            print(f"  {carrier:6} http://{host}:{cfg.api_port}/orders/{order_id}#token={token}")
        print("\nMore tokens: ordertrack token --user demo_user --order ord_demo_ups_2\n"
              "Ctrl-C stops everything.", flush=True)

        while not stop_requested:
            dead = supervisor.exited()
            if dead is not None:
                print(f"{dead[0]} exited with code {dead[1]}; see {dev_dir / 'logs' / (dead[0] + '.log')}",
                      flush=True)
                return 1
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        print(f"ordertrack dev: {exc}; logs in {dev_dir / 'logs'}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("stopping every process ordertrack dev started...", flush=True)
        supervisor.stop_all()
        print("stopped.", flush=True)
