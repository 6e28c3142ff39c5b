"""`ordertrack sandbox`: serve the DHL, FedEx and UPS look-alikes on one port."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ordertrack import config
from ordertrack.sandbox.settings import SETTINGS
from ordertrack.telemetry import setup_logging


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
