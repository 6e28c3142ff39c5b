"""Test helpers: real servers on free ports, dev keys, process management."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last_exc!r})")


def wait_http_ok(url: str, timeout: float = 15.0) -> None:
    def ok():
        return httpx.get(url, timeout=1.0).status_code == 200

    wait_for(ok, timeout, what=url)


class RedisServer:
    """A private redis-server on a free port; stop() and start() keep the port."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--maxclients", "10000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        def ping():
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
            try:
                return client.ping()
            finally:
                client.close()

        wait_for(ping, 10, what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Keys:
    private_pem: bytes
    public_pem: bytes
    ec_private_pem: bytes
    ec_public_pem: bytes
    public_path: Path

    def token(self, user: str = "user_1", order: str | list[str] = "ord_1", ttl: float = 3600,
              alg: str = "RS256", **claims) -> str:
        import jwt

        body = {"sub": user, "exp": int(time.time() + ttl), "iat": int(time.time())}
        if isinstance(order, list):
            body["order_ids"] = order
        elif order is not None:
            body["order_id"] = order
        body.update(claims)
        key = self.private_pem if alg == "RS256" else self.ec_private_pem
        return jwt.encode(body, key, algorithm=alg)


def generate_keys(directory: Path) -> Keys:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    def pems(key):
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private, public

    private, public = pems(rsa_key)
    ec_private, ec_public = pems(ec_key)
    Path(directory).mkdir(parents=True, exist_ok=True)
    public_path = Path(directory) / "jwt-public.pem"
    # both public keys in one bundle: the pod accepts RS256 and ES256 tokens
    public_path.write_bytes(public + ec_public)
    return Keys(private, public, ec_private, ec_public, public_path)


class ProcessGroup:
    """Starts `python -m ordertrack ...` processes and always stops them."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None,
              **popen) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ordertrack", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            cwd=popen.pop("cwd", REPO),
            **popen,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def jwks_server(public_pem: bytes, kid: str):
    """A real HTTP server publishing `public_pem` as a JWKS with this `kid`; yields its URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from jwt.algorithms import RSAAlgorithm

    jwk = json.loads(RSAAlgorithm.to_jwk(load_pem_public_key(public_pem)))
    jwk.update(kid=kid, use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
