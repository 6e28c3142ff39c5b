"""Peer servers for the load test: the same scenario against servers we did not design.

`PEERS[name]` is a `PeerSpec` for "websockets", "node-ws", "nchan" and "uws" (see README.md here for
what each is, how it is fed and where it departs from our wire contract). A harness does:

    peer = PEERS["node-ws"]
    if not peer.installed():
        print(peer.name, peer.reason())
    proc = peer.start(redis_url, port, workdir)      # listening on 127.0.0.1:port, answering
    url = peer.ws_url("ord_1")                       # ws://127.0.0.1:port/ws/orders/ord_1/track
    subprotocols = peer.subprotocols()               # vantage-tracking-v1, bearer.bench-secret
    # publish_mode "redis-publish": PUBLISH order:tracking:{order_id} <message JSON>
    # publish_mode "nchan-http":    POST peer.publish_url(order_id) with nchan_body(message JSON)
    stop_process(proc)

Auth for every peer is a shared secret, not a JWT: the offered subprotocol `bearer.<TOKEN>`
must carry exactly TOKEN ("bench-secret", or BENCH_PEER_SECRET).
Installed by `make bench-peers`; nothing here is part of the unit suite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import lib
from bench.lib import REPO, die_with_parent, stop_process, tail, wait_until

HERE = Path(__file__).resolve().parent
TOKEN = os.environ.get("BENCH_PEER_SECRET", "bench-secret")
SUBPROTOCOL = "vantage-tracking-v1"
NGINX_MODULES = Path("/usr/lib/nginx/modules")
START_TIMEOUT_SECONDS = 20.0


# --- what the Python peers share: the upgrade's check, the answers to client frames -------------


def peer_arguments(doc: str | None) -> argparse.ArgumentParser:
    """A Python peer's command line: --redis-url, --host, --port, --secret."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=TOKEN)
    return parser


def offered_subprotocols(header_values: list[str]) -> list[str]:
    """All values of the Sec-WebSocket-Protocol headers, split on commas."""
    return [item.strip() for value in header_values for item in value.split(",") if item.strip()]


def refusal(offered: list[str], secret: str) -> tuple[int, str, str] | None:
    """(status, code, message) when the upgrade must be refused, else None."""
    from ordertrack import protocol

    if protocol.SUBPROTOCOL not in offered:
        return 400, "BAD_REQUEST", f"offer the {protocol.SUBPROTOCOL} subprotocol"
    if f"bearer.{secret}" not in offered:
        return 401, "UNAUTHORIZED", "missing or wrong bearer.<token> subprotocol"
    return None


def answer(message: str | bytes, text: bool) -> bytes:
    """The reply to a client frame: heartbeat_ack, or an error (a peer keeps no history)."""
    from ordertrack import protocol

    if not text:
        return protocol.error("UNSUPPORTED_DATA", "text frames only")
    parsed = protocol.parse_client_message(message.encode() if isinstance(message, str) else message)
    if parsed.kind == "heartbeat":
        return protocol.HEARTBEAT_ACK
    if parsed.kind == "resume":
        return protocol.error("RESUME_UNAVAILABLE", "this peer keeps no history")
    return protocol.error(parsed.error_code, parsed.error_message)


def nchan_body(message: bytes) -> bytes:
    """What the nchan peer's publisher is POSTed for a Redis message: our client frame
    (`protocol.tracking_update`), which nchan stores and fans out byte for byte, as it is built
    to (shaping each message inside nginx cost an njs subrequest per publish: ~400 POSTs/s)."""
    import orjson

    from ordertrack import protocol

    return protocol.tracking_update(orjson.loads(message))


#: open files one process may hold here (20,000 on the development machine)
OPEN_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
#: open files a peer keeps for itself (Redis, listeners, logs, internal requests)
FD_RESERVE = 1_000


def _raise_nofile() -> None:
    """preexec_fn: the soft open-files limit up to the hard one (a peer holds 10K+ sockets),
    and the child dies with its parent."""
    die_with_parent()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _get_ok(port: int, path: str) -> bool:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == 200


def _nchan_publishes(port: int) -> bool:
    """nchan answers 503 until its Redis connection is up: a publish proves it is."""
    import httpx

    response = httpx.post(f"http://127.0.0.1:{port}/pub/_ready", content=b"{}", timeout=1.0)
    return response.status_code in (201, 202)


