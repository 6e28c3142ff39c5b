"""Starting real `ordertrack serve` pods and talking to them like a customer's client would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import websockets

from ordertrack import redis_layout
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from tests.support import free_port, wait_for, wait_for_async

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


def _launch(procs, tmp_path: Path, redis_url: str, keys, name: str, settings: dict) -> PodProcess:
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
    return PodProcess(proc, port, log, env)


def _up(pod: PodProcess, wait_ready: bool) -> bool:
    if pod.proc.poll() is not None:
        raise RuntimeError(f"pod exited with {pod.proc.returncode}: {pod.log.read_text()[-2000:]}")
    response = httpx.get(pod.base + ("/readyz" if wait_ready else "/healthz"), timeout=1)
    return response.status_code == 200


def start_pod(procs, tmp_path: Path, redis_url: str, keys, wait_ready: bool = True,
              name: str = "pod", **settings) -> PodProcess:
    """Start `ordertrack serve` and wait until it is ready (for sync tests and fixtures)."""
    pod = _launch(procs, tmp_path, redis_url, keys, name, settings)
    wait_for(lambda: _up(pod, wait_ready), 15, what="pod ready")
    return pod


async def start_pod_async(procs, tmp_path: Path, redis_url: str, keys, wait_ready: bool = True,
                          name: str = "pod", **settings) -> PodProcess:
    """`start_pod` for async tests: their loop (and their clients) keep running meanwhile."""
    pod = _launch(procs, tmp_path, redis_url, keys, name, settings)
    await wait_for_async(lambda: _up(pod, wait_ready), 15, what="pod ready")
    return pod


@pytest.fixture
def pod(procs, tmp_path, redis_url, keys):
    """One pod of this test's own on the session's Redis (a conftest fixture)."""
    return start_pod(procs, tmp_path, redis_url, keys)


@pytest.fixture
def rsync(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def rasync(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def publish(client, order_id, seq, status="in_transit", location="Newark NJ", carrier="dhl"):
    """Publish one stored event for the order as the gateway does."""
    await Publisher(client).publish(order_id, carrier,
        StoredEvent(order_id, seq, status, location, f"2025-10-03T14:{seq % 60:02d}:00Z",
                    "2025-10-04T18:00:00Z", raw={"secret": "carrier internals"}))


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
    wait_for(lambda: redis_client.zcard(redis_layout.user(user_id)) == 0, timeout,
             what=f"registry of {user_id} empty")


async def wait_registry_empty_async(redis_client, user_id: str, timeout: float = 5.0) -> None:
    await wait_for_async(lambda: redis_client.zcard(redis_layout.user(user_id)) == 0, timeout,
                         what=f"registry of {user_id} empty")


# --- a raw client: the bytes of RFC 6455's edges, which the websockets library never writes ----
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                 masked: bool = True) -> bytes:
    """One client frame; `rsv` is the 3 reserved bits (0-7)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode])
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def request_bytes(path: str, headers: dict | list) -> bytes:
    """An HTTP/1.1 GET; header values may be bytes (to send what is not ASCII)."""
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in items:
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class RawWebSocket:
    """A client over a plain TCP socket that writes frames byte by byte and reads them back."""

    def __init__(self, reader, writer, status: int, headers: dict, body: bytes, raw: bytes = b""):
        self.reader, self.writer = reader, writer
        self.status, self.headers, self.body = status, headers, body
        self.raw = raw  # the answer's head and body as they came

    @classmethod
    async def open(cls, pod: PodProcess, path: str, headers: dict | list,
                   rcvbuf: int | None = None) -> RawWebSocket:
        return await cls.open_bytes(pod, [request_bytes(path, headers)], rcvbuf)

    @classmethod
    async def open_bytes(cls, pod: PodProcess, pieces: list[bytes],
                         rcvbuf: int | None = None) -> RawWebSocket:
        """Write these bytes (each piece sent on its own), then read the HTTP answer."""
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", pod.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        for n, piece in enumerate(pieces):
            if n:
                await asyncio.sleep(0.05)  # so the server reads the pieces one by one
            writer.write(piece)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        response_headers = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
        body = b""
        if int(response_headers.get("content-length", 0)):
            body = await reader.readexactly(int(response_headers["content-length"]))
        return cls(reader, writer, int(status_line.split()[1]), response_headers, body, head + body)

    def json(self) -> dict:
        return json.loads(self.body)

    async def send(self, opcode: int, payload: bytes = b"", **kwargs) -> None:
        self.writer.write(encode_frame(opcode, payload, **kwargs))
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame (opcode, payload); (-1, b"") when the server dropped the socket."""
        async def read() -> tuple[int, bytes]:
            try:
                first, second = await self.reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                return first & 0x0F, await self.reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return -1, b""
        return await asyncio.wait_for(read(), timeout)

    async def recv_json(self, timeout: float = 5.0) -> dict:
        """The next text frame as JSON (control frames in between are skipped)."""
        while True:
            opcode, payload = await self.recv(timeout)
            if opcode == OP_TEXT:
                return json.loads(payload)
            assert opcode in (OP_PING, OP_PONG), (opcode, payload)

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server's close frame: its code (None for an empty close frame)."""
        while True:
            opcode, payload = await self.recv(timeout)
            if opcode == OP_CLOSE:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if opcode == -1:
                return 1006

    def abort(self) -> None:
        self.writer.transport.abort()


