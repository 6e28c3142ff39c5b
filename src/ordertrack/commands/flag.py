"""`ordertrack flag`: show or change the realtime_order_tracking kill switch.

Writing the flag also publishes on `ws:control:all`, so every pod re-reads it at once and closes
the connections it no longer allows with 4003; clients fall back to REST. The arguments are
checked before Redis is touched; an unreachable Redis is one line and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from dataclasses import replace
from typing import Any

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


async def _run(cfg, changes: dict[str, Any]) -> None:
    client = redis_connect.command_client(cfg, socket_connect_timeout=5, socket_timeout=5)
    try:
        flag = parse_flag(await client.get(redis_layout.FLAG_KEY))
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
    try:
        asyncio.run(_run(cfg, changes))
    except (RedisError, OSError) as exc:
        print(f"ordertrack flag: cannot reach Redis at {redis_connect.redact(cfg.redis_url)}: {exc}", file=sys.stderr)
        return 1
    return 0
