"""`ordertrack ingest` settings: each an environment variable and a CLI flag (config.py).

A carrier whose secret is unset has no webhook: its path answers 404 NOT_FOUND. The
webhook credentials are `config`'s groups (the gateway subscribes with the same ones), the
request limits `config.http_limits` (as the API's).
"""

from __future__ import annotations

from ordertrack.config import (
    DHL_WEBHOOK,
    FEDEX_WEBHOOK,
    LOGGING,
    REDIS,
    STORE,
    UPS_WEBHOOK,
    Setting,
    http_limits,
    port,
    text,
)

#: the prefix of the request limits' names (INGEST_MAX_BODY_BYTES, ...)
LIMITS_PREFIX = "INGEST"

SETTINGS: tuple[Setting, ...] = STORE + REDIS + (
    Setting("INGEST_HOST", text, "0.0.0.0", "address the webhook endpoint listens on"),
    Setting("INGEST_PORT", port, "8600", "port of the webhooks, /healthz and /metrics"),
) + FEDEX_WEBHOOK + UPS_WEBHOOK + DHL_WEBHOOK + http_limits(LIMITS_PREFIX) + LOGGING
