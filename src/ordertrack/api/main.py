"""`ordertrack api`: the REST fallback and the tracking page, on uvicorn (uvloop + httptools).

One worker per process: scale by running more processes (replicas), as the push pods do.
The port is bound and the store opened before uvicorn starts, so a busy port or an
unreachable store stops start-up with one line and exit code 2 (not uvicorn's traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from types import SimpleNamespace

from ordertrack import auth, redis_connect
from ordertrack.config import (
    JWT,
    LOGGING,
    REDIS,
    REGION,
    ROLLOUT,
    STORE,
    ConfigError,
    Setting,
    add_flags,
    duration,
    http_limits,
    load,
    port,
    text,
)
from ordertrack.flags import providers
from ordertrack.flags.providers import SETTINGS as FLAG_SETTINGS
from ordertrack.telemetry import setup_logging

log = logging.getLogger("ordertrack.api")

#: the prefix of the request limits' names (API_MAX_HEADER_BYTES, ...)
LIMITS_PREFIX = "API"
API_SETTINGS: tuple[Setting, ...] = (
    Setting("API_HOST", text, "0.0.0.0", "address the API listens on"),
    Setting("API_PORT", port, "8000", "port of the API, the tracking page and /metrics"),
    Setting("REALTIME_WS_URL", text, "ws://127.0.0.1:8080",
            "base WebSocket URL of the push pods, for the answer's realtime.url"),
    Setting("REST_CACHE_TTL_SECONDS", duration, "5",
            "how long a tracking answer is cached when no newer seq is published"),
) + http_limits(LIMITS_PREFIX)
SETTINGS: tuple[Setting, ...] = (API_SETTINGS + REGION + REDIS + JWT + STORE + LOGGING
                                 + FLAG_SETTINGS + ROLLOUT)


def load_settings(args: argparse.Namespace | None = None, environ=None) -> SimpleNamespace:
    """All settings, validated: raises ConfigError with one readable line."""
    settings = load(SETTINGS, args, environ)
    try:
        providers.choose(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    redis_connect.target_from_settings(settings)  # REDIS_URL with REDIS_CLUSTER: one line
    auth.verifier_from_settings(settings)  # a missing or bad key stops start-up with one line
    return settings


def configure(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SETTINGS)


def listen(host: str, port_number: int) -> socket.socket:
    """The API's listening socket, bound before anything else starts: ConfigError if busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port_number), family=family, backlog=2048)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"API_PORT {port_number} on {host} cannot be served: {reason}") from None
    except (OverflowError, UnicodeError) as exc:
        raise ConfigError(f"invalid API_HOST={host!r}: {exc}") from None


async def open_store_or_stop(url: str | None):
    """The tracking store, open and migrated; an unreachable or unusable one is a ConfigError."""
    import sqlite3

    from ordertrack.store import StoreError, open_store, redact_url

    try:
        return await open_store(url)
    except (StoreError, sqlite3.Error, OSError, ValueError) as exc:
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, StoreError):
            message = f"cannot open the store at {redact_url(url or '')}: {message}"
        raise ConfigError(message) from None


async def serve(settings: SimpleNamespace) -> int:
    import uvicorn

    from ordertrack.api.app import create_app
    from ordertrack.http_edge.limits import HttpLimits
    from ordertrack.http_edge.uvicorn_protocol import protocol_factory

    sock = listen(settings.api_host, settings.api_port)
    try:
        store = await open_store_or_stop(settings.database_url)
    except ConfigError:
        sock.close()
        raise
    config = uvicorn.Config(
        create_app(settings, store=store),
        http=protocol_factory(HttpLimits.from_settings(settings, LIMITS_PREFIX)),
        ws="none",
        workers=1,
        lifespan="on",
        access_log=False,
        log_config=None,  # uvicorn's own lines go through the root logger: JSON (telemetry)
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    log.info("api listening on %s:%d", settings.api_host, settings.api_port)
    await server.serve(sockets=[sock])
    return 0 if server.started else 1


def run(args: argparse.Namespace) -> int:
    import uvloop

    settings = load_settings(args)
    setup_logging(settings.log_level)
    return uvloop.run(serve(settings))
