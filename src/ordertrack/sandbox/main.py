"""`ordertrack sandbox`: serve the DHL, FedEx and UPS look-alikes on one port."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ordertrack import config
from ordertrack.config import LOGGING, Setting
from ordertrack.telemetry import setup_logging

SETTINGS = (
    Setting("SANDBOX_HOST", config.text, "127.0.0.1", "address to listen on"),
    Setting("SANDBOX_PORT", config.port, "8700", "TCP port serving all three carriers"),
    Setting("SANDBOX_TIME_SCALE", config.duration, "1.0",
            "shipment clock speed: 60 means one real second is one shipment minute"),
    Setting("SANDBOX_DHL_QUOTA_PER_HOUR", config.positive_int, "2000", "DHL requests per hour"),
    Setting("SANDBOX_DHL_QUOTA_PER_MINUTE", config.positive_int, "100",
            "DHL burst allowance per minute"),
    Setting("SANDBOX_FEDEX_QUOTA_PER_HOUR", config.positive_int, "1000", "FedEx requests per hour"),
    Setting("SANDBOX_UPS_QUOTA_PER_HOUR", config.positive_int, "500", "UPS requests per hour"),
    Setting("SANDBOX_FEDEX_TOKEN_TTL", config.positive_int, "3599", "FedEx OAuth token lifetime, seconds"),
    Setting("SANDBOX_UPS_TOKEN_TTL", config.positive_int, "14399", "UPS OAuth token lifetime, seconds"),
    Setting("SANDBOX_SLOW_SECONDS", config.duration, "20",
            "how long a `slow` fault holds its answer"),
    Setting("SANDBOX_STATE_FILE", config.optional_text, "",
            "JSON file keeping the shipments across restarts (empty: forget them on exit)"),
) + LOGGING


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)
    # the short forms the brief and Makefile use: --port, --host, --time-scale
    parser.add_argument("--port", dest="sandbox_port", default=None, metavar="PORT",
                        help="same as --sandbox-port")
    parser.add_argument("--host", dest="sandbox_host", default=None, metavar="HOST",
                        help="same as --sandbox-host")
    parser.add_argument("--time-scale", dest="sandbox_time_scale", default=None, metavar="X",
                        help="same as --sandbox-time-scale")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ordertrack.sandbox.app import SandboxConfig, create_app

    settings = config.load(SETTINGS, args)
    setup_logging(settings.log_level)
    state_file = Path(settings.sandbox_state_file) if settings.sandbox_state_file else None
    try:
        app = create_app(SandboxConfig.from_settings(settings), state_file)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None
    logging.getLogger("ordertrack.sandbox").info(
        "carrier sandbox on http://%s:%d (time scale %g)",
        settings.sandbox_host, settings.sandbox_port, settings.sandbox_time_scale)
    uvicorn.run(app, host=settings.sandbox_host, port=settings.sandbox_port,
                log_config=None, access_log=False, lifespan="off")
    return 0
