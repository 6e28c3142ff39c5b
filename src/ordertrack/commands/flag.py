"""`ordertrack flag`: show or change the realtime_order_tracking kill switch.

Writing the flag also publishes on `ws:control:all`, so every pod re-reads it at once and closes
the connections it no longer allows with 4003; clients fall back to REST. The arguments are
checked before Redis is touched; an unreachable Redis is one line and exit code 1.

Every call says on stderr, as one JSON line, which Redis it reads or writes and why that one
(`redis_from`: `flag`, `environment`, `dev_stack` or `default`). A write to the default
`redis://127.0.0.1:6379/0`, neither named nor a running `ordertrack dev`'s, is refused (exit 2):
on a shared machine that Redis is someone else's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from dataclasses import replace
from typing import Any

import orjson
from redis.exceptions import RedisError

from ordertrack import config, redis_connect, redis_layout
from ordertrack.flags import parse_flag
from ordertrack.models import CARRIERS

SETTINGS = config.REDIS


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)
    parser.add_argument("--enabled", choices=("true", "false"), help="turn the feature on or off")
    parser.add_argument("--percentage", type=float, help="share of users (0-100) who get it")
    parser.add_argument("--regions", help="comma-separated regions it is limited to ('' = all)")
    parser.add_argument("--carriers",
                        help=f"comma-separated carriers it is limited to ({', '.join(CARRIERS)}; "
                             "'' = all)")


def flag_changes(enabled: str | None, percentage: float | None, regions: str | None,
                 carriers: str | None) -> dict[str, Any]:
    """The fields to change, from the command's arguments; ConfigError on a bad one."""
    changes: dict[str, Any] = {}
    if enabled is not None:
        changes["enabled"] = enabled == "true"
    if percentage is not None:
        if not (math.isfinite(percentage) and 0 <= percentage <= 100):
            raise config.ConfigError("--percentage must be between 0 and 100")
        changes["percentage"] = percentage
    if regions is not None:
        changes["regions"] = frozenset(config.csv_list(regions))
    if carriers is not None:
        names = frozenset(c.lower() for c in config.csv_list(carriers))
        if unknown := sorted(names - set(CARRIERS)):
            raise config.ConfigError(f"--carriers: unknown carrier {', '.join(map(repr, unknown))}: "
                                     f"expected some of {', '.join(CARRIERS)}")
        changes["carriers"] = names
    return changes


#: how each source of REDIS_URL is named in the lines that say which Redis
WHY = {"flag": "from --redis-url", "environment": "from REDIS_URL",
       "dev_stack": "the running dev stack's, from var/dev/env",
       "default": "the default: REDIS_URL unset and no dev stack running here"}


def redis_source(args: argparse.Namespace, environ=None) -> str:
    """Where REDIS_URL came from: `flag`, `dev_stack` (a running `ordertrack dev`'s, filled in
    by the CLI), `environment` or `default`."""
    environ = os.environ if environ is None else environ
    if getattr(args, "redis_url", None) is not None:
        return "flag"
    if "REDIS_URL" in getattr(args, "dev_settings_applied", ()):
        return "dev_stack"
    return "environment" if environ.get("REDIS_URL") else "default"


def redis_line(url: str, source: str) -> bytes:
    """The JSON line every call writes on stderr: which Redis, and why that one."""
    shown = redis_connect.redact(url)
    return orjson.dumps({"level": "info", "logger": "ordertrack.flag",
                         "msg": f"ordertrack flag: Redis {shown} ({WHY[source]})",
                         "redis_url": shown, "redis_from": source})


async def _run(cfg, changes: dict[str, Any], source: str) -> None:
    client = redis_connect.command_client(cfg, socket_connect_timeout=5, socket_timeout=5)
    try:
        flag = parse_flag(await client.get(redis_layout.FLAG_KEY))
        # reached: say which Redis (an unreachable one is named in the error line instead)
        sys.stderr.write(redis_line(cfg.redis_url, source).decode() + "\n")
        sys.stderr.flush()
        if changes:
            flag = replace(flag, **changes)
            await client.set(redis_layout.FLAG_KEY, flag.to_json())
            await client.publish(redis_layout.CONTROL_ALL, redis_layout.encode_flag_changed())
        print(flag.to_json().decode())
    finally:
        await redis_connect.close_client(client)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(SETTINGS, args)
    changes = flag_changes(args.enabled, args.percentage, args.regions, args.carriers)
    source = redis_source(args)
    if changes and source == "default":
        raise config.ConfigError(
            f"not writing to {redis_connect.redact(cfg.redis_url)}: REDIS_URL is unset and no "
            "`ordertrack dev` runs from this directory; set REDIS_URL (or --redis-url) to the "
            "Redis to change")
    try:
        asyncio.run(_run(cfg, changes, source))
    except (RedisError, OSError) as exc:
        print(f"ordertrack flag: cannot reach Redis at {redis_connect.redact(cfg.redis_url)} "
              f"({WHY[source]}): {exc}", file=sys.stderr)
        return 1
    return 0