async def open_raw(pod: PodProcess, token: str, order_id: str, rcvbuf: int | None = None,
                   **extra) -> RawWebSocket:
    """A raw client past the 101 (its connection_ack still unread)."""
    raw = await RawWebSocket.open(pod, f"/ws/orders/{order_id}/track", upgrade_headers(token, **extra),
                                  rcvbuf=rcvbuf)
    assert raw.status == 101, (raw.status, raw.body)
    return raw


class Heartbeats:
    """A raw client's frames read on a task of its own, so several clients answer (or ignore)
    the pod's pings at once: while `answers_left` is None every ping is answered; a number
    answers that many more, then none. Unanswered pings, text messages and the close code are
    what the test waits for (each an event, never a sleep)."""

    def __init__(self, raw: RawWebSocket):
        self.raw = raw
        self.answers_left: int | None = None
        self.unanswered: asyncio.Queue[bytes] = asyncio.Queue()
        self.answered = 0
        self.texts: asyncio.Queue[dict] = asyncio.Queue()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            try:
                opcode, payload = await self.raw.recv(timeout=120)
            except TimeoutError:
                continue
            if opcode == OP_PING:
                if self.answers_left is None or self.answers_left > 0:
                    if self.answers_left is not None:
                        self.answers_left -= 1
                    await self.raw.send(OP_PONG, payload)
                    self.answered += 1
                else:
                    self.unanswered.put_nowait(payload)
            elif opcode == OP_TEXT:
                self.texts.put_nowait(json.loads(payload))
            elif opcode in (OP_CLOSE, -1):
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed.set_result(code if opcode == OP_CLOSE else 1006)
                return

    def stop_answering(self, after: int = 0) -> None:
        """Answer `after` more pings, then none (the next ping then is sent after this call)."""
        self.answers_left = after

    async def unanswered_ping(self, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.unanswered.get(), timeout)

    async def pong(self, payload: bytes) -> None:
        await self.raw.send(OP_PONG, payload)

    async def text(self, timeout: float = 5.0) -> dict:
        return await asyncio.wait_for(self.texts.get(), timeout)

    async def close_code(self, timeout: float = 10.0) -> int | None:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def still_open(self) -> bool:
        """A heartbeat message answered with a heartbeat_ack, no close before it."""
        if self.closed.done():
            return False
        await self.raw.send(OP_TEXT, b'{"event":"heartbeat"}')
        text = asyncio.ensure_future(self.texts.get())
        await asyncio.wait([text, self.closed], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not text.done():
            text.cancel()
            return False
        return text.result()["event"] == "heartbeat_ack" and not self.closed.done()

    def stop(self) -> None:
        self._task.cancel()
        self.raw.abort()
