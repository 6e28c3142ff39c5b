"""`ordertrack dev`: the whole system on one machine with embedded defaults.

Starts a private redis-server, adds fresh demo orders over the three carriers to a SQLite store
under `DEV_DIR`, and runs the carrier sandbox (accelerated timelines, kept in
`DEV_DIR/sandbox-shipments.json` so store and sandbox agree across restarts), the gateway, one
push pod and the API as child processes. Prints a tracking-page URL with a fresh token per demo
order, and writes `DEV_DIR/env` for the operator commands (see `devenv`).

A child that dies is restarted with backoff, with a line saying so. Ctrl-C, SIGTERM or SIGHUP
stops every child, also when stdout is gone (`make run | tee run.log`); children get SIGTERM
from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG), so none outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ordertrack import config, devenv
from ordertrack.commands.token import ensure_dev_keys, mint
from ordertrack.models import Order
from ordertrack.sandbox import (
    DHL_API_KEY,
    FEDEX_CLIENT_ID,
    FEDEX_CLIENT_SECRET,
    UPS_CLIENT_ID,
    UPS_CLIENT_SECRET,
)
from ordertrack.sandbox.shipments import new_shipment

DEMO_USER = "demo_user"
#: carrier and tracking-number prefix of the demo orders; each start adds a fresh set
DEMO_CARRIERS = (("dhl", "JD014600"), ("fedex", "FX7712"), ("ups", "1Z999AA1"))
STABLE_SECONDS = 30.0
MAX_RESTART_DELAY = 10.0

SETTINGS = (
    config.Setting("DEV_DIR", config.text, "var/dev", "where the dev store, Redis and logs live"),
    config.Setting("DEV_REDIS_PORT", config.port, "0", "private redis-server port (0: a free one)"),
    config.Setting("PORT", config.port, "8080", "push pod WebSocket port"),
    config.Setting("API_PORT", config.port, "8000", "REST API and tracking page port"),
    config.Setting("SANDBOX_PORT", config.port, "8700", "carrier sandbox port"),
    config.Setting("METRICS_PORT", config.port, "9090", "push pod metrics port"),
    config.Setting("GATEWAY_METRICS_PORT", config.port, "9091", "gateway metrics port"),
    config.Setting("SANDBOX_TIME_SCALE", config.duration, "300",
                   "shipment seconds per real second (300: an hour of transit in 12 s, "
                   "a delivery in about 3 min)"),
    config.Setting("DEV_POLL_INTERVAL_SECONDS", config.duration, "5", "carrier poll interval"),
    config.Setting("DEV_PUBLIC_HOST", config.text, "127.0.0.1", "host name printed in URLs"),
)


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)


# --- pure rules ---------------------------------------------------------------------------


def restart_delay(failures: int) -> float:
    """Seconds before restarting a child that exited `failures` times in a row without
    running `STABLE_SECONDS`: 0.5 s after a crash of a stable child, doubling up to 10 s."""
    return min(MAX_RESTART_DELAY, 0.5 * 2 ** max(0, failures))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def demo_orders(run_id: str) -> list[Order]:
    """This start's demo orders: new ids and tracking numbers, so their shipments start now."""
    return [Order(order_id=f"ord_demo_{run_id}_{carrier}", user_id=DEMO_USER, carrier=carrier,
                  tracking_number=f"{prefix}{run_id.upper()}", region="local")
            for carrier, prefix in DEMO_CARRIERS]


def delivery_minutes(order: Order, scale: float) -> float:
    """Real minutes until the sandbox delivers this order's shipment at this time scale."""
    shipment = new_shipment(order.carrier, order.tracking_number, 0.0, scale)
    return shipment.estimated_delivery() / 60.0


# --- output that survives a closed stdout -------------------------------------------------


def say(text: str) -> None:
    """Print a line. When stdout is gone (`make run | tee run.log` after Ctrl-C: tee dies first),
    stdout is pointed at stderr, else at /dev/null, so no write error stops the cleanup."""
    for fallback in (lambda: sys.stderr.fileno(), lambda: os.open(os.devnull, os.O_WRONLY)):
        try:
            print(text, flush=True)
            return
        except (OSError, ValueError):
            try:
                os.dup2(fallback(), sys.stdout.fileno())
            except (OSError, ValueError):
                pass


