"""Starting real `ordertrack serve` pods and talking to them like a customer's client would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets

from tests.support import free_port, wait_for

SUBPROTOCOL = "vantage-tracking-v1"


@dataclass
class PodProcess:
    proc: object
    port: int
    log: Path
    env: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, order_id: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/orders/{order_id}/track" + (f"?{query}" if query else "")

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def disconnects(self) -> list[dict]:
        return [line for line in self.log_lines() if line.get("msg") == "disconnect"]

    def ready(self) -> bool:
        return httpx.get(self.base + "/readyz", timeout=1).status_code == 200


def start_pod(procs, tmp_path: Path, redis_url: str, keys, wait_ready: bool = True,
              name: str = "pod", **settings) -> PodProcess:
    port = int(settings.pop("port", 0)) or free_port()
    env = {
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "METRICS_PORT": "0",
        "JWT_PUBLIC_KEY": str(keys.public_path),
        "POD_NAME": name,
        "DRAIN_SECONDS": "0.5",
    }
    env.update({key.upper(): str(value) for key, value in settings.items()})
    log = tmp_path / f"{name}-{port}.log"
    proc = procs.start("serve", env=env, log=log)
    pod = PodProcess(proc, port, log, env)

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"pod exited with {proc.returncode}: {log.read_text()[-2000:]}")
        response = httpx.get(pod.base + ("/readyz" if wait_ready else "/healthz"), timeout=1)
        return response.status_code == 200

    wait_for(up, 15, what="pod ready")
    return pod


async def connect(pod: PodProcess, token: str, order_id: str, query: str = "",
                  via_subprotocol: bool = False, **kwargs):
    """Open a WebSocket as a client would; returns the connection after the 101."""
    if via_subprotocol:
        return await websockets.connect(
            pod.url(order_id, query), subprotocols=[SUBPROTOCOL, f"bearer.{token}"],
            open_timeout=5, **kwargs)
    return await websockets.connect(
        pod.url(order_id, query), subprotocols=[SUBPROTOCOL],
        additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5, **kwargs)


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_event(ws, event: str, timeout: float = 5.0) -> dict:
    """Next message of this event type (heartbeat_acks and others in between are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        message = await recv_json(ws, max(remaining, 0.01))
        if message["event"] == event:
            return message


async def close_code(ws, timeout: float = 5.0) -> int:
    """Wait until the server closes the connection; returns the close code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


def upgrade_headers(token: str | None = None, **extra) -> dict:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": SUBPROTOCOL,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra)
    return headers


def wait_registry_empty(redis_client, user_id: str, timeout: float = 5.0) -> None:
    wait_for(lambda: redis_client.zcard(f"ws:user:{user_id}") == 0, timeout,
             what=f"registry of {user_id} empty")
