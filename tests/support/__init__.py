"""Test helpers (tests/support/: `pods` starts pods and talks to them, `redis_topologies` the
Sentinel and Cluster fixtures): the repository's root and a fake identity provider (JWKS). Real servers on
free ports, key pairs and child processes come from `ordertrack.devtools`, as for the benches."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ordertrack.devtools import processes
from ordertrack.devtools.keys import Keys, generate_keys
from ordertrack.devtools.processes import (
    free_port,
    wait_for,
    wait_for_async,
    wait_http_ok,
    wait_http_ok_async,
)
from ordertrack.devtools.redis_server import RedisServer

__all__ = ["REPO", "Keys", "ProcessGroup", "RedisServer", "free_port", "generate_keys",
           "jwks_server", "wait_for", "wait_for_async", "wait_http_ok", "wait_http_ok_async"]

REPO = Path(__file__).resolve().parents[2]


class ProcessGroup(processes.ProcessGroup):
    """`python -m ordertrack` children run from the repository's root."""

    cwd = REPO


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


class DeliveryState:
    """A connection's delivery attributes (push/connection.py's; the rules are push/delivery.py's)
    and nothing else: the test double of the delivery and fan-out tests."""

    __slots__ = ("close_reason", "acked", "backlog", "held_bytes", "sent_seq", "max_pending_bytes",
                 "sent")

    def __init__(self, acked: bool = True, sent_seq: int = 0, max_pending_bytes: int = 1 << 20):
        self.close_reason = None
        self.acked = acked
        self.backlog = None
        self.held_bytes = 0
        self.sent_seq = sent_seq
        self.max_pending_bytes = max_pending_bytes
        #: every whole WebSocket frame written to it, in order
        self.sent: list[bytes] = []

    def send_frame(self, ws_frame: bytes) -> None:
        self.sent.append(ws_frame)

    def close(self, close) -> None:
        self.close_reason = close