@dataclass
class PeerSpec:
    name: str
    publish_mode: str  # "redis-publish" | "nchan-http"
    description: str
    _missing: Callable[[], str | None]  # one-line reason it cannot run, or None
    _command: Callable[[str, int, Path], list[str]]
    #: the request that proves the peer is up (and, for nchan, connected to Redis)
    _answers: Callable[[int], bool] = field(default=lambda port: _get_ok(port, "/healthz"))
    #: the most WebSockets it can hold in one process (None: no cap of its own); the load
    #: test runs the peer at min(profile, this) connections and says so
    connection_limit: int | None = None
    port: int | None = field(default=None, init=False)

    def reason(self) -> str | None:
        """Why this peer cannot run here (one line), or None when it can."""
        return self._missing()

    def installed(self) -> bool:
        return self._missing() is None

    def start(self, redis_url: str, port: int, workdir: Path,
              cpus: set[int] | None = None) -> subprocess.Popen:
        """Start the peer on 127.0.0.1:port (one process; pinned to `cpus` when given) and
        return once it answers GET /healthz. Its output goes to workdir/<name>.log."""
        missing = self._missing()
        if missing:
            raise RuntimeError(f"peer {self.name} is not installed: {missing}")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        command = self._command(redis_url, port, workdir)
        if cpus or lib.SERVER_CPUS:
            command = ["taskset", "-a", "-c", ",".join(map(str, sorted(cpus or lib.SERVER_CPUS))),
                       *command]
        log_path = workdir / f"{self.name}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                    preexec_fn=_raise_nofile)
        self.port = port

        def answers_or_exited() -> bool:
            return proc.poll() is not None or self._answers(port)

        try:
            wait_until(answers_or_exited, START_TIMEOUT_SECONDS,
                       f"peer {self.name} on 127.0.0.1:{port}")
            if proc.poll() is not None:
                raise RuntimeError(f"exited with code {proc.returncode}")
        except (TimeoutError, RuntimeError) as exc:
            stop_process(proc)
            raise RuntimeError(f"peer {self.name} did not start: {exc}; log:\n{tail(log_path)}") from None
        return proc

    def _port(self, port: int | None) -> int:
        port = port or self.port
        if port is None:
            raise RuntimeError(f"peer {self.name}: pass port= or start() it first")
        return port

    def ws_url(self, order_id: str, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{self._port(port)}/ws/orders/{order_id}/track"

    def publish_url(self, order_id: str, port: int | None = None) -> str:
        """For publish_mode "nchan-http": where to POST an order's message JSON."""
        return f"http://127.0.0.1:{self._port(port)}/pub/{order_id}"

    @staticmethod
    def subprotocols(token: str = TOKEN) -> list[str]:
        return [SUBPROTOCOL, f"bearer.{token}"]


# --- 1. websockets: one Redis SUBSCRIBE per connection ----------------------------------------


def _websockets_missing() -> str | None:
    for module in ("websockets", "redis", "orjson"):
        if importlib.util.find_spec(module) is None:
            return f"python module {module!r} missing in {sys.executable} (run make install)"
    return None


def _websockets_command(redis_url: str, port: int, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "bench.peers.websockets_peer", "--redis-url", redis_url,
            "--port", str(port)]


# --- 2. Node ws + ioredis: one PSUBSCRIBE per process -----------------------------------------

NODE_DIR = HERE / "node_ws"


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node not on PATH (apt-get install nodejs)"
    for package in ("ws", "ioredis"):
        if not (NODE_DIR / "node_modules" / package / "package.json").exists():
            return f"{NODE_DIR / 'node_modules' / package} missing (run make bench-peers)"
    return None


def _node_command(redis_url: str, port: int, workdir: Path) -> list[str]:
    return ["node", str(NODE_DIR / "server.js"), "--redis-url", redis_url, "--port", str(port)]


# --- 4. uWebSockets (socketify's build): one PSUBSCRIBE per process, uWS topics ------------


def _uws_missing() -> str | None:
    for module in ("socketify", "hiredis", "redis", "orjson", "uvloop"):
        if importlib.util.find_spec(module) is None:
            return (f"python module {module!r} missing in {sys.executable} "
                    "(pip install -e '.[bench]')")
    return None


def _uws_command(redis_url: str, port: int, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "bench.peers.uws_peer", "--redis-url", redis_url,
            "--port", str(port)]


# --- 3. nginx + nchan with Redis storage -------------------------------------------------------

NCHAN_DIR = HERE / "nchan"
NCHAN_WORKER_CONNECTIONS = 19_000
#: nginx closes its reusable connections (idle keep-alive ones: the publisher's) whenever fewer
#: than 1/16 of worker_connections are free, so subscribers stay below that, with room for the
#: ack hook's internal requests and Redis: 19,000 - 1,187 - 1,000 = 16,813 -> 16,800
NCHAN_CONNECTION_LIMIT = 16_800


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _nchan_missing() -> str | None:
    if _nginx_binary() is None:
        return "nginx not installed (make bench-peers: apt-get install nginx-light)"
    for module, package in (("ngx_nchan_module.so", "libnginx-mod-nchan"),
                            ("ngx_http_js_module.so", "libnginx-mod-http-js")):
        if not (NGINX_MODULES / module).exists():
            return f"{NGINX_MODULES / module} missing (make bench-peers: apt-get install {package})"
    return None


def render_nginx_conf(template: str, redis_url: str, port: int, workdir: Path,
                      secret: str = TOKEN) -> str:
    """The nginx.conf for one nchan peer: the template with its {{...}} placeholders filled."""
    values = {"PORT": str(port), "WORKDIR": str(workdir), "HERE": str(NCHAN_DIR),
              "REDIS_URL": redis_url, "SECRET_RE": re.escape(secret),
              "WORKER_CONNECTIONS": str(NCHAN_WORKER_CONNECTIONS)}
    rendered = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    return rendered


def _nchan_command(redis_url: str, port: int, workdir: Path) -> list[str]:
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    template = (NCHAN_DIR / "nginx.conf.template").read_text()
    conf.write_text(render_nginx_conf(template, redis_url, port, prefix))
    return [_nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec("websockets", "redis-publish",
                 "Python websockets on asyncio, one Redis SUBSCRIBE per connection",
                 _websockets_missing, _websockets_command,
                 # two open files per WebSocket: its socket and its own Redis connection
                 connection_limit=(OPEN_FILES - FD_RESERVE) // 2),
        PeerSpec("node-ws", "redis-publish",
                 "Node ws + ioredis, one PSUBSCRIBE per process",
                 _node_missing, _node_command),
        PeerSpec("nchan", "nchan-http",
                 "nginx + nchan, Redis storage, fed by its HTTP publisher",
                 _nchan_missing, _nchan_command, _nchan_publishes,
                 connection_limit=NCHAN_CONNECTION_LIMIT),
        PeerSpec("uws", "redis-publish",
                 "uWebSockets (socketify), one PSUBSCRIBE per process, one uWS topic per order",
                 _uws_missing, _uws_command),
    )
}
