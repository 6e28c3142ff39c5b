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


def _recording(base: type) -> type:
    class RecordingConnection(base):
        """A real push/connection.py Connection whose socket is a list: `sent` has every
        whole WebSocket frame written to it, in order; a close only records its reason."""

        __slots__ = ("sent",)

        def write_frame(self, ws_frame: bytes) -> None:
            self.sent.append(ws_frame)

        def close(self, close, message=None) -> None:
            if self.close_reason is None:
                self.close_reason = close

    return RecordingConnection


_RECORDING: dict[str, type] = {}


def recording_connection(acked: bool = True, sent_seq: int = 0, max_pending_bytes: int = 1 << 20,
                         impl: str | None = None):
    """A connection (of `impl`, "cython" or "python"; the chosen one by default) with no socket
    for the delivery and fan-out tests: the rules are its own, only the writes are recorded."""
    from ordertrack.push import connection

    name = impl or connection.IMPLEMENTATION
    if name not in _RECORDING:
        _RECORDING[name] = _recording(connection.IMPLEMENTATIONS[name])
    conn = _RECORDING[name](None, "ws_conn_t", "u_t", "ord_t", None,
                            max_pending_bytes=max_pending_bytes)
    conn.acked, conn.sent_seq, conn.sent = acked, sent_seq, []
    return conn
