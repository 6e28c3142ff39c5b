"""`ordertrack ingest` settings: each an environment variable and a CLI flag (config.py).

A carrier whose secret is unset has no webhook: its path answers 404 NOT_FOUND.
"""

from __future__ import annotations

from ordertrack.config import LOGGING, REDIS, STORE, Setting, optional_text, port, text

SETTINGS: tuple[Setting, ...] = STORE + REDIS + (
    Setting("INGEST_HOST", text, "0.0.0.0", "address the webhook endpoint listens on"),
    Setting("INGEST_PORT", port, "8600", "port of the webhooks, /healthz and /metrics"),
    Setting("FEDEX_WEBHOOK_SECRET", optional_text, None,
            "FedEx security token: fdx-signature is the HMAC-SHA256 of the body with it"),
    Setting("UPS_WEBHOOK_CREDENTIAL", optional_text, None,
            "the credential given to UPS Track Alert at subscription"),
    Setting("UPS_WEBHOOK_HEADER", text, "Authorization",
            "header carrying the UPS credential (Authorization: Bearer <credential>, or an "
            "API-key header name)"),
    Setting("DHL_WEBHOOK_SECRET", optional_text, None, "the static header value DHL sends"),
    Setting("DHL_WEBHOOK_HEADER", text, "X-Webhook-Token", "header carrying DHL_WEBHOOK_SECRET"),
) + LOGGING
