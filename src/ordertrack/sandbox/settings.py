"""`ordertrack sandbox` settings: each an environment variable and a CLI flag (config.py)."""

from __future__ import annotations

from ordertrack import config
from ordertrack.config import LOGGING, Setting

SETTINGS = (
    Setting("SANDBOX_HOST", config.text, "127.0.0.1", "address to listen on"),
    Setting("SANDBOX_PORT", config.port, "8700", "TCP port serving all three carriers"),
    Setting("SANDBOX_TIME_SCALE", config.duration, "1.0",
            "shipment clock speed: 60 means one real second is one shipment minute"),
    Setting("SANDBOX_DHL_QUOTA_PER_HOUR", config.positive_int, "2000", "DHL requests per hour"),
    Setting("SANDBOX_DHL_QUOTA_PER_MINUTE", config.positive_int, "100",
            "DHL burst allowance per minute"),
    Setting("SANDBOX_FEDEX_QUOTA_PER_HOUR", config.positive_int, "1000", "FedEx requests per hour"),
    Setting("SANDBOX_UPS_QUOTA_PER_HOUR", config.positive_int, "500", "UPS requests per hour"),
    Setting("SANDBOX_FEDEX_TOKEN_TTL", config.positive_int, "3599", "FedEx OAuth token lifetime, seconds"),
    Setting("SANDBOX_UPS_TOKEN_TTL", config.positive_int, "14399", "UPS OAuth token lifetime, seconds"),
    Setting("SANDBOX_SLOW_SECONDS", config.duration, "20",
            "how long a `slow` fault holds its answer"),
    Setting("SANDBOX_STATE_FILE", config.optional_text, "",
            "JSON file keeping the shipments across restarts (empty: forget them on exit)"),
) + LOGGING