# --- processes ----------------------------------------------------------------------------


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
            raise RuntimeError(f"{name} {describe_exit(proc.returncode)} while starting")
        if _port_busy(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port} within {timeout:.0f}s")


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent_pid: int):
    """preexec_fn: SIGTERM this child when the supervisor dies, even by SIGKILL."""
    def arm() -> None:
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    #: exits in a row that came before STABLE_SECONDS of running
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts child processes, restarts the ones that die, and stops them all, in reverse."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _spawn(self, child: Child) -> subprocess.Popen:
        with open(self.log_path(child.name), "ab") as log:
            child.proc = subprocess.Popen(
                child.argv, env={**os.environ, **child.env}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with(os.getpid()))
        child.started_at = time.monotonic()
        child.restart_at = None
        return child.proc

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        child = Child(name, argv, env)
        self.children.append(child)
        return self._spawn(child)

    def pids(self) -> str:
        return ", ".join(f"{c.name} {c.proc.pid}" for c in self.children if c.proc is not None)

    def exited(self) -> tuple[str, int] | None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return child.name, child.proc.returncode
        return None

    def tend(self) -> None:
        """Schedule a restart for each child that died; restart those whose delay is over."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    proc = self._spawn(child)
                    say(f"{child.name} restarted (pid {proc.pid})")
                continue
            code = child.proc.poll()
            if code is None:
                continue
            stable = now - child.started_at >= STABLE_SECONDS
            child.failures = 0 if stable else child.failures + 1
            delay = restart_delay(child.failures)
            child.restart_at = now + delay
            say(f"{child.name} {describe_exit(code)}; restarting it in {delay:g}s "
                f"(log: {self.log_path(child.name)})")

    def stop_all(self) -> None:
        running = [c.proc for c in reversed(self.children)
                   if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            proc = child.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"  {child.name} did not stop in time: killing it")
                proc.kill()
                proc.wait()
        self.children.clear()


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
    env_file = devenv.env_path({"DEV_DIR": cfg.dev_dir})
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
    orders = demo_orders(secrets.token_hex(3))

    supervisor = Supervisor(dev_dir / "logs")
    stop_requested = False

    def request_stop(*_):
        nonlocal stop_requested
        stop_requested = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        redis_proc = supervisor.start("redis", [
            "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(dev_dir)], {})
        _wait_port(redis_port, redis_proc, "redis-server")
        added = asyncio.run(_seed(database_url, orders))
        sandbox = supervisor.start("sandbox", [*py, "sandbox"], {
            "SANDBOX_PORT": str(cfg.sandbox_port),
            "SANDBOX_TIME_SCALE": str(cfg.sandbox_time_scale),
            "SANDBOX_STATE_FILE": str(dev_dir / "sandbox-shipments.json")})
        _wait_port(cfg.sandbox_port, sandbox, "sandbox")
        supervisor.start("gateway", [*py, "poll"], {
            **common,
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
        _wait_port(cfg.port, pod, "push pod")
        _wait_port(cfg.api_port, api, "api")
        time.sleep(0.5)
        if (dead := supervisor.exited()) is not None:
            raise RuntimeError(f"{dead[0]} {describe_exit(dead[1])}")
        env_file.write_text(devenv.format_env(
            {"REDIS_URL": redis_url, "DATABASE_URL": database_url}, os.getpid()))

        pem = private_key.read_bytes()
        cmd = _command()
        say(f"""
ordertrack dev is running (logs in {dev_dir / 'logs'}; {added} fresh demo orders)
  redis         {redis_url}
  carrier sandbox {sandbox_url}   (time x{cfg.sandbox_time_scale:g})
  push pod      {ws_url}/ws/orders/{{order_id}}/track   metrics http://{host}:{cfg.metrics_port}/metrics
  REST API      http://{host}:{cfg.api_port}/api/v2/orders/{{order_id}}/tracking
  gateway       polling every {interval}s   metrics http://{host}:{cfg.gateway_metrics_port}/metrics
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
