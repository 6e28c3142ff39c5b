"""Logging as one JSON object per line, and the Prometheus metrics server.

Metrics use prometheus_client (the exposition format is not ours to hand-write); each process
defines its own metrics next to its code and calls `start_metrics_server`.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson


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
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    # picows logs every accepted connection at INFO: far too chatty at 10K connections
    logging.getLogger("picows").setLevel(logging.WARNING)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics from the default registry on `port` (0 = disabled)."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host)
