"""`ordertrack api`: the REST fallback and the tracking page, on uvicorn (uvloop + httptools).

One worker per process: scale by running more processes (replicas), as the push pods do.
"""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace

from ordertrack.config import (
    ConfigError,
    Setting,
    add_flags,
    duration,
    load,
    optional_text,
    port,
    redis_url,
    text,
)
from ordertrack.store import STORE_SETTINGS

API_SETTINGS: tuple[Setting, ...] = (
    Setting("API_HOST", text, "0.0.0.0", "address the API listens on"),
    Setting("API_PORT", port, "8000", "port of the API, the tracking page and /metrics"),
    Setting("REDIS_URL", redis_url, "redis://127.0.0.1:6379/0", "Redis (state, cache, flag)"),
    Setting("JWT_PUBLIC_KEY", optional_text, None,
            "PEM public key (text, or a path to a PEM file) that verifies RS256/ES256 tokens"),
    Setting("JWT_JWKS_URL", optional_text, None,
            "JWKS URL; keys chosen by kid, refreshed in the background (as the push pods')"),
    Setting("JWT_ISSUER", optional_text, None, "required `iss` claim (unchecked when unset)"),
    Setting("JWT_AUDIENCE", optional_text, None, "required `aud` claim (unchecked when unset)"),
    Setting("REALTIME_WS_URL", text, "ws://127.0.0.1:8080",
            "base WebSocket URL of the push pods, for the answer's realtime.url"),
    Setting("REST_CACHE_TTL_SECONDS", duration, "5",
            "how long a tracking answer is cached when no newer seq is published"),
    Setting("REGION", text, "local", "region tag for flag targeting (as the push pods')"),
    Setting("LOG_LEVEL", text, "info", "log level: debug, info, warning, error"),
)
SETTINGS: tuple[Setting, ...] = API_SETTINGS + STORE_SETTINGS


def load_settings(args: argparse.Namespace | None = None, environ=None) -> SimpleNamespace:
    """All settings, validated: raises ConfigError with one readable line."""
    settings = load(SETTINGS, args, environ)
    if not settings.jwt_public_key and not settings.jwt_jwks_url:
        from ordertrack.dev_keys import dev_public_key_path

        settings.jwt_public_key = dev_public_key_path()
        if not settings.jwt_public_key:
            raise ConfigError("JWT_PUBLIC_KEY (PEM text or the path of a PEM file) or "
                              "JWT_JWKS_URL is required")
        logging.getLogger("ordertrack.api").warning(
            "JWT_PUBLIC_KEY unset: using the development key %s", settings.jwt_public_key)
    from ordertrack import auth

    if settings.jwt_public_key:
        try:
            auth.Verifier(auth.load_public_key(settings.jwt_public_key))
        except ValueError as exc:
            raise ConfigError(f"invalid JWT_PUBLIC_KEY: {exc}") from None
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"invalid LOG_LEVEL={settings.log_level!r}: expected debug, info, "
                          "warning or error")
    return settings


def configure(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SETTINGS)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ordertrack.api.app import create_app

    settings = load_settings(args)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
