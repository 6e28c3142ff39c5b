"""`ordertrack` command line: one sub-command per process or operator task.

`COMMANDS` is the whole table, one line per command: the module that runs it, its help, and
(operator commands only) the settings it takes from a running `ordertrack dev`. Process mains
live in their process's sub-package (`push/main.py`, ...); operator commands in `commands/`.
Each module exposes `configure(parser)` and `run(args) -> int`; only the chosen one is
imported, so `ordertrack token` does not pay for FastAPI. A `ConfigError` from any of them
prints one line and exits with code 2. An operator command takes the running dev stack's
settings from `var/dev/env` when the environment does not name them (see `devtools.env`); a
process that verifies tokens takes the development public key when no key is set
(`use_dev_key`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NamedTuple

from ordertrack import __version__, config
from ordertrack.config import ConfigError


class Command(NamedTuple):
    module: str
    help: str
    #: settings taken from a running `ordertrack dev` when the environment lacks them
    dev_settings: tuple[str, ...] = ()
    #: verifies tokens (`config.JWT`): with no key set, the development key (README)
    dev_key: bool = False
    #: says itself where its settings came from (`args.dev_settings_applied`): no line here
    reports_sources: bool = False


COMMANDS: dict[str, Command] = {
    "serve": Command("ordertrack.push.main", "run a push pod (WebSocket server)", dev_key=True),
    "poll": Command("ordertrack.gateway.main", "run the logistics gateway (carrier poller)"),
    "api": Command("ordertrack.api.main", "run the REST fallback API and the tracking page",
                   dev_key=True),
    "ingest": Command("ordertrack.ingest.main", "run the carrier webhook endpoint (pushed scans)"),
    "sandbox": Command("ordertrack.sandbox.main",
                       "run the carrier sandbox (DHL/FedEx/UPS look-alikes)"),
    "dev": Command("ordertrack.devtools.main", "run the whole system on embedded defaults"),
    "token": Command("ordertrack.commands.token", "mint a development JWT"),
    "db": Command("ordertrack.commands.db", "tracking store schema: `db upgrade`",
                  ("DATABASE_URL",)),
    "orders": Command("ordertrack.commands.orders", "register and list orders",
                      ("DATABASE_URL",)),
    "flag": Command("ordertrack.commands.flag",
                    "show or set the realtime_order_tracking kill switch", ("REDIS_URL",),
                    reports_sources=True),
    "capacity": Command("ordertrack.commands.capacity", "plan pods, memory and Redis from a load test report"),
    "rollout": Command("ordertrack.commands.rollout",
                       "`rollout report`: the ramp criteria of realtime_order_tracking",
                       ("REDIS_URL", "PROMETHEUS_URL")),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordertrack", description="Real-time order tracking.",
        epilog="`ordertrack dev` runs the whole system on this machine; "
               "`ordertrack COMMAND --help` lists a command's settings.")
    parser.add_argument("--version", action="version", version=f"ordertrack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        sub = subparsers.add_parser(name, help=entry.help, description=entry.help)
        if name == command:
            importlib.import_module(entry.module).configure(sub)
    return parser


def take_dev_settings(command: str, keys: tuple[str, ...], say: bool = True) -> list[str]:
    """Fill the environment's gaps among `keys` from the running dev stack, saying so unless
    the command says it itself; the keys taken."""
    from ordertrack.devtools import env

    applied = env.apply_dev_settings(os.environ, keys)
    if applied and say:
        print(f"ordertrack {command}: using the running dev stack's "
              f"{' and '.join(applied)} from {env.env_path()}", file=sys.stderr)
    return applied


def use_dev_key(command: str, args: argparse.Namespace) -> None:
    """With neither JWT_PUBLIC_KEY nor JWT_JWKS_URL set, verify with the development public key
    (`make run` and `ordertrack token` create it), saying so. Production sets a key, so its
    processes never import the dev tooling; with no dev key either, the process refuses to
    start (`auth.verifier_from_settings`)."""
    jwt = config.load(config.JWT, args)
    if jwt.jwt_public_key or jwt.jwt_jwks_url:
        return
    from ordertrack.devtools.keys import dev_public_key_path

    path = dev_public_key_path()
    if path:
        args.jwt_public_key = path
        print(f"ordertrack {command}: JWT_PUBLIC_KEY unset: using the development key {path}",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    entry = COMMANDS[args.command]
    args.dev_settings_applied = []
    if entry.dev_settings:
        args.dev_settings_applied = take_dev_settings(args.command, entry.dev_settings,
                                                      say=not entry.reports_sources)
    module = importlib.import_module(entry.module)
    try:
        if entry.dev_key:
            use_dev_key(args.command, args)
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"ordertrack {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
