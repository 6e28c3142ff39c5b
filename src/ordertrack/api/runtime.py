"""What the API opens at start and closes at stop (its lifespan): the store, Redis, the
tracking reader, the flag source and the JWKS refresher."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI

from ordertrack import auth, redis_connect
from ordertrack.api.metrics import Metrics
from ordertrack.api.tracking import TrackingReader
from ordertrack.flags import providers
from ordertrack.flags.source import FlagSource
from ordertrack.models import CARRIERS

log = logging.getLogger("ordertrack.api")


class Runtime:
    """The open parts the routes read; None until the lifespan has started."""

    reader: TrackingReader | None = None
    flags: FlagSource | None = None


def lifespan(settings: SimpleNamespace, verifier: auth.Verifier, metrics: Metrics,
             runtime: Runtime, store: Any = None
             ) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: opens the store (unless an open one is given), Redis, the reader,
    the flags and the JWKS refresher into `runtime`; closes them on shutdown."""

    @contextlib.asynccontextmanager
    async def run(_app: FastAPI) -> AsyncIterator[None]:
        from ordertrack.store import open_store

        jwks = None
        if settings.jwt_jwks_url:
            # as the push pods: keys by kid, fetched now and refreshed in the background
            jwks = auth.JwksRefresher(verifier, settings.jwt_jwks_url)
            await jwks.start()
        opened = store if store is not None else await open_store(settings.database_url)
        redis = redis_connect.command_client(settings, socket_connect_timeout=2,
                                             socket_timeout=2, health_check_interval=30)
        runtime.reader = TrackingReader(opened, redis, ttl=settings.rest_cache_ttl_seconds)
        runtime.flags = FlagSource(
            providers.build(settings), loop=asyncio.get_running_loop(), region=settings.region,
            carriers=CARRIERS, registry=metrics.registry)
        # long-lived start-up objects out of the collector's way: fewer, shorter GC pauses
        gc.collect()
        gc.freeze()
        log.info("api ready: store %s, redis %s, realtime %s", getattr(opened, "kind", "?"),
                 redis_connect.target_from_settings(settings).describe(),
                 settings.realtime_ws_url)
        try:
            yield
        finally:
            if jwks is not None:
                jwks.stop()
            runtime.flags.close()
            await redis_connect.close_client(redis)
            await opened.close()

    return run
