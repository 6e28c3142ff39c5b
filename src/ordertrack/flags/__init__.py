"""Feature flags: the `realtime_order_tracking` kill switch and the heartbeat settings.

Evaluated through the OpenFeature SDK (`source.FlagSource`) on a provider chosen by
configuration (`providers`): LaunchDarkly, a flagd file, or the Redis document that
`ordertrack flag` writes (`document`). `client_class` derives the evaluation context's client
class from a User-Agent.
"""

from ordertrack.flags.client_class import CLIENT_CLASSES, client_class
from ordertrack.flags.document import (
    FLAG_NAME,
    Flag,
    is_enabled,
    parse_flag,
    read_flag,
    user_bucket,
)

__all__ = [
    "CLIENT_CLASSES", "FLAG_NAME", "Flag", "client_class", "is_enabled",
    "parse_flag", "read_flag", "user_bucket",
]
