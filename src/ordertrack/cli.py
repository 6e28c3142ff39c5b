"""`ordertrack` command line: one sub-command per process or operator task.

Each sub-command lives in its own module exposing `configure(parser)` and `run(args) -> int`;
only the chosen one is imported, so `ordertrack token` does not pay for FastAPI.
A `ConfigError` from any of them prints one line and exits with code 2. The operator commands
(`OPERATOR_COMMANDS`) take the running dev stack's Redis and store from `var/dev/env` when the
environment does not name them (see `devenv`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ordertrack import __version__, devenv
from ordertrack.config import ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("ordertrack.push.main", "run a push pod (WebSocket server)"),
    "poll": ("ordertrack.gateway.main", "run the logistics gateway (carrier poller)"),
    "api": ("ordertrack.api.main", "run the REST fallback API and the tracking page"),
    "ingest": ("ordertrack.ingest.main", "run the carrier webhook endpoint (pushed scans)"),
    "sandbox": ("ordertrack.sandbox.main", "run the carrier sandbox (DHL/FedEx/UPS look-alikes)"),
    "dev": ("ordertrack.dev", "run the whole system on embedded defaults"),
    "token": ("ordertrack.dev_keys", "mint a development JWT"),
    "db": ("ordertrack.store.cli_db", "tracking store schema: `db upgrade`"),
    "orders": ("ordertrack.store.cli_orders", "register and list orders"),
    "flag": ("ordertrack.flag_cli", "show or set the realtime_order_tracking kill switch"),
}

#: operator commands and the settings they take from a running `ordertrack dev`
OPERATOR_COMMANDS = {"orders": ("DATABASE_URL",), "db": ("DATABASE_URL",), "flag": ("REDIS_URL",)}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordertrack", description="Real-time order tracking.",
        epilog="`ordertrack dev` runs the whole system on this machine; "
               "`ordertrack COMMAND --help` lists a command's settings.")
    parser.add_argument("--version", action="version", version=f"ordertrack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in OPERATOR_COMMANDS:
        applied = devenv.apply_dev_settings(os.environ, OPERATOR_COMMANDS[args.command])
        if applied:
            print(f"ordertrack {args.command}: using the running dev stack's "
                  f"{' and '.join(applied)} from {devenv.env_path()}", file=sys.stderr)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"ordertrack {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
