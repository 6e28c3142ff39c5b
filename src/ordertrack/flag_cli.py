"""`ordertrack flag`: show or change the realtime_order_tracking kill switch.

Writing the flag also publishes on `ws:control:all`, so every pod re-reads it at once and closes
the connections it no longer allows with 4003; clients fall back to REST.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

import redis.asyncio as aioredis

from ordertrack import config
from ordertrack.flags import FLAG_KEY, parse_flag
from ordertrack.push.registry import CONTROL_ALL

SETTINGS = (config.Setting("REDIS_URL", config.redis_url, "redis://127.0.0.1:6379/0", "Redis"),)


def configure(parser: argparse.ArgumentParser) -> None:
    config.add_flags(parser, SETTINGS)
    parser.add_argument("--enabled", choices=("true", "false"), help="turn the feature on or off")
    parser.add_argument("--percentage", type=float, help="share of users (0-100) who get it")
    parser.add_argument("--regions", help="comma-separated regions it is limited to ('' = all)")
    parser.add_argument("--carriers", help="comma-separated carriers it is limited to ('' = all)")


async def _run(args: argparse.Namespace, cfg) -> int:
    client = aioredis.Redis.from_url(cfg.redis_url)
    try:
        flag = parse_flag(await client.get(FLAG_KEY))
        changes = {}
        if args.enabled is not None:
            changes["enabled"] = args.enabled == "true"
        if args.percentage is not None:
            if not 0 <= args.percentage <= 100:
                raise config.ConfigError("--percentage must be between 0 and 100")
            changes["percentage"] = args.percentage
        if args.regions is not None:
            changes["regions"] = frozenset(config.csv_list(args.regions))
        if args.carriers is not None:
            changes["carriers"] = frozenset(config.csv_list(args.carriers))
        if changes:
            flag = replace(flag, **changes)
            await client.set(FLAG_KEY, flag.to_json())
            await client.publish(CONTROL_ALL, b'{"op":"flag"}')
        print(flag.to_json().decode())
        return 0
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    cfg = config.load(SETTINGS, args)
    return asyncio.run(_run(args, cfg))
