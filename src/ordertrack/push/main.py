"""`ordertrack serve`: run one push pod (picows on uvloop, one core)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

import uvloop

from ordertrack import auth, config, protocol, redis_connect
from ordertrack.flags import providers
from ordertrack.push import handshake, metrics
from ordertrack.push.pod import Pod
from ordertrack.push.settings import SETTINGS
from ordertrack.push.wslog import PicowsLog
from ordertrack.telemetry import setup_logging, start_metrics_server, tune_gc

log = logging.getLogger("ordertrack.push")

#: picows tuning for memory per connection (measured with picows 2.3.1 on this machine):
#: uvloop's own transport instead of aiofastnet (~5 KB less), a 2 KiB read buffer instead of
#: 16 KiB (client frames are tiny), and no auto-ping task (our timer wheel pings instead).
#: No auto-pong either: its pongs bypassed WS_MAX_PENDING_BYTES, so a client that pings and
#: never reads grew our memory without bound; Connection answers pings itself.
PICOWS_OPTIONS: dict[str, Any] = dict(
    use_aiofastnet=False,
    read_buffer_init_size=2048,
    enable_auto_ping=False,
    enable_auto_pong=False,
    max_frame_size=protocol.MAX_CLIENT_FRAME_BYTES,
    websocket_handshake_timeout=5,
)


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)


def load_settings(args: argparse.Namespace | None = None):
    cfg = config.load(SETTINGS, args)
    try:
        providers.choose(cfg)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    redis_connect.target_from_settings(cfg)  # REDIS_URL with REDIS_CLUSTER: one line
    if cfg.pubsub_mode == config.PUBSUB_BOTH:
        raise config.ConfigError("PUBSUB_MODE=both is for publishers (poll, ingest) while "
                                 "switching; a pod subscribes one way: pattern or sharded")
    auth.verifier_from_settings(cfg)  # a missing or bad key stops start-up with one line
    return cfg


async def serve(cfg) -> int:
    verifier = auth.verifier_from_settings(cfg)
    jwks = None
    if cfg.jwt_jwks_url:
        jwks = auth.JwksRefresher(verifier, cfg.jwt_jwks_url)
        await jwks.start()
    pod = Pod(cfg, verifier)
    metrics.MAX_CONNECTIONS.set(cfg.max_connections_per_pod)
    # bind both ports before anything else runs: a busy port is one clear line, not a hang
    try:
        server = await handshake.create_server(
            pod.listener_factory(), cfg.host, cfg.port, **PICOWS_OPTIONS,
            backlog=cfg.listen_backlog,
            logger_name=PicowsLog(logging.getLogger("picows.server")),
            reuse_port=cfg.reuse_port,
        )
    except OSError as exc:
        raise config.ConfigError(f"PORT {cfg.port} on {cfg.host} cannot be served: {exc.strerror}") from None
    try:
        start_metrics_server(metrics.REGISTRY, cfg.metrics_port, cfg.host)
    except OSError as exc:
        server.close()
        raise config.ConfigError(
            f"METRICS_PORT {cfg.metrics_port} on {cfg.host} cannot be served: {exc.strerror}") from None
    await pod.start()
    tune_gc()
    log.info("pod %s listening", pod.pod_id, extra={"fields": {
        "port": cfg.port, "metrics_port": cfg.metrics_port, "region": cfg.region,
        "max_connections_per_pod": cfg.max_connections_per_pod}})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutdown requested: draining")
    await pod.drain(cfg.drain_seconds)
    server.close()
    await pod.stop()
    if jwks:
        jwks.stop()
    log.info("pod %s stopped", pod.pod_id)
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = load_settings(args)
    setup_logging(cfg.log_level)
    return uvloop.run(serve(cfg))
