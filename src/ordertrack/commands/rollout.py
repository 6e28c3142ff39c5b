"""`ordertrack rollout report [--prometheus URL] [--json]`: may `realtime_order_tracking` ramp
from 5 % to 25 %?

Prints the feature log's five criteria, each with its value, threshold and verdict, and the
decision (every criterion must pass; no data is no pass). Incidents, connection stability and
polling success come from a Prometheus API (the recording rules of deploy/prometheus); page
views per order and bounce rates from Redis (the API's counts, `ordertrack/rollout.py`).
Run from the directory of a running `ordertrack dev`, it takes that stack's `REDIS_URL` and
`PROMETHEUS_URL`. An unreachable Prometheus or Redis is one line and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Any

import httpx
import orjson
from redis.exceptions import RedisError

from ordertrack import config, redis_connect, rollout

SETTINGS = config.REDIS + config.ROLLOUT + (
    config.Setting("PROMETHEUS_URL", config.http_url, "http://127.0.0.1:9099",
                   "the Prometheus whose API the report queries (`ordertrack dev` starts one)"),
)


class Unreachable(Exception):
    """Prometheus or Redis cannot answer; the text is the one line printed."""


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    report = sub.add_parser("report", help="the five criteria and the ramp decision",
                            description="the five criteria and the ramp decision")
    config.add_flags(report, SETTINGS)
    report.add_argument("--prometheus", metavar="URL", help="same as --prometheus-url")
    report.add_argument("--json", action="store_true", help="one JSON object instead of a table")


def query_prometheus(url: str, timeout: float = 10.0) -> dict[str, float | None]:
    """The rule-based criteria's values (None: the query has no sample)."""
    values: dict[str, float | None] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        for name, promql in rollout.PROMQL.items():
            try:
                answer = client.get("/api/v1/query", params={"query": promql})
                body = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise Unreachable(f"cannot query Prometheus at {url}: {exc}") from None
            if answer.status_code != 200 or body.get("status") != "success":
                raise Unreachable(f"Prometheus at {url} refused {promql!r}: "
                                  f"{body.get('error') or answer.status_code}")
            samples = body["data"]["result"]
            value = float(samples[0]["value"][1]) if samples else None
            # 0/0 (nothing happened in the window) is NaN: no data, not a failure
            values[name] = None if value is None or math.isnan(value) else value
    return values


async def read_redis(cfg: Any) -> dict[str, rollout.VariantFigures]:
    client = redis_connect.command_client(cfg, socket_connect_timeout=5, socket_timeout=5)
    try:
        return await rollout.read_figures(client, time.time())
    except (RedisError, OSError) as exc:
        raise Unreachable(f"cannot reach Redis at {redis_connect.redact(cfg.redis_url)}: "
                          f"{exc}") from None
    finally:
        await redis_connect.close_client(client)


def report_json(found: list[rollout.Criterion], figures, cfg: Any) -> dict[str, Any]:
    return {
        "ramp": rollout.ramp_decision(found),
        "criteria": [c.to_json() for c in found],
        "variants": {v: f.to_json() for v, f in figures.items()},
        "days": rollout.WINDOW_DAYS,
        "bounce_threshold_seconds": cfg.bounce_threshold_seconds,
        "prometheus": cfg.prometheus_url,
    }


def report_text(found: list[rollout.Criterion], cfg: Any) -> str:
    passed = sum(c.verdict == "pass" for c in found)
    decision = "GO" if rollout.ramp_decision(found) else "HOLD"
    lines = [f"Ramp realtime_order_tracking to 25 %: {decision} "
             f"({passed} of {len(found)} criteria pass)", ""]
    width = max(len(c.title) for c in found)
    lines.append(f"{'criterion':{width}}  {'value':>8}  {'threshold':18}  verdict")
    for c in found:
        lines.append(f"{c.title:{width}}  {rollout.format_value(c):>8}  {c.threshold:18}  "
                     f"{c.verdict}")
        if c.detail:
            lines.append(f"{'':{width}}    {c.detail}")
    lines += ["", f"last {rollout.WINDOW_DAYS} days; Prometheus {cfg.prometheus_url}, Redis "
              f"{redis_connect.redact(cfg.redis_url)}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "prometheus", None):
        args.prometheus_url = args.prometheus
    cfg = config.load(SETTINGS, args)
    try:
        prometheus = query_prometheus(cfg.prometheus_url)
        figures = asyncio.run(read_redis(cfg))
    except Unreachable as exc:
        print(f"ordertrack rollout: {exc}", file=sys.stderr)
        return 1
    found = rollout.criteria(figures, prometheus, cfg.bounce_threshold_seconds)
    if args.json:
        print(orjson.dumps(report_json(found, figures, cfg)).decode())
    else:
        print(report_text(found, cfg))
    return 0
