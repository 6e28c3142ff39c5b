"""The carrier sandbox: DHL, FedEx and UPS look-alikes speaking the real wire formats.

One HTTP server (`ordertrack sandbox`) serves all three carriers, driving scripted shipments,
with OAuth, quotas (429) and injectable faults. The credentials below are the only ones it
accepts; pollers pointed at the sandbox use them.
"""

DHL_API_KEY = "sandbox-dhl-key"
FEDEX_CLIENT_ID = "sandbox-fedex-id"
FEDEX_CLIENT_SECRET = "sandbox-fedex-secret"
UPS_CLIENT_ID = "sandbox-ups-id"
UPS_CLIENT_SECRET = "sandbox-ups-secret"

__all__ = [
    "DHL_API_KEY",
    "FEDEX_CLIENT_ID",
    "FEDEX_CLIENT_SECRET",
    "UPS_CLIENT_ID",
    "UPS_CLIENT_SECRET",
]
