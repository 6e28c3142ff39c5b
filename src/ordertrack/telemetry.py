"""Logging as one JSON object per line, and Prometheus metrics, for every process.

Logs: each process calls `setup_logging(LOG_LEVEL)` once, before it logs anything.
Metrics use prometheus_client (the exposition format is not ours to hand-write), one way:
each process defines its metrics in its `metrics` module on a registry from
`metrics_registry()` (its own, with the process_* and python_* collectors the dashboards
read), and exports it with `start_metrics_server` (a port of its own) or `metrics_page`
(a route of its own app, as the API does).
"""

from __future__ import annotations

import gc
import logging
import sys
import time

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}`; pass fields with `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # a library's `warnings.warn` (e.g. a deprecation) becomes one JSON line like any other,
    # never a bare two-line text on stderr
    logging.captureWarnings(True)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    # picows logs every accepted connection at INFO: far too chatty at 10K connections
    logging.getLogger("picows").setLevel(logging.WARNING)


#: stop-the-world pauses worth seeing: a full collection over a pod's 19,500 connections'
#: objects is tens of milliseconds, and every client on the loop waits for it
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def metrics_registry() -> CollectorRegistry:
    """A process's own registry, with the process, platform and GC collectors and
    `ordertrack_gc_pause_seconds` (how long each garbage collection stopped the process)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    _watch_gc_pauses(Histogram(
        "ordertrack_gc_pause_seconds", "Garbage collections, by generation, and how long each "
        "stopped the process", ["generation"], buckets=GC_PAUSE_BUCKETS, registry=registry))
    return registry


def _watch_gc_pauses(histogram: Histogram) -> None:
    children = [histogram.labels(str(generation)) for generation in range(3)]
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)


#: gc.set_threshold for a process holding many long-lived objects (a pod's connections).
#: CPython's defaults (700, 10, 10) make a full collection of every live object each time the
#: heap has grown by a quarter: a pod ramping to 19,500 connections ran 4 of them, up to
#: 0.5-1 s each, and every client of the pod waited (BENCHMARKS.md, "Garbage collection").
#: With these, the young collections stay small (2,000 objects, then 20,000) and a full one
#: needs 50 middle collections (~1,000,000 net new objects) as well as the quarter's growth.
GC_THRESHOLDS = (2_000, 10, 50)


def tune_gc() -> None:
    """For a long-running process, once start-up is done: move every object alive now
    (modules, settings, the app's long-lived parts: ~48K objects in a pod) out of the
    collector's reach (`gc.freeze`), so no collection rescans them (each full collection of a
    pod walked them again, ~60 ms), and space full collections out (GC_THRESHOLDS). Cycles are
    still collected; the pauses are in `ordertrack_gc_pause_seconds`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def start_metrics_server(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Serve `registry` as /metrics on `port` (0 = disabled); OSError when it cannot bind."""
    if port:
        start_http_server(port, addr=host, registry=registry)


def metrics_page(registry: CollectorRegistry) -> tuple[bytes, str]:
    """`registry` in the exposition format, and its content type, for an app's own route."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
