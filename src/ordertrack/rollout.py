"""The rollout's success criteria for ramping `realtime_order_tracking` from 5 % to 25 %.

The feature log ramps only when five criteria hold; this module is their one home: the
variants, the page-view and stay records in Redis (written by the API, read by
`ordertrack rollout report`), the Prometheus queries of the rule-based criteria, and the
verdicts (pure functions).

Variants: `realtime` (the flag served true: the WebSocket page) and `polling` (the flag
served false: the legacy polling page, the control group). Nothing personal is kept: per
variant and UTC day, a HyperLogLog of the order ids viewed (`PFADD`, so `PFCOUNT` says how
many distinct orders), a counter of views, and a hash of stays reported and bounces.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ordertrack import redis_layout

VARIANTS = ("realtime", "polling")
#: how many days the report looks back, and how long the daily keys live
WINDOW_DAYS = 7
KEEP_DAYS = 35
#: a view reports its stay at most this long after it began (its pending key's TTL)
VIEW_TTL_SECONDS = 24 * 3600
#: a reported stay longer than this is counted as this long (a tab left open for days)
MAX_STAY_SECONDS = 24 * 3600.0
VIEW_ID_PREFIX = "pv_"

#: the log's thresholds
MAX_INCIDENTS = 0
MAX_VIEWS_PER_ORDER = 3.0
BASELINE_VIEWS_PER_ORDER = 4.2
MIN_STABILITY = 0.95
MIN_POLL_SUCCESS = 0.99

#: the rule-based criteria, read from Prometheus (recording rules of deploy/prometheus)
PROMQL = {
    "incidents": "max_over_time(ordertrack:ws_alerts_firing:count[7d])",
    "stability": "avg_over_time(ordertrack:ws_connection_stability:ratio_rate1h[7d])",
    "poll_success": "min(avg_over_time(ordertrack:gateway_poll_success:ratio_rate1h[7d]))",
}


def day(at: float) -> str:
    """The UTC day of epoch seconds `at`, `YYYY-MM-DD` (the daily keys' suffix)."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def days_back(now: float, days: int = WINDOW_DAYS) -> list[str]:
    """The `days` UTC days ending with today's, oldest first."""
    return [day(now - 86400 * back) for back in range(days - 1, -1, -1)]


def variant_of(realtime_enabled: bool) -> str:
    return "realtime" if realtime_enabled else "polling"


def new_view_id() -> str:
    return VIEW_ID_PREFIX + secrets.token_hex(16)


def valid_view_id(value: Any) -> bool:
    return (isinstance(value, str) and len(value) == len(VIEW_ID_PREFIX) + 32
            and value.startswith(VIEW_ID_PREFIX)
            and all(c in "0123456789abcdef" for c in value[len(VIEW_ID_PREFIX):]))


def stay_seconds(value: Any) -> float | None:
    """A reported stay as seconds (0..MAX_STAY_SECONDS), or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return min(float(value), MAX_STAY_SECONDS)


def is_bounce(seconds: float, threshold: float) -> bool:
    """A view that stayed under the threshold is a bounce."""
    return seconds < threshold


# --- Redis: written by the API, read by the report --------------------------------------------


async def record_view(redis: Any, variant: str, order_id: str, now: float) -> tuple[str, int]:
    """Count one page view of `order_id` in `variant`; returns (view id, today's distinct
    orders of the variant). One pipelined round trip."""
    today = day(now)
    view_id = new_view_id()
    orders = redis_layout.rollout_orders(variant, today)
    views = redis_layout.rollout_views(variant, today)
    pipe = redis.pipeline(transaction=False)
    pipe.pfadd(orders, order_id)
    pipe.pfcount(orders)
    pipe.incr(views)
    pipe.expire(orders, KEEP_DAYS * 86400)
    pipe.expire(views, KEEP_DAYS * 86400)
    pipe.set(redis_layout.rollout_pending_view(view_id), variant, ex=VIEW_TTL_SECONDS)
    _, distinct, *_ = await pipe.execute()
    return view_id, int(distinct)


async def record_stay(redis: Any, view_id: str, seconds: float, threshold: float,
                      now: float) -> tuple[str, bool] | None:
    """Count the stay of a view this API issued, once: (variant, bounced), or None for a view
    id that is unknown, expired or already reported."""
    raw = await redis.getdel(redis_layout.rollout_pending_view(view_id))
    if raw is None:
        return None
    variant = raw.decode() if isinstance(raw, bytes) else str(raw)
    if variant not in VARIANTS:
        return None
    bounced = is_bounce(seconds, threshold)
    stays = redis_layout.rollout_stays(variant, day(now))
    pipe = redis.pipeline(transaction=False)
    pipe.hincrby(stays, "reported", 1)
    if bounced:
        pipe.hincrby(stays, "bounced", 1)
    pipe.expire(stays, KEEP_DAYS * 86400)
    await pipe.execute()
    return variant, bounced


@dataclass(frozen=True)
class VariantFigures:
    variant: str
    views: int = 0
    orders: int = 0
    stays: int = 0
    bounces: int = 0

    @property
    def views_per_order(self) -> float | None:
        return self.views / self.orders if self.orders else None

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.stays if self.stays else None

    def to_json(self) -> dict[str, Any]:
        return {"views": self.views, "orders": self.orders,
                "views_per_order": _round(self.views_per_order), "stays_reported": self.stays,
                "bounces": self.bounces, "bounce_rate": _round(self.bounce_rate)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def read_figures(redis: Any, now: float, days: int = WINDOW_DAYS
                       ) -> dict[str, VariantFigures]:
    """Views, distinct orders (the union of the days' HyperLogLogs), stays and bounces per
    variant over the last `days` UTC days. One pipelined round trip."""
    span = days_back(now, days)
    pipe = redis.pipeline(transaction=False)
    for variant in VARIANTS:
        # one PFCOUNT over the days: the union (every day's key shares the variant's hash tag)
        pipe.pfcount(*(redis_layout.rollout_orders(variant, d) for d in span))
        for d in span:
            pipe.get(redis_layout.rollout_views(variant, d))
            pipe.hgetall(redis_layout.rollout_stays(variant, d))
    answers = iter(await pipe.execute())
    figures = {}
    for variant in VARIANTS:
        orders = int(next(answers) or 0)
        views = stays = bounces = 0
        for _ in span:
            views += int(next(answers) or 0)
            hashed = {(k.decode() if isinstance(k, bytes) else k): int(v)
                      for k, v in (next(answers) or {}).items()}
            stays += hashed.get("reported", 0)
            bounces += hashed.get("bounced", 0)
        figures[variant] = VariantFigures(variant, views, orders, stays, bounces)
    return figures


# --- the verdicts (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    name: str
    title: str
    value: float | None
    threshold: str
    #: "pass", "fail" or "no data"
    verdict: str
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "value": _round(self.value),
                "threshold": self.threshold, "verdict": self.verdict, "detail": self.detail,
                **self.extra}


def _verdict(value: float | None, ok: bool) -> str:
    return "no data" if value is None else ("pass" if ok else "fail")


def criteria(figures: Mapping[str, VariantFigures], prometheus: Mapping[str, float | None],
             bounce_threshold: float) -> list[Criterion]:
    """The five criteria from the Redis figures and the Prometheus values (None: no data)."""
    incidents = prometheus.get("incidents")
    stability = prometheus.get("stability")
    polls = prometheus.get("poll_success")
    realtime, control = figures["realtime"], figures["polling"]
    rt_bounce, ctl_bounce = realtime.bounce_rate, control.bounce_rate
    bounce_ok = rt_bounce is not None and ctl_bounce is not None and rt_bounce < ctl_bounce
    bounce_value = None if rt_bounce is None or ctl_bounce is None else rt_bounce
    per_order = realtime.views_per_order
    return [
        Criterion("incidents", "WebSocket incidents (alerts fired, 7 days)", incidents,
                  f"== {MAX_INCIDENTS}",
                  _verdict(incidents, incidents is not None and incidents <= MAX_INCIDENTS)),
        Criterion("bounce_rate", f"bounce rate, realtime vs polling (stays < {bounce_threshold:g} s)",
                  bounce_value, "< polling's", _verdict(bounce_value, bounce_ok),
                  f"realtime {_pct(rt_bounce)} of {realtime.stays}, "
                  f"polling {_pct(ctl_bounce)} of {control.stays}",
                  {"realtime": _round(rt_bounce), "polling": _round(ctl_bounce)}),
        Criterion("views_per_order", "page views per order, realtime", per_order,
                  f"< {MAX_VIEWS_PER_ORDER:g} (was {BASELINE_VIEWS_PER_ORDER:g})",
                  _verdict(per_order, per_order is not None and per_order < MAX_VIEWS_PER_ORDER),
                  f"realtime {realtime.views} views of {realtime.orders} orders, polling "
                  f"{control.views} of {control.orders} ({_num(control.views_per_order)})",
                  {"polling": _round(control.views_per_order)}),
        Criterion("stability", "connection stability (> 5 min without unexpected drop)",
                  stability, f"> {MIN_STABILITY:.0%}",
                  _verdict(stability, stability is not None and stability > MIN_STABILITY)),
        Criterion("poll_success", "carrier polling success (worst carrier)", polls,
                  f"> {MIN_POLL_SUCCESS:.0%}",
                  _verdict(polls, polls is not None and polls > MIN_POLL_SUCCESS)),
    ]


def ramp_decision(found: list[Criterion]) -> bool:
    """The ramp to 25 % may go ahead only when every criterion passes (no data is no pass)."""
    return all(c.verdict == "pass" for c in found)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_value(criterion: Criterion) -> str:
    if criterion.value is None:
        return "-"
    if criterion.name in ("stability", "poll_success", "bounce_rate"):
        return f"{criterion.value:.2%}"
    if criterion.name == "incidents":
        return f"{criterion.value:g}"
    return f"{criterion.value:.2f}"
