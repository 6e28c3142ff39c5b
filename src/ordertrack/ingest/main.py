"""`ordertrack ingest`: serve the carriers' tracking webhooks (uvicorn, one worker).

Scale by running more processes; scans of one order are serialised within a process, and
the store's unique scan index plus the publish script's seq check hold across processes.
"""

from __future__ import annotations

import argparse
import logging

from ordertrack import redis_connect
from ordertrack.config import ConfigError, add_flags, load
from ordertrack.ingest.settings import LIMITS_PREFIX, SETTINGS
from ordertrack.telemetry import setup_logging

log = logging.getLogger("ordertrack.ingest")


def configure(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, SETTINGS)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ordertrack.http_edge.limits import HttpLimits
    from ordertrack.http_edge.uvicorn_protocol import protocol_factory
    from ordertrack.ingest.app import create_app, verifiers

    settings = load(SETTINGS, args)
    redis_connect.target_from_settings(settings)  # REDIS_URL with REDIS_CLUSTER: one line
    setup_logging(settings.log_level)
    if not verifiers(settings):
        raise ConfigError("no webhook to serve: set FEDEX_WEBHOOK_SECRET, "
                          "UPS_WEBHOOK_CREDENTIAL or DHL_WEBHOOK_SECRET")
    app = create_app(settings)
    limits = HttpLimits.from_settings(settings, LIMITS_PREFIX)
    config = uvicorn.Config(app, host=settings.ingest_host, port=settings.ingest_port,
                            loop="uvloop", http=protocol_factory(limits, app.state.precheck),
                            ws="none", workers=1, lifespan="on", access_log=False,
                            log_config=None, server_header=False)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
